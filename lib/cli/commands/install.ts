import type { Command } from "commander";
import { installNatsServer } from "../../nats/binary.ts";
import { printJson } from "../output.ts";

export function installCommand(program: Command): void {
  program
    .command("install")
    .description("fetch and verify the nats-server binary ahead of time (for CI and offline use)")
    .option("--json", "print the result as JSON")
    .action(async (opts: { json?: boolean }) => {
      const result = await installNatsServer({
        onProgress: (e) => {
          if (!opts.json) process.stderr.write(`${e.phase}: ${e.message}\n`);
        },
      });
      if (opts.json) return printJson(result);
      process.stdout.write(`nats-server ${result.version} ready at ${result.path} (from ${result.source})\n`);
    });
}
