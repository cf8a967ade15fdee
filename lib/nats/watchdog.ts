import { type ChildProcess, spawn } from "node:child_process";
import type { Logger } from "../log/index.ts";

/**
 * Guarantees that no nats-server outlives a Node process that dies hard (SIGKILL, OOM kill,
 * crash): signal handlers never run then, but the kernel still closes every fd the process held.
 *
 * Each server gets a tiny `/bin/sh` (no second Node process) in its own session whose stdin is a
 * pipe from us that we never write to. When we die the pipe's write end closes, `read` returns
 * at EOF, and the shell sends SIGTERM to the server, then SIGKILL after a grace period. libuv
 * opens its pipes close-on-exec, so no other child inherits the write end and keeps it open.
 *
 * PR_SET_PDEATHSIG (e.g. `setpriv --pdeathsig`) would need no extra process, but it is Linux-only,
 * fires when the spawning *thread* exits (a worker thread would kill the server), and setpriv is
 * not everywhere; the pipe works on every POSIX system.
 *
 * After our death the server's stdout/stderr pipes are broken too, so it may die of SIGPIPE on
 * its first log line instead of finishing a graceful shutdown; either way nothing survives.
 */
const SCRIPT = [
  // A zombie still answers kill -0; on Linux read its state so an unreaped corpse ends the wait.
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'alive() { kill -0 "$1" 2>/dev/null || return 1; [ -r "/proc/$1/stat" ] || return 0; read -r s < "/proc/$1/stat" || return 1; case "${s##*") "}" in Z*|X*) return 1;; esac; return 0; }',
  "read -r _ || :",
  'kill -TERM "$1" 2>/dev/null || exit 0',
  "n=0",
  'while [ "$n" -lt "$2" ] && alive "$1"; do sleep 0.1; n=$((n+1)); done',
  'kill -KILL "$1" 2>/dev/null',
  "exit 0",
].join("\n");

/** argv[0] of the shell, so a leftover watchdog is recognisable in `ps`. */
export const WATCHDOG_NAME = "unibus-nats-watchdog";

export interface Watchdog {
  /** Pid of the watchdog shell (undefined if it could not be started). */
  readonly pid: number | undefined;
  /**
   * Stops the watchdog and waits for it to be gone. Call before the server exits on purpose, so
   * the watchdog can never signal a pid the kernel has handed to someone else. Idempotent.
   */
  disarm(): Promise<void>;
}

/** Arms a watchdog for `targetPid`: SIGTERM when this process dies, SIGKILL `graceMs` later. */
export function armWatchdog(targetPid: number, opts: { graceMs?: number; logger?: Logger } = {}): Watchdog {
  const ticks = Math.max(1, Math.ceil((opts.graceMs ?? 5000) / 100));
  return armGuard(SCRIPT, [WATCHDOG_NAME, String(targetPid), String(ticks)], opts.logger, "nats-server");
}

/**
 * Removes `dir` when this process dies hard, `delayMs` later (time for the servers'
 * own watchdogs to end them first). For temp dirs we created: `stop()` removes them,
 * but a process that is killed never reaches it. Disarm before removing it yourself.
 */
export function armDirRemoval(dir: string, opts: { delayMs?: number; logger?: Logger } = {}): Watchdog {
  const seconds = Math.max(0, Math.ceil((opts.delayMs ?? 6000) / 1000));
  return armGuard(DIR_SCRIPT, [DIR_GUARD_NAME, dir, String(seconds)], opts.logger, "temp dir");
}

/** argv[0] of a temp dir's guard, recognisable in `ps`. */
export const DIR_GUARD_NAME = "unibus-tempdir-guard";

const DIR_SCRIPT = ["read -r _ || :", 'sleep "$2"', 'rm -rf -- "$1"', "exit 0"].join("\n");

/**
 * A `/bin/sh` in its own session whose stdin is a pipe from us that we never write to:
 * when we die, `read` returns at EOF and the script runs (see the top of this file).
 */
function armGuard(script: string, args: string[], logger: Logger | undefined, what: string): Watchdog {
  let child: ChildProcess;
  try {
    child = spawn("/bin/sh", ["-c", script, ...args], { detached: true, stdio: ["pipe", "ignore", "ignore"] });
  } catch (err) {
    logger?.warn({ err }, `could not start the ${what} watchdog; a hard crash of this process may leave it behind`);
    return { pid: undefined, disarm: async () => {} };
  }
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.once("error", (err) => {
      logger?.warn({ err }, `the ${what} watchdog failed; a hard crash of this process may leave it behind`);
      resolve();
    });
  });
  // The watchdog must never keep the event loop alive by itself.
  child.stdin?.on("error", () => {});
  (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  child.unref();
  let disarmed: Promise<void> | undefined;
  return {
    get pid() {
      return child.pid;
    },
    disarm() {
      disarmed ??= (async () => {
        // Node refuses to signal a child it has already reaped, so this cannot hit a reused pid.
        if (child.exitCode === null && child.signalCode === null) {
          child.ref(); // or the event loop may end while we wait for it
          child.kill("SIGKILL");
        }
        await exited;
        child.stdin?.destroy();
      })();
      return disarmed;
    },
  };
}
