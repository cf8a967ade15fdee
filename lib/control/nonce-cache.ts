/**
 * Replay protection: every (key, nonce) pair is remembered for a TTL; a second
 * sighting inside it is a replay. The in-memory cache below serves one node; a
 * cluster backs `NonceStore` with a replicated store instead, so a nonce seen by one
 * node is a replay on every node — hence the async interface.
 */
import { type Logger, silentLogger } from "../log/index.ts";

/**
 * "quota": the owner (signing key) already has its share of remembered nonces; the
 * request is refused (429) while every other owner is still served.
 */
export type NonceVerdict = "fresh" | "replayed" | "full" | "quota";

export interface NonceStore {
  /**
   * Remembers `key` for at least `ttlMs` and says whether it was already remembered.
   * "full" means the store refuses to remember more right now: the request must be
   * refused (never admitted unremembered). Throwing is also a refusal (fail closed).
   * `owner` (the signing key) is whose share of the store the nonce counts against.
   */
  checkAndRemember(key: string, ttlMs: number, owner?: string): Promise<NonceVerdict>;
}

/** Default share of one owner: far above what the default per-identity rate limit admits within a TTL. */
export const DEFAULT_NONCES_PER_OWNER = 5_000;

/**
 * How many nonces each owner has remembered and not yet expired, so one key's flood
 * uses up its own share rather than the store. Entries share one TTL per owner stream
 * in practice, so they expire in insertion order: a FIFO pruned from its head.
 */
export class OwnerQuota {
  readonly maxPerOwner: number;
  readonly #counts = new Map<string, number>();
  #owners: string[] = [];
  #expiry: number[] = [];
  #head = 0;

  constructor(maxPerOwner: number) {
    if (!Number.isSafeInteger(maxPerOwner) || maxPerOwner < 1) {
      throw new RangeError("maxPerOwner must be a positive integer");
    }
    this.maxPerOwner = maxPerOwner;
  }

  /** Nonces `owner` holds now (after the last prune). */
  heldBy(owner: string): number {
    return this.#counts.get(owner) ?? 0;
  }

  /** Whether `owner` may remember one more at `now`. */
  hasRoom(owner: string, now: number): boolean {
    this.#prune(now);
    return this.heldBy(owner) < this.maxPerOwner;
  }

  /** Counts one nonce of `owner` until `expiry`. */
  add(owner: string, expiry: number): void {
    this.#counts.set(owner, this.heldBy(owner) + 1);
    this.#owners.push(owner);
    this.#expiry.push(expiry);
  }

  #prune(now: number): void {
    let head = this.#head;
    while (head < this.#owners.length && this.#expiry[head]! < now) {
      const owner = this.#owners[head]!;
      const left = this.heldBy(owner) - 1;
      if (left > 0) this.#counts.set(owner, left);
      else this.#counts.delete(owner);
      head++;
    }
    if (head === this.#owners.length) {
      this.#owners = [];
      this.#expiry = [];
      head = 0;
    } else if (head >= 1024 && head * 2 >= this.#owners.length) {
      this.#owners = this.#owners.slice(head);
      this.#expiry = this.#expiry.slice(head);
      head = 0;
    }
    this.#head = head;
  }
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
  /** At most this many per owner (signing key); beyond it that owner's new ones are refused ("quota"). Default 5000. */
  maxPerOwner?: number;
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
  readonly #quota: OwnerQuota;

  constructor(opts: NonceCacheOptions = {}) {
    const ttlMs = opts.ttlMs ?? 60_000;
    const max = opts.max ?? 100_000;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError("NonceCache: ttlMs must be a positive number");
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError("NonceCache: max must be a positive integer");
    this.ttlMs = ttlMs;
    this.max = max;
    this.#now = opts.now ?? Date.now;
    this.#logger = opts.logger ?? silentLogger;
    this.#quota = new OwnerQuota(opts.maxPerOwner ?? Math.min(DEFAULT_NONCES_PER_OWNER, max));
  }

  /** Number of remembered nonces (after the last prune). */
  get size(): number {
    return this.#live.size;
  }

  async checkAndRemember(key: string, ttlMs: number = this.ttlMs, owner?: string): Promise<NonceVerdict> {
    return this.check(key, ttlMs, owner);
  }

  /** Nonces `owner` holds now. */
  heldBy(owner: string): number {
    return this.#quota.heldBy(owner);
  }

  /** The synchronous form of `checkAndRemember`. */
  check(key: string, ttlMs: number = this.ttlMs, owner?: string): NonceVerdict {
    const now = this.#now();
    this.#prune(now);
    const expiry = this.#live.get(key);
    if (expiry !== undefined) {
      if (now <= expiry) return "replayed";
      // Only reachable with mixed TTLs, where an older, longer-lived head blocks pruning.
      this.#live.delete(key);
    }
    if (owner !== undefined && !this.#quota.hasRoom(owner, now)) return "quota";
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
    if (owner !== undefined) this.#quota.add(owner, now + ttlMs);
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
