/**
 * `unibus restore`: a backup (see backup.ts) into a new data dir. The backup is checked
 * against its manifest first, and nothing is written when any file is missing, extra or
 * altered.
 *
 * A single node's (SQLite) backup: files go into place 0600 (dirs 0700); then, when the
 * store has persisted rooms, the bus is started once on random ports, each room's stream
 * is created with its old caps and first sequence, the history re-published in sequence
 * order, and the bus stopped.
 *
 * A KV cluster's backup restores in two steps, because its state lives in replicated
 * JetStream, which only a running cluster can take: into a new data dir it puts the CA
 * and service keys (the cluster's identity: clients keep trusting its CA); once a cluster
 * runs on that data dir (`unibus up --cluster N`, or machines given copies of the keys),
 * the same command, seeing the running cluster in the data dir's run file, writes the
 * store, history and blobs into it through NATS and checks the store against the backup.
 * It refuses a cluster with anything the backup lacks (never over a bus in use), and may
 * be run again after a failure: every write converges to the backup's state.
 *
 * With no gaps in a room's sequences (nothing deleted from its middle) the restored
 * messages keep their sequence numbers; otherwise they keep their order.
 */
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import { isDeepStrictEqual } from "node:util";
import { DiscardPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import { roomStreamName } from "../auth/permissions.ts";
import { connectAsService } from "../auth/service-connection.ts";
import { loadServiceKeys, SERVICE_KEYS_FILE } from "../auth/service-keys.ts";
import { startUnibus } from "../bus/unibus.ts";
import type { Logger } from "../log/index.ts";
import { silentLogger } from "../log/index.ts";
import { importSnapshot, type KvStore, openKvStore, openStore, type Room, type Snapshot } from "../store/index.ts";
import { CA_CERT_FILE } from "../tls/ca.ts";
import {
  BackupError,
  type BackupManifest,
  type BackupMessage,
  type BackupStream,
  KV_STORE_FILE,
  verifyBackup,
} from "./backup-format.ts";
import { readRunInfo } from "./run-file.ts";

export interface RestoreOptions {
  backup: string;
  /** A data dir that does not exist yet, or an empty one. */
  dataDir: string;
  onProgress?: (line: string) => void;
  /** For the short-lived bus that re-publishes history; default: resolved as `up` does. */
  natsServer?: string;
  logger?: Logger;
}

const PIPELINE = 256;
/** Bound of each JetStream request while restoring into a cluster (a big import takes a while). */
const KV_TIMEOUT_MS = 60_000;

/** What was restored; `next` says what is left to do when the restore is not finished (a KV backup's first step). */
export type RestoreResult = BackupManifest & { next?: string };

export async function restoreBackup(opts: RestoreOptions): Promise<RestoreResult> {
  const backup = path.resolve(opts.backup);
  const dataDir = path.resolve(opts.dataDir);
  const progress = opts.onProgress ?? (() => {});
  const manifest = await verifyBackup(backup);
  progress(`verified: ${manifest.files.length} files match the manifest of ${manifest.createdAt}`);
  if (manifest.store === "kv") {
    const run = await readRunInfo(dataDir);
    if (run === undefined) return placeClusterKeys(backup, dataDir, manifest, progress);
    if (run.store !== "kv") {
      throw new BackupError(
        `${dataDir} runs a bus on SQLite; a KV cluster's backup restores into a KV cluster (restore into a new data dir first)`,
      );
    }
    return restoreIntoCluster(backup, dataDir, run.natsUrls, manifest, progress);
  }
  await makeDataDir(dataDir);
  try {
    await placeFiles(backup, dataDir, manifest);
    progress(`store, keys and ${manifest.counts.blobs} blobs in place in ${dataDir}`);
    const rooms = await persistedRooms(path.join(dataDir, "store.db"));
    if (rooms.length) await restoreHistory({ ...opts, backup, dataDir }, manifest, rooms, progress);
    progress(`done: start the bus with \`unibus up --data-dir ${dataDir}\``);
    return manifest;
  } catch (err) {
    // The data dir was new or empty: leave it so, never half restored.
    for (const entry of await fs.readdir(dataDir))
      await fs.rm(path.join(dataDir, entry), { recursive: true, force: true });
    if (err instanceof BackupError) throw err;
    throw new BackupError(`the restore failed and ${dataDir} was emptied again: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

async function makeDataDir(dataDir: string): Promise<void> {
  const entries = await fs.readdir(dataDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw new BackupError(`cannot restore into ${dataDir} (${err.code}); give a new data dir with --data-dir`);
  });
  if (entries?.length) {
    throw new BackupError(`${dataDir} is not empty; restore into a new data dir (--data-dir), never over a bus`);
  }
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  await fs.chmod(dataDir, 0o700);
}

/** Everything but the history files (and, from a KV backup, the store and blobs), where the bus expects it. */
async function placeFiles(backup: string, dataDir: string, manifest: BackupManifest): Promise<void> {
  for (const f of manifest.files) {
    if (f.path.startsWith("streams/")) continue;
    if (manifest.store === "kv" && (f.path === KV_STORE_FILE || f.path.startsWith("blobs/"))) continue;
    const store = manifest.store === "kv" ? KV_STORE_FILE : "store.db";
    const ok = f.path === store || f.path === SERVICE_KEYS_FILE || /^(tls|blobs)\/[^/]+$/.test(f.path);
    if (!ok) throw new BackupError(`${f.path} in ${backup} is not part of a unibus backup: the backup was altered`);
    const to = path.join(dataDir, ...f.path.split("/"));
    await fs.mkdir(path.dirname(to), { recursive: true, mode: 0o700 });
    await fs.copyFile(path.join(backup, f.path), to, fs.constants.COPYFILE_EXCL);
    await fs.chmod(to, 0o600);
  }
}

async function persistedRooms(file: string): Promise<Room[]> {
  const store = await openStore({ backend: "sqlite", file });
  try {
    return (await store.snapshot()).rooms.filter((r) => r.persist);
  } finally {
    await store.close();
  }
}

async function restoreHistory(
  opts: RestoreOptions,
  manifest: BackupManifest,
  rooms: Room[],
  progress: (line: string) => void,
): Promise<void> {
  progress(`history: starting the bus once to re-publish ${manifest.counts.messages} messages`);
  const bus = await startUnibus({
    dataDir: opts.dataDir,
    logger: opts.logger ?? silentLogger,
    ...(opts.natsServer ? { natsServer: opts.natsServer } : {}),
  });
  try {
    const keys = await loadServiceKeys(opts.dataDir);
    const nc = await connectAsService({
      servers: [bus.natsUrl],
      caPem: bus.caPem,
      key: keys.app,
      name: "unibus-restore",
    });
    try {
      const byRoom = new Map(manifest.streams.map((s) => [s.roomId, s]));
      for (const room of rooms) {
        const saved = byRoom.get(room.id);
        const n = await restoreStream(nc, room, saved, opts.backup);
        progress(`history: room ${room.id}: ${n} messages`);
      }
    } finally {
      await nc.close();
    }
  } finally {
    await bus.stop();
  }
}

/** Creates the room's stream as it was (an empty one when the backup had none) and re-publishes its history. */
async function restoreStream(
  nc: NatsConnection,
  room: Room,
  saved: BackupStream | undefined,
  backup: string,
  replicas = 1,
): Promise<number> {
  const jsm = await jetstreamManager(nc, { timeout: KV_TIMEOUT_MS });
  const name = roomStreamName(room.id);
  await jsm.streams.add({
    name,
    subjects: [room.subject],
    allow_direct: true,
    num_replicas: replicas,
    discard: DiscardPolicy.Old,
    ...(saved
      ? { max_bytes: saved.maxBytes, max_age: saved.maxAgeNs, max_msgs: saved.maxMsgs, first_seq: saved.firstSeq }
      : {}),
  });
  if (!saved) return 0;
  const js = jetstream(nc, { timeout: KV_TIMEOUT_MS });
  const lines = createInterface({
    input: createReadStream(path.join(backup, saved.file)),
    crlfDelay: Number.POSITIVE_INFINITY,
  });
  let pending: Promise<unknown>[] = [];
  let count = 0;
  for await (const line of lines) {
    if (!line) continue;
    const m = JSON.parse(line) as BackupMessage;
    const h = natsHeaders();
    for (const [k, values] of m.headers ?? []) for (const v of values) h.append(k, v);
    // One connection publishes in order, so pipelining keeps the stream's order.
    pending.push(js.publish(room.subject, Buffer.from(m.data, "base64"), m.headers?.length ? { headers: h } : {}));
    count++;
    if (pending.length >= PIPELINE) {
      await Promise.all(pending);
      pending = [];
    }
  }
  await Promise.all(pending);
  const info = await jsm.streams.info(name);
  if (info.state.messages !== saved.messages) {
    throw new BackupError(
      `room ${room.id}: ${info.state.messages} messages restored of ${saved.messages} in the backup (retention caps too small?)`,
    );
  }
  return count;
}

/** A KV backup's first step: the cluster's CA and service keys into a new data dir. */
async function placeClusterKeys(
  backup: string,
  dataDir: string,
  manifest: BackupManifest,
  progress: (line: string) => void,
): Promise<RestoreResult> {
  await makeDataDir(dataDir);
  try {
    await placeFiles(backup, dataDir, manifest);
  } catch (err) {
    for (const entry of await fs.readdir(dataDir))
      await fs.rm(path.join(dataDir, entry), { recursive: true, force: true });
    throw err;
  }
  progress(`keys: the backup's CA and service keys in place in ${dataDir}`);
  const next = `start the cluster on ${dataDir} (\`unibus up --cluster 3 --data-dir ${dataDir}\`, or on machines each node's data dir given a copy of tls/ca.pem, tls/ca-key.pem and service-keys.json), then run \`unibus restore ${backup} --data-dir ${dataDir}\` again to load the store, history and blobs into it`;
  progress(`next: ${next}`);
  return { ...manifest, next };
}

/** A KV backup's second step: store, history and blobs into the cluster running on the data dir. */
async function restoreIntoCluster(
  backup: string,
  dataDir: string,
  natsUrls: string[],
  manifest: BackupManifest,
  progress: (line: string) => void,
): Promise<RestoreResult> {
  const [ours, theirs] = await Promise.all([
    fs.readFile(path.join(backup, "tls", CA_CERT_FILE), "utf8"),
    fs.readFile(path.join(dataDir, "tls", CA_CERT_FILE), "utf8").catch(() => ""),
  ]);
  if (ours !== theirs) {
    throw new BackupError(
      `the cluster on ${dataDir} runs on another CA than the backup's; restore into a new data dir first and start the cluster on it`,
    );
  }
  const snap = JSON.parse(await fs.readFile(path.join(backup, KV_STORE_FILE), "utf8")) as Snapshot;
  const keys = await loadServiceKeys(dataDir);
  const nc = await connectAsService({ servers: natsUrls, caPem: ours, key: keys.app, name: "unibus-restore" });
  let kv: KvStore | undefined;
  try {
    kv = await openKvStore({ nc, bind: true, timeoutMs: KV_TIMEOUT_MS, openTimeoutMs: KV_TIMEOUT_MS });
    refuseForeignState(await kv.snapshot(), snap, dataDir);
    progress(`store: importing into the cluster's KV buckets (R${kv.replicas})`);
    await importSnapshot(kv, snap, {
      onProgress: (p) => {
        if (p.done === p.total) progress(`store: ${p.phase} ${p.done}/${p.total}`);
      },
    });
    const byRoom = new Map(manifest.streams.map((s) => [s.roomId, s]));
    for (const room of snap.rooms.filter((r) => r.persist)) {
      const saved = byRoom.get(room.id);
      if (!(await streamToRestore(nc, room, saved))) {
        progress(`history: room ${room.id}: already restored`);
        continue;
      }
      const n = await restoreStream(nc, room, saved, backup, kv.replicas);
      progress(`history: room ${room.id}: ${n} messages`);
    }
    const blobs = await restoreObjectBlobs(nc, kv, path.join(backup, "blobs"));
    progress(`blobs: ${blobs} in the blob object store`);
    const after = await kv.snapshot({ timeoutMs: KV_TIMEOUT_MS });
    const differs = (["users", "rooms", "members", "sealedKeys", "invites"] as const).filter(
      (p) => !isDeepStrictEqual(after[p], snap[p]),
    );
    if (differs.length) {
      throw new BackupError(
        `the cluster's store differs from the backup's in ${differs.join(", ")} after the import; was it written to meanwhile? Restore into a freshly started cluster`,
      );
    }
    progress(`done: the cluster on ${dataDir} holds the backup of ${manifest.createdAt}`);
    return manifest;
  } catch (err) {
    if (err instanceof BackupError) throw err;
    throw new BackupError(
      `the restore into the cluster stopped part-way (${(err as Error).message}); it is safe to run it again`,
      { cause: err },
    );
  } finally {
    await kv?.close();
    await nc.close();
  }
}

/** Restoring over a cluster in use would mix two states: only what the backup itself holds may be there (a re-run). */
function refuseForeignState(now: Snapshot, snap: Snapshot, dataDir: string): void {
  const users = new Set(snap.users.map((u) => u.signPub));
  const rooms = new Set(snap.rooms.map((r) => r.id));
  const invites = new Set(snap.invites.map((i) => i.tokenHash));
  const foreign = [
    `${now.users.filter((u) => !users.has(u.signPub)).length} users`,
    `${now.rooms.filter((r) => !rooms.has(r.id)).length} rooms`,
    `${now.invites.filter((i) => !invites.has(i.tokenHash)).length} invites`,
  ].filter((s) => !s.startsWith("0 "));
  if (foreign.length) {
    throw new BackupError(
      `the cluster on ${dataDir} already holds ${foreign.join(", ")} not in the backup; restore only into a freshly started cluster, never over a bus in use`,
    );
  }
}

/**
 * Whether the room's stream is still to be restored. One that already holds the backup's
 * history (a re-run after a later step failed) is kept, whatever was added since; one
 * an interrupted restore left short, or the bus made empty, is deleted to be made again.
 */
async function streamToRestore(nc: NatsConnection, room: Room, saved: BackupStream | undefined): Promise<boolean> {
  const jsm = await jetstreamManager(nc, { timeout: KV_TIMEOUT_MS });
  const name = roomStreamName(room.id);
  const info = await jsm.streams.info(name).catch(() => undefined);
  if (!info) return true;
  if (!saved || info.state.last_seq >= saved.lastSeq) return false;
  await jsm.streams.delete(name);
  return true;
}

/** The backup's blob directory into the cluster's blob Object Store (a blob already there with its bytes is kept). */
async function restoreObjectBlobs(nc: NatsConnection, kv: KvStore, dir: string): Promise<number> {
  const { BLOB_BUCKET, importBlobDir } = await import("../control/blob-objects.ts");
  const { Objm } = await import("@nats-io/obj");
  const js = jetstream(nc, { timeout: KV_TIMEOUT_MS });
  const name = `${kv.bucketPrefix}${BLOB_BUCKET}`;
  const os = await new Objm(js).open(name);
  const done = await importBlobDir(dir, { os, js, name });
  if (done.corrupt.length) {
    throw new BackupError(`blob ${done.corrupt[0]} did not store as its recorded hash; run the restore again`);
  }
  return done.copied + done.present;
}
