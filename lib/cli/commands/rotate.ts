import path from "node:path";
import type { Command } from "commander";
import {
  finishServiceKeys,
  rotateServiceKeys,
  SERVICE_KEYS_FILE,
  type ServiceKeysStep,
  serviceKeysStatus,
  switchServiceKeys,
} from "../../auth/service-keys.ts";
import { busLayout } from "../../bus/layout.ts";
import { type CaRotationStep, caRotationStatus, finishCa, rotateCa, switchCa } from "../../tls/index.ts";
import { printJson } from "../output.ts";
import { configOption, resolveCommandConfig } from "../settings.ts";

type Step = "rotate" | "switch" | "finish" | "status";

const CA_HELP: Record<Step, string> = {
  rotate: "phase 1: create a new CA (tls/ca-next.pem); nodes trust both from their next start",
  switch: "phase 2: the new CA signs the node's certificates from its next start; the old one stays trusted",
  finish: "phase 3: drop the old CA; from each node's next start only the new one is trusted",
  status: "which phase the CA rotation of this data dir is in",
};

const KEYS_HELP: Record<Step, string> = {
  rotate: "phase 1: add a next set of service keys; nodes let both in from their next start",
  switch: "phase 2: the bus uses the new keys from each node's next start; the old ones stay accepted",
  finish: "phase 3: drop the old keys; from each node's next start they are refused",
  status: "which phase the service-key rotation of this data dir is in",
};

const STEPS: Step[] = ["rotate", "switch", "finish", "status"];

function dataDirOf(cmd: Command): string {
  return path.resolve(resolveCommandConfig(cmd).config.dataDir);
}

function withDataDir(cmd: Command): Command {
  return configOption(
    cmd.option("-d, --data-dir <dir>", "the node's data dir (default: as `unibus up` resolves it)"),
  ).option("--json", "print the result as JSON");
}

export function caCommand(program: Command): void {
  const ca = program
    .command("ca")
    .description("rotate the bus CA while the cluster runs: rotate, switch, finish (each then a rolling restart)");
  const run: Record<Step, (tlsDir: string) => Promise<CaRotationStep & { next?: string }>> = {
    rotate: (d) => rotateCa(d),
    switch: (d) => switchCa(d),
    finish: (d) => finishCa(d),
    status: (d) => caRotationStatus(d),
  };
  for (const step of STEPS) {
    withDataDir(ca.command(step).description(CA_HELP[step])).action(async (opts: { json?: boolean }, cmd: Command) => {
      const tlsDir = busLayout(dataDirOf(cmd), "").tlsDir;
      const result = await run[step](tlsDir);
      if (opts.json) return printJson(result);
      process.stdout.write(caText(step, result));
    });
  }
}

function caText(step: Step, r: CaRotationStep & { next?: string }): string {
  const lines = [`CA rotation: ${r.phase}`, `  signing CA:      sha256 ${r.signing}`];
  if (r.other) lines.push(`  also trusted:    sha256 ${r.other}`);
  lines.push(`  clients trust:   ${r.clientCaFile}`);
  if (r.copy.length) lines.push(`  copy to every other node's tls/ (mode 0600 for the key): ${r.copy.join(" ")}`);
  const then: Record<Step, string> = {
    rotate: "next: a rolling restart, then hand clients the bundle above; `unibus ca switch` once every client has it",
    switch:
      "next: the same on every node, then a rolling restart (each node comes back with a certificate from the new CA)",
    finish: "next: the same on every node, then a rolling restart; the old CA is no longer trusted after it",
    status: `next: ${r.next ?? ""}`,
  };
  lines.push(then[step], "");
  return lines.join("\n");
}

export function serviceKeysCommand(program: Command): void {
  const keys = program
    .command("service-keys")
    .description(
      "rotate the bus' own keys (callout issuer, service users) while the cluster runs: rotate, switch, finish",
    );
  const run: Record<Step, (dataDir: string) => Promise<ServiceKeysStep>> = {
    rotate: rotateServiceKeys,
    switch: switchServiceKeys,
    finish: finishServiceKeys,
    status: serviceKeysStatus,
  };
  for (const step of STEPS) {
    withDataDir(keys.command(step).description(KEYS_HELP[step])).action(
      async (opts: { json?: boolean }, cmd: Command) => {
        const dataDir = dataDirOf(cmd);
        const result = await run[step](dataDir);
        if (opts.json) return printJson(result);
        const lines = [`service-key rotation: ${result.phase}`, `  callout issuer:  ${result.issuer}`];
        if (result.otherIssuer) lines.push(`  also accepted:   ${result.otherIssuer}`);
        const copy = `copy ${path.join(dataDir, SERVICE_KEYS_FILE)} (mode 0600) to every other node, then a rolling restart`;
        const then: Record<Step, string> = {
          rotate: `next: ${copy}; then \`unibus service-keys switch\``,
          switch: `next: ${copy}; then \`unibus service-keys finish\``,
          finish: `next: ${copy}; the old keys are refused after it`,
          status: `next: ${result.next}`,
        };
        lines.push(then[step]);
        lines.push("");
        process.stdout.write(lines.join("\n"));
      },
    );
  }
}
