import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type { DatabaseSync } from "node:sqlite";
import { pathToFileURL } from "node:url";
import { StoreUnavailableError } from "../errors.ts";
import type { Logger } from "../log/index.ts";

/** One `migrations/NNNN_name.sql` file. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Relative to this module, so it resolves both from lib/store/ (sources) and dist/store/ (build). */
export const MIGRATIONS_DIR = new URL("../../migrations/", import.meta.url);

const FILE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

/**
 * Reads and checks the migration files: every `.sql` file must be well named and the
 * versions must run 1..N without gaps, because a missing file would otherwise leave a
 * database silently short of a table.
 */
export function loadMigrations(dir: URL | string = MIGRATIONS_DIR): Migration[] {
  let out: Migration[];
  try {
    out = readMigrations(dir);
  } catch (err) {
    if (err instanceof StoreUnavailableError) throw err;
    throw brokenMigrations("they could not be read", err);
  }
  if (out.length === 0) throw brokenMigrations("no migration files found");
  out.forEach((mig, i) => {
    if (mig.version !== i + 1)
      throw brokenMigrations(`migration ${i + 1} is missing or duplicated (found ${mig.version})`);
  });
  return out;
}

/** The `.sql` files of `dir`, sorted by version. */
function readMigrations(dir: URL | string): Migration[] {
  const out: Migration[] = [];
  for (const entry of readdirSync(dir).sort()) {
    if (!entry.endsWith(".sql")) continue;
    const m = FILE.exec(entry);
    if (!m) throw brokenMigrations(`${entry} is not named NNNN_name.sql`);
    const sql = readFileSync(new URL(entry, dirUrl(dir)), "utf8");
    out.push({ version: Number(m[1]), name: m[2]!, sql });
  }
  return out.sort((a, b) => a.version - b.version);
}

function brokenMigrations(detail: string, cause?: unknown): StoreUnavailableError {
  return new StoreUnavailableError(
    `unibus's database migrations are missing or malformed (${detail}); reinstall unibus (the migrations/ folder ships with the package)`,
    { cause },
  );
}

function dirUrl(dir: URL | string): URL {
  const url = dir instanceof URL ? dir : pathToFileURL(path.resolve(dir));
  return url.href.endsWith("/") ? url : new URL(`${url.href}/`);
}

/** Ends an open transaction after a failure; a ROLLBACK with none open is not an error worth reporting. */
export function rollbackQuietly(db: DatabaseSync): void {
  try {
    db.exec("ROLLBACK");
  } catch {
    // no transaction was open (SQLite may already have rolled back on its own)
  }
}

export interface MigrationResult {
  /** Versions applied by this call, in order. */
  applied: number[];
  /** The database's schema version afterwards. */
  version: number;
}

/**
 * Brings `db` up to the newest migration. Each pending migration runs in its own
 * IMMEDIATE transaction that first re-checks whether it was recorded meanwhile, so two
 * processes opening the same fresh database at once apply each migration once.
 */
export function applyMigrations(db: DatabaseSync, migrations: readonly Migration[], logger: Logger): MigrationResult {
  db.exec(
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
  );
  const latest = migrations.reduce((max, m) => Math.max(max, m.version), 0);
  const recorded = new Map<number, string>();
  for (const row of db.prepare("SELECT version, name FROM schema_migrations").all()) {
    recorded.set(Number(row.version), String(row.name));
  }
  const current = Math.max(0, ...recorded.keys());
  if (current > latest) {
    throw new StoreUnavailableError(
      `this data directory was written by a newer unibus (database schema version ${current}; this unibus knows up to ${latest}); upgrade unibus to open it`,
    );
  }
  for (const m of migrations) {
    const name = recorded.get(m.version);
    if (name !== undefined && name !== m.name) {
      logger.warn(
        { version: m.version, recorded: name, file: m.name },
        "store migration was renamed after it was applied",
      );
    }
  }

  const isRecorded = db.prepare("SELECT 1 AS one FROM schema_migrations WHERE version = ?");
  const record = db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)");
  const applied: number[] = [];
  for (const m of migrations) {
    if (recorded.has(m.version)) continue;
    db.exec("BEGIN IMMEDIATE");
    try {
      if (isRecorded.get(m.version) === undefined) {
        db.exec(m.sql);
        record.run(m.version, m.name, Date.now());
        applied.push(m.version);
      }
      db.exec("COMMIT");
    } catch (err) {
      rollbackQuietly(db);
      logger.error({ err, version: m.version, name: m.name }, "store migration failed");
      throw new StoreUnavailableError(
        `the database could not be upgraded to schema version ${m.version}; it was left unchanged — see the log for the cause`,
        { cause: err },
      );
    }
    logger.info({ version: m.version, name: m.name }, "applied store migration");
  }
  return { applied, version: Math.max(current, latest) };
}
