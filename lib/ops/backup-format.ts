/**
 * The layout of a backup directory and its checks. A backup is a directory (0700, files
 * 0600) holding the store (`store.db` from a SQLite bus; `store.json`, the store's
 * snapshot, from a KV cluster), the CA, the service keys, the blobs (each one's bytes and
 * its metadata, whichever store they came from), one JSON-lines file per persisted
 * room's history, and `manifest.json` — written last, so it is the commit
 * point: a backup without it was interrupted. The manifest lists every file with its
 * size and SHA-256; `manifest.sha256` holds the manifest's own hash, so an edited
 * manifest is caught too (integrity against accidents and careless edits, not a
 * signature: whoever can write the backup can rewrite both).
 */
import crypto from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { UnibusError } from "../errors.ts";

export const MANIFEST_FILE = "manifest.json";
export const MANIFEST_SUM_FILE = "manifest.sha256";
/** The store of a KV cluster's backup: its Snapshot (lib/store/types.ts) as JSON. */
export const KV_STORE_FILE = "store.json";
/** Where the bus kept its control-plane state: the SQLite file, or replicated JetStream KV buckets. */
export type BackupStoreKind = "sqlite" | "kv";
export const BACKUP_FORMAT = 1;

export interface BackupFile {
  /** Relative to the backup directory, `/`-separated. */
  path: string;
  bytes: number;
  sha256: string;
}

/** One persisted room's history as the backup holds it. */
export interface BackupStream {
  name: string;
  roomId: string;
  subject: string;
  /** The stream's caps as they were (bytes, age in ns, messages). */
  maxBytes: number;
  maxAgeNs: number;
  maxMsgs: number;
  firstSeq: number;
  lastSeq: number;
  messages: number;
  /** `streams/<name>.jsonl`, one message a line, in sequence order. */
  file: string;
}

export interface BackupManifest {
  format: typeof BACKUP_FORMAT;
  createdAt: string;
  unibusVersion: string;
  natsServerVersion?: string;
  store: BackupStoreKind;
  counts: {
    users: number;
    rooms: number;
    members: number;
    sealedKeys: number;
    invites: number;
    streams: number;
    messages: number;
    blobs: number;
  };
  streams: BackupStream[];
  files: BackupFile[];
}

/** One message of a room's history (a line of `streams/<name>.jsonl`). */
export interface BackupMessage {
  seq: number;
  subject: string;
  /** When JetStream stored it (ISO); a restore stores the message anew. */
  time: string;
  /** Headers the publisher set (never the ones direct get adds). */
  headers?: [string, string[]][];
  /** The payload, base64 (ciphertext for an encrypted room). */
  data: string;
}

/** A backup could not be written, or one given to restore is partial, altered or unusable. */
export class BackupError extends UnibusError {
  constructor(message: string, options?: ErrorOptions) {
    super("BACKUP", message, options);
  }
}

export async function sha256File(file: string): Promise<string> {
  const hash = crypto.createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Every regular file under `dir`, relative and `/`-separated, sorted. */
export async function listFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)).split(path.sep).join("/"))
    .sort();
}

/**
 * Reads the manifest and checks the backup against it: every listed file present with
 * its size and hash, nothing unlisted, the manifest's own hash. Throws BackupError with
 * one line naming the first thing wrong.
 */
export async function verifyBackup(dir: string): Promise<BackupManifest> {
  const stat = await fs.stat(dir).catch(() => undefined);
  if (!stat?.isDirectory())
    throw new BackupError(`${dir} is not a backup directory; give the path \`unibus backup\` wrote`);
  const manifestFile = path.join(dir, MANIFEST_FILE);
  const raw = await fs.readFile(manifestFile).catch(() => undefined);
  if (!raw) {
    throw new BackupError(
      `${dir} has no ${MANIFEST_FILE}: the backup is partial (interrupted?) or not a unibus backup; take a new one with \`unibus backup\``,
    );
  }
  const sum = (await fs.readFile(path.join(dir, MANIFEST_SUM_FILE), "utf8").catch(() => "")).trim();
  if (sum !== crypto.createHash("sha256").update(raw).digest("hex")) {
    throw new BackupError(
      `${MANIFEST_FILE} in ${dir} was altered (its checksum in ${MANIFEST_SUM_FILE} does not match)`,
    );
  }
  const manifest = parseManifest(raw.toString("utf8"), dir);
  const listed = new Set(manifest.files.map((f) => f.path));
  for (const f of manifest.files) await checkFile(dir, f);
  const extra = (await listFiles(dir)).filter((p) => p !== MANIFEST_FILE && p !== MANIFEST_SUM_FILE && !listed.has(p));
  if (extra.length)
    throw new BackupError(`${extra[0]} in ${dir} is not in the backup's manifest: the backup was altered`);
  return manifest;
}

function parseManifest(text: string, dir: string): BackupManifest {
  let m: Partial<BackupManifest>;
  try {
    m = JSON.parse(text);
  } catch {
    throw new BackupError(`${MANIFEST_FILE} in ${dir} is not JSON: the backup was altered`);
  }
  if (m.format !== BACKUP_FORMAT) {
    throw new BackupError(
      `${dir} is a backup of format ${String(m.format)}; this unibus reads format ${BACKUP_FORMAT} (restore it with the unibus that wrote it)`,
    );
  }
  if ((m.store !== "sqlite" && m.store !== "kv") || !Array.isArray(m.files) || !Array.isArray(m.streams) || !m.counts) {
    throw new BackupError(
      `${MANIFEST_FILE} in ${dir} lacks its store, files, streams or counts: the backup was altered`,
    );
  }
  for (const f of m.files) {
    // Paths come from a file anyone may have edited: never let one leave the backup.
    const bad = typeof f.path !== "string" || path.isAbsolute(f.path) || f.path.split("/").includes("..");
    if (bad)
      throw new BackupError(`${MANIFEST_FILE} in ${dir} names a file outside the backup: the backup was altered`);
  }
  return m as BackupManifest;
}

async function checkFile(dir: string, f: BackupFile): Promise<void> {
  const file = path.join(dir, f.path);
  const stat = await fs.stat(file).catch(() => undefined);
  if (!stat) throw new BackupError(`${f.path} is missing from ${dir}: the backup is partial`);
  if (stat.size !== f.bytes) {
    throw new BackupError(
      `${f.path} in ${dir} has ${stat.size} bytes, the manifest says ${f.bytes}: the backup is partial or altered`,
    );
  }
  if ((await sha256File(file)) !== f.sha256) {
    throw new BackupError(`${f.path} in ${dir} does not match its SHA-256 in the manifest: the backup was altered`);
  }
}
