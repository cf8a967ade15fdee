/**
 * Opening a node's replicated control-plane store: the KV buckets, the replicated
 * nonce bucket and the blob bucket (a JetStream Object Store), on one APP-account
 * service connection. Until both are open the store
 * holder refuses every call and the nonce store refuses every signed request, so a
 * node that is still waiting for its peers denies — never admits — and says so.
 */
import fs from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Admission, ServiceKeys } from "../auth/index.ts";
import { connectAsService } from "../auth/index.ts";
import type { BlobBucket, NonceStore } from "../control/index.ts";
import { StoreUnavailableError } from "../errors.ts";
import type { Logger } from "../log/index.ts";
import type { StoreHolder } from "../store/index.ts";
import { openStore, type Store } from "../store/index.ts";

/**
 * On KV, a replicated bucket whose leader died answers nothing until its peers elect a
 * new one (seconds). A connection attempt meanwhile is held — the callout retries the
 * store for up to ADMIT_HOLD_MS, inside a server auth timeout raised to match — rather than
 * denied: nats.js gives up for good after two denials from one server, so denying would
 * turn every failover into dead clients. Whatever the store says in the end decides;
 * nothing is admitted without it.
 */
export const ADMIT_HOLD_MS = 7000;
/** The server's auth timeout on KV: the held decision plus the callout's own margin. */
export const KV_AUTH_TIMEOUT_S = 10;
/** How long the callout may take to answer on KV (the hold plus a store call). */
export const KV_DECISION_TIMEOUT_MS = ADMIT_HOLD_MS + 1500;

export interface KvOpeningOptions {
  servers: string[];
  caPem: string;
  keys: ServiceKeys;
  /** Receives the store once it is open. */
  holder: StoreHolder;
  replicas: number;
  bucketPrefix?: string;
  /** Per-operation bound of the KV store. */
  timeoutMs?: number;
  /** The blob bucket's storage cap in bytes (unset: none). */
  blobStorageBytes?: number;
  logger: Logger;
  /** The node's SQLite file: a store there beside an empty KV allowlist is an unrun migration. */
  sqliteFile: string;
  /** False once the bus is stopping: an opening in progress gives up. */
  isUp: () => boolean;
}

export class KvOpening {
  readonly #opts: KvOpeningOptions;
  #conn?: NatsConnection;
  #nonces?: NonceStore & { close(): Promise<void> };
  #blobs?: BlobBucket;

  constructor(opts: KvOpeningOptions) {
    this.#opts = opts;
  }

  /** The store's service connection (for health), once connected. */
  get connection(): NatsConnection | undefined {
    return this.#conn;
  }

  /** The blob bucket once open (blob requests answer 503 until then). */
  get blobBucket(): BlobBucket | undefined {
    return this.#blobs;
  }

  /** Until the KV nonce bucket is open, every signed request is refused (503), never let through unremembered. */
  readonly nonces: NonceStore = {
    checkAndRemember: (key, ttlMs, owner) =>
      this.#nonces
        ? this.#nonces.checkAndRemember(key, ttlMs, owner)
        : Promise.reject(new StoreUnavailableError("the replay store is still opening")),
  };

  /**
   * Opens the store and the nonce bucket. With `retry` (a cluster member, whose buckets
   * need a meta group that needs its peers) it tries until it succeeds or the bus stops.
   */
  async open({ retry }: { retry: boolean }): Promise<void> {
    const { servers, caPem, keys } = this.#opts;
    this.#conn = await connectAsService({ servers, caPem, key: keys.app, name: "unibus-store" });
    for (let attempt = 1; ; attempt++) {
      // Until the meta group has formed JetStream leaves API requests unanswered: a create
      // sent then waits out its whole timeout. So first wait (cheaply) until JetStream answers.
      if (retry && !(await jetStreamAnswers(this.#conn))) {
        this.#throwIfStopped();
        continue;
      }
      const err = await this.#attempt(this.#conn, attempt, retry);
      if (err === undefined) return;
      if (!retry) throw err;
      this.#warnSlow(attempt, err);
      await sleep(100);
    }
  }

  async close(): Promise<void> {
    await this.#nonces?.close();
    this.#nonces = undefined;
    this.#blobs = undefined;
    await this.#conn?.close();
  }

  /** One try at every bucket; the error when any failed (whatever opened is closed again). */
  async #attempt(nc: NatsConnection, attempt: number, retry: boolean): Promise<unknown> {
    const { replicas, bucketPrefix, logger } = this.#opts;
    // A SQLite bus never loads these.
    const [{ openKvNonceStore }, { openBlobBucket }] = await Promise.all([
      import("../control/nonce-kv.ts"),
      import("../control/blob-objects.ts"),
    ]);
    // Even once JetStream answers, a replicated create is now and then left unanswered
    // (seen: 1 start in 3, racing the same create from the other nodes) while a retry at
    // once succeeds; so attempts start short (1 s) and lengthen only if they keep failing.
    const openTimeoutMs = retry ? Math.min(1000 * Math.ceil(attempt / 3), 5000) : 5000;
    const prefix = bucketPrefix ? { bucketPrefix } : {};
    const [store, nonces, blobs] = await Promise.allSettled([
      openStore({
        backend: "kv",
        nc,
        replicas,
        logger,
        openTimeoutMs,
        ...prefix,
        ...(this.#opts.timeoutMs ? { timeoutMs: this.#opts.timeoutMs } : {}),
      }),
      openKvNonceStore({ nc, replicas, logger, openTimeoutMs, ...prefix }),
      openBlobBucket(nc, {
        replicas,
        openTimeoutMs,
        ...prefix,
        ...(this.#opts.blobStorageBytes ? { storageBytes: this.#opts.blobStorageBytes } : {}),
      }),
    ]);
    const ok = store.status === "fulfilled" && nonces.status === "fulfilled" && blobs.status === "fulfilled";
    if (ok && this.#opts.isUp()) {
      this.#nonces = nonces.value;
      this.#blobs = blobs.value;
      await this.#opts.holder.set(store.value);
      logger.info({ component: "bus", replicas, attempts: attempt }, "KV store open");
      void this.#warnIfUnmigrated(store.value);
      return undefined;
    }
    if (store.status === "fulfilled") await store.value.close();
    if (nonces.status === "fulfilled") await nonces.value.close();
    this.#throwIfStopped();
    return [store, nonces, blobs].find((r) => r.status === "rejected")?.reason;
  }

  #throwIfStopped(): void {
    if (!this.#opts.isUp()) throw new StoreUnavailableError("the bus stopped before its KV store opened");
  }

  #warnSlow(attempt: number, err: unknown): void {
    if (attempt % 10 !== 0) return;
    this.#opts.logger.warn(
      { component: "bus", attempt, err: (err as Error).message },
      "KV store not open yet (waiting for JetStream); denying connections meanwhile",
    );
  }

  /** A SQLite store beside an empty KV allowlist is almost surely a migration not yet run. */
  async #warnIfUnmigrated(kv: Store): Promise<void> {
    const file = this.#opts.sqliteFile;
    // The listing reads the whole allowlist: only when there is a SQLite file at all.
    if (!(await fs.stat(file).catch(() => undefined))) return;
    if ((await kv.listUsers().catch(() => [1])).length === 0) {
      this.#opts.logger.warn(
        { component: "bus", file },
        "this data dir has a SQLite store but the KV store has no users: run `unibus migrate-to-kv` to carry them over",
      );
    }
  }
}

/**
 * Wraps an admission decision in the KV hold (see ADMIT_HOLD_MS): a store that is
 * unavailable is asked again until the hold ends or the bus leaves `running`.
 */
export function holdAdmission(
  decide: (signPub: string) => Promise<Admission>,
  isRunning: () => boolean,
): (signPub: string) => Promise<Admission> {
  return async (signPub) => {
    const deadline = Date.now() + ADMIT_HOLD_MS;
    for (;;) {
      try {
        return await decide(signPub);
      } catch (err) {
        if (!(err instanceof StoreUnavailableError) || Date.now() > deadline || !isRunning()) throw err;
        await sleep(250);
      }
    }
  };
}

/** True once JetStream answers an account-info request (it has a meta leader); false after 250 ms of silence. */
async function jetStreamAnswers(nc: NatsConnection): Promise<boolean> {
  try {
    await (await jetstreamManager(nc, { timeout: 250, checkAPI: false })).getAccountInfo();
    return true;
  } catch {
    await sleep(50);
    return false;
  }
}
