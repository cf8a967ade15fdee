import type { Command } from "commander";
import { compareVersions, installNatsServer, MIN_NATS_VERSION, PINNED_NATS_VERSION } from "../../nats/binary.ts";
import { printJson } from "../output.ts";

export function installCommand(program: Command): void {
  program
    .command("install")
    .description("fetch and verify the nats-server binary ahead of time (for CI and offline use)")
    .option("--json", "print the result as JSON")
    .option("--version <version>", "fetch this nats-server release instead of the default (e.g. the floor, 2.10.27)")
    .action(async (opts: { json?: boolean; version?: string }) => {
      const result = await installNatsServer({
        ...(opts.version === undefined ? {} : { version: opts.version }),
        onProgress: (e) => {
          if (!opts.json) process.stderr.write(`${e.phase}: ${e.message}\n`);
        },
      });
      if (opts.version === undefined && compareVersions(result.version, PINNED_NATS_VERSION) < 0) {
        process.stderr.write(
          `unibus: warning: nats-server ${result.version} is older than the default ${PINNED_NATS_VERSION}; unibus runs on it (the floor is ${MIN_NATS_VERSION})\n`,
        );
      }
      if (opts.json) return printJson(result);
      process.stdout.write(`nats-server ${result.version} ready at ${result.path} (from ${result.source})\n`);
    });
}
