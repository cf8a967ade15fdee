/**
 * `unibus migrate-to-kv`: moves a single node's SQLite control plane into the JetStream
 * KV buckets a cluster runs on, and its blob directory into the blob Object Store. Host-trusted: it reads the data dir directly and
 * connects with the bus' own APP-account service key. Stop the bus first — writes made
 * after the snapshot are not carried over (the parity check would show them).
 */
import fs from "node:fs";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import type { Command } from "commander";
import { nkeySigner } from "../../auth/authenticator.ts";
import { loadOrCreateServiceKeys, SERVICE_KEYS_FILE } from "../../auth/service-keys.ts";
import { busLayout } from "../../bus/layout.ts";
import type { BlobBucket, BlobImport } from "../../control/blob-objects.ts";
import type { Logger } from "../../log/index.ts";
import {
  copySqliteFile,
  type ImportProgress,
  importSnapshot,
  type KvStore,
  openKvStore,
  openStore,
} from "../../store/index.ts";
import type { Snapshot } from "../../store/types.ts";
import { CA_CERT_FILE } from "../../tls/ca.ts";
import { CliError, errorLine } from "../output.ts";
import { configOption, resolveCommandConfig } from "../settings.ts";

export interface MigrationOptions {
  dataDir: string;
  /** An open KV store to import into (tests); else one is opened from `natsUrl`. */
  kv: KvStore;
  /** The blob bucket to copy `<dataDir>/blobs` into; without it blobs are not migrated. */
  blobs?: BlobBucket;
  onProgress?: (line: string) => void;
}

export interface MigrationResult {
  backupFile: string;
  parity: boolean;
  /** Which parts of the snapshots differ (empty on parity). */
  differs: Array<keyof Omit<Snapshot, "version">>;
  counts: Record<keyof Omit<Snapshot, "version">, number>;
  /** What happened to the blob directory's blobs (when a bucket was given). */
  blobs?: BlobImport;
}

const PARTS = ["users", "rooms", "members", "sealedKeys", "invites"] as const;

/**
 * Backup (VACUUM INTO), snapshot, import, parity check. Safe to run again: the import
 * writes every record's final value, so a re-run converges to the same state.
 */
export async function migrateToKv(opts: MigrationOptions): Promise<MigrationResult> {
  const say = opts.onProgress ?? (() => {});
  const file = busLayout(opts.dataDir, "").storeFile;
  if (!fs.existsSync(file)) {
    throw new CliError(`no bus store in ${opts.dataDir} (expected ${path.basename(file)}); pass the right --data-dir`);
  }
  const backupFile = backup(file, opts.dataDir);
  say(`backup ${backupFile}`);

  const sqlite = await openStore({ backend: "sqlite", file });
  let snap: Snapshot;
  try {
    snap = await sqlite.snapshot();
  } finally {
    await sqlite.close();
  }
  say(`snapshot ${PARTS.map((p) => `${p} ${snap[p].length}`).join(", ")}`);

  await importSnapshot(opts.kv, snap, {
    onProgress: (p: ImportProgress) => {
      if (p.done > 0 || p.total === 0) say(`${p.phase} ${p.done}/${p.total}`);
    },
  });

  const blobs = opts.blobs ? await migrateBlobs(opts.dataDir, opts.blobs, say) : undefined;

  const after = await opts.kv.snapshot();
  const differs = PARTS.filter((p) => !isDeepStrictEqual(after[p], snap[p]));
  return {
    ...(blobs ? { blobs } : {}),
    backupFile,
    parity: differs.length === 0 && after.version === snap.version,
    differs,
    counts: Object.fromEntries(PARTS.map((p) => [p, snap[p].length])) as MigrationResult["counts"],
  };
}

/** Copies `<dataDir>/blobs` into the bucket (the directory stays, as the rollback). */
async function migrateBlobs(dataDir: string, bucket: BlobBucket, say: (line: string) => void): Promise<BlobImport> {
  const { importBlobDir } = await import("../../control/blob-objects.ts");
  const done = await importBlobDir(path.join(dataDir, "blobs"), bucket, (d) => {
    if ((d.copied + d.present) % 100 === 0) say(`blobs ${d.copied + d.present}`);
  });
  say(`blobs copied ${done.copied}, already there ${done.present}, corrupt ${done.corrupt.length}`);
  return done;
}

/** A consistent copy of the live database (even with the bus writing), 0600 in `<dataDir>/backups/`. */
function backup(file: string, dataDir: string): string {
  const dir = path.join(dataDir, "backups");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(".", "-");
  let target = path.join(dir, `store-${stamp}.db`);
  for (let i = 1; fs.existsSync(target); i++) target = path.join(dir, `store-${stamp}-${i}.db`);
  copySqliteFile(file, target);
  return target;
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);

/** The NATS URL, refusing to send the service key's signature across a network without TLS pinned to our CA. */
export function checkTarget(natsUrl: string, ca: string | undefined): string[] {
  const servers = natsUrl
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (servers.length === 0) throw new CliError("--nats-url is empty");
  for (const s of servers) {
    let host: string;
    try {
      host = new URL(s.includes("://") ? s : `nats://${s}`).hostname;
    } catch {
      throw new CliError(`--nats-url ${JSON.stringify(s)} is not a URL such as nats://127.0.0.1:4222`);
    }
    if (!LOOPBACK.has(host) && ca === undefined) {
      throw new CliError(
        `refusing to connect to ${host} without --ca: a remote bus must be reached over TLS verified against the bus' CA (pass --ca <data-dir>/tls/ca.pem)`,
      );
    }
  }
  return servers;
}

interface MigrateCommandOptions {
  natsUrl: string;
  ca?: string;
}

export function migrateCommand(program: Command, logger?: Logger): void {
  const migrate = program
    .command("migrate-to-kv")
    .description("copy the SQLite control plane of a data dir into the bus' JetStream KV store (host-trusted)")
    .option(
      "-d, --data-dir <dir>",
      "the bus' data dir, holding store.db and service-keys.json (default: as `unibus up` resolves it)",
    )
    .requiredOption("--nats-url <url>", "the bus' NATS server(s), comma-separated, e.g. nats://127.0.0.1:4222")
    .option(
      "--ca <file>",
      `PEM of the bus' CA (default on loopback: <data dir>/tls/${CA_CERT_FILE}; required for a remote target)`,
    )
    .option("--replicas <n>", "replication of the KV buckets, 1-5 (default 1)");
  configOption(migrate).action(async (opts: MigrateCommandOptions, cmd: Command) => {
    const { config } = resolveCommandConfig(cmd);
    const dataDir = path.resolve(config.dataDir);
    const servers = checkTarget(opts.natsUrl, opts.ca);
    if (!fs.existsSync(path.join(dataDir, SERVICE_KEYS_FILE))) {
      throw new CliError(`no ${SERVICE_KEYS_FILE} in ${dataDir}: run this on the bus' host with its data dir`);
    }
    const target = await openTarget(dataDir, servers, opts.ca, config.replicas ?? 1, logger);
    let result: MigrationResult;
    try {
      const onProgress = (line: string) => process.stderr.write(`${line}\n`);
      result = await migrateToKv({ dataDir, kv: target.kv, blobs: target.blobs, onProgress });
    } finally {
      await target.close();
    }
    reportParity(result);
  });
}

/**
 * The CA to verify the target with: --ca, else the data dir's own (a bus always speaks
 * TLS with it, so on loopback it is the one). Only a loopback target (checkTarget) can
 * get here without either; that is a bare nats-server, reached as before.
 */
function targetCa(dataDir: string, ca: string | undefined): string | undefined {
  if (ca !== undefined) return ca;
  const own = path.join(busLayout(dataDir, "").tlsDir, CA_CERT_FILE);
  return fs.existsSync(own) ? own : undefined;
}

/** The bus' KV store and blob bucket, reached as the bus itself (its APP service key) on one connection. */
async function openTarget(
  dataDir: string,
  servers: string[],
  ca: string | undefined,
  replicas: number,
  logger: Logger | undefined,
): Promise<{ kv: KvStore; blobs: BlobBucket; close(): Promise<void> }> {
  const caFile = targetCa(dataDir, ca);
  let caPem: string | undefined;
  try {
    caPem = caFile === undefined ? undefined : fs.readFileSync(caFile, "utf8");
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? "error";
    throw new CliError(`cannot read the bus CA ${caFile} (${why}); pass --ca <file> with the bus' CA certificate`);
  }
  const keys = await loadOrCreateServiceKeys(dataDir);
  const unreachable = (err: unknown) => {
    const cause = (err as Error).cause instanceof Error ? `: ${((err as Error).cause as Error).message}` : "";
    return new CliError(
      `cannot open the KV store on ${servers.join(", ")} (${caFile ? `TLS verified against ${caFile}` : "no CA"})${cause} — ${errorLine(err).replace(/^unibus: /, "")}`,
    );
  };
  const { connect } = await import("@nats-io/transport-node");
  const nc = await connect({
    servers,
    name: "unibus-migrate",
    ...(caPem ? { tls: { ca: caPem } } : {}),
    authenticator: nkeySigner(keys.app.publicKey, (d) => keys.app.sign(d)),
    timeout: 10_000,
  }).catch((err: unknown) => {
    throw unreachable(err);
  });
  try {
    const { openBlobBucket } = await import("../../control/blob-objects.ts");
    const [kv, blobs] = await Promise.all([
      openKvStore({ nc, replicas, timeoutMs: 10_000, logger }),
      openBlobBucket(nc, { replicas, timeoutMs: 10_000, openTimeoutMs: 10_000 }),
    ]);
    const close = async () => {
      await kv.close();
      await nc.close();
    };
    return { kv, blobs, close };
  } catch (err) {
    await nc.close();
    throw unreachable(err);
  }
}

function reportParity(result: MigrationResult): void {
  const counts = PARTS.map((p) => `${p} ${result.counts[p]}`).join(", ");
  process.stdout.write(`backup: ${result.backupFile}\n`);
  if (result.blobs) {
    const { copied, present, corrupt } = result.blobs;
    process.stdout.write(`blobs: ${copied} copied, ${present} already there\n`);
    if (corrupt.length) {
      process.stdout.write(`blobs left out (their file does not match their hash): ${corrupt.join(", ")}\n`);
    }
  }
  if (result.parity) {
    process.stdout.write(`parity: OK — the KV snapshot equals the SQLite snapshot (${counts})\n`);
    return;
  }
  process.stdout.write(`parity: MISMATCH in ${result.differs.join(", ")} (SQLite has ${counts})\n`);
  throw new CliError(
    `the KV store does not match the SQLite store (${result.differs.join(", ")}); was the bus writing meanwhile? Stop it and run the migration again`,
  );
}
