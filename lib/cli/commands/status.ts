import path from "node:path";
import type { Command } from "commander";
import { collectStatus, formatStatus, statusExitCode } from "../../ops/index.ts";
import { printJson } from "../output.ts";
import { configOption, resolveCommandConfig } from "../settings.ts";

export function statusCommand(program: Command): void {
  const status = program
    .command("status")
    .description("health of the running bus: nodes, versions, ports, connections, JetStream, KV replication, counts")
    .option("-d, --data-dir <dir>", "the bus' data dir (default: as `unibus up` resolves it)");
  configOption(status)
    .option("--json", "print one JSON object")
    .addHelpText("after", "\nExit codes: 0 healthy, 1 degraded, 3 not running.")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      // The same chain as `up`: --data-dir, UNIBUS_DATA_DIR, --config or the config file, the default.
      const dataDir = path.resolve(resolveCommandConfig(cmd).config.dataDir);
      const status = await collectStatus({ dataDir });
      if (opts.json) printJson(status);
      else process.stdout.write(`${formatStatus(status)}\n`);
      // Not an error line: the report above already says what is wrong.
      process.exitCode = statusExitCode(status);
    });
}
