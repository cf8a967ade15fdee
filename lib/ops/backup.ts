/**
 * `unibus backup`: a consistent copy of everything a bus needs, taken while it runs.
 *
 * Order: the store first — a SQLite bus's file with VACUUM INTO (one point in time), a
 * KV cluster's buckets through the running cluster with the store's snapshot (consistent
 * under writers, see KvStore.snapshot) — then the CA and service keys, then each
 * persisted room's history, then the blobs (a KV cluster's from its Object Store), then
 * the manifest (the commit point, see backup-format.ts).
 *
 * A room's history is exported up to the last sequence its stream had when the export
 * began, and stops before the first message of an epoch the store copy does not know
 * (a rekey after the copy): its key is not in the backup, so no member could read it.
 * Rooms created after the store copy are not in it, so neither are their streams nor
 * their blobs. nats.js v3's JetStreamManager has no stream snapshot API, so history is
 * exported message by message with direct get, in sequence order, and re-published on
 * restore.
 */
import crypto from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { roomStreamName } from "../auth/permissions.ts";
import { connectAsService } from "../auth/service-connection.ts";
import { loadServiceKeys, SERVICE_KEYS_FILE } from "../auth/service-keys.ts";
import { busLayout } from "../bus/layout.ts";
import { frameEpoch } from "../crypto/frame.ts";
import { NotFoundError } from "../errors.ts";
import { copySqliteFile, type KvStore, openKvStore, openStore, type Room, type Snapshot } from "../store/index.ts";
import { clientCaFileSync } from "../tls/rotation.ts";
import {
  BACKUP_FORMAT,
  BackupError,
  type BackupFile,
  type BackupManifest,
  type BackupMessage,
  type BackupStoreKind,
  type BackupStream,
  KV_STORE_FILE,
  listFiles,
  MANIFEST_FILE,
  MANIFEST_SUM_FILE,
  sha256File,
} from "./backup-format.ts";
import { readRunInfo } from "./run-file.ts";

export interface BackupOptions {
  dataDir: string;
  /** A directory that does not exist yet, or an empty one. */
  out: string;
  unibusVersion: string;
  /** One line per step (the CLI prints them on stderr). */
  onProgress?: (line: string) => void;
}

/** Headers JetStream's direct get adds to a stored message: not the publisher's. */
const DIRECT_GET_HEADERS = new Set(
  ["Nats-Stream", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Subject", "Nats-Last-Sequence", "Nats-Num-Pending"].map(
    (h) => h.toLowerCase(),
  ),
);

/** Bound of the whole KV store read and of each JetStream request of a backup: big stores take a while. */
const KV_READ_TIMEOUT_MS = 120_000;

export async function createBackup(opts: BackupOptions): Promise<BackupManifest> {
  const dataDir = path.resolve(opts.dataDir);
  const out = path.resolve(opts.out);
  const progress = opts.onProgress ?? (() => {});
  const layout = busLayout(dataDir, "");
  const run = await readRunInfo(dataDir);
  const kind: BackupStoreKind = run?.store === "kv" ? "kv" : "sqlite";
  if (kind === "sqlite" && !(await exists(layout.storeFile))) {
    if (await exists(path.join(dataDir, SERVICE_KEYS_FILE))) {
      throw new BackupError(
        `no bus runs on ${dataDir} and it has no store.db: a KV cluster is backed up through a running node; start it as it normally runs (\`unibus up\` with its cluster flags) and back up again`,
      );
    }
    throw new BackupError(`no bus store in ${dataDir}; pass the data dir of the bus to back up with --data-dir`);
  }
  await makeOutDir(out);
  try {
    const parts =
      kind === "kv"
        ? await backupKv(dataDir, run?.natsUrls ?? [], out, progress)
        : await backupSqlite(dataDir, run?.natsUrls ?? [], out, progress);
    const { snap, streams, blobs } = parts;
    const manifest: BackupManifest = {
      format: BACKUP_FORMAT,
      createdAt: new Date().toISOString(),
      unibusVersion: opts.unibusVersion,
      store: kind,
      counts: {
        users: snap.users.length,
        rooms: snap.rooms.length,
        members: snap.members.length,
        sealedKeys: snap.sealedKeys.length,
        invites: snap.invites.length,
        streams: streams.length,
        messages: streams.reduce((n, s) => n + s.messages, 0),
        blobs,
      },
      streams,
      files: await hashAll(out),
    };
    await writeManifest(out, manifest);
    progress(`done: ${manifest.files.length} files in ${out}`);
    return manifest;
  } catch (err) {
    // Never leave something that looks like a backup: it has no manifest, but say so by removing it.
    await fs.rm(out, { recursive: true, force: true });
    if (err instanceof BackupError) throw err;
    throw new BackupError(`the backup failed and was removed: ${(err as Error).message}`, { cause: err });
  }
}

interface BackupParts {
  snap: Snapshot;
  streams: BackupStream[];
  blobs: number;
}

function storeLine(snap: Snapshot): string {
  return `store: ${snap.users.length} users, ${snap.rooms.length} rooms, ${snap.members.length} members, ${snap.sealedKeys.length} sealed keys, ${snap.invites.length} invites`;
}

/** A single node: its SQLite file, keys, history through the running bus, blob directory. */
async function backupSqlite(
  dataDir: string,
  natsUrls: string[],
  out: string,
  progress: (line: string) => void,
): Promise<BackupParts> {
  const storeFile = busLayout(dataDir, "").storeFile;
  progress(`store: copying ${storeFile}`);
  copySqliteFile(storeFile, path.join(out, "store.db"));
  const snap = await snapshotOf(path.join(out, "store.db"));
  progress(storeLine(snap));
  await copyKeys(dataDir, out);
  progress("keys: CA and service keys copied");
  const persisted = snap.rooms.filter((r) => r.persist);
  let streams: BackupStream[] = [];
  if (persisted.length) {
    const nc = await serviceConnection(dataDir, natsUrls, persisted.length);
    try {
      streams = await exportHistory(nc, persisted, out, progress);
    } finally {
      await nc.close();
    }
  }
  const blobs = await copyBlobs(path.join(dataDir, "blobs"), path.join(out, "blobs"));
  progress(`blobs: ${blobs} copied`);
  return { snap, streams, blobs };
}

/**
 * A KV cluster, through any running node: the buckets (as the store's snapshot, which
 * restore imports), keys, history, and the blob Object Store's blobs written out as a
 * blob directory holds them (bytes and metadata), so both kinds of backup share one layout.
 */
async function backupKv(
  dataDir: string,
  natsUrls: string[],
  out: string,
  progress: (line: string) => void,
): Promise<BackupParts> {
  if (natsUrls.length === 0) {
    throw new BackupError(
      `no bus runs on ${dataDir}: a KV cluster is backed up through a running node; start it as it normally runs and back up again`,
    );
  }
  const nc = await serviceConnection(dataDir, natsUrls, 0);
  let kv: KvStore | undefined;
  try {
    progress(`store: reading the KV buckets through ${natsUrls.join(", ")}`);
    kv = await openKvStore({ nc, bind: true, timeoutMs: KV_READ_TIMEOUT_MS });
    const snap = await kv.snapshot({ timeoutMs: KV_READ_TIMEOUT_MS });
    await fs.writeFile(path.join(out, KV_STORE_FILE), `${JSON.stringify(snap)}\n`, { mode: 0o600, flag: "wx" });
    progress(storeLine(snap));
    await copyKeys(dataDir, out);
    progress("keys: CA and service keys copied");
    const persisted = snap.rooms.filter((r) => r.persist);
    const streams = persisted.length ? await exportHistory(nc, persisted, out, progress) : [];
    const blobs = await exportObjectBlobs(nc, kv, snap, path.join(out, "blobs"));
    progress(`blobs: ${blobs} copied from the blob object store`);
    return { snap, streams, blobs };
  } finally {
    await kv?.close();
    await nc.close();
  }
}

/** The bus' own APP-account connection, as the bus itself (service key, CA of the data dir). */
async function serviceConnection(dataDir: string, natsUrls: string[], persisted: number): Promise<NatsConnection> {
  if (natsUrls.length === 0) {
    throw new BackupError(
      `the bus in ${dataDir} is not running, and its ${persisted} persisted room(s) keep history that is read through it; start it (\`unibus up --data-dir ${dataDir}\`) and back up again`,
    );
  }
  const keys = await loadServiceKeys(dataDir);
  const caPem = await fs.readFile(clientCaFileSync(path.join(dataDir, "tls")), "utf8");
  return connectAsService({ servers: natsUrls, caPem, key: keys.app, name: "unibus-backup" });
}

async function exists(file: string): Promise<boolean> {
  return (await fs.stat(file).catch(() => undefined)) !== undefined;
}

async function makeOutDir(out: string): Promise<void> {
  const entries = await fs.readdir(out).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw new BackupError(`cannot write a backup to ${out} (${err.code}); give a new directory's path`);
  });
  if (entries?.length) throw new BackupError(`${out} is not empty; give a new directory's path for the backup`);
  await fs.mkdir(out, { recursive: true, mode: 0o700 });
  await fs.chmod(out, 0o700);
}

/** The store's snapshot, read from a scratch copy so the backup's file stays as VACUUM wrote it. */
async function snapshotOf(file: string): Promise<Snapshot> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-backup-"));
  try {
    const copy = path.join(dir, "store.db");
    await fs.copyFile(file, copy);
    const store = await openStore({ backend: "sqlite", file: copy });
    try {
      return await store.snapshot();
    } finally {
      await store.close();
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function copyPrivate(from: string, to: string): Promise<void> {
  await fs.mkdir(path.dirname(to), { recursive: true, mode: 0o700 });
  await fs.copyFile(from, to, fs.constants.COPYFILE_EXCL);
  await fs.chmod(to, 0o600);
}

/** The CA (certificate and key) and the service keys; the server certificate is re-issued on start. */
async function copyKeys(dataDir: string, out: string): Promise<void> {
  for (const f of ["ca.pem", "ca-key.pem"]) await copyPrivate(path.join(dataDir, "tls", f), path.join(out, "tls", f));
  // During a CA rotation, the other CA too: a node restored from it must still trust both.
  for (const f of ["ca-next.pem", "ca-next-key.pem", "ca-previous.pem", "ca-previous-key.pem"]) {
    const from = path.join(dataDir, "tls", f);
    if (existsSync(from)) await copyPrivate(from, path.join(out, "tls", f));
  }
  await copyPrivate(path.join(dataDir, SERVICE_KEYS_FILE), path.join(out, SERVICE_KEYS_FILE));
}

async function exportHistory(
  nc: NatsConnection,
  rooms: Room[],
  out: string,
  progress: (line: string) => void,
): Promise<BackupStream[]> {
  await fs.mkdir(path.join(out, "streams"), { mode: 0o700 });
  const streams: BackupStream[] = [];
  for (const room of rooms) {
    const s = await exportStream(nc, room, out);
    if (!s)
      progress(`history: room ${room.id} has no stream on the bus (nothing to copy; restore creates an empty one)`);
    else {
      progress(`history: room ${room.id}: ${s.messages} messages (seq ${s.firstSeq}-${s.lastSeq})`);
      if (s.cutAt) {
        progress(
          `history: room ${room.id}: stopped at seq ${s.cutAt.seq}, a message of epoch ${s.cutAt.epoch} (rekeyed after the store copy; the store has epoch ${room.epoch})`,
        );
      }
      const { cutAt: _c, ...stream } = s;
      streams.push(stream);
    }
  }
  return streams;
}

/**
 * One room's stream, up to the last sequence it had when the export began and before the
 * first message of an epoch above the room's in the store copy (its key is not in the backup).
 */
async function exportStream(
  nc: NatsConnection,
  room: Room,
  out: string,
): Promise<(BackupStream & { cutAt?: { seq: number; epoch: number } }) | undefined> {
  const jsm = await jetstreamManager(nc);
  const name = roomStreamName(room.id);
  const info = await jsm.streams.info(name).catch(() => undefined);
  if (!info) return undefined;
  const file = `streams/${name}.jsonl`;
  const fh = await fs.open(path.join(out, file), "wx", 0o600);
  let messages = 0;
  let firstSeq = 0;
  let lastSeq = 0;
  let cutAt: { seq: number; epoch: number } | undefined;
  try {
    const last = info.state.last_seq;
    for (let seq = info.state.first_seq; seq <= last; ) {
      const m = await jsm.direct.getMessage(name, { seq, next_by_subj: room.subject });
      if (!m || m.seq > last) break;
      const epoch = frameEpoch(m.data) ?? 0;
      if (epoch > room.epoch) {
        cutAt = { seq: m.seq, epoch };
        break;
      }
      const headers = [...(m.header?.keys() ?? [])]
        .filter((k) => !DIRECT_GET_HEADERS.has(k.toLowerCase()))
        .map((k): [string, string[]] => [k, m.header.values(k)]);
      const line: BackupMessage = {
        seq: m.seq,
        subject: m.subject,
        time: m.time.toISOString(),
        ...(headers.length ? { headers } : {}),
        data: Buffer.from(m.data).toString("base64"),
      };
      await fh.write(`${JSON.stringify(line)}\n`);
      if (messages++ === 0) firstSeq = m.seq;
      lastSeq = m.seq;
      seq = m.seq + 1;
    }
  } finally {
    await fh.close();
  }
  const c = info.config;
  return {
    name,
    roomId: room.id,
    subject: room.subject,
    maxBytes: c.max_bytes,
    maxAgeNs: c.max_age,
    maxMsgs: c.max_msgs,
    firstSeq: messages ? firstSeq : (cutAt?.seq ?? info.state.last_seq + 1),
    lastSeq,
    messages,
    file,
    ...(cutAt ? { cutAt } : {}),
  };
}

/** Committed blobs only (bytes and their metadata sidecar); one deleted meanwhile is skipped. */
async function copyBlobs(from: string, to: string): Promise<number> {
  const names = await fs.readdir(from).catch(() => [] as string[]);
  let copied = 0;
  await fs.mkdir(to, { mode: 0o700 });
  for (const meta of names.filter((n) => /^[0-9a-f]{32}\.json$/.test(n))) {
    const id = meta.slice(0, -".json".length);
    try {
      await copyPrivate(path.join(from, id), path.join(to, id));
      await copyPrivate(path.join(from, meta), path.join(to, meta));
      copied++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      await fs.rm(path.join(to, id), { force: true });
    }
  }
  return copied;
}

/**
 * The Object Store's live blobs of rooms in the store copy, each as `<id>` (its bytes,
 * digest checked while read) and `<id>.json` (its metadata), as a blob directory keeps
 * them. A blob deleted or expired meanwhile is skipped; one of a room created after the
 * store copy too (a restored bus would collect it as a blob of a room that is gone).
 */
async function exportObjectBlobs(nc: NatsConnection, kv: KvStore, snap: Snapshot, to: string): Promise<number> {
  await fs.mkdir(to, { mode: 0o700 });
  // Loaded here: a SQLite bus's backup never needs the Object Store client.
  const { Objm } = await import("@nats-io/obj");
  const { BLOB_BUCKET, ObjectBlobStore } = await import("../control/blob-objects.ts");
  const name = `${kv.bucketPrefix}${BLOB_BUCKET}`;
  const js = jetstream(nc, { timeout: KV_READ_TIMEOUT_MS });
  const os = await new Objm(js).open(name).catch(() => undefined);
  if (!os) return 0;
  const blobs = new ObjectBlobStore({ bucket: () => ({ os, js, name }), store: kv });
  const rooms = new Set(snap.rooms.map((r) => r.id));
  let copied = 0;
  try {
    for (const meta of await blobs.list()) {
      if (!rooms.has(meta.roomId)) continue;
      const read = await blobs.read(meta.id).catch((err: unknown) => {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      });
      if (!read) continue;
      await pipeline(read.body, createWriteStream(path.join(to, meta.id), { flags: "wx", mode: 0o600 }));
      await fs.writeFile(path.join(to, `${meta.id}.json`), JSON.stringify(read.meta), { mode: 0o600, flag: "wx" });
      copied++;
    }
  } finally {
    await blobs.close();
  }
  return copied;
}

async function hashAll(out: string): Promise<BackupFile[]> {
  const files: BackupFile[] = [];
  for (const rel of await listFiles(out)) {
    const file = path.join(out, rel);
    files.push({ path: rel, bytes: (await fs.stat(file)).size, sha256: await sha256File(file) });
  }
  return files;
}

async function writeManifest(out: string, manifest: BackupManifest): Promise<void> {
  const text = `${JSON.stringify(manifest, null, 2)}\n`;
  const sum = crypto.createHash("sha256").update(text).digest("hex");
  await fs.writeFile(path.join(out, MANIFEST_SUM_FILE), `${sum}\n`, { mode: 0o600, flag: "wx" });
  // Last: the manifest is the commit point.
  await fs.writeFile(path.join(out, MANIFEST_FILE), text, { mode: 0o600, flag: "wx" });
}
