/**
 * The `unibus` command line. Every command has --help; every failure is one line
 * on stderr and a non-zero exit.
 */
import { Command, CommanderError } from "commander";
import { doctorCommand } from "./commands/doctor.ts"; // ops
import { identityCommand } from "./commands/identity.ts";
import { installCommand } from "./commands/install.ts";
import { inviteCommand } from "./commands/invite.ts";
import { migrateCommand } from "./commands/migrate.ts";
import { registerCommand } from "./commands/register.ts";
import { statusCommand } from "./commands/status.ts"; // ops
import { upCommand } from "./commands/up.ts";
import { userCommand } from "./commands/user.ts";
import { CliError, errorLine } from "./output.ts";

export function buildProgram(): Command {
  const program = new Command("unibus")
    .description("a self-hostable, secure message bus for small teams and their bots")
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`unibus: ${text.replace(/^error: /, "").trim()}\n`) });
  upCommand(program);
  identityCommand(program);
  userCommand(program);
  inviteCommand(program);
  registerCommand(program);
  installCommand(program);
  migrateCommand(program);
  statusCommand(program); // ops
  doctorCommand(program); // ops
  for (const cmd of program.commands) {
    cmd.exitOverride();
    for (const sub of cmd.commands) sub.exitOverride();
  }
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv, { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its one line (or the help text).
      return err.exitCode === 0 || err.code === "commander.helpDisplayed" || err.code === "commander.version" ? 0 : 2;
    }
    process.stderr.write(`${errorLine(err)}\n`);
    return err instanceof CliError ? err.exitCode : 1;
  }
}

const code = await main(process.argv.slice(2));
if (code !== 0) process.exit(code);
