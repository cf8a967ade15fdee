// Running installed packages and their processes from the outside, as a user or a
// process manager would. Shared by the pack-and-install test and the launcher test.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import type { Test } from "tap";
import { isProcessAlive } from "../../lib/nats/process.ts";
import type { UpReady } from "../helpers/cli.ts";

export const REPO = path.resolve(import.meta.dirname, "../..");
/** The repository's pinned Node 24. */
export const REPO_NODE = path.join(REPO, "node_modules", ".bin", "node");

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to its end; never rejects, so a test can show the output of a failure.
 * stdin is /dev/null, as under CI or a process manager (and unlike execFile's open pipe,
 * which a runner such as `node --test` may wait on).
 */
export function run(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", (e) => resolve({ code: null, stdout: "", stderr: e.message }));
    child.on("close", (code) =>
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
  });
}

/**
 * This environment's PATH without the repository's node_modules/.bin, so a fresh
 * project never picks up the repository's Node, tsc or packages by accident.
 */
export function pathOutsideRepo(): string {
  return (process.env.PATH ?? "")
    .split(path.delimiter)
    .filter((dir) => dir && !path.resolve(dir).startsWith(REPO + path.sep))
    .join(path.delimiter);
}

/** Every live process below `pid` (children, grandchildren…), read from /proc. */
export function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      // The command name may hold spaces and parentheses: fields resume after the last ")".
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parentOf.set(Number(entry), ppid);
    } catch {
      // gone between readdir and read
    }
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const [child, ppid] of parentOf) {
      if (ppid === parent && !found.includes(child)) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found.filter(isProcessAlive);
}

/** The executable a live process runs (Linux). */
export function executableOf(pid: number): string {
  return fs.realpathSync(`/proc/${pid}/exe`);
}

/**
 * Starts `cmd args` (expected to be some form of `unibus up --json`) and resolves with
 * its ready line. Teardown kills it and everything below it if a test left them running.
 */
export async function startUp(t: Test, cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }) {
  const child = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
  const pid = child.pid!;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  t.teardown(() => {
    for (const p of [pid, ...descendants(pid)]) {
      try {
        process.kill(p, "SIGKILL");
      } catch {
        // already gone: the expected case
      }
    }
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const rl = createInterface({ input: child.stdout });
  const ready = await new Promise<UpReady>((resolve, reject) => {
    rl.once("line", (l) => resolve(JSON.parse(l)));
    void exited.then((e) =>
      reject(new Error(`up exited (${e.code ?? e.signal}) before ready: ${stderr.slice(-2000)}`)),
    );
  });
  return { child, pid, ready, exited, stderr: () => stderr };
}
