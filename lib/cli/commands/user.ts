import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { busLayout } from "../../bus/layout.ts";
import { resolveConfig } from "../../config/index.ts";
import { parseSignPub } from "../../crypto/identity.ts";
import { openStore, type Store, type User } from "../../store/index.ts";
import { CliError, printJson, table } from "../output.ts";

interface DataDirOption {
  dataDir?: string;
}

/** Host-trusted: edits the allowlist in the data dir directly, bus running or not. */
async function withStore<T>(opts: DataDirOption, fn: (store: Store) => Promise<T>, create = false): Promise<T> {
  // The same chain as `up`: --data-dir, UNIBUS_DATA_DIR, the config file, the default.
  const dataDir = path.resolve(resolveConfig({ flags: { dataDir: opts.dataDir } }).config.dataDir);
  const file = busLayout(dataDir, "").storeFile;
  if (!create && !fs.existsSync(file)) {
    throw new CliError(
      `no bus store in ${dataDir}; run \`unibus up --data-dir ${dataDir}\` first or pass the right --data-dir`,
    );
  }
  const store = await openStore({ backend: "sqlite", file });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

function describe(u: User): string {
  return `${u.handle} (${u.role}, ${u.status}) ${u.signPub}`;
}

export function userCommand(program: Command): void {
  const user = program.command("user").description("manage the allowlist of the bus in a data dir (host-trusted)");
  const dataDirOption = ["-d, --data-dir <dir>", "the bus' data dir (default: as `unibus up` resolves it)"] as const;

  user
    .command("add")
    .description("add an identity to the allowlist")
    .argument("<sign-pub>", "the identity's Ed25519 public key (64 hex chars or a U… NATS key)")
    .requiredOption("--handle <handle>", "a short unique name, e.g. alice")
    .option("--role <role>", "admin or member", "member")
    .option("--kex-pub <hex>", "the identity's X25519 public key (needed for encrypted rooms)")
    .option(...dataDirOption)
    .option("--json", "print the user as JSON")
    .action(
      async (
        signPub: string,
        opts: DataDirOption & { handle: string; role: string; kexPub?: string; json?: boolean },
      ) => {
        const key = parseSignPub(signPub, "sign-pub");
        if (opts.role !== "admin" && opts.role !== "member")
          throw new CliError(`--role must be admin or member, not ${opts.role}`);
        const added = await withStore(
          opts,
          (s) =>
            s.addUser({
              signPub: key,
              handle: opts.handle,
              role: opts.role as "admin" | "member",
              kexPub: opts.kexPub ?? null,
            }),
          true,
        );
        if (opts.json) return printJson(added);
        process.stdout.write(`added ${describe(added)}\n`);
      },
    );

  user
    .command("list")
    .description("list the allowlist")
    .option(...dataDirOption)
    .option("--json", "print JSON")
    .action(async (opts: DataDirOption & { json?: boolean }) => {
      const users = await withStore(opts, (s) => s.listUsers());
      if (opts.json) return printJson(users);
      if (users.length === 0)
        return void process.stdout.write(
          "no users yet; add the first admin with `unibus user add <sign-pub> --handle you --role admin`\n",
        );
      const rows = [["HANDLE", "ROLE", "STATUS", "SIGNING KEY", "CREATED"]];
      for (const u of users) rows.push([u.handle, u.role, u.status, u.signPub, new Date(u.createdAt).toISOString()]);
      process.stdout.write(`${table(rows)}\n`);
    });

  user
    .command("revoke")
    .description("revoke an identity (kept on the list, refused at its next connection)")
    .argument("<sign-pub>", "the identity's signing key")
    .option(...dataDirOption)
    .action(async (signPub: string, opts: DataDirOption) => {
      const key = parseSignPub(signPub, "sign-pub");
      const u = await withStore(opts, (s) => s.revokeUser(key));
      process.stdout.write(`revoked ${describe(u)}\n`);
    });

  user
    .command("delete")
    .description("delete an identity from the allowlist for good")
    .argument("<sign-pub>", "the identity's signing key")
    .option(...dataDirOption)
    .action(async (signPub: string, opts: DataDirOption) => {
      const key = parseSignPub(signPub, "sign-pub");
      await withStore(opts, (s) => s.deleteUser(key));
      process.stdout.write(`deleted ${key}\n`);
    });
}
