import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import type { Test } from "tap";
import { NATS_SERVER } from "./nats.ts";

export const UNIBUS_BIN = path.resolve("bin/unibus.js");

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `unibus` command as a child process. */
export function runCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [UNIBUS_BIN, ...args], {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/** `unibus up` flags for random NATS, control-plane and monitoring ports. */
export const RANDOM_PORTS = ["--nats-port", "-1", "--control-port", "0", "--monitor-port", "-1", "--ws-port", "-1"];

/** The line `unibus up --json` prints when ready. */
export interface UpReady {
  event: string;
  natsUrls: string[];
  controlUrls: string[];
  caFile: string;
  dataDir: string;
  store: "sqlite" | "kv";
}

/**
 * Starts the real `unibus up --json …` and resolves with its ready line; killed
 * (SIGKILL) at teardown if still running. `exited` resolves with the exit code.
 */
export async function upJson(t: Test, args: string[]) {
  const child = spawn(process.execPath, [UNIBUS_BIN, "up", "--json", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, UNIBUS_NATS_SERVER: NATS_SERVER },
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  // Stopped the way a user stops it (SIGTERM, so it stops its nats-servers), killed if it hangs.
  t.teardown(async () => {
    if (child.exitCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const lines: string[] = [];
  const rl = createInterface({ input: child.stdout });
  rl.on("line", (l) => lines.push(l));
  const ready = await new Promise<UpReady>((resolve, reject) => {
    rl.once("line", (l) => resolve(JSON.parse(l)));
    void exited.then((code) => reject(new Error(`up exited (${code}) before ready: ${stderr.slice(-2000)}`)));
  });
  return { child, ready, lines, exited, stderr: () => stderr };
}

/** `unibus up --json` on `dataDir` with random ports (plus `extra` flags): see upJson. */
export function upOn(t: Test, dataDir: string, extra: string[] = []) {
  return upJson(t, ["--data-dir", dataDir, ...RANDOM_PORTS, ...extra]);
}

/** A refusal as the CLI must give it: non-zero exit, one `unibus: …` line on stderr saying what, nothing on stdout. */
export function oneLineError(t: Test, r: CliResult, pattern: RegExp, what: string): void {
  t.not(r.code, 0, `${what}: non-zero exit`);
  const lines = r.stderr.trim().split("\n");
  t.equal(lines.length, 1, `${what}: exactly one line (${r.stderr.trim()})`);
  t.match(lines[0], /^unibus: /, `${what}: prefixed`);
  t.match(lines[0], pattern, `${what}: says what went wrong`);
  t.equal(r.stdout, "", `${what}: nothing on stdout`);
}
