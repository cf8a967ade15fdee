/**
 * Blobs on a JetStream Object Store: the blob store of a bus whose control-plane store
 * is KV. The bucket is replicated like the KV buckets, so any node serves any blob and
 * losing a minority of nodes loses none.
 *
 * One source of truth: a blob's metadata is the object's own metadata (room, uploader,
 * mimetype, timestamps), its size and SHA-256 are the object's size and digest. The
 * object becomes visible only when its metadata is published after the last chunk, so
 * an interrupted upload is never served (nats.js purges its chunks on failure).
 *
 * Reads go through an ordered pull consumer fetched a few chunks at a time: a slow
 * reader holds at most a few chunks in memory (nats.js' own `get()` pushes every chunk
 * into an unbounded stream), and the digest is checked once the last chunk arrived.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { Readable } from "node:stream";
import { JetStreamApiError, type JetStreamClient, jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { type ObjectInfo, type ObjectStore, Objm } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import { InvalidArgumentError, NotFoundError, StateError, StoreUnavailableError, UnibusError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import type { Store } from "../store/index.ts";
import {
  BlobHousekeeping,
  type BlobMeta,
  BlobStorageFullError,
  type Blobs,
  type BlobUpload,
  committedBlobs,
  DEFAULT_BLOB_GC_INTERVAL_MS,
  DEFAULT_BLOB_MAX_AGE_MS,
  DEFAULT_MAX_BLOB_BYTES,
  type GcReason,
  type GcReport,
  isBlobId,
  parseMimetype,
  roomVerdict,
} from "./blobs.ts";

/** The bucket's name after the store's bucket prefix (`unibus_blobs` by default). */
export const BLOB_BUCKET = "blobs";
/**
 * Bytes per object chunk. nats.js publishes the chunks of a put one at a time, each
 * waiting for its ack, so an upload pays one round trip per chunk: 512 KiB instead of
 * nats.js' default 128 KiB cuts those four times. nats.js lowers it to the server's
 * max_payload when that is smaller.
 */
const CHUNK_BYTES = 512 * 1024;
/** Chunks asked for at once when reading: bounds a download's memory to about 1 MiB. */
const FETCH_CHUNKS = 2;
/** How much of an upload may wait for JetStream before the writer is held. */
const UPLOAD_BUFFER_BYTES = 1024 * 1024;
const FETCH_EXPIRES_MS = 5000;

/** An open blob bucket: the object store and the JetStream client that reads its chunks. */
export interface BlobBucket {
  os: ObjectStore;
  js: JetStreamClient;
  /** The bucket's name (the stream is `OBJ_<name>`). */
  name: string;
}

export interface BlobBucketOptions {
  replicas: number;
  /** The store's bucket prefix (default `unibus_`). */
  bucketPrefix?: string;
  /** Bound of each JetStream request once open (a chunk's publish, a read). Default 5000 ms. */
  timeoutMs?: number;
  /** Bound of the bucket's creation. Default 5000 ms. */
  openTimeoutMs?: number;
  /**
   * The bucket's storage cap in bytes (its stream's `max_bytes`: chunks and metadata on
   * each replica); an upload that would pass it is refused whole. Unset: no cap. Applied
   * to an existing bucket too, so a restart with another cap changes it.
   */
  storageBytes?: number;
}

/** Creates the blob bucket (file storage, `replicas` ways) or opens it if it exists; sets its storage cap. */
export async function openBlobBucket(nc: NatsConnection, opts: BlobBucketOptions): Promise<BlobBucket> {
  const name = `${opts.bucketPrefix ?? "unibus_"}${BLOB_BUCKET}`;
  const maxBytes = opts.storageBytes === undefined ? -1 : positiveInt(opts.storageBytes, "storageBytes");
  const timeout = opts.openTimeoutMs ?? 5000;
  const creating = jetstream(nc, { timeout });
  // The stream rejects a chunk past max_bytes (discard new), and nats.js then purges the put's chunks.
  await new Objm(creating).create(name, { replicas: opts.replicas, storage: StorageType.File, max_bytes: maxBytes });
  await applyStorageCap(nc, `OBJ_${name}`, maxBytes, timeout);
  // Creation may be bounded short while a cluster forms; transfers get their own bound.
  const js = jetstream(nc, { timeout: opts.timeoutMs ?? 5000 });
  const os = await new Objm(js).open(name, false);
  return { os, js, name };
}

/** An existing bucket keeps the config it was made with: its cap is updated when it differs. */
async function applyStorageCap(nc: NatsConnection, stream: string, maxBytes: number, timeout: number): Promise<void> {
  const jsm = await jetstreamManager(nc, { timeout, checkAPI: false });
  const { config } = await jsm.streams.info(stream);
  if ((config.max_bytes ?? -1) !== maxBytes) await jsm.streams.update(stream, { ...config, max_bytes: maxBytes });
}

export interface ObjectBlobStoreOptions {
  /** The bucket once open; undefined while the KV store is still opening (calls answer 503). */
  bucket: () => BlobBucket | undefined;
  store: Pick<Store, "getRoom">;
  maxBytes?: number;
  maxAgeMs?: number;
  gcIntervalMs?: number;
  now?: () => number;
  logger?: Logger;
}

export class ObjectBlobStore implements Blobs {
  readonly maxBytes: number;
  readonly maxAgeMs: number;
  readonly gcIntervalMs: number;
  readonly #bucket: () => BlobBucket | undefined;
  readonly #store: Pick<Store, "getRoom">;
  readonly #now: () => number;
  readonly #logger: Logger;
  readonly #chores: BlobHousekeeping;

  constructor(opts: ObjectBlobStoreOptions) {
    this.maxBytes = positiveInt(opts.maxBytes ?? DEFAULT_MAX_BLOB_BYTES, "maxBytes");
    this.maxAgeMs = positiveInt(opts.maxAgeMs ?? DEFAULT_BLOB_MAX_AGE_MS, "maxAgeMs");
    this.gcIntervalMs = positiveInt(opts.gcIntervalMs ?? DEFAULT_BLOB_GC_INTERVAL_MS, "gcIntervalMs");
    this.#bucket = opts.bucket;
    this.#store = opts.store;
    this.#now = opts.now ?? Date.now;
    this.#logger = opts.logger ?? silentLogger;
    this.#chores = new BlobHousekeeping(this.gcIntervalMs, this.#logger);
  }

  get closed(): boolean {
    return this.#chores.closed;
  }

  /** Collects garbage every `gcIntervalMs` (a pass while the bucket is not open yet does nothing). */
  async start(): Promise<this> {
    this.#chores.startCollector(() => (this.#bucket() ? this.gc() : undefined), { now: false });
    return this;
  }

  close(): Promise<void> {
    return this.#chores.close();
  }

  trackTransfer(abort: () => void): () => void {
    return this.#chores.trackTransfer(abort);
  }

  /** Starts an upload: chunks go to JetStream as they arrive; the object appears at commit. */
  async beginUpload(input: { roomId: string; uploader: string; mimetype: string }): Promise<BlobUpload> {
    this.#chores.throwIfClosed();
    const mimetype = parseMimetype(input.mimetype);
    const bucket = this.#open();
    const now = this.#now();
    const meta = {
      id: crypto.randomBytes(16).toString("hex"),
      roomId: input.roomId,
      uploader: input.uploader.toLowerCase(),
      mimetype,
      createdAt: now,
      expiresAt: now + this.maxAgeMs,
    };
    const pipe = new ChunkPipe();
    const put = bucket.os.put(
      { name: meta.id, metadata: toObjectMetadata(meta), options: { max_chunk_size: CHUNK_BYTES } },
      pipe.stream,
    );
    // A put that fails on its own (e.g. lost quorum) stops reading: the writer must hear of it.
    put.catch((err: unknown) => pipe.fail(unavailable(err)));
    let state: "open" | "committing" | "done" = "open";
    let written = 0;
    const discard = async (reason: unknown) => {
      state = "done";
      pipe.fail(reason);
      await put.catch(() => {});
    };
    return {
      write: (chunk) => {
        if (state !== "open") return Promise.reject(new StateError(["open"], state, "BlobUpload.write()"));
        if (written + chunk.length > this.maxBytes) {
          return Promise.reject(new InvalidArgumentError("size", "the blob is larger than the limit"));
        }
        written += chunk.length;
        return pipe.push(chunk);
      },
      commit: async ({ size, sha256 }) => {
        if (state !== "open") throw new StateError(["open"], state, "BlobUpload.commit()");
        state = "committing";
        if (size !== written || !/^[0-9a-f]{64}$/.test(sha256)) {
          const err = new InvalidArgumentError("size", `${written} bytes were written but the commit declares ${size}`);
          await discard(err);
          throw err;
        }
        pipe.end();
        const info = await put.catch((err: unknown) => {
          state = "done";
          throw unavailable(err);
        });
        state = "done";
        return this.#checkCommitted(bucket, info, { ...meta, size, sha256 });
      },
      abort: async () => {
        if (state === "done") return;
        await discard(new UploadAbortedError());
      },
    };
  }

  /** The object JetStream stored must be the bytes the caller hashed; otherwise it goes again. */
  async #checkCommitted(bucket: BlobBucket, info: ObjectInfo, meta: BlobMeta): Promise<BlobMeta> {
    if (info.size === meta.size && digestHex(info.digest) === meta.sha256) return meta;
    await bucket.os.delete(meta.id).catch(() => {});
    this.#logger.error({ component: "blobs", blobId: meta.id }, "stored blob does not match the upload's hash");
    throw new StoreUnavailableError("the blob store stored something other than the upload");
  }

  async stat(id: string): Promise<BlobMeta> {
    return (await this.#live(id)).meta;
  }

  /** A live blob and a stream of its bytes (fetched a few chunks at a time, digest checked at the end). */
  async read(id: string): Promise<{ meta: BlobMeta; body: Readable }> {
    const { meta, info, bucket } = await this.#live(id);
    return { meta, body: Readable.from(readChunks(bucket, info), { objectMode: false }) };
  }

  async delete(id: string): Promise<void> {
    const { bucket } = await this.#live(id);
    await call(() => bucket.os.delete(id));
  }

  /** Every blob in the bucket whose metadata reads, expired ones too (for operators and migrations). */
  async list(): Promise<BlobMeta[]> {
    this.#chores.throwIfClosed();
    const bucket = this.#open();
    const infos = await call(() => bucket.os.list());
    return infos.flatMap((info) => (info.deleted ? [] : (fromObjectInfo(info) ?? [])));
  }

  /** Bytes the bucket's stream holds (chunks and metadata): what blobs cost in JetStream storage. */
  async storedBytes(): Promise<number> {
    const bucket = this.#open();
    return (await call(() => bucket.os.status())).size;
  }

  /** Deletes every blob of a room (expired ones too); returns how many went. */
  async deleteRoomBlobs(roomId: string): Promise<number> {
    this.#chores.throwIfClosed();
    const bucket = this.#open();
    const infos = await call(() => bucket.os.list());
    let n = 0;
    for (const info of infos) {
      if (info.deleted || fromObjectInfo(info)?.roomId !== roomId) continue;
      await call(() => bucket.os.delete(info.name));
      n++;
    }
    return n;
  }

  /** One pass over the bucket: expired blobs, blobs of rooms that are gone, and corrupt metadata go. */
  gc(opts: { now?: number } = {}): Promise<GcReport> {
    return this.#chores.serialise(() => this.#gc(opts.now ?? this.#now()));
  }

  async #gc(now: number): Promise<GcReport> {
    const report: GcReport = { removed: [], tmpRemoved: 0, kept: 0, unchecked: 0 };
    const bucket = this.#open();
    const rooms = new Map<string, boolean | undefined>();
    for (const info of await call(() => bucket.os.list())) {
      if (info.deleted) continue;
      const meta = fromObjectInfo(info);
      let reason: GcReason | undefined;
      if (!meta) reason = "corrupt";
      else if (this.#expired(meta, now)) reason = "expired";
      else {
        if (!rooms.has(meta.roomId)) rooms.set(meta.roomId, await roomVerdict(this.#store, meta.roomId, this.#logger));
        const verdict = rooms.get(meta.roomId);
        if (verdict === false) reason = "room-gone";
        else if (verdict === undefined) report.unchecked++;
      }
      if (!reason) {
        report.kept++;
        continue;
      }
      await call(() => bucket.os.delete(info.name));
      report.removed.push({ id: info.name, reason });
    }
    if (report.removed.length) {
      this.#logger.info(
        { component: "blobs", removed: report.removed.length, kept: report.kept },
        "blob garbage collected",
      );
    }
    return report;
  }

  /** The live blob's metadata and object info. NotFoundError for an unknown, corrupt or expired id. */
  async #live(id: string): Promise<{ meta: BlobMeta; info: ObjectInfo; bucket: BlobBucket }> {
    this.#chores.throwIfClosed();
    if (!isBlobId(id)) throw new NotFoundError("blob", String(id).slice(0, 64));
    const bucket = this.#open();
    const info = await call(() => bucket.os.info(id));
    if (!info || info.deleted) throw new NotFoundError("blob", id);
    const meta = fromObjectInfo(info);
    if (!meta) {
      this.#logger.error({ component: "blobs", blobId: id }, "blob metadata is corrupt; the blob is not served");
      throw new NotFoundError("blob", id);
    }
    if (this.#expired(meta, this.#now())) throw new NotFoundError("blob", id);
    return { meta, info, bucket };
  }

  #open(): BlobBucket {
    const bucket = this.#bucket();
    if (!bucket) throw new StoreUnavailableError("the blob store is still opening");
    return bucket;
  }

  #expired(meta: BlobMeta, now: number): boolean {
    return meta.expiresAt <= now || meta.createdAt + this.maxAgeMs <= now;
  }
}

/** An upload the caller abandoned (its bytes are discarded). */
class UploadAbortedError extends UnibusError {
  constructor() {
    super("BLOB_UPLOAD_ABORTED", "the upload was abandoned; send it again");
  }
}

/**
 * A push-to-pull bridge: the upload's `write()` enqueues, nats.js' `put()` reads. The
 * writer waits while more than UPLOAD_BUFFER_BYTES are queued, so a slow JetStream holds
 * the HTTP body back instead of buffering it.
 */
class ChunkPipe {
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #waiter?: { resolve: () => void; reject: (err: unknown) => void };
  #failed: unknown;
  readonly stream = new ReadableStream<Uint8Array>(
    {
      start: (c) => {
        this.#controller = c;
      },
      pull: () => {
        const w = this.#waiter;
        this.#waiter = undefined;
        w?.resolve();
      },
      cancel: (reason) => this.fail(reason),
    },
    new ByteLengthQueuingStrategy({ highWaterMark: UPLOAD_BUFFER_BYTES }),
  );

  async push(chunk: Uint8Array): Promise<void> {
    if (this.#failed !== undefined) throw this.#failed;
    this.#controller.enqueue(chunk);
    if ((this.#controller.desiredSize ?? 0) > 0) return;
    await new Promise<void>((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  end(): void {
    this.#controller.close();
  }

  fail(reason: unknown): void {
    if (this.#failed !== undefined) return;
    this.#failed = reason ?? new UploadAbortedError();
    try {
      this.#controller.error(this.#failed);
    } catch {
      // already closed
    }
    this.#waiter?.reject(this.#failed);
    this.#waiter = undefined;
  }
}

/** The object's chunks in order, a few at a time; fails if any is missing or the digest differs. */
async function* readChunks(bucket: BlobBucket, info: ObjectInfo): AsyncGenerator<Uint8Array> {
  if (info.chunks === 0) return;
  const consumer = await call(() =>
    bucket.js.consumers.get(`OBJ_${bucket.name}`, { filter_subjects: `$O.${bucket.name}.C.${info.nuid}` }),
  );
  const sha = crypto.createHash("sha256");
  let got = 0;
  while (got < info.chunks) {
    const before = got;
    const batch = await call(() =>
      consumer.fetch({ max_messages: Math.min(FETCH_CHUNKS, info.chunks - got), expires: FETCH_EXPIRES_MS }),
    );
    for await (const m of batch) {
      sha.update(m.data);
      got++;
      yield m.data;
    }
    if (got === before) throw new StoreUnavailableError("the blob's chunks did not arrive");
  }
  if (sha.digest("hex") !== digestHex(info.digest)) {
    throw new StoreUnavailableError("the blob's bytes do not match its digest");
  }
}

export interface BlobImport {
  /** Blobs written to the bucket. */
  copied: number;
  /** Blobs the bucket already held with the same bytes (a re-run). */
  present: number;
  /** Ids of blobs whose file does not match its recorded hash: left out (they would never be served). */
  corrupt: string[];
}

/**
 * Copies the committed blobs of a blob directory into the bucket under the same ids,
 * with their metadata. Safe to run again: a blob already there with the same digest is
 * left alone. The directory is not touched (it stays as the rollback).
 */
export async function importBlobDir(
  dir: string,
  bucket: BlobBucket,
  onBlob?: (done: BlobImport) => void,
): Promise<BlobImport> {
  const done: BlobImport = { copied: 0, present: 0, corrupt: [] };
  for await (const { meta, file } of committedBlobs(dir)) {
    const existing = await call(() => bucket.os.info(meta.id));
    if (existing && !existing.deleted && digestHex(existing.digest) === meta.sha256) {
      done.present++;
    } else {
      const body = Readable.toWeb(fs.createReadStream(file, { highWaterMark: CHUNK_BYTES }));
      const info = await call(() =>
        bucket.os.put(
          { name: meta.id, metadata: toObjectMetadata(meta), options: { max_chunk_size: CHUNK_BYTES } },
          body as ReadableStream<Uint8Array>,
        ),
      );
      if (digestHex(info.digest) === meta.sha256) done.copied++;
      else {
        await call(() => bucket.os.delete(meta.id));
        done.corrupt.push(meta.id);
      }
    }
    onBlob?.(done);
  }
  return done;
}

/** The object metadata a blob is stored with (strings only, as JetStream keeps them). */
export function toObjectMetadata(meta: Omit<BlobMeta, "id" | "size" | "sha256">): Record<string, string> {
  return {
    roomId: meta.roomId,
    uploader: meta.uploader,
    mimetype: meta.mimetype,
    createdAt: String(meta.createdAt),
    expiresAt: String(meta.expiresAt),
  };
}

/** A blob's metadata from its object info, or undefined when anything is malformed. */
function fromObjectInfo(info: ObjectInfo): BlobMeta | undefined {
  const m = info.metadata ?? {};
  const createdAt = Number(m.createdAt);
  const expiresAt = Number(m.expiresAt);
  const sha256 = digestHex(info.digest);
  if (
    !isBlobId(info.name) ||
    typeof m.roomId !== "string" ||
    typeof m.uploader !== "string" ||
    typeof m.mimetype !== "string" ||
    !Number.isSafeInteger(createdAt) ||
    !Number.isSafeInteger(expiresAt) ||
    !sha256
  ) {
    return undefined;
  }
  const { roomId, uploader, mimetype } = m;
  return { id: info.name, roomId, uploader, mimetype, size: info.size, sha256, createdAt, expiresAt };
}

/** `SHA-256=<base64url>` → lowercase hex, or "" when it is not that. */
export function digestHex(digest: string | undefined): string {
  if (!digest?.startsWith("SHA-256=")) return "";
  const raw = Buffer.from(digest.slice(8), "base64url");
  return raw.length === 32 ? raw.toString("hex") : "";
}

/** JetStream trouble (timeouts, no quorum) becomes StoreUnavailableError: a 503, never a 500 with detail. */
async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw unavailable(err);
  }
}

/** JetStream's refusal of a publish past the stream's max_bytes. */
const MAX_BYTES_EXCEEDED = 10077;

function unavailable(err: unknown): unknown {
  if (err instanceof UnibusError) return err;
  if (err instanceof JetStreamApiError && err.code === MAX_BYTES_EXCEEDED) return new BlobStorageFullError();
  return new StoreUnavailableError("the blob store did not answer", { cause: err });
}

function positiveInt(n: number, field: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(field, `${field} must be a positive integer`);
  return n;
}
