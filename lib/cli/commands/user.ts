import type { Command } from "commander";
import { parseSignPub } from "../../crypto/identity.ts";
import type { User } from "../../store/index.ts";
import { CliError, printJson, table } from "../output.ts";
import { resolveDataDir, withStore } from "../store.ts";

interface DataDirOption {
  dataDir?: string;
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
        // `user add` may seed the first admin before the first `up`, so it creates the store.
        const added = await withStore(
          resolveDataDir(opts.dataDir),
          (s) =>
            s.addUser({
              signPub: key,
              handle: opts.handle,
              role: opts.role as "admin" | "member",
              kexPub: opts.kexPub ?? null,
            }),
          { create: true },
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
      const users = await withStore(resolveDataDir(opts.dataDir), (s) => s.listUsers());
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
      const u = await withStore(resolveDataDir(opts.dataDir), (s) => s.revokeUser(key));
      process.stdout.write(`revoked ${describe(u)}\n`);
    });

  user
    .command("delete")
    .description("delete an identity from the allowlist for good")
    .argument("<sign-pub>", "the identity's signing key")
    .option(...dataDirOption)
    .action(async (signPub: string, opts: DataDirOption) => {
      const key = parseSignPub(signPub, "sign-pub");
      await withStore(resolveDataDir(opts.dataDir), (s) => s.deleteUser(key));
      process.stdout.write(`deleted ${key}\n`);
    });
}
