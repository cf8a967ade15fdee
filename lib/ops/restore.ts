/**
 * `unibus restore`: a backup (see backup.ts) into a new data dir. The backup is checked
 * against its manifest first, and nothing is written when any file is missing, extra or
 * altered. Files go into place 0600 (dirs 0700); then, when the store has persisted
 * rooms, the bus is started once on random ports, each room's stream is created with
 * its old caps and first sequence, the history re-published in sequence order, and the
 * bus stopped. With no gaps in a room's sequences (nothing deleted from its middle) the
 * restored messages keep their sequence numbers; otherwise they keep their order.
 */
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import { DiscardPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import { roomStreamName } from "../auth/permissions.ts";
import { connectAsService } from "../auth/service-connection.ts";
import { loadServiceKeys, SERVICE_KEYS_FILE } from "../auth/service-keys.ts";
import { startUnibus } from "../bus/unibus.ts";
import type { Logger } from "../log/index.ts";
import { silentLogger } from "../log/index.ts";
import { openStore, type Room } from "../store/index.ts";
import {
  BackupError,
  type BackupManifest,
  type BackupMessage,
  type BackupStream,
  verifyBackup,
} from "./backup-format.ts";

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

export async function restoreBackup(opts: RestoreOptions): Promise<BackupManifest> {
  const backup = path.resolve(opts.backup);
  const dataDir = path.resolve(opts.dataDir);
  const progress = opts.onProgress ?? (() => {});
  const manifest = await verifyBackup(backup);
  progress(`verified: ${manifest.files.length} files match the manifest of ${manifest.createdAt}`);
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

/** Everything but the history files, where the bus expects it. */
async function placeFiles(backup: string, dataDir: string, manifest: BackupManifest): Promise<void> {
  for (const f of manifest.files) {
    if (f.path.startsWith("streams/")) continue;
    const ok = f.path === "store.db" || f.path === SERVICE_KEYS_FILE || /^(tls|blobs)\/[^/]+$/.test(f.path);
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
): Promise<number> {
  const jsm = await jetstreamManager(nc);
  const name = roomStreamName(room.id);
  await jsm.streams.add({
    name,
    subjects: [room.subject],
    allow_direct: true,
    num_replicas: 1,
    discard: DiscardPolicy.Old,
    ...(saved
      ? { max_bytes: saved.maxBytes, max_age: saved.maxAgeNs, max_msgs: saved.maxMsgs, first_seq: saved.firstSeq }
      : {}),
  });
  if (!saved) return 0;
  const js = jetstream(nc);
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
