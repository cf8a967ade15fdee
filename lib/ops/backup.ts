/**
 * `unibus backup`: a consistent copy of everything a bus needs, taken while it runs.
 *
 * Order: the store first (VACUUM INTO: one point in time), then the CA and service keys,
 * then each persisted room's history up to the last sequence it had when its export
 * began, then the blobs, then the manifest (the commit point, see backup-format.ts).
 * Rooms created after the store copy are not in it, so their streams are not exported;
 * history written after the store copy is (a restored room has at least what the store
 * knew of it). nats.js v3's JetStreamManager has no stream snapshot API, so history is
 * exported message by message with direct get, in sequence order, and re-published on
 * restore.
 */
import crypto from "node:crypto";
import fsSync from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { roomStreamName } from "../auth/permissions.ts";
import { connectAsService } from "../auth/service-connection.ts";
import { loadServiceKeys, SERVICE_KEYS_FILE } from "../auth/service-keys.ts";
import { busLayout } from "../bus/layout.ts";
import { copySqliteFile, openStore, type Room, type Snapshot } from "../store/index.ts";
import { clientCaFileSync } from "../tls/rotation.ts";
import {
  BACKUP_FORMAT,
  BackupError,
  type BackupFile,
  type BackupManifest,
  type BackupMessage,
  type BackupStream,
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

export async function createBackup(opts: BackupOptions): Promise<BackupManifest> {
  const dataDir = path.resolve(opts.dataDir);
  const out = path.resolve(opts.out);
  const progress = opts.onProgress ?? (() => {});
  const layout = busLayout(dataDir, "");
  const run = await readRunInfo(dataDir);
  if (run?.store === "kv") {
    throw new BackupError(
      '`unibus backup` covers a single node\'s SQLite store, not a KV cluster: stop one current node, copy its whole data dir and start it again (docs/operations.md, "Backing up a KV cluster")',
    );
  }
  if (!(await exists(layout.storeFile))) {
    throw new BackupError(`no bus store in ${dataDir}; pass the data dir of the bus to back up with --data-dir`);
  }
  await makeOutDir(out);
  try {
    progress(`store: copying ${layout.storeFile}`);
    copySqliteFile(layout.storeFile, path.join(out, "store.db"));
    const snap = await snapshotOf(path.join(out, "store.db"));
    progress(
      `store: ${snap.users.length} users, ${snap.rooms.length} rooms, ${snap.members.length} members, ${snap.sealedKeys.length} sealed keys, ${snap.invites.length} invites`,
    );
    await copyKeys(dataDir, out);
    progress("keys: CA and service keys copied");
    const persisted = snap.rooms.filter((r) => r.persist);
    const streams = persisted.length ? await exportHistory(dataDir, run?.natsUrls ?? [], persisted, out, progress) : [];
    const blobs = await copyBlobs(path.join(dataDir, "blobs"), path.join(out, "blobs"));
    progress(`blobs: ${blobs} copied`);
    const manifest: BackupManifest = {
      format: BACKUP_FORMAT,
      createdAt: new Date().toISOString(),
      unibusVersion: opts.unibusVersion,
      store: "sqlite",
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

/**
 * The CA (certificate and key; during a CA rotation the other CA's too) and the service
 * keys; the server certificate is re-issued on start.
 */
async function copyKeys(dataDir: string, out: string): Promise<void> {
  for (const f of ["ca.pem", "ca-key.pem"]) await copyPrivate(path.join(dataDir, "tls", f), path.join(out, "tls", f));
  for (const f of ["ca-next.pem", "ca-next-key.pem", "ca-previous.pem", "ca-previous-key.pem"]) {
    const from = path.join(dataDir, "tls", f);
    if (fsSync.existsSync(from)) await copyPrivate(from, path.join(out, "tls", f));
  }
  await copyPrivate(path.join(dataDir, SERVICE_KEYS_FILE), path.join(out, SERVICE_KEYS_FILE));
}

async function exportHistory(
  dataDir: string,
  natsUrls: string[],
  rooms: Room[],
  out: string,
  progress: (line: string) => void,
): Promise<BackupStream[]> {
  if (natsUrls.length === 0) {
    throw new BackupError(
      `the bus in ${dataDir} is not running, and its ${rooms.length} persisted room(s) keep history that is read through it; start it (\`unibus up --data-dir ${dataDir}\`) and back up again`,
    );
  }
  const keys = await loadServiceKeys(dataDir);
  const caPem = await fs.readFile(clientCaFileSync(path.join(dataDir, "tls")), "utf8");
  const nc = await connectAsService({ servers: natsUrls, caPem, key: keys.app, name: "unibus-backup" });
  try {
    await fs.mkdir(path.join(out, "streams"), { mode: 0o700 });
    const streams: BackupStream[] = [];
    for (const room of rooms) {
      const s = await exportStream(nc, room, out);
      if (!s)
        progress(`history: room ${room.id} has no stream on the bus (nothing to copy; restore creates an empty one)`);
      else {
        progress(`history: room ${room.id}: ${s.messages} messages (seq ${s.firstSeq}-${s.lastSeq})`);
        streams.push(s);
      }
    }
    return streams;
  } finally {
    await nc.close();
  }
}

/** One room's stream, up to the last sequence it had when the export began. */
async function exportStream(nc: NatsConnection, room: Room, out: string): Promise<BackupStream | undefined> {
  const jsm = await jetstreamManager(nc);
  const name = roomStreamName(room.id);
  const info = await jsm.streams.info(name).catch(() => undefined);
  if (!info) return undefined;
  const file = `streams/${name}.jsonl`;
  const fh = await fs.open(path.join(out, file), "wx", 0o600);
  let messages = 0;
  let firstSeq = 0;
  let lastSeq = 0;
  try {
    const last = info.state.last_seq;
    for (let seq = info.state.first_seq; seq <= last; ) {
      const m = await jsm.direct.getMessage(name, { seq, next_by_subj: room.subject });
      if (!m || m.seq > last) break;
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
    firstSeq: messages ? firstSeq : info.state.last_seq + 1,
    lastSeq,
    messages,
    file,
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
