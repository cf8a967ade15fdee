import { chmodSync, closeSync, mkdirSync, openSync, statSync } from "node:fs";
import path from "node:path";
import { DatabaseSync, type SQLOutputValue, type StatementSync } from "node:sqlite";
import {
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  StoreUnavailableError,
  UnibusError,
  UserExistsError,
} from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import { applyMigrations, loadMigrations, rollbackQuietly } from "./migrate.ts";
import type { NewUser, Role, Store, User, UserStatus } from "./types.ts";
import { isKeyShape, lookupKey, validateNewUser } from "./validate.ts";

export interface SqliteStoreOptions {
  logger?: Logger;
}

const BUSY_TIMEOUT_MS = 5000;

/**
 * Opens (creating if needed) the SQLite database at `file` and brings its schema up to
 * date. The file is created 0600 and its directory 0700; an existing file readable by
 * others is tightened to 0600. Any failure — unreadable, corrupt, not a unibus database,
 * written by a newer unibus — is a `StoreUnavailableError` whose message carries no
 * path or SQL (the detail is in `cause` and the log).
 */
export async function openSqliteStore(file: string, opts: SqliteStoreOptions = {}): Promise<Store> {
  const logger = opts.logger ?? silentLogger;
  if (typeof file !== "string" || file.length === 0 || file === ":memory:") {
    throw new InvalidArgumentError("file", "the SQLite store needs the path of its database file");
  }
  const abs = path.resolve(file);
  try {
    prepareFile(abs, logger);
  } catch (err) {
    logger.error({ err, file: abs }, "could not prepare the store's database file");
    throw new StoreUnavailableError(
      "the store's database file could not be created or opened; check that the data directory exists and is writable by this user",
      { cause: err },
    );
  }

  const migrations = loadMigrations();
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(abs, { enableForeignKeyConstraints: true });
    // busy_timeout first: switching to WAL needs a lock another opener may hold.
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.exec("PRAGMA foreign_keys = ON");
    const mode = db.prepare("PRAGMA journal_mode = WAL").get();
    if (String(mode?.journal_mode).toLowerCase() !== "wal") {
      throw new Error(`journal_mode stayed ${String(mode?.journal_mode)}`);
    }
    applyMigrations(db, migrations, logger);
    return new SqliteStore(db, logger);
  } catch (err) {
    try {
      db?.close();
    } catch {
      // already failing; the first error is the one to report
    }
    if (err instanceof UnibusError) throw err;
    logger.error({ err, file: abs }, "could not open the store's database");
    throw new StoreUnavailableError(
      "the store's database could not be opened: it is unreadable, corrupt or not a unibus database; restore it from a backup or move it aside",
      { cause: err },
    );
  }
}

/** Creates the directory (0700) and the file (0600) ourselves, so SQLite never creates them with the umask's mode. */
function prepareFile(file: string, logger: Logger): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  try {
    closeSync(openSync(file, "wx", 0o600));
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  // SQLite gives the -wal and -shm files the database file's mode, so tighten all three.
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    let mode: number;
    try {
      mode = statSync(f).mode;
    } catch {
      continue;
    }
    if ((mode & 0o077) !== 0) {
      logger.warn(
        { file: f, mode: (mode & 0o777).toString(8) },
        "store file was readable by others; setting it to 0600",
      );
      chmodSync(f, 0o600);
    }
  }
}

const COLUMNS = "sign_pub, kex_pub, handle, role, status, created_at, revoked_at";

type Row = Record<string, SQLOutputValue>;

function toUser(row: Row): User {
  return {
    signPub: String(row.sign_pub),
    kexPub: row.kex_pub === null ? null : String(row.kex_pub),
    handle: String(row.handle),
    role: String(row.role) as Role,
    status: String(row.status) as UserStatus,
    createdAt: Number(row.created_at),
    revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
  };
}

class SqliteStore implements Store {
  readonly backend = "sqlite" as const;
  readonly #db: DatabaseSync;
  readonly #log: Logger;
  #closed = false;
  readonly #stmt: {
    begin: StatementSync;
    commit: StatementSync;
    insert: StatementSync;
    byKey: StatementSync;
    byHandle: StatementSync;
    list: StatementSync;
    revoke: StatementSync;
    remove: StatementSync;
    active: StatementSync;
    activeAdmin: StatementSync;
  };

  constructor(db: DatabaseSync, logger: Logger) {
    this.#db = db;
    this.#log = logger;
    this.#stmt = {
      begin: db.prepare("BEGIN IMMEDIATE"),
      commit: db.prepare("COMMIT"),
      insert: db.prepare(`INSERT INTO users (${COLUMNS}) VALUES (?, ?, ?, ?, 'active', ?, NULL) RETURNING ${COLUMNS}`),
      byKey: db.prepare(`SELECT ${COLUMNS} FROM users WHERE sign_pub = ?`),
      byHandle: db.prepare("SELECT 1 AS one FROM users WHERE handle = ?"),
      list: db.prepare(`SELECT ${COLUMNS} FROM users ORDER BY created_at, handle`),
      // max(): a clock that stepped back must not make a user revoked before it existed.
      revoke: db.prepare(
        `UPDATE users SET status = 'revoked', revoked_at = max(?, created_at) WHERE sign_pub = ? AND status = 'active' RETURNING ${COLUMNS}`,
      ),
      remove: db.prepare("DELETE FROM users WHERE sign_pub = ?"),
      active: db.prepare("SELECT 1 AS one FROM users WHERE sign_pub = ? AND status = 'active'"),
      activeAdmin: db.prepare(
        "SELECT EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND status = 'active') AS present",
      ),
    };
  }

  /**
   * Every method runs through here: a closed store or an unexpected SQLite error becomes
   * `StoreUnavailableError` (callers deny on it); our own typed errors pass through.
   */
  #run<T>(what: string, fn: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new StoreUnavailableError("the store is closed"));
    try {
      return Promise.resolve(fn());
    } catch (err) {
      if (err instanceof UnibusError) return Promise.reject(err);
      this.#log.error({ err, op: what }, "store operation failed");
      return Promise.reject(
        new StoreUnavailableError("the store could not answer; see the server log for the cause", { cause: err }),
      );
    }
  }

  addUser(u: NewUser): Promise<User> {
    return this.#run("addUser", () => {
      const v = validateNewUser(u);
      // One IMMEDIATE transaction, so the checks and the insert see the same state even
      // with another process (the admin CLI) writing to the same file.
      this.#stmt.begin.run();
      try {
        if (this.#stmt.byKey.get(v.signPub) !== undefined) throw new UserExistsError(v.signPub);
        if (this.#stmt.byHandle.get(v.handle) !== undefined) {
          throw new ConflictError(`the handle "${v.handle}" is already taken by another user; choose another handle`);
        }
        const row = this.#stmt.insert.get(v.signPub, v.kexPub, v.handle, v.role, Date.now()) as Row;
        this.#stmt.commit.run();
        return toUser(row);
      } catch (err) {
        rollbackQuietly(this.#db);
        throw err;
      }
    });
  }

  getUser(signPub: string): Promise<User> {
    return this.#run("getUser", () => {
      const key = lookupKey(signPub);
      const row = this.#stmt.byKey.get(key) as Row | undefined;
      if (row === undefined) throw new NotFoundError("user", key);
      return toUser(row);
    });
  }

  listUsers(): Promise<User[]> {
    return this.#run("listUsers", () => (this.#stmt.list.all() as Row[]).map(toUser));
  }

  revokeUser(signPub: string): Promise<User> {
    return this.#run("revokeUser", () => {
      const key = lookupKey(signPub);
      const row = this.#stmt.revoke.get(Date.now(), key) as Row | undefined;
      if (row !== undefined) return toUser(row);
      if (this.#stmt.byKey.get(key) === undefined) throw new NotFoundError("user", key);
      throw new ConflictError(`user ${key} is already revoked`);
    });
  }

  deleteUser(signPub: string): Promise<void> {
    return this.#run("deleteUser", () => {
      const key = lookupKey(signPub);
      if (Number(this.#stmt.remove.run(key).changes) === 0) throw new NotFoundError("user", key);
    });
  }

  isAuthorized(signPub: string): Promise<boolean> {
    return this.#run("isAuthorized", () => {
      if (!isKeyShape(signPub)) return false;
      return this.#stmt.active.get(signPub.toLowerCase()) !== undefined;
    });
  }

  hasAdmin(): Promise<boolean> {
    return this.#run("hasAdmin", () => {
      const row = this.#stmt.activeAdmin.get() as Row | undefined;
      return row !== undefined && Number(row.present) === 1;
    });
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    try {
      this.#db.close();
    } catch (err) {
      this.#log.warn({ err }, "closing the store's database failed");
    }
    return Promise.resolve();
  }
}
