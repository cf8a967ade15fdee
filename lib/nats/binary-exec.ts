import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../log/index.ts";
import { parseNatsVersion } from "./binary-version.ts";

/** One step of fetching a binary, as told to `onProgress`. */
export interface NatsInstallProgress {
  /** "download", "verify", "extract", "apt-get update", "apt-get download", "install". */
  phase: string;
  message: string;
  /** Bytes received so far (download phase). */
  received?: number;
  /** Bytes expected, when the server said (download phase). */
  total?: number;
}

export type ProgressFn = (event: NatsInstallProgress) => void;

/** What the network sources need from the resolver. */
export interface FetchContext {
  cacheRoot: string;
  env: NodeJS.ProcessEnv;
  logger: Logger;
  progress: ProgressFn;
  /**
   * Whether the version a fetched binary reports may go into the cache: `undefined` if so,
   * else why not, as a phrase after "nats-server <version>" (too old, an advisory, not the
   * requested release). A refused binary is never installed.
   */
  refuse: (version: string) => string | undefined;
}

/**
 * A source could not deliver (unreachable, missing tool, bad package). The resolver
 * records `reason` and moves on to the next source; it never reaches the caller.
 */
export class SourceUnavailable extends Error {
  readonly reason: string;
  constructor(reason: string, options?: ErrorOptions) {
    super(reason, options);
    this.name = "SourceUnavailable";
    this.reason = reason;
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Output beyond this is dropped: apt and tar are chatty, and we only show the tail. */
const MAX_CAPTURE = 64 * 1024;

/** Runs a command to completion; rejects only when it cannot be started. */
export function run(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ["ignore", "pipe", "pipe"],
      timeout: options.timeoutMs ?? 60_000,
      killSignal: "SIGKILL",
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      if (stdout.length < MAX_CAPTURE) stdout += s;
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      if (stderr.length < MAX_CAPTURE) stderr += s;
    });
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The last non-empty line of a tool's output, for one-line reasons. */
export function lastLine(text: string): string {
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.at(-1) ?? "";
}

/** Every executable named `name` on the PATH of `env`, in PATH order. */
export async function findAllOnPath(name: string, env: NodeJS.ProcessEnv): Promise<string[]> {
  const found: string[] = [];
  const seen = new Set<string>();
  for (const dir of (env.PATH ?? "").split(path.delimiter)) {
    if (!dir || seen.has(dir)) continue;
    seen.add(dir);
    const candidate = path.resolve(dir, name);
    if (await isExecutableFile(candidate)) found.push(candidate);
  }
  return found;
}

export async function findOnPath(name: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  return (await findAllOnPath(name, env))[0];
}

export async function isExecutableFile(file: string): Promise<boolean> {
  try {
    const st = await stat(file);
    if (!st.isFile()) return false;
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export type Probe = { ok: true; version: string } | { ok: false; reason: string };

/** Runs `<file> --version` and reads the version; never throws. */
export async function probeNatsServer(file: string, env: NodeJS.ProcessEnv, logger?: Logger): Promise<Probe> {
  let result: RunResult;
  try {
    result = await run(file, ["--version"], { env, timeoutMs: 15_000 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, reason: `could not be run (${code ?? (err as Error).message})` };
  }
  const output = `${result.stdout}\n${result.stderr}`;
  logger?.debug({ file, code: result.code, signal: result.signal, output: output.trim() }, "nats-server --version");
  if (result.code !== 0) {
    const why = result.signal ? `killed by ${result.signal}` : `exit code ${result.code}`;
    const tail = lastLine(output);
    return { ok: false, reason: `\`--version\` failed (${why}${tail ? `: ${tail}` : ""})` };
  }
  const version = parseNatsVersion(output);
  if (!version) return { ok: false, reason: `\`--version\` printed no version (${lastLine(output) || "nothing"})` };
  // Any program prints a version (`node --version`: v24…): only nats-server names itself.
  if (!/nats-server/i.test(output)) {
    return { ok: false, reason: `is not nats-server (\`--version\` printed ${lastLine(output)})` };
  }
  return { ok: true, version };
}

/**
 * Turns the stream of progress events into the lines worth showing a person: every
 * phase, and a download in 10 % steps (a fetch on a slow link sends thousands of
 * chunks). Returns undefined for an event that adds nothing to the last line.
 */
export function progressLines(): (event: NatsInstallProgress) => string | undefined {
  let lastDecile = -1;
  return (e) => {
    if (e.phase === "download" && e.received !== undefined) {
      if (!e.total) return undefined;
      const decile = Math.floor((e.received / e.total) * 10);
      if (decile === lastDecile) return undefined;
      lastDecile = decile;
      return `downloaded ${decile * 10}% of ${(e.total / 1048576).toFixed(1)} MiB`;
    }
    lastDecile = -1;
    return e.message;
  };
}

/**
 * Calls a progress callback without letting a faulty one break the install, and logs
 * the steps at info: a first `startUnibus()` on a machine without nats-server fetches
 * it for several seconds, and a test or CI log should say what it is waiting for.
 */
export function safeProgress(fn: ProgressFn | undefined, logger: Logger): ProgressFn {
  const line = progressLines();
  return (event) => {
    const shown = line(event);
    if (shown)
      logger.info({ phase: event.phase, received: event.received, total: event.total }, `nats-server: ${shown}`);
    if (!fn) return;
    try {
      fn(event);
    } catch (err) {
      logger.warn({ err }, "onProgress callback threw; ignored");
    }
  };
}
