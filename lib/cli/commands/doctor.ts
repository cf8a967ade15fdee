import path from "node:path";
import type { Command } from "commander";
import { resolveConfig } from "../../config/index.ts";
import { doctorExitCode, formatFindings, runDoctor } from "../../ops/index.ts";
import { printJson } from "../output.ts";

export function doctorCommand(program: Command): void {
  program
    .command("doctor")
    .description(
      "check nats-server, Node, data-dir permissions, certificates, ports and clock skew; each finding with a fix",
    )
    .option("-d, --data-dir <dir>", "the bus' data dir (default: as `unibus up` resolves it)")
    .option("--config <file>", "read settings from this JSON file instead of ./unibus.config.json")
    .option("--json", "print the findings as one JSON object")
    .addHelpText("after", "\nExit codes: 0 no errors (warnings allowed), 1 at least one error.")
    .action(async (opts: { dataDir?: string; config?: string; json?: boolean }) => {
      // The ports and data dir `unibus up` would use: the same configuration chain.
      const { config } = resolveConfig({
        flags: { dataDir: opts.dataDir },
        ...(opts.config ? { configFile: opts.config } : {}),
      });
      const findings = await runDoctor({
        dataDir: path.resolve(config.dataDir),
        host: config.host,
        ports: { nats: config.natsPort, control: config.controlPort, monitoring: config.monitorPort },
      });
      if (opts.json) printJson({ ok: doctorExitCode(findings) === 0, findings });
      else process.stdout.write(`${formatFindings(findings)}\n`);
      process.exitCode = doctorExitCode(findings);
    });
}
