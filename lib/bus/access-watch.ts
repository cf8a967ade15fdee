import type { ConnectionRegistry } from "../auth/index.ts";
import type { Logger } from "../log/index.ts";
import type { Store, UserWatch } from "../store/index.ts";

/**
 * Live revocation for allowlist edits that bypass the control plane (the host-trusted
 * CLI writes the store directly; another node's control plane writes its own): the
 * store's users watch names who changed, and only those of them connected here are
 * looked up again — no read per identity on a timer.
 */
export interface AccessWatchOptions {
  connections: ConnectionRegistry;
  /** Kicks every connection of an identity (on every node). */
  kick: (signPub: string, reason: string) => Promise<unknown>;
  logger: Logger;
}

/**
 * A connect admitted just before a change may register its connection only after the
 * first check ran: each change is checked again once the callout's answer window (the
 * server's auth timeout, a few seconds) has surely passed.
 */
export const RECHECK_MS = 3000;

/** How often the bus removes invites that can no longer be consumed, and how long it keeps them. */
export const INVITE_SWEEP_EVERY_MS = 10 * 60_000;
export const INVITE_KEEP_MS = 24 * 3600_000;

export class AccessWatch {
  readonly #opts: AccessWatchOptions;
  #store?: Store;
  #watch?: UserWatch;
  readonly #timers = new Set<NodeJS.Timeout>();
  #inviteSweep?: NodeJS.Timeout;

  constructor(opts: AccessWatchOptions) {
    this.#opts = opts;
  }

  /** Starts watching `store` (once it is open), and sweeping its spent and expired invites. */
  start(store: Store): void {
    this.stop();
    this.#store = store;
    this.#watch = store.watchUsers((signPub) => this.#changed(signPub));
    this.#inviteSweep = setInterval(() => void this.#sweepInvites(), INVITE_SWEEP_EVERY_MS);
    this.#inviteSweep.unref();
  }

  stop(): void {
    this.#watch?.stop();
    this.#watch = undefined;
    this.#store = undefined;
    clearInterval(this.#inviteSweep);
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  #changed(signPub: string | null): void {
    const who = () => (signPub === null ? this.#opts.connections.identities() : [signPub]);
    void this.#check(who());
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      void this.#check(who());
    }, RECHECK_MS);
    timer.unref();
    this.#timers.add(timer);
  }

  /** Kicks each of `keys` connected here that is no longer authorized. */
  async #check(keys: string[]): Promise<void> {
    const store = this.#store;
    for (const k of keys) {
      if (store === undefined || this.#store !== store) return;
      if (this.#opts.connections.count(k) === 0) continue;
      let ok: boolean;
      try {
        ok = await store.isAuthorized(k);
      } catch {
        return; // store trouble: new connections are denied by the callout; do not storm live ones
      }
      if (!ok) await this.#opts.kick(k, "no longer authorized").catch(() => {});
    }
  }

  async #sweepInvites(): Promise<void> {
    try {
      const n = await this.#store?.sweepInvites(Date.now() - INVITE_KEEP_MS);
      if (n) this.#opts.logger.info({ component: "store", invites: n }, "removed spent and expired invites");
    } catch (err) {
      this.#opts.logger.warn({ component: "store", err: (err as Error).message }, "the invite sweep failed");
    }
  }
}
