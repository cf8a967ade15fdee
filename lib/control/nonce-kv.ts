/**
 * A replicated NonceStore over one JetStream KV bucket (`<prefix>nonces`), so that a
 * nonce seen by one node of a cluster is a replay on every node.
 *
 * Why `kv.create` is the right primitive: a create is a publish to `$KV.<bucket>.<key>`
 * with `Nats-Expected-Last-Subject-Sequence: 0`. The stream has a single leader that
 * applies every publish in order through Raft, and it checks that expectation against
 * the stream state at the moment it applies the message; so of N concurrent creates of
 * one key (from any number of nodes) exactly one lands and every other one gets
 * "wrong last sequence" (10071). "Remember and tell whether it was already remembered"
 * is thus ONE atomic step — a get-then-put would let two nodes both see "absent" and
 * both admit the same request. A create acknowledged by the leader is stored on a
 * quorum of replicas, so a leader change does not forget it.
 *
 * Expiry is the bucket's max_age: JetStream removes an entry that old, after which the
 * subject has no last message and a create succeeds again (nats.js' `create` falls back
 * to a compare-and-swap on the marker's revision when the key was deleted or purged
 * instead, which is just as atomic). A nonce must be kept for at least the TTL the
 * caller asks for, otherwise it could be replayed after it expired early, so a TTL
 * longer than the bucket's max_age is refused with `NonceTtlError`. The max_age is
 * fixed at open time: a new bucket gets `ttlMs`; an existing one with a shorter max_age
 * is raised to `ttlMs` (longer is always safe for the other nodes; it is never
 * lowered), and the store then accepts TTLs up to the max_age it found.
 *
 * Failure is never "fresh": any error other than a lost create — timeout, no quorum,
 * closed connection, closed store — rejects with `StoreUnavailableError`, and the
 * control plane answers 503. A create that timed out may still have landed; the
 * request is then refused both now (503) and on an exact resend (replayed), never
 * admitted twice.
 */
import crypto from "node:crypto";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { InvalidArgumentError, StoreUnavailableError, UnibusError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import { bounded, bucketPrefixOf, Timeout } from "../store/index.ts";
// Not in the store's index: it loads the JetStream client, which that index must not.
import { isCasFailure } from "../store/kv-cas.ts";
import { DEFAULT_NONCES_PER_OWNER, type NonceStore, type NonceVerdict, OwnerQuota } from "./nonce-cache.ts";

export interface KvNonceStoreOptions {
  /** An open connection; never closed by the store. */
  nc: NatsConnection;
  /** Replication of the bucket when it is created, 1–5 (default 1). */
  replicas?: number;
  /** The bucket's max_age, ms (default 60000): every `checkAndRemember` ttl must be <= it. */
  ttlMs?: number;
  /** Bound on every call, ms (default 3000). */
  timeoutMs?: number;
  /** Bound on opening (create/bind the bucket), ms (default 15000). */
  openTimeoutMs?: number;
  /** Bucket name prefix, `[A-Za-z0-9_-]` (default `unibus_`): the bucket is `<prefix>nonces`. */
  bucketPrefix?: string;
  /** "file" (default) or "memory"; only used when the bucket is created. */
  storage?: "file" | "memory";
  /**
   * Nonces one owner (signing key) may create through this node within a TTL
   * (default 5000); beyond it that owner gets "quota" while others are still served.
   * Counted per node: a cluster of N nodes bounds a key at N times this.
   */
  maxPerOwner?: number;
  logger?: Logger;
}

/** A TTL longer than the bucket keeps its entries: the nonce could be replayed after it expired early. */
export class NonceTtlError extends InvalidArgumentError {
  readonly ttlMs: number;
  readonly maxAgeMs: number;
  constructor(ttlMs: number, maxAgeMs: number) {
    super(
      "ttlMs",
      `a nonce TTL of ${ttlMs} ms is longer than the nonce bucket keeps entries (max_age ${maxAgeMs} ms), which would allow replays after ${maxAgeMs} ms; open the nonce store with ttlMs >= ${ttlMs} (at least 2 x the clock skew)`,
    );
    this.ttlMs = ttlMs;
    this.maxAgeMs = maxAgeMs;
  }
}

/** JetStream refuses a max_age below 100 ms. */
const MIN_TTL_MS = 100;
const BUCKET = "nonces";
const VALUE = new TextEncoder().encode("1");

/** Opens (creating if needed) the nonce bucket and returns the store. */
export async function openKvNonceStore(opts: KvNonceStoreOptions): Promise<KvNonceStore> {
  const settings = nonceStoreSettings(opts);
  const { nc, bucket, ttlMs, timeoutMs, logger } = settings;
  try {
    return await bounded(settings.openTimeoutMs, async () => {
      const kv = await new Kvm(jetstream(nc, { timeout: timeoutMs })).create(bucket, {
        replicas: settings.replicas,
        history: 1,
        ttl: ttlMs,
        storage: settings.storage,
        allow_direct: false,
        timeout: timeoutMs,
      });
      const { maxAgeMs, replicas } = await ensureMaxAge(nc, kv, bucket, ttlMs, timeoutMs, logger);
      logger.info({ component: "control-nonces", bucket, replicas, maxAgeMs }, "replicated nonce store open");
      return new KvNonceStore(kv, { bucket, maxAgeMs, replicas, timeoutMs, logger, maxPerOwner: settings.maxPerOwner });
    });
  } catch (err) {
    if (err instanceof UnibusError) throw err;
    // debug: the caller gets the typed error and decides (a cluster node retries while its peers start).
    logger.debug(
      { component: "control-nonces", err: (err as Error).message, bucket },
      "could not open the nonce store",
    );
    throw new StoreUnavailableError(
      `the replicated nonce store (bucket ${bucket}) could not be opened: NATS or JetStream did not answer; check that the bus is running and JetStream has quorum`,
      { cause: err },
    );
  }
}

/** The options checked, with their defaults; `InvalidArgumentError` naming the first bad one. */
function nonceStoreSettings(opts: KvNonceStoreOptions) {
  if (opts === null || typeof opts !== "object") {
    throw new InvalidArgumentError(
      "opts",
      "openKvNonceStore needs an options object with an open NATS connection (nc)",
    );
  }
  const nc = opts.nc;
  if (nc === null || typeof nc !== "object" || typeof nc.isClosed !== "function") {
    throw new InvalidArgumentError("nc", "the KV nonce store needs an open NATS connection (nc)");
  }
  if (nc.isClosed()) {
    throw new InvalidArgumentError("nc", "the NATS connection given to the KV nonce store is already closed");
  }
  const replicas = opts.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw new InvalidArgumentError("replicas", "replicas must be a whole number from 1 to 5");
  }
  const ttlMs = opts.ttlMs ?? 60_000;
  if (!Number.isSafeInteger(ttlMs) || ttlMs < MIN_TTL_MS) {
    throw new InvalidArgumentError(
      "ttlMs",
      `ttlMs must be a whole number of milliseconds, at least ${MIN_TTL_MS} (it must cover 2 x the clock skew)`,
    );
  }
  const timeoutMs = positiveMs(opts.timeoutMs ?? 3000, "timeoutMs");
  const openTimeoutMs = positiveMs(opts.openTimeoutMs ?? 15_000, "openTimeoutMs");
  const bucket = `${bucketPrefixOf(opts.bucketPrefix)}${BUCKET}`;
  const storage = opts.storage ?? "file";
  if (storage !== "file" && storage !== "memory") {
    throw new InvalidArgumentError("storage", 'storage must be "file" or "memory"');
  }
  const maxPerOwner = opts.maxPerOwner ?? DEFAULT_NONCES_PER_OWNER;
  if (!Number.isSafeInteger(maxPerOwner) || maxPerOwner < 1) {
    throw new InvalidArgumentError("maxPerOwner", "maxPerOwner must be a positive whole number");
  }
  const logger = opts.logger ?? silentLogger;
  return { nc, replicas, ttlMs, timeoutMs, openTimeoutMs, bucket, storage, maxPerOwner, logger };
}

function positiveMs(ms: number, field: string): number {
  if (!Number.isSafeInteger(ms) || ms < 1) {
    throw new InvalidArgumentError(field, `${field} must be a positive whole number of milliseconds`);
  }
  return ms;
}

/**
 * An existing bucket keeps its own max_age; one shorter than asked is raised (never
 * lowered: other nodes may rely on the longer one). Two nodes raising at once may
 * overwrite each other's value, so read back until the bucket keeps at least ours.
 */
async function ensureMaxAge(
  nc: NatsConnection,
  kv: KV,
  bucket: string,
  ttlMs: number,
  timeoutMs: number,
  logger: Logger,
): Promise<{ maxAgeMs: number; replicas: number }> {
  for (let attempt = 0; ; attempt++) {
    const st = await kv.status();
    // max_age 0 is "keep forever": every TTL is covered.
    const maxAgeMs = st.ttl === 0 ? Number.POSITIVE_INFINITY : st.ttl;
    if (maxAgeMs >= ttlMs) return { maxAgeMs, replicas: st.replicas };
    if (attempt >= 5) {
      throw new NonceTtlError(ttlMs, maxAgeMs);
    }
    logger.warn(
      { component: "control-nonces", bucket, from: maxAgeMs, to: ttlMs },
      "raising the nonce bucket's max_age so it covers this node's nonce TTL",
    );
    const jsm = await jetstreamManager(nc, { timeout: timeoutMs });
    await jsm.streams.update(st.streamInfo.config.name, { max_age: ttlMs * 1_000_000 });
  }
}

export class KvNonceStore implements NonceStore {
  /** The bucket's name. */
  readonly bucket: string;
  /** The longest TTL this store accepts: the bucket's max_age as found at open (Infinity: never expires). */
  readonly maxAgeMs: number;
  readonly replicas: number;
  readonly #kv: KV;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  readonly #quota: OwnerQuota;
  #closed = false;

  /** Use `openKvNonceStore`. */
  constructor(
    kv: KV,
    options: {
      bucket: string;
      maxAgeMs: number;
      replicas: number;
      timeoutMs: number;
      logger: Logger;
      maxPerOwner?: number;
    },
  ) {
    this.#kv = kv;
    this.bucket = options.bucket;
    this.maxAgeMs = options.maxAgeMs;
    this.replicas = options.replicas;
    this.#timeoutMs = options.timeoutMs;
    this.#log = options.logger;
    this.#quota = new OwnerQuota(options.maxPerOwner ?? DEFAULT_NONCES_PER_OWNER);
  }

  /**
   * "fresh" if this call remembered `key` (cluster-wide), "replayed" if it was already
   * remembered. Rejects with `StoreUnavailableError` when it cannot tell, and with
   * `NonceTtlError` when `ttlMs` exceeds the bucket's max_age. Never answers "full";
   * answers "quota", without touching the bucket, when `owner` has used its share on
   * this node (only a create that landed counts against it).
   */
  async checkAndRemember(key: string, ttlMs: number, owner?: string): Promise<NonceVerdict> {
    if (typeof key !== "string" || key.length === 0) {
      throw new InvalidArgumentError("key", "the nonce key must be a non-empty string");
    }
    if (typeof ttlMs !== "number" || !Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new InvalidArgumentError("ttlMs", "the nonce TTL must be a positive number of milliseconds");
    }
    if (ttlMs > this.maxAgeMs) throw new NonceTtlError(ttlMs, this.maxAgeMs);
    if (this.#closed) throw new StoreUnavailableError("the nonce store is closed");

    // KV keys allow only `[-/_=.a-zA-Z0-9]`; `<signPub>:<nonce>` does not fit, its hash does.
    const k = crypto.createHash("sha256").update(key, "utf8").digest("hex");
    const now = Date.now();
    if (owner !== undefined && !this.#quota.hasRoom(owner, now)) return "quota";
    try {
      await bounded(this.#timeoutMs, () => this.#kv.create(k, VALUE));
      if (owner !== undefined) this.#quota.add(owner, now + ttlMs);
      return "fresh";
    } catch (err) {
      if (isCasFailure(err)) return "replayed"; // the key exists: a create lost to an earlier one
      if (err instanceof Timeout) {
        this.#log.warn({ component: "control-nonces", timeoutMs: this.#timeoutMs }, "nonce store timed out");
        throw new StoreUnavailableError(
          `the nonce store did not answer within ${this.#timeoutMs} ms (NATS/JetStream unreachable or without quorum); retry later`,
          { cause: err },
        );
      }
      this.#log.warn({ component: "control-nonces", err }, "nonce store failed");
      throw new StoreUnavailableError("the nonce store could not answer; see the server log for the cause", {
        cause: err,
      });
    }
  }

  /** Stops answering; the connection it was given stays open. */
  async close(): Promise<void> {
    this.#closed = true;
  }
}
