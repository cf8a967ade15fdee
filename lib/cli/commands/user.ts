import type { Command } from "commander";
import { parseSignPub, readPublicKeys } from "../../crypto/identity.ts";
import { ConflictError, NotFoundError, UserExistsError } from "../../errors.ts";
import type { Store, User } from "../../store/index.ts";
import { CliError, printJson, table } from "../output.ts";
import { roleOf, type StoreTargetOptions, storeTargetOptions, withStore } from "../store.ts";
import { settleOwnedRooms } from "./room.ts";

interface AddOptions extends StoreTargetOptions {
  handle: string;
  role: string;
  kexPub?: string;
  identity?: string;
  json?: boolean;
}

function describe(u: User): string {
  return `${u.handle} (${u.role}, ${u.status}) ${u.signPub}`;
}

export function userCommand(program: Command): void {
  const user = program
    .command("user")
    .description("manage the allowlist of a bus: its data dir's store, or a running cluster's (--store kv)");
  storeTargetOptions(
    user
      .command("add")
      .description("add an identity to the allowlist")
      .argument("[sign-pub]", "the identity's Ed25519 public key (64 hex chars or a U… NATS key); or --identity")
      .requiredOption("--handle <handle>", "a short unique name, e.g. alice")
      .option("--role <role>", "admin or member", "member")
      .option("--kex-pub <hex>", "the identity's X25519 public key (needed for encrypted rooms)")
      .option("--identity <file>", "take both public keys from an identity file (its secrets are not read)"),
  )
    .option("--json", "print the user as JSON")
    .action(addUser);
  storeTargetOptions(user.command("list").description("list the allowlist"))
    .option("--json", "print JSON")
    .action(listUsers);
  storeTargetOptions(
    user
      .command("revoke")
      .description("revoke an identity (kept on the list, its connections closed and refused from then on)")
      .argument("<sign-pub>", "the identity's signing key"),
  ).action(revokeUser);
  storeTargetOptions(
    user
      .command("reinstate")
      .description("make a revoked identity active again (it may connect from then on)")
      .argument("<sign-pub>", "the identity's signing key"),
  ).action(reinstateUser);
  storeTargetOptions(
    user
      .command("set")
      .description("change an identity's role, handle or key-exchange key (replacing one it has)")
      .argument("<sign-pub>", "the identity's signing key")
      .option("--role <role>", "admin or member")
      .option("--handle <handle>", "a new unique handle")
      .option("--kex-pub <hex>", "a new X25519 public key; keys sealed to the old one stay unreadable to the new"),
  )
    .option("--json", "print the user as JSON")
    .action(setUser);
  storeTargetOptions(
    user
      .command("delete")
      .description("delete an identity from the allowlist for good")
      .argument("<sign-pub>", "the identity's signing key")
      .option(
        "--rooms <choice...>",
        "what happens to the rooms it owns: delete, or transfer-to <sign-pub> (a member of each)",
      ),
  ).action(deleteUser);
}

/** The keys to add: the argument and --kex-pub, or an identity file's public half (agreeing with them if both are given). */
async function keysToAdd(
  signPub: string | undefined,
  opts: AddOptions,
): Promise<{ signPub: string; kexPub: string | null }> {
  const given = signPub === undefined ? undefined : parseSignPub(signPub, "sign-pub");
  const kexPub = opts.kexPub?.toLowerCase() ?? null;
  if (opts.identity === undefined) {
    if (given === undefined)
      throw new CliError("give the identity's signing key, or --identity <file> (see `unibus user add --help`)");
    return { signPub: given, kexPub };
  }
  const file = await readPublicKeys(opts.identity);
  if (given !== undefined && given !== file.signPub) {
    throw new CliError(`the signing key given differs from ${opts.identity}'s; pass one or the other`);
  }
  if (kexPub !== null && kexPub !== file.kexPub) {
    throw new CliError(`--kex-pub differs from ${opts.identity}'s key-exchange key; pass one or the other`);
  }
  return file;
}

async function addUser(signPub: string | undefined, opts: AddOptions): Promise<void> {
  const keys = await keysToAdd(signPub, opts);
  const role = roleOf(opts.role);
  // `user add` may seed the first admin before the first `up`, so it creates a SQLite store.
  const add = (s: Store) =>
    s.addUser({ ...keys, handle: opts.handle, role }).catch((err: unknown) => {
      if (!(err instanceof UserExistsError)) throw err;
      throw new CliError(
        `${keys.signPub} is already on the allowlist; see its handle, role and status with \`unibus user list\`, or \`unibus user delete ${keys.signPub}\` first to add it anew`,
      );
    });
  await withStore(opts, add, {
    create: true,
    write: true,
    report: opts.json ? process.stderr : process.stdout,
    print: (added) => (opts.json ? printJson(added) : void process.stdout.write(`added ${describe(added)}\n`)),
  });
}

async function listUsers(opts: StoreTargetOptions & { json?: boolean }): Promise<void> {
  const users = await withStore(opts, (s) => s.listUsers());
  if (opts.json) return printJson(users);
  if (users.length === 0) {
    process.stdout.write(
      "no users yet; add the first admin with `unibus user add <sign-pub> --handle you --role admin`\n",
    );
    return;
  }
  const rows = [["HANDLE", "ROLE", "STATUS", "SIGNING KEY", "CREATED"]];
  for (const u of users) rows.push([u.handle, u.role, u.status, u.signPub, new Date(u.createdAt).toISOString()]);
  process.stdout.write(`${table(rows)}\n`);
}

async function revokeUser(signPub: string, opts: StoreTargetOptions): Promise<void> {
  const key = parseSignPub(signPub, "sign-pub");
  await withStore(opts, (s) => s.revokeUser(key).catch(nextStep(key)), {
    write: true,
    print: (revoked) => void process.stdout.write(`revoked ${describe(revoked)}\n`),
  });
}

/** The store's refusals, with the command that comes next. */
function nextStep(key: string): (err: unknown) => never {
  return (err) => {
    if (err instanceof NotFoundError) {
      throw new CliError(`${key} is not on the allowlist; add it with \`unibus user add ${key} --handle <handle>\``);
    }
    if (err instanceof ConflictError && /already revoked/.test(err.message)) {
      throw new CliError(`${key} is already revoked; to let it in again: \`unibus user reinstate ${key}\``);
    }
    if (err instanceof ConflictError && /already active/.test(err.message)) {
      throw new CliError(`${key} is already active; nothing to reinstate (\`unibus user list\` shows every status)`);
    }
    throw err;
  };
}

async function reinstateUser(signPub: string, opts: StoreTargetOptions): Promise<void> {
  const key = parseSignPub(signPub, "sign-pub");
  await withStore(opts, (s) => s.reinstateUser(key).catch(nextStep(key)), {
    write: true,
    print: (user) => void process.stdout.write(`reinstated ${describe(user)}\n`),
  });
}

async function setUser(
  signPub: string,
  opts: StoreTargetOptions & { role?: string; handle?: string; kexPub?: string; json?: boolean },
): Promise<void> {
  const key = parseSignPub(signPub, "sign-pub");
  if (opts.role === undefined && opts.handle === undefined && opts.kexPub === undefined) {
    throw new CliError("nothing to change: give --role, --handle or --kex-pub (see `unibus user set --help`)");
  }
  const changes = {
    ...(opts.role !== undefined ? { role: roleOf(opts.role) } : {}),
    ...(opts.handle !== undefined ? { handle: opts.handle } : {}),
    ...(opts.kexPub !== undefined ? { kexPub: opts.kexPub } : {}),
  };
  await withStore(opts, (s) => s.updateUser(key, changes).catch(nextStep(key)), {
    write: true,
    report: opts.json ? process.stderr : process.stdout,
    print: (user) => (opts.json ? printJson(user) : void process.stdout.write(`updated ${describe(user)}\n`)),
  });
}

async function deleteUser(signPub: string, opts: StoreTargetOptions & { rooms?: string[] }): Promise<void> {
  const key = parseSignPub(signPub, "sign-pub");
  await withStore(
    opts,
    async (s) => {
      const note = await settleOwnedRooms(opts, s, key, opts.rooms);
      await s.deleteUser(key);
      return note;
    },
    { write: true, print: (note) => void process.stdout.write(`deleted ${key}${note}\n`) },
  );
}
