/**
 * The `unibus` command line. Every command has --help; every failure is one line
 * on stderr and a non-zero exit.
 */
import { Command, CommanderError } from "commander";
import { packageVersion } from "../version.ts";
import { CliError, errorJson, errorLine, printJson } from "./output.ts";

type Register = (program: Command) => void;

/**
 * Each command's module, loaded only when needed: `unibus user list` need not load
 * the bus, the control plane and the cluster code (start-up time is what a CLI's
 * user feels first). Order is the order of `--help`.
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  up: async () => (await import("./commands/up.ts")).upCommand,
  identity: async () => (await import("./commands/identity.ts")).identityCommand,
  user: async () => (await import("./commands/user.ts")).userCommand,
  room: async () => (await import("./commands/room.ts")).roomCommand,
  invite: async () => (await import("./commands/invite.ts")).inviteCommand,
  register: async () => (await import("./commands/register.ts")).registerCommand,
  status: async () => (await import("./commands/status.ts")).statusCommand,
  doctor: async () => (await import("./commands/doctor.ts")).doctorCommand,
  backup: async () => (await import("./commands/backup.ts")).backupCommand,
  restore: async () => (await import("./commands/backup.ts")).restoreCommand,
  "migrate-to-kv": async () => (await import("./commands/migrate.ts")).migrateCommand,
  install: async () => (await import("./commands/install.ts")).installCommand,
  ca: async () => (await import("./commands/rotate.ts")).caCommand,
  "service-keys": async () => (await import("./commands/rotate.ts")).serviceKeysCommand,
};

/** The program with every command, or only `only` (the one the user named). */
export async function buildProgram(only?: string): Promise<Command> {
  const program = new Command("unibus")
    .description("a self-hostable, secure message bus for small teams and their bots")
    .version(packageVersion(), "-V, --version", "print the unibus version")
    // The program's own options only before a command: `install --version <v>` is install's.
    .enablePositionalOptions()
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`unibus: ${text.replace(/^error: /, "").trim()}\n`) });
  const names = only && COMMANDS[only] ? [only] : Object.keys(COMMANDS);
  for (const register of await Promise.all(names.map((n) => COMMANDS[n]!()))) register(program);
  for (const cmd of program.commands) {
    cmd.exitOverride();
    for (const sub of cmd.commands) sub.exitOverride();
  }
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    const first = argv.find((a) => !a.startsWith("-"));
    await (await buildProgram(first)).parseAsync(argv, { from: "user" });
    return 0;
  } catch (err) {
    // --json answers in JSON whatever happens: scripts parse stdout, people read stderr.
    const json = argv.includes("--json");
    if (err instanceof CommanderError) {
      // Commander already printed its one line (or the help text).
      const ok = err.exitCode === 0 || err.code === "commander.helpDisplayed" || err.code === "commander.version";
      if (!ok && json) printJson({ error: { code: "USAGE", message: err.message.replace(/^error: /, "") } });
      return ok ? 0 : 2;
    }
    if (json) printJson(errorJson(err));
    process.stderr.write(`${errorLine(err)}\n`);
    return err instanceof CliError ? err.exitCode : 1;
  }
}

const code = await main(process.argv.slice(2));
if (code !== 0) process.exit(code);
