/**
 * The data dir's disk as a health part. Full means less than MIN_FREE_BYTES free, or
 * nats-server reported a failed write (its stream stores stay broken after space comes
 * back: seen with nats-server 2.15, "no space left on device" on every later write).
 * Once a fault was seen, the watch polls the free space and, when there is room again,
 * asks its owner to heal (the bus restarts nats-server, which reopens its stores).
 */
import fs from "node:fs/promises";
import type { Logger } from "../log/index.ts";

/** Below this much free space the disk counts as full. */
export const MIN_FREE_BYTES = 1024 * 1024;
/** How often a faulted watch looks for freed space. */
export const FREED_POLL_MS = 1000;

export interface StorageWatchOptions {
  dir: string;
  logger: Logger;
  /** Called once space is back after a fault; the fault clears when it resolves. */
  heal: () => Promise<void>;
  minFreeBytes?: number;
  pollMs?: number;
}

export class StorageWatch {
  readonly #opts: StorageWatchOptions;
  #fault: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #healing = false;

  constructor(opts: StorageWatchOptions) {
    this.#opts = opts;
  }

  /** Bytes free for us on the data dir's filesystem; undefined when it cannot be read. */
  async freeBytes(): Promise<number | undefined> {
    try {
      const s = await fs.statfs(this.#opts.dir);
      return s.bavail * s.bsize;
    } catch {
      return undefined;
    }
  }

  /** True while there is room and no unhealed write failure. */
  async ok(): Promise<boolean> {
    if (this.#fault !== undefined) return false;
    const free = await this.freeBytes();
    return free === undefined || free >= (this.#opts.minFreeBytes ?? MIN_FREE_BYTES);
  }

  /** A write failed for lack of space: unhealthy until space is back and the heal ran. */
  fault(line: string): void {
    if (this.#fault === undefined) {
      this.#opts.logger.error({ component: "bus", line }, "the data dir's disk is full; waiting for free space");
    }
    this.#fault = line;
    this.#timer ??= setInterval(() => void this.#tryHeal(), this.#opts.pollMs ?? FREED_POLL_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #tryHeal(): Promise<void> {
    if (this.#healing) return;
    const free = await this.freeBytes();
    if (free === undefined || free < (this.#opts.minFreeBytes ?? MIN_FREE_BYTES)) return;
    this.#healing = true;
    try {
      await this.#opts.heal();
      this.#fault = undefined;
      this.stop();
      this.#opts.logger.warn({ component: "bus", free }, "disk space is back; nats-server reopened its stores");
    } catch (err) {
      this.#opts.logger.error({ component: "bus", err: (err as Error).message }, "recovering from a full disk failed");
    } finally {
      this.#healing = false;
    }
  }
}
