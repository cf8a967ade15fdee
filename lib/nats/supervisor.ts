import { InvalidArgumentError } from "../errors.ts";

/**
 * Restarting a nats-server that dies on its own: exponential backoff, reset by a healthy run, and
 * a budget of restarts per time window so a server that cannot stay up ends in `failed` instead
 * of flapping forever.
 */
export interface NatsSuperviseOptions {
  /** Delay before the first restart after a healthy run; doubles with each further failure. Default 100. */
  initialDelayMs?: number;
  /** Ceiling of the delay. Default 3000. */
  maxDelayMs?: number;
  /** Unexpected ends allowed within `windowMs`; one more and supervision gives up. Default 5. */
  maxRestarts?: number;
  /** Default 60000. */
  windowMs?: number;
  /** A server that ran this long before it died counts as healthy: the delay starts over. Default 10000. */
  healthyAfterMs?: number;
}

export type ResolvedSuperviseOptions = Required<NatsSuperviseOptions>;

/** How a server ended when nobody asked it to (a crash, or a supervised restart that never got ready). */
export interface NatsExitRecord {
  code: number | null;
  signal: NodeJS.Signals | null;
  at: Date;
  /** The server's last lines before it ended. */
  log: readonly string[];
  /** Why a supervised restart did not become ready (then `code`/`signal` are that attempt's, if it ran). */
  startError?: Error;
}

const DEFAULTS: ResolvedSuperviseOptions = {
  initialDelayMs: 100,
  maxDelayMs: 3000,
  maxRestarts: 5,
  windowMs: 60_000,
  healthyAfterMs: 10_000,
};

/** `true` means the defaults; `false`/undefined means no supervision. Throws InvalidArgumentError. */
export function resolveSupervise(
  opt: NatsSuperviseOptions | boolean | undefined,
): ResolvedSuperviseOptions | undefined {
  if (opt === undefined || opt === false) return undefined;
  if (opt === true) return { ...DEFAULTS };
  if (typeof opt !== "object" || opt === null) {
    throw new InvalidArgumentError("supervise", "supervise: must be true, false or an options object");
  }
  const resolved = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS) as (keyof ResolvedSuperviseOptions)[]) {
    const v = opt[key];
    if (v === undefined) continue;
    const min = key === "maxRestarts" || key === "healthyAfterMs" ? 0 : 1;
    if (!Number.isSafeInteger(v) || v < min) {
      const what = min === 0 ? "a non-negative integer" : "a positive integer";
      throw new InvalidArgumentError(`supervise.${key}`, `supervise.${key}: must be ${what}; got ${JSON.stringify(v)}`);
    }
    resolved[key] = v;
  }
  if (resolved.maxDelayMs < resolved.initialDelayMs) {
    throw new InvalidArgumentError(
      "supervise.maxDelayMs",
      `supervise.maxDelayMs (${resolved.maxDelayMs}) must not be below initialDelayMs (${resolved.initialDelayMs})`,
    );
  }
  return resolved;
}

/** Backoff and budget bookkeeping, and the one pending restart timer. */
export class RestartPolicy {
  readonly options: ResolvedSuperviseOptions;
  /** performance.now() of each unexpected end still inside the window. */
  #failures: number[] = [];
  /** Failures since the last healthy run; sets the delay. */
  #streak = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: ResolvedSuperviseOptions) {
    this.options = options;
  }

  /** Unexpected ends counted in the current window. */
  get failuresInWindow(): number {
    return this.#failures.length;
  }

  /**
   * Counts one unexpected end. `ranMs` is how long the server had been running (undefined when a
   * restart never got ready). Returns the next attempt's number and delay, or undefined when the
   * budget is spent.
   */
  next(ranMs: number | undefined): { attempt: number; delayMs: number } | undefined {
    const now = performance.now();
    const { windowMs, maxRestarts, healthyAfterMs, initialDelayMs, maxDelayMs } = this.options;
    this.#failures = this.#failures.filter((t) => now - t < windowMs);
    this.#failures.push(now);
    if (this.#failures.length > maxRestarts) return undefined;
    if (ranMs !== undefined && ranMs >= healthyAfterMs) this.#streak = 0;
    this.#streak++;
    const delayMs = Math.min(initialDelayMs * 2 ** (this.#streak - 1), maxDelayMs);
    return { attempt: this.#streak, delayMs };
  }

  /**
   * Runs `fn` after `delayMs`. The timer is deliberately not unref'd: while a supervised server is
   * between lives it stands in for the child process, which keeps the event loop alive too; stop()
   * clears it.
   */
  schedule(delayMs: number, fn: () => void): void {
    this.cancel();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      fn();
    }, delayMs);
  }

  cancel(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** A start by the owner begins with a fresh budget and the shortest delay. */
  reset(): void {
    this.cancel();
    this.#failures = [];
    this.#streak = 0;
  }
}
