import path from "node:path";
import type { Command } from "commander";
import { doctorExitCode, formatFindings, runDoctor } from "../../ops/index.ts";
import { printJson } from "../output.ts";
import { configOption, resolveCommandConfig } from "../settings.ts";

export function doctorCommand(program: Command): void {
  const doctor = program
    .command("doctor")
    .description(
      "check nats-server, Node, data-dir permissions, certificates, ports and clock skew; each finding with a fix",
    )
    .option("-d, --data-dir <dir>", "the bus' data dir (default: as `unibus up` resolves it)");
  configOption(doctor)
    .option("--json", "print the findings as one JSON object")
    .addHelpText("after", "\nExit codes: 0 no errors (warnings allowed), 1 at least one error.")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      // The ports and data dir `unibus up` would use: the same configuration chain.
      const { config } = resolveCommandConfig(cmd);
      const findings = await runDoctor({
        dataDir: path.resolve(config.dataDir),
        host: config.host,
        ports: {
          nats: config.natsPort,
          control: config.controlPort,
          monitoring: config.monitorPort,
          websocket: config.wsPort,
        },
      });
      if (opts.json) printJson({ ok: doctorExitCode(findings) === 0, findings });
      else process.stdout.write(`${formatFindings(findings)}\n`);
      process.exitCode = doctorExitCode(findings);
    });
}
