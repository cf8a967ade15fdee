/**
 * Blobs on disk (a SQLite bus; a KV bus keeps them in a replicated JetStream Object
 * Store, blob-objects.ts): opaque bytes (the client encrypts them) with a mimetype, received
 * and served as streams, never held whole in memory.
 *
 * Layout of the blob directory (0700; files 0600):
 *
 *     tmp-<random>        an upload in progress, or one a crash left behind
 *     <id>                a committed blob's bytes
 *     <id>.json           its metadata — written last, so it is the commit point:
 *                         bytes without metadata are invisible and collected later
 *
 * Metadata lives in a sidecar rather than in the Store: a blob's record and its bytes
 * are created, read and deleted together, the garbage collector needs nothing but one
 * directory listing and `getRoom`, and the Store interface (shared with the coming KV
 * backend) does not grow a table whose truth is really on this disk. (The Object Store
 * keeps it the same way: in each object's own metadata.)
 */
import crypto from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import fs from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { InvalidArgumentError, NotFoundError, StateError, UnibusError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import type { Store } from "../store/index.ts";

const MiB = 1024 * 1024;
const DAY_MS = 86_400_000;

export const DEFAULT_MAX_BLOB_BYTES = 256 * MiB;
export const DEFAULT_BLOB_MAX_AGE_MS = 30 * DAY_MS;
export const DEFAULT_BLOB_GC_INTERVAL_MS = 10 * 60_000;
/** Leftovers (tmp- files, bytes without metadata) younger than this may still be an upload in progress. */
export const DEFAULT_BLOB_TMP_MAX_AGE_MS = 60 * 60_000;
/** RFC 6838 caps each of type and subtype at 127 characters; we cap the whole `type/subtype`. */
export const MIMETYPE_MAX = 127;

const BLOB_ID = /^[0-9a-f]{32}$/;
const META_FILE = /^([0-9a-f]{32})\.json$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
// RFC 6838 restricted-name for both halves.
const MIMETYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/;

export interface BlobMeta {
  /** 32 lowercase hex characters, assigned by the server. */
  id: string;
  roomId: string;
  /** The uploader's Ed25519 key (lowercase hex). */
  uploader: string;
  /** `type/subtype`, lowercase. */
  mimetype: string;
  size: number;
  /** Lowercase hex SHA-256 of the bytes. */
  sha256: string;
  /** Milliseconds since the epoch, like every timestamp of the store. */
  createdAt: number;
  expiresAt: number;
}

/** The blob store's storage cap is reached: the upload was refused and nothing of it kept. */
export class BlobStorageFullError extends UnibusError {
  constructor() {
    super("BLOB_STORAGE_FULL", "the blob store is full (its storage cap is reached); delete blobs or raise the cap");
  }
}

/** The blob store is closing: no new transfer starts. */
export class BlobStoreClosedError extends UnibusError {
  constructor() {
    super("BLOBS_CLOSED", "the blob store is shutting down; retry once the bus is back");
  }
}

export function isBlobId(id: unknown): id is string {
  return typeof id === "string" && BLOB_ID.test(id);
}

/** `type/subtype` (no parameters), at most 127 characters; returned lowercased. */
export function parseMimetype(value: unknown): string {
  const text = typeof value === "string" ? value.trim().toLowerCase() : "";
  if (text.length === 0) {
    throw new InvalidArgumentError(
      "mimetype",
      "set content-type to the blob's mimetype, e.g. application/octet-stream",
    );
  }
  if (text.length > MIMETYPE_MAX || !MIMETYPE.test(text)) {
    throw new InvalidArgumentError(
      "mimetype",
      `the mimetype must be type/subtype without parameters, at most ${MIMETYPE_MAX} characters (e.g. image/png)`,
    );
  }
  return text;
}

export interface BlobStoreOptions {
  /** The blob directory; created 0700 by `start()`. */
  dir: string;
  /** For the garbage collector: a blob whose room is gone is collected. */
  store: Pick<Store, "getRoom">;
  /** Largest accepted blob in bytes; exactly this many is accepted. Default 256 MiB. */
  maxBytes?: number;
  /** Blobs older than this are collected. Default 30 days. */
  maxAgeMs?: number;
  /** How often the collector runs (it also runs at start). Default 10 minutes. */
  gcIntervalMs?: number;
  /** Age after which leftovers of interrupted uploads are removed. Default 1 hour. */
  tmpMaxAgeMs?: number;
  /** Wall clock in ms; defaults to Date.now. */
  now?: () => number;
  logger?: Logger;
}

export type GcReason = "room-gone" | "expired" | "orphan" | "corrupt";

export interface GcReport {
  removed: { id: string; reason: GcReason }[];
  /** Leftover tmp- files removed. */
  tmpRemoved: number;
  kept: number;
  /** Blobs kept only because their room could not be checked (e.g. the store was unavailable). */
  unchecked: number;
}

/** One upload: bytes are written as they arrive, then committed or aborted. */
export interface BlobUpload {
  /** Resolves once the chunk is on its way to disk; await it before sending the next one. */
  write(chunk: Uint8Array): Promise<void>;
  /** fsyncs, renames into place and writes the metadata. `sha256` is what the caller hashed. */
  commit(result: { size: number; sha256: string }): Promise<BlobMeta>;
  /** Discards whatever was written. Safe to call at any time, more than once. */
  abort(): Promise<void>;
}

/**
 * What the blob routes and the bus need of a blob store. Two implementations: files in
 * a directory (`BlobStore`, a SQLite bus) and a JetStream Object Store
 * (`ObjectBlobStore`, a KV bus, replicated like its buckets).
 */
export interface Blobs {
  readonly maxBytes: number;
  readonly closed: boolean;
  start(): Promise<this>;
  /** Stops the collector and cuts every transfer in progress. */
  close(): Promise<void>;
  /** Registers a way to cut a transfer that `close()` calls; returns the function that unregisters it. */
  trackTransfer(abort: () => void): () => void;
  beginUpload(input: { roomId: string; uploader: string; mimetype: string }): Promise<BlobUpload>;
  /** The metadata of a live blob. NotFoundError for an unknown, malformed, corrupt or expired id. */
  stat(id: string): Promise<BlobMeta>;
  /** A live blob and its bytes as a stream (destroy it to let go early). */
  read(id: string): Promise<{ meta: BlobMeta; body: Readable }>;
  /** NotFoundError when unknown. */
  delete(id: string): Promise<void>;
  /** Deletes every blob of a room; resolves with how many went. */
  deleteRoomBlobs(roomId: string): Promise<number>;
  /** One garbage collection pass (`now` overrides the clock). */
  gc(opts?: { now?: number }): Promise<GcReport>;
}

/** The file an upload is written to until it is published or discarded. */
interface TmpFile {
  name: string;
  path: string;
  handle: FileHandle;
  /** Closes the handle once; later calls do nothing. */
  close: () => Promise<void>;
}

/**
 * What both blob stores share: the periodic collector, passes that never overlap, and the
 * transfers `close()` cuts. Each store keeps only what differs (where bytes live).
 */
export class BlobHousekeeping {
  readonly #intervalMs: number;
  readonly #logger: Logger;
  readonly #transfers = new Set<() => void>();
  #timer: NodeJS.Timeout | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(intervalMs: number, logger: Logger) {
    this.#intervalMs = intervalMs;
    this.#logger = logger;
  }

  get closed(): boolean {
    return this.#closed;
  }

  throwIfClosed(): void {
    if (this.#closed) throw new BlobStoreClosedError();
  }

  /** Runs `collect` every interval (and at once with `now`); a failed pass is logged. */
  startCollector(collect: () => Promise<unknown> | undefined, { now }: { now: boolean }): void {
    this.throwIfClosed();
    if (this.#timer) return;
    const run = () => {
      collect()?.catch((err: Error) => {
        this.#logger.warn({ component: "blobs", err: err.message }, "blob garbage collection failed");
      });
    };
    if (now) run();
    this.#timer = setInterval(run, this.#intervalMs);
    this.#timer.unref();
  }

  /** Runs `pass` after every earlier one, whatever became of it. */
  serialise<T>(pass: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(pass, pass);
    this.#chain = run.catch(() => {});
    return run;
  }

  /** Registers a way to cut a transfer (e.g. destroy its socket); returns what unregisters it. */
  trackTransfer(abort: () => void): () => void {
    if (this.#closed) {
      abort();
      return () => {};
    }
    this.#transfers.add(abort);
    return () => this.#transfers.delete(abort);
  }

  /** Stops the collector, cuts every transfer, waits for a running pass. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const abort of [...this.#transfers]) abort();
    this.#transfers.clear();
    await this.#chain.catch(() => {});
  }
}

export class BlobStore implements Blobs {
  readonly dir: string;
  readonly maxBytes: number;
  readonly maxAgeMs: number;
  readonly gcIntervalMs: number;
  readonly tmpMaxAgeMs: number;
  readonly #store: Pick<Store, "getRoom">;
  readonly #now: () => number;
  readonly #logger: Logger;
  /** tmp- files of uploads in progress: never collected, whatever their age. */
  readonly #activeTmp = new Set<string>();
  readonly #chores: BlobHousekeeping;

  constructor(opts: BlobStoreOptions) {
    this.dir = path.resolve(opts.dir);
    this.maxBytes = positiveInt(opts.maxBytes ?? DEFAULT_MAX_BLOB_BYTES, "maxBytes");
    this.maxAgeMs = positiveInt(opts.maxAgeMs ?? DEFAULT_BLOB_MAX_AGE_MS, "maxAgeMs");
    this.gcIntervalMs = positiveInt(opts.gcIntervalMs ?? DEFAULT_BLOB_GC_INTERVAL_MS, "gcIntervalMs");
    this.tmpMaxAgeMs = positiveInt(opts.tmpMaxAgeMs ?? DEFAULT_BLOB_TMP_MAX_AGE_MS, "tmpMaxAgeMs");
    this.#store = opts.store;
    this.#now = opts.now ?? Date.now;
    this.#logger = opts.logger ?? silentLogger;
    this.#chores = new BlobHousekeeping(this.gcIntervalMs, this.#logger);
  }

  get closed(): boolean {
    return this.#chores.closed;
  }

  /** Creates the directory, then collects garbage now (in the background) and every `gcIntervalMs`. */
  async start(): Promise<this> {
    this.#chores.throwIfClosed();
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    this.#chores.startCollector(() => this.gc(), { now: true });
    return this;
  }

  /** Stops the collector and cuts every transfer in progress (their partial files are discarded). */
  close(): Promise<void> {
    return this.#chores.close();
  }

  /**
   * Registers a way to cut a transfer (e.g. destroy its socket) that `close()` calls.
   * Returns the function that unregisters it.
   */
  trackTransfer(abort: () => void): () => void {
    return this.#chores.trackTransfer(abort);
  }

  /** Starts an upload into a fresh tmp- file. */
  async beginUpload(input: { roomId: string; uploader: string; mimetype: string }): Promise<BlobUpload> {
    this.#chores.throwIfClosed();
    const mimetype = parseMimetype(input.mimetype);
    const tmp = await this.#openTmp();
    let state: "open" | "committing" | "done" = "open";
    let written = 0;
    let pending: Promise<unknown> = Promise.resolve();
    const discard = async () => {
      state = "done";
      await pending.catch(() => {});
      await this.#discardTmp(tmp);
    };
    return {
      write: (chunk) => {
        if (state !== "open") return Promise.reject(new StateError(["open"], state, "BlobUpload.write()"));
        if (written + chunk.length > this.maxBytes) {
          return Promise.reject(new InvalidArgumentError("size", "the blob is larger than the limit"));
        }
        written += chunk.length;
        const p = writeAll(tmp.handle, chunk);
        pending = p;
        return p;
      },
      commit: async ({ size, sha256 }) => {
        if (state !== "open") throw new StateError(["open"], state, "BlobUpload.commit()");
        state = "committing";
        try {
          await pending;
          if (size !== written) {
            throw new InvalidArgumentError("size", `${written} bytes were written but the commit declares ${size}`);
          }
          if (!SHA256_HEX.test(sha256)) throw new InvalidArgumentError("sha256", "sha256 must be 64 lowercase hex");
          const meta = await this.#publish(tmp, {
            roomId: input.roomId,
            uploader: input.uploader,
            mimetype,
            size,
            sha256,
          });
          state = "done";
          return meta;
        } catch (err) {
          await discard();
          throw err;
        }
      },
      abort: async () => {
        if (state === "done") return;
        await discard();
      },
    };
  }

  /** A fresh tmp- file, which the collector leaves alone until it is published or discarded. */
  async #openTmp(): Promise<TmpFile> {
    const name = `tmp-${crypto.randomBytes(12).toString("hex")}`;
    const file = path.join(this.dir, name);
    const handle = await fs.open(file, "wx", 0o600);
    this.#activeTmp.add(name);
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      await handle.close();
    };
    return { name, path: file, handle, close };
  }

  async #discardTmp(tmp: TmpFile): Promise<void> {
    await tmp.close().catch(() => {});
    await fs.rm(tmp.path, { force: true }).catch((err: Error) => {
      this.#logger.warn({ component: "blobs", err: err.message }, "could not remove a partial upload");
    });
    this.#activeTmp.delete(tmp.name);
  }

  /**
   * fsyncs the upload, renames it into place and writes its metadata: the blob exists
   * once the metadata does, so bytes left without it are an orphan for the collector.
   */
  async #publish(
    tmp: TmpFile,
    blob: { roomId: string; uploader: string; mimetype: string; size: number; sha256: string },
  ): Promise<BlobMeta> {
    this.#chores.throwIfClosed();
    await tmp.handle.sync();
    await tmp.close();
    const now = this.#now();
    const meta: BlobMeta = {
      id: crypto.randomBytes(16).toString("hex"),
      roomId: blob.roomId,
      uploader: blob.uploader.toLowerCase(),
      mimetype: blob.mimetype,
      size: blob.size,
      sha256: blob.sha256,
      createdAt: now,
      expiresAt: now + this.maxAgeMs,
    };
    const dataPath = this.#dataPath(meta.id);
    await fs.rename(tmp.path, dataPath);
    this.#activeTmp.delete(tmp.name);
    try {
      await this.#writeMeta(meta);
    } catch (err) {
      await fs.rm(dataPath, { force: true }).catch(() => {});
      throw err;
    }
    return meta;
  }

  /** The metadata of a live blob. NotFoundError for an unknown, malformed, corrupt or expired id. */
  async stat(id: string): Promise<BlobMeta> {
    this.#chores.throwIfClosed();
    if (!isBlobId(id)) throw new NotFoundError("blob", String(id).slice(0, 64));
    let text: string;
    try {
      text = await fs.readFile(this.#metaPath(id), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new NotFoundError("blob", id);
      throw err;
    }
    const meta = parseMeta(text, id);
    if (!meta) {
      this.#logger.error({ component: "blobs", blobId: id }, "blob metadata is corrupt; the blob is not served");
      throw new NotFoundError("blob", id);
    }
    if (this.#expired(meta, this.#now())) throw new NotFoundError("blob", id);
    return meta;
  }

  /**
   * Opens a live blob for reading. The caller owns the handle (a stream made with
   * `handle.createReadStream()` closes it). An open handle keeps its bytes readable even
   * if the blob is deleted meanwhile.
   */
  async open(id: string): Promise<{ meta: BlobMeta; handle: FileHandle }> {
    const meta = await this.stat(id);
    let handle: FileHandle;
    try {
      handle = await fs.open(this.#dataPath(id), "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new NotFoundError("blob", id);
      throw err;
    }
    const { size } = await handle.stat().catch(async (err: unknown) => {
      await handle.close();
      throw err;
    });
    if (size !== meta.size) {
      await handle.close();
      this.#logger.error(
        { component: "blobs", blobId: id, expected: meta.size, actual: size },
        "blob file does not have the size its metadata records; the blob is not served",
      );
      throw new NotFoundError("blob", id);
    }
    return { meta, handle };
  }

  /** A live blob and a stream of its file (the stream closes the file). */
  async read(id: string): Promise<{ meta: BlobMeta; body: Readable }> {
    const { meta, handle } = await this.open(id);
    return { meta, body: handle.createReadStream({ highWaterMark: 64 * 1024 }) };
  }

  /**
   * Deletes every blob of a room (the room is being deleted), expired ones too: each
   * one's metadata first, so it stops being served at once, then its bytes. Returns how
   * many went. Safe to repeat; the collector would find the rest later as "room-gone".
   */
  async deleteRoomBlobs(roomId: string): Promise<number> {
    this.#chores.throwIfClosed();
    let n = 0;
    for (const name of await fs.readdir(this.dir).catch(() => [] as string[])) {
      const id = META_FILE.exec(name)?.[1];
      if (!id) continue;
      const text = await fs.readFile(this.#metaPath(id), "utf8").catch(() => undefined);
      if (text === undefined || parseMeta(text, id)?.roomId !== roomId) continue;
      await this.#remove(id, { mustExist: false });
      n++;
    }
    if (n) this.#logger.info({ component: "blobs", roomId, removed: n }, "room's blobs deleted");
    return n;
  }

  /** Deletes a blob: metadata first (it disappears at once), then its bytes. NotFoundError when unknown. */
  async delete(id: string): Promise<void> {
    this.#chores.throwIfClosed();
    if (!isBlobId(id)) throw new NotFoundError("blob", String(id).slice(0, 64));
    await this.#remove(id, { mustExist: true });
  }

  /**
   * One collection pass: removes blobs whose room no longer exists or that are older
   * than `maxAgeMs` (or past their `expiresAt`), leftovers of interrupted uploads
   * older than `tmpMaxAgeMs`, and corrupt metadata. A blob whose room cannot be
   * checked right now is kept. Passes never overlap; `now` overrides the clock.
   */
  gc(opts: { now?: number } = {}): Promise<GcReport> {
    return this.#chores.serialise(() => this.#gc(opts.now ?? this.#now()));
  }

  async #gc(now: number): Promise<GcReport> {
    const report: GcReport = { removed: [], tmpRemoved: 0, kept: 0, unchecked: 0 };
    let dir: Awaited<ReturnType<typeof fs.opendir>>;
    try {
      dir = await fs.opendir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return report;
      throw err;
    }
    const roomExists = new Map<string, boolean | undefined>();
    for await (const entry of dir) {
      if (!entry.isFile()) continue;
      try {
        await this.#collect(entry.name, now, report, roomExists);
      } catch (err) {
        this.#logger.warn(
          { component: "blobs", file: entry.name, err: (err as Error).message },
          "could not collect a blob",
        );
      }
    }
    if (report.removed.length || report.tmpRemoved) {
      this.#logger.info(
        { component: "blobs", removed: report.removed.length, tmpRemoved: report.tmpRemoved, kept: report.kept },
        "blob garbage collected",
      );
    }
    return report;
  }

  /** One file of the directory: an old tmp- leftover, bytes without metadata, or a blob's metadata. */
  async #collect(
    name: string,
    now: number,
    report: GcReport,
    roomExists: Map<string, boolean | undefined>,
  ): Promise<void> {
    if (name.startsWith("tmp-")) {
      if (!this.#activeTmp.has(name) && (await this.#olderThan(name, now, this.tmpMaxAgeMs))) {
        await fs.rm(path.join(this.dir, name), { force: true });
        report.tmpRemoved++;
      }
      return;
    }
    if (isBlobId(name)) {
      // Bytes whose metadata never got written (a crash between rename and commit).
      if (!(await exists(this.#metaPath(name))) && (await this.#olderThan(name, now, this.tmpMaxAgeMs))) {
        await fs.rm(path.join(this.dir, name), { force: true });
        report.removed.push({ id: name, reason: "orphan" });
      }
      return;
    }
    const id = META_FILE.exec(name)?.[1];
    if (!id) return;
    const text = await fs.readFile(this.#metaPath(id), "utf8").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw err;
    });
    if (text === undefined) return;
    const reason = await this.#removalReason(parseMeta(text, id), now, report, roomExists);
    if (reason) {
      await this.#remove(id, { mustExist: false });
      report.removed.push({ id, reason });
    } else report.kept++;
  }

  /** Why a blob goes, or undefined to keep it (also when its room cannot be checked: counted as unchecked). */
  async #removalReason(
    meta: BlobMeta | undefined,
    now: number,
    report: GcReport,
    roomExists: Map<string, boolean | undefined>,
  ): Promise<GcReason | undefined> {
    if (!meta) return "corrupt";
    if (this.#expired(meta, now)) return "expired";
    if (!roomExists.has(meta.roomId)) roomExists.set(meta.roomId, await this.#roomExists(meta.roomId));
    const verdict = roomExists.get(meta.roomId);
    if (verdict === false) return "room-gone";
    if (verdict === undefined) report.unchecked++;
    return undefined;
  }

  async #roomExists(roomId: string): Promise<boolean | undefined> {
    return roomVerdict(this.#store, roomId, this.#logger);
  }

  #expired(meta: BlobMeta, now: number): boolean {
    return meta.expiresAt <= now || meta.createdAt + this.maxAgeMs <= now;
  }

  async #olderThan(name: string, now: number, ageMs: number): Promise<boolean> {
    try {
      const st = await fs.stat(path.join(this.dir, name));
      return st.mtimeMs + ageMs <= now;
    } catch {
      return false;
    }
  }

  async #remove(id: string, { mustExist }: { mustExist: boolean }): Promise<void> {
    try {
      await fs.unlink(this.#metaPath(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      if (mustExist) throw new NotFoundError("blob", id);
    }
    await fs.rm(this.#dataPath(id), { force: true });
  }

  async #writeMeta(meta: BlobMeta): Promise<void> {
    const tmp = path.join(this.dir, `tmp-${crypto.randomBytes(12).toString("hex")}.json`);
    try {
      const fh = await fs.open(tmp, "wx", 0o600);
      try {
        await fh.writeFile(JSON.stringify(meta));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, this.#metaPath(meta.id));
    } catch (err) {
      await fs.rm(tmp, { force: true }).catch(() => {});
      throw err;
    }
    await syncDir(this.dir);
  }

  #dataPath(id: string): string {
    return path.join(this.dir, id);
  }

  #metaPath(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }
}

/** Whether a blob's room exists: true / false, or undefined when the store cannot tell right now (never delete on doubt). */
export async function roomVerdict(
  store: Pick<Store, "getRoom">,
  roomId: string,
  logger: Logger,
): Promise<boolean | undefined> {
  try {
    await store.getRoom(roomId);
    return true;
  } catch (err) {
    if (err instanceof NotFoundError || err instanceof InvalidArgumentError) return false;
    logger.warn(
      { component: "blobs", roomId, err: (err as Error).message },
      "could not check a blob's room; keeping the blob",
    );
    return undefined;
  }
}

/**
 * The committed blobs of a blob directory, for a migration: each one's metadata and the
 * path of its bytes. Corrupt metadata, bytes without metadata and leftovers are skipped.
 */
export async function* committedBlobs(dir: string): AsyncGenerator<{ meta: BlobMeta; file: string }> {
  let names: string[];
  try {
    names = (await fs.readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  for (const name of names) {
    const id = META_FILE.exec(name)?.[1];
    if (!id) continue;
    const meta = parseMeta(await fs.readFile(path.join(dir, name), "utf8"), id);
    const file = path.join(dir, id);
    if (meta && (await fs.stat(file).catch(() => undefined))?.size === meta.size) yield { meta, file };
  }
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, offset, chunk.length - offset, null);
    offset += bytesWritten;
  }
}

/** The renames are durable only once the directory itself is synced (not possible everywhere). */
async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await fs.open(dir, "r");
    await fh.sync();
  } catch {
    // Some platforms cannot fsync a directory; the data itself is already synced.
  } finally {
    await fh?.close().catch(() => {});
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}

function parseMeta(text: string, id: string): BlobMeta | undefined {
  let m: Partial<BlobMeta>;
  try {
    m = JSON.parse(text) as Partial<BlobMeta>;
  } catch {
    return undefined;
  }
  if (
    !m ||
    typeof m !== "object" ||
    m.id !== id ||
    typeof m.roomId !== "string" ||
    typeof m.uploader !== "string" ||
    typeof m.mimetype !== "string" ||
    !Number.isSafeInteger(m.size) ||
    typeof m.sha256 !== "string" ||
    !SHA256_HEX.test(m.sha256) ||
    !Number.isSafeInteger(m.createdAt) ||
    !Number.isSafeInteger(m.expiresAt)
  ) {
    return undefined;
  }
  return m as BlobMeta;
}

function positiveInt(n: number, field: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(field, `${field} must be a positive integer`);
  return n;
}
