/**
 * Replay protection: every (key, nonce) pair is remembered for a TTL; a second
 * sighting inside it is a replay. The in-memory cache below serves one node; a
 * cluster backs `NonceStore` with a replicated store instead, so a nonce seen by one
 * node is a replay on every node — hence the async interface.
 */
import { type Logger, silentLogger } from "../log/index.ts";

export type NonceVerdict = "fresh" | "replayed" | "full";

export interface NonceStore {
  /**
   * Remembers `key` for at least `ttlMs` and says whether it was already remembered.
   * "full" means the store refuses to remember more right now: the request must be
   * refused (never admitted unremembered). Throwing is also a refusal (fail closed).
   */
  checkAndRemember(key: string, ttlMs: number): Promise<NonceVerdict>;
}

/** The key a nonce is remembered under: nonces are scoped to the signing key. */
export function nonceKey(signPub: string, nonce: string): string {
  return `${signPub}:${nonce}`;
}

export interface NonceCacheOptions {
  /** Default TTL when the caller gives none. */
  ttlMs?: number;
  /** At most this many remembered nonces; beyond it new ones are refused ("full"). */
  max?: number;
  /** Wall clock in ms — the same clock the timestamp skew check uses. */
  now?: () => number;
  logger?: Logger;
}

/**
 * In-memory NonceStore. Entries share one TTL, so they expire in insertion order:
 * a FIFO queue is pruned from its head while the head has expired — O(expired) per
 * call, never a scan of everything. (A Map's own insertion order is not used for
 * this: V8 leaves deleted entries as holes that every new iterator walks from the
 * head, which makes "pop the oldest" O(n) between rehashes.)
 */
export class NonceCache implements NonceStore {
  readonly ttlMs: number;
  readonly max: number;
  readonly #now: () => number;
  readonly #logger: Logger;
  /** key → expiry (ms); an entry is live while now <= expiry. */
  readonly #live = new Map<string, number>();
  #queueKeys: string[] = [];
  #queueExpiry: number[] = [];
  #head = 0;
  #fullLogged = false;

  constructor(opts: NonceCacheOptions = {}) {
    const ttlMs = opts.ttlMs ?? 60_000;
    const max = opts.max ?? 100_000;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError("NonceCache: ttlMs must be a positive number");
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError("NonceCache: max must be a positive integer");
    this.ttlMs = ttlMs;
    this.max = max;
    this.#now = opts.now ?? Date.now;
    this.#logger = opts.logger ?? silentLogger;
  }

  /** Number of remembered nonces (after the last prune). */
  get size(): number {
    return this.#live.size;
  }

  async checkAndRemember(key: string, ttlMs: number = this.ttlMs): Promise<NonceVerdict> {
    return this.check(key, ttlMs);
  }

  /** The synchronous form of `checkAndRemember`. */
  check(key: string, ttlMs: number = this.ttlMs): NonceVerdict {
    const now = this.#now();
    this.#prune(now);
    const expiry = this.#live.get(key);
    if (expiry !== undefined) {
      if (now <= expiry) return "replayed";
      // Only reachable with mixed TTLs, where an older, longer-lived head blocks pruning.
      this.#live.delete(key);
    }
    if (this.#live.size >= this.max) {
      if (!this.#fullLogged) {
        this.#fullLogged = true;
        this.#logger.error(
          { component: "control-auth", max: this.max, ttlMs: this.ttlMs },
          "nonce cache is full: refusing signed requests until entries expire (many distinct requests from authorized keys)",
        );
      }
      return "full";
    }
    this.#fullLogged = false;
    this.#live.set(key, now + ttlMs);
    this.#queueKeys.push(key);
    this.#queueExpiry.push(now + ttlMs);
    return "fresh";
  }

  #prune(now: number): void {
    const keys = this.#queueKeys;
    const expiry = this.#queueExpiry;
    let head = this.#head;
    while (head < keys.length && expiry[head]! < now) {
      const key = keys[head]!;
      // The key may have been re-remembered later (mixed TTLs): only drop this sighting.
      if (this.#live.get(key) === expiry[head]) this.#live.delete(key);
      head++;
    }
    if (head === keys.length) {
      this.#queueKeys = [];
      this.#queueExpiry = [];
      head = 0;
    } else if (head >= 1024 && head * 2 >= keys.length) {
      // Amortised O(1): the copy is paid for by the `head` entries already popped.
      this.#queueKeys = keys.slice(head);
      this.#queueExpiry = expiry.slice(head);
      head = 0;
    }
    this.#head = head;
  }
}
