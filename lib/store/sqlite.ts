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
import {
  checkAddMember,
  checkCancelInvite,
  checkCreateInvite,
  checkCreateRoom,
  checkDeleteUser,
  checkRekey,
  checkRemoveMember,
  checkTransferRoom,
  decideConsume,
  inviteIsLive,
  memberId,
} from "./rules.ts";
import type {
  Invite,
  InviteStatus,
  Member,
  NewInvite,
  NewMember,
  NewRoom,
  NewUser,
  Registration,
  Rekey,
  Role,
  Room,
  RoomRole,
  SealedKey,
  Snapshot,
  Store,
  User,
  UserChanges,
  UserStatus,
  UserWatch,
} from "./types.ts";
import {
  hashInviteToken,
  inviteIdOf,
  isKeyShape,
  isRoomIdShape,
  kexConflict,
  lookupKey,
  parseInviteRef,
  requiredKexPub,
  type ValidRekey,
  validateEpoch,
  validateInviteToken,
  validateNewInvite,
  validateNewMember,
  validateNewRoom,
  validateNewUser,
  validateRegistration,
  validateRekey,
  validateRoomId,
  validateSweepBefore,
  validateUserChanges,
} from "./validate.ts";

/**
 * A consistent copy of a live SQLite store (WAL lets its bus keep writing meanwhile),
 * written 0600 to `target`, which must not exist: backups and migrations take it.
 */
export function copySqliteFile(file: string, target: string): void {
  // VACUUM INTO accepts an existing empty file: creating it first fixes its mode.
  closeSync(openSync(target, "wx", 0o600));
  const db = new DatabaseSync(file);
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    db.prepare("VACUUM INTO ?").run(target);
  } finally {
    db.close();
  }
}

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
      throw new StoreUnavailableError(
        `the store's database could not switch to WAL journaling (journal_mode stayed ${String(mode?.journal_mode)}); keep the data directory on a local filesystem`,
      );
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

const USER_COLUMNS = "sign_pub, kex_pub, handle, role, status, created_at, revoked_at";
const ROOM_COLUMNS = "id, subject, owner_sign_pub, encrypt, persist, sign_msgs, epoch, created_at";
const MEMBER_COLUMNS = "room_id, sign_pub, role, added_at";
const KEY_COLUMNS = "room_id, epoch, sign_pub, sealed";
const INVITE_COLUMNS = "id, token_hash, handle, role, created_by, created_at, expires_at, status, spent_by, spent_at";

type Row = Record<string, SQLOutputValue>;

const nullableNumber = (v: SQLOutputValue | undefined): number | null =>
  v === null || v === undefined ? null : Number(v);

function toUser(row: Row): User {
  return {
    signPub: String(row.sign_pub),
    kexPub: row.kex_pub === null ? null : String(row.kex_pub),
    handle: String(row.handle),
    role: String(row.role) as Role,
    status: String(row.status) as UserStatus,
    createdAt: Number(row.created_at),
    revokedAt: nullableNumber(row.revoked_at),
  };
}

function toRoom(row: Row): Room {
  return {
    id: String(row.id),
    subject: String(row.subject),
    ownerSignPub: String(row.owner_sign_pub),
    encrypt: Number(row.encrypt) === 1,
    persist: Number(row.persist) === 1,
    signMsgs: Number(row.sign_msgs) === 1,
    epoch: Number(row.epoch),
    createdAt: Number(row.created_at),
  };
}

/**
 * A member's rooms as the callout reads them on every connect: row arrays, not objects
 * (node:sqlite builds an object per row with a property per column — at 1,000 rooms
 * ~4 ms of CPU, ~2 ms as arrays). Arrays where Node has them (22.16+), the same cells
 * from the objects otherwise.
 */
function roomsForOf(rows: unknown[]): Array<Room & { role: RoomRole }> {
  return rows.map((row) => {
    const c = cellsOf(row);
    return { ...roomOfCells(c), role: String(c[ROOM_AT.member_role]) as RoomRole };
  });
}

/** A row's cells in column order, whether node:sqlite gave an array or an object. */
function cellsOf(row: unknown): SQLOutputValue[] {
  return (Array.isArray(row) ? row : Object.values(row as Row)) as SQLOutputValue[];
}

/** A room from the cells of a row that starts with ROOM_COLUMNS. */
function roomOfCells(c: SQLOutputValue[]): Room {
  const at = ROOM_AT;
  return {
    id: String(c[at.id]),
    subject: String(c[at.subject]),
    ownerSignPub: String(c[at.owner_sign_pub]),
    encrypt: Number(c[at.encrypt]) === 1,
    persist: Number(c[at.persist]) === 1,
    signMsgs: Number(c[at.sign_msgs]) === 1,
    epoch: Number(c[at.epoch]),
    createdAt: Number(c[at.created_at]),
  };
}

/** Position of each column in a roomsFor row: ROOM_COLUMNS, then the member's role. */
type RoomRowColumn = "id" | "subject" | "owner_sign_pub" | "encrypt" | "persist" | "sign_msgs" | "epoch" | "created_at";
const ROOM_AT = Object.fromEntries(
  [...ROOM_COLUMNS.split(", "), "member_role"].map((column, i) => [column, i]),
) as Record<RoomRowColumn | "member_role", number>;

function asArrays(stmt: StatementSync): StatementSync {
  (stmt as { setReturnArrays?: (on: boolean) => void }).setReturnArrays?.(true);
  return stmt;
}

function toMember(row: Row): Member {
  return {
    roomId: String(row.room_id),
    signPub: String(row.sign_pub),
    role: String(row.role) as RoomRole,
    addedAt: Number(row.added_at),
  };
}

function toSealedKey(row: Row): SealedKey {
  return {
    roomId: String(row.room_id),
    epoch: Number(row.epoch),
    signPub: String(row.sign_pub),
    sealed: String(row.sealed),
  };
}

function toInvite(row: Row): Invite {
  return {
    id: String(row.id),
    tokenHash: String(row.token_hash),
    handle: String(row.handle),
    role: String(row.role) as Role,
    createdBy: String(row.created_by),
    createdAt: Number(row.created_at),
    expiresAt: Number(row.expires_at),
    status: String(row.status) as InviteStatus,
    spentBy: row.spent_by === null ? null : String(row.spent_by),
    spentAt: nullableNumber(row.spent_at),
  };
}

const bit = (b: boolean): number => (b ? 1 : 0);

type Prepare = (sql: string) => StatementSync;

/** The statements a store uses, prepared once per connection, one group per section of the store. */
function prepare(db: DatabaseSync) {
  const p: Prepare = (sql) => db.prepare(sql);
  return {
    begin: p("BEGIN IMMEDIATE"),
    beginRead: p("BEGIN"),
    commit: p("COMMIT"),
    ...userStatements(p),
    ...roomStatements(p),
    ...inviteStatements(p),
    ...stateStatements(p),
  };
}

/** Users and the allowlist checks. */
function userStatements(p: Prepare) {
  return {
    insertUser: p(
      `INSERT INTO users (${USER_COLUMNS}) VALUES (?, ?, ?, ?, 'active', ?, NULL) RETURNING ${USER_COLUMNS}`,
    ),
    userByKey: p(`SELECT ${USER_COLUMNS} FROM users WHERE sign_pub = ?`),
    userByHandle: p("SELECT 1 AS one FROM users WHERE handle = ?"),
    listUsers: p(`SELECT ${USER_COLUMNS} FROM users ORDER BY created_at, handle`),
    // max(): a clock that stepped back must not make a user revoked before it existed.
    revokeUser: p(
      `UPDATE users SET status = 'revoked', revoked_at = max(?, created_at) WHERE sign_pub = ? AND status = 'active' RETURNING ${USER_COLUMNS}`,
    ),
    setKexPub: p(
      `UPDATE users SET kex_pub = ? WHERE sign_pub = ? AND kex_pub IS NULL AND status = 'active' RETURNING ${USER_COLUMNS}`,
    ),
    reinstateUser: p(
      `UPDATE users SET status = 'active', revoked_at = NULL WHERE sign_pub = ? AND status = 'revoked' RETURNING ${USER_COLUMNS}`,
    ),
    updateUser: p(`UPDATE users SET role = ?, handle = ?, kex_pub = ? WHERE sign_pub = ? RETURNING ${USER_COLUMNS}`),
    deleteUser: p("DELETE FROM users WHERE sign_pub = ?"),
    // The allowlist check of every signed request: only whether a row exists, so no row object.
    activeUser: asArrays(p("SELECT 1 AS one FROM users WHERE sign_pub = ? AND status = 'active'")),
    activeAdmin: p("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND status = 'active') AS present"),
    roomsOwnedBy: p("SELECT id FROM rooms WHERE owner_sign_pub = ? ORDER BY id"),
  };
}

/** Rooms, members and sealed keys. */
function roomStatements(p: Prepare) {
  return {
    insertRoom: p(`INSERT INTO rooms (${ROOM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 1, ?) RETURNING ${ROOM_COLUMNS}`),
    roomById: p(`SELECT ${ROOM_COLUMNS} FROM rooms WHERE id = ?`),
    roomBySubject: p("SELECT 1 AS one FROM rooms WHERE subject = ?"),
    deleteRoom: p("DELETE FROM rooms WHERE id = ?"),
    bumpEpoch: p(`UPDATE rooms SET epoch = epoch + 1 WHERE id = ? AND epoch = ? RETURNING ${ROOM_COLUMNS}`),
    // Read by position: ROOM_COLUMNS, then the role (ROOM_AT).
    roomsFor: asArrays(
      p(`SELECT ${ROOM_COLUMNS.split(", ")
        .map((c) => `r.${c}`)
        .join(", ")}, m.role AS member_role
       FROM room_members m JOIN rooms r ON r.id = m.room_id
       WHERE m.sign_pub = ? ORDER BY r.created_at, r.id`),
    ),

    // Read on every signed request for a room: arrays, as roomsFor.
    roomIfMember: asArrays(
      p(
        `SELECT ${ROOM_COLUMNS.split(", ")
          .map((c) => `r.${c}`)
          .join(", ")}
         FROM room_members m JOIN rooms r ON r.id = m.room_id
         WHERE m.room_id = ? AND m.sign_pub = ?`,
      ),
    ),
    insertMember: p(`INSERT INTO room_members (${MEMBER_COLUMNS}) VALUES (?, ?, ?, ?) RETURNING ${MEMBER_COLUMNS}`),
    member: p(`SELECT ${MEMBER_COLUMNS} FROM room_members WHERE room_id = ? AND sign_pub = ?`),
    listMembers: p(`SELECT ${MEMBER_COLUMNS} FROM room_members WHERE room_id = ? ORDER BY added_at, sign_pub`),
    memberKeys: p("SELECT sign_pub FROM room_members WHERE room_id = ?"),
    deleteMember: p("DELETE FROM room_members WHERE room_id = ? AND sign_pub = ?"),
    setMemberRole: p("UPDATE room_members SET role = ? WHERE room_id = ? AND sign_pub = ?"),
    setOwner: p(`UPDATE rooms SET owner_sign_pub = ? WHERE id = ? RETURNING ${ROOM_COLUMNS}`),

    // A member removed and added back at the same epoch gets the key it is given now.
    putKey: p(
      "INSERT INTO room_keys (room_id, sign_pub, epoch, sealed) VALUES (?, ?, ?, ?) ON CONFLICT (room_id, sign_pub, epoch) DO UPDATE SET sealed = excluded.sealed",
    ),
    keyAt: p(`SELECT ${KEY_COLUMNS} FROM room_keys WHERE room_id = ? AND sign_pub = ? AND epoch = ?`),
    latestKey: p(`SELECT ${KEY_COLUMNS} FROM room_keys WHERE room_id = ? AND sign_pub = ? ORDER BY epoch DESC LIMIT 1`),
  };
}

/** Invites: single use, listing, sweeping. */
function inviteStatements(p: Prepare) {
  return {
    insertInvite: p(
      `INSERT INTO invites (${INVITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', NULL, NULL) RETURNING ${INVITE_COLUMNS}`,
    ),
    inviteByHash: p(`SELECT ${INVITE_COLUMNS} FROM invites WHERE token_hash = ?`),
    inviteById: p(`SELECT ${INVITE_COLUMNS} FROM invites WHERE id = ?`),
    invitesByHandle: p(`SELECT ${INVITE_COLUMNS} FROM invites WHERE handle = ? AND status = 'open'`),
    listInvites: p(`SELECT ${INVITE_COLUMNS} FROM invites ORDER BY created_at, id`),
    cancelInvite: p(
      `UPDATE invites SET status = 'cancelled' WHERE token_hash = ? AND status = 'open' RETURNING ${INVITE_COLUMNS}`,
    ),
    // The conditional UPDATE is the single-use guarantee: only a call that still sees
    // the invite open changes it, whatever else is racing.
    spendInvite: p(
      "UPDATE invites SET status = 'spent', spent_by = ?, spent_at = ? WHERE token_hash = ? AND status = 'open'",
    ),
    // Spent and cancelled ones whatever their expiry; open ones once expired (the caller's clock).
    sweepInvites: p("DELETE FROM invites WHERE created_at < ? AND (status != 'open' OR expires_at <= ?)"),
  };
}

/** The whole state at once (snapshots) and change detection for watches. */
function stateStatements(p: Prepare) {
  return {
    snapUsers: p(`SELECT ${USER_COLUMNS} FROM users ORDER BY sign_pub`),
    snapRooms: p(`SELECT ${ROOM_COLUMNS} FROM rooms ORDER BY id`),
    allRooms: p(`SELECT ${ROOM_COLUMNS} FROM rooms ORDER BY created_at, id`),
    snapMembers: p(`SELECT ${MEMBER_COLUMNS} FROM room_members ORDER BY room_id, sign_pub`),
    snapKeys: p(`SELECT ${KEY_COLUMNS} FROM room_keys ORDER BY room_id, epoch, sign_pub`),
    snapInvites: p(`SELECT ${INVITE_COLUMNS} FROM invites ORDER BY token_hash`),
    // data_version moves on another connection's commit; total_changes() on this one's writes.
    changeCounter: p("SELECT (SELECT data_version FROM pragma_data_version) AS v, total_changes() AS c"),
  };
}

class SqliteStore implements Store {
  readonly backend = "sqlite" as const;
  readonly #db: DatabaseSync;
  readonly #log: Logger;
  #closed = false;
  readonly #stmt: ReturnType<typeof prepare>;
  readonly #watches = new Set<NodeJS.Timeout>();

  constructor(db: DatabaseSync, logger: Logger) {
    this.#db = db;
    this.#log = logger;
    this.#stmt = prepare(db);
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

  /**
   * One IMMEDIATE transaction: the checks and the writes see the same state even with
   * another process (the admin CLI) writing to the same file, and a refusal thrown by
   * `fn` rolls back everything it wrote.
   */
  #tx<T>(fn: () => T, read = false): T {
    (read ? this.#stmt.beginRead : this.#stmt.begin).run();
    try {
      const result = fn();
      this.#stmt.commit.run();
      return result;
    } catch (err) {
      rollbackQuietly(this.#db);
      throw err;
    }
  }

  #user(signPub: string): User | undefined {
    const row = this.#stmt.userByKey.get(signPub) as Row | undefined;
    return row === undefined ? undefined : toUser(row);
  }

  #room(roomId: string): Room | undefined {
    const row = this.#stmt.roomById.get(roomId) as Row | undefined;
    return row === undefined ? undefined : toRoom(row);
  }

  #member(roomId: string, signPub: string): Member | undefined {
    const row = this.#stmt.member.get(roomId, signPub) as Row | undefined;
    return row === undefined ? undefined : toMember(row);
  }

  #requireRoom(roomId: string): Room {
    const room = this.#room(roomId);
    if (room === undefined) throw new NotFoundError("room", roomId);
    return room;
  }

  // ---- users ----

  addUser(u: NewUser): Promise<User> {
    return this.#run("addUser", () => {
      const v = validateNewUser(u);
      return this.#tx(() => {
        if (this.#stmt.userByKey.get(v.signPub) !== undefined) throw new UserExistsError(v.signPub);
        if (this.#stmt.userByHandle.get(v.handle) !== undefined) {
          throw new ConflictError(`the handle "${v.handle}" is already taken by another user; choose another handle`);
        }
        return toUser(this.#stmt.insertUser.get(v.signPub, v.kexPub, v.handle, v.role, Date.now()) as Row);
      });
    });
  }

  getUser(signPub: string): Promise<User> {
    return this.#run("getUser", () => {
      const key = lookupKey(signPub);
      const user = this.#user(key);
      if (user === undefined) throw new NotFoundError("user", key);
      return user;
    });
  }

  listUsers(): Promise<User[]> {
    return this.#run("listUsers", () => (this.#stmt.listUsers.all() as Row[]).map(toUser));
  }

  revokeUser(signPub: string): Promise<User> {
    return this.#run("revokeUser", () => {
      const key = lookupKey(signPub);
      const row = this.#stmt.revokeUser.get(Date.now(), key) as Row | undefined;
      if (row !== undefined) return toUser(row);
      if (this.#stmt.userByKey.get(key) === undefined) throw new NotFoundError("user", key);
      throw new ConflictError(`user ${key} is already revoked`);
    });
  }

  setKexPub(signPub: string, kexPub: string): Promise<User> {
    return this.#run("setKexPub", () => {
      const key = lookupKey(signPub);
      const kex = requiredKexPub(kexPub);
      const row = this.#stmt.setKexPub.get(kex, key) as Row | undefined;
      if (row !== undefined) return toUser(row);
      const cur = this.#stmt.userByKey.get(key) as Row | undefined;
      if (cur === undefined) throw new NotFoundError("user", key);
      throw new ConflictError(kexConflict(toUser(cur)));
    });
  }

  reinstateUser(signPub: string): Promise<User> {
    return this.#run("reinstateUser", () => {
      const key = lookupKey(signPub);
      const row = this.#stmt.reinstateUser.get(key) as Row | undefined;
      if (row !== undefined) return toUser(row);
      if (this.#stmt.userByKey.get(key) === undefined) throw new NotFoundError("user", key);
      throw new ConflictError(`user ${key} is already active`);
    });
  }

  updateUser(signPub: string, changes: UserChanges): Promise<User> {
    return this.#run("updateUser", () => {
      const key = lookupKey(signPub);
      const c = validateUserChanges(changes);
      return this.#tx(() => {
        const cur = this.#user(key);
        if (cur === undefined) throw new NotFoundError("user", key);
        if (c.handle !== undefined && c.handle !== cur.handle && this.#stmt.userByHandle.get(c.handle) !== undefined) {
          throw new ConflictError(`the handle "${c.handle}" is already taken by another user; choose another handle`);
        }
        const next = { ...cur, ...c };
        return toUser(this.#stmt.updateUser.get(next.role, next.handle, next.kexPub, key) as Row);
      });
    });
  }

  deleteUser(signPub: string): Promise<void> {
    return this.#run("deleteUser", () => {
      const key = lookupKey(signPub);
      this.#tx(() => {
        checkDeleteUser(key, {
          exists: this.#stmt.userByKey.get(key) !== undefined,
          ownedRooms: (this.#stmt.roomsOwnedBy.all(key) as Row[]).map((r) => String(r.id)),
        });
        // ON DELETE CASCADE takes its memberships and sealed keys along.
        this.#stmt.deleteUser.run(key);
      });
    });
  }

  isAuthorized(signPub: string): Promise<boolean> {
    return this.#run("isAuthorized", () => {
      if (!isKeyShape(signPub)) return false;
      return this.#stmt.activeUser.get(signPub.toLowerCase()) !== undefined;
    });
  }

  hasAdmin(): Promise<boolean> {
    return this.#run("hasAdmin", () => {
      const row = this.#stmt.activeAdmin.get() as Row | undefined;
      return row !== undefined && Number(row.present) === 1;
    });
  }

  // ---- rooms ----

  createRoom(r: NewRoom): Promise<Room> {
    return this.#run("createRoom", () => {
      const v = validateNewRoom(r);
      return this.#tx(() => {
        checkCreateRoom(v, {
          owner: this.#user(v.ownerSignPub),
          idTaken: this.#stmt.roomById.get(v.id) !== undefined,
          subjectTaken: this.#stmt.roomBySubject.get(v.subject) !== undefined,
        });
        const now = Date.now();
        const room = toRoom(
          this.#stmt.insertRoom.get(
            v.id,
            v.subject,
            v.ownerSignPub,
            bit(v.encrypt),
            bit(v.persist),
            bit(v.signMsgs),
            now,
          ) as Row,
        );
        this.#stmt.insertMember.run(v.id, v.ownerSignPub, "owner", now);
        if (v.ownerSealedKey !== null) this.#stmt.putKey.run(v.id, v.ownerSignPub, 1, v.ownerSealedKey);
        return room;
      });
    });
  }

  getRoom(roomId: string): Promise<Room> {
    return this.#run("getRoom", () => this.#requireRoom(validateRoomId(roomId)));
  }

  deleteRoom(roomId: string): Promise<void> {
    return this.#run("deleteRoom", () => {
      const id = validateRoomId(roomId);
      // ON DELETE CASCADE takes its members and every epoch's keys along, in this one statement.
      if (Number(this.#stmt.deleteRoom.run(id).changes) === 0) throw new NotFoundError("room", id);
    });
  }

  listMembers(roomId: string): Promise<Member[]> {
    return this.#run("listMembers", () => {
      const id = validateRoomId(roomId);
      return this.#tx(() => {
        this.#requireRoom(id);
        return (this.#stmt.listMembers.all(id) as Row[]).map(toMember);
      }, true);
    });
  }

  getMember(roomId: string, signPub: string): Promise<Member> {
    return this.#run("getMember", () => {
      const id = validateRoomId(roomId);
      const key = lookupKey(signPub);
      return this.#tx(() => {
        this.#requireRoom(id);
        const member = this.#member(id, key);
        if (member === undefined) throw new NotFoundError("member", memberId(id, key));
        return member;
      }, true);
    });
  }

  isMember(roomId: string, signPub: string): Promise<boolean> {
    return this.#run("isMember", () => {
      if (!isRoomIdShape(roomId) || !isKeyShape(signPub)) return false;
      return this.#stmt.member.get(roomId, signPub.toLowerCase()) !== undefined;
    });
  }

  roomIfMember(roomId: string, signPub: string): Promise<Room | undefined> {
    return this.#run("roomIfMember", () => {
      if (!isRoomIdShape(roomId) || !isKeyShape(signPub)) return undefined;
      const row = this.#stmt.roomIfMember.get(roomId, signPub.toLowerCase());
      return row === undefined ? undefined : roomOfCells(cellsOf(row));
    });
  }

  addMember(roomId: string, m: NewMember): Promise<Member> {
    return this.#run("addMember", () => {
      const id = validateRoomId(roomId);
      const v = validateNewMember(m);
      return this.#tx(() => {
        const room = this.#room(id);
        checkAddMember(id, v, {
          room,
          user: this.#user(v.signPub),
          isMember: this.#stmt.member.get(id, v.signPub) !== undefined,
        });
        const member = toMember(this.#stmt.insertMember.get(id, v.signPub, v.role, Date.now()) as Row);
        if (v.sealedKey !== null) this.#stmt.putKey.run(id, v.signPub, room!.epoch, v.sealedKey);
        return member;
      });
    });
  }

  removeMember(roomId: string, signPub: string, rekey?: Rekey): Promise<void> {
    return this.#run("removeMember", () => {
      const id = validateRoomId(roomId);
      const key = lookupKey(signPub);
      const v = rekey === undefined ? undefined : validateRekey(rekey);
      this.#tx(() => {
        checkRemoveMember(id, key, { room: this.#room(id), member: this.#member(id, key) });
        this.#stmt.deleteMember.run(id, key);
        if (v !== undefined) this.#bumpEpoch(id, v);
      });
    });
  }

  transferRoom(roomId: string, toSignPub: string): Promise<Room> {
    return this.#run("transferRoom", () => {
      const id = validateRoomId(roomId);
      const to = lookupKey(toSignPub);
      return this.#tx(() => {
        const room = this.#room(id);
        checkTransferRoom(id, to, { room, member: this.#member(id, to), user: this.#user(to) });
        // The old owner steps down first: the schema allows one owner per room.
        this.#stmt.setMemberRole.run("member", id, room!.ownerSignPub);
        this.#stmt.setMemberRole.run("owner", id, to);
        return toRoom(this.#stmt.setOwner.get(to, id) as Row);
      });
    });
  }

  rekey(roomId: string, r: Rekey): Promise<Room> {
    return this.#run("rekey", () => {
      const id = validateRoomId(roomId);
      const v = validateRekey(r);
      return this.#tx(() => this.#bumpEpoch(id, v));
    });
  }

  /** Inside a transaction: checks the rekey against the current members and moves the room on. */
  #bumpEpoch(id: string, v: ValidRekey): Room {
    checkRekey(id, v, {
      room: this.#room(id),
      members: (this.#stmt.memberKeys.all(id) as Row[]).map((row) => String(row.sign_pub)),
    });
    const row = this.#stmt.bumpEpoch.get(id, v.fromEpoch) as Row | undefined;
    // Cannot happen inside the IMMEDIATE transaction after checkRekey; refuse rather than write half.
    if (row === undefined) throw new ConflictError(`room ${id} was rekeyed meanwhile; fetch it and retry`);
    const room = toRoom(row);
    for (const k of v.sealedKeys) this.#stmt.putKey.run(id, k.signPub, room.epoch, k.sealed);
    return room;
  }

  getSealedKey(roomId: string, signPub: string, epoch?: number): Promise<SealedKey> {
    return this.#run("getSealedKey", () => {
      const id = validateRoomId(roomId);
      const key = lookupKey(signPub);
      const at = epoch === undefined ? null : validateEpoch(epoch);
      return this.#tx(() => {
        this.#requireRoom(id);
        const row = (at === null ? this.#stmt.latestKey.get(id, key) : this.#stmt.keyAt.get(id, key, at)) as
          | Row
          | undefined;
        if (row === undefined) {
          throw new NotFoundError("sealed key", `${memberId(id, key)}${at === null ? "" : `@${at}`}`);
        }
        return toSealedKey(row);
      }, true);
    });
  }

  listRoomsFor(signPub: string): Promise<Array<Room & { role: RoomRole }>> {
    return this.#run("listRoomsFor", () => {
      const key = lookupKey(signPub);
      return roomsForOf(this.#stmt.roomsFor.all(key));
    });
  }

  listRooms(): Promise<Room[]> {
    return this.#run("listRooms", () => (this.#stmt.allRooms.all() as Row[]).map(toRoom));
  }

  // ---- invites ----

  createInvite(i: NewInvite): Promise<Invite> {
    return this.#run("createInvite", () => {
      const v = validateNewInvite(i);
      const tokenHash = hashInviteToken(v.token);
      return this.#tx(() => {
        const now = Date.now();
        checkCreateInvite(v, {
          tokenUsed:
            this.#stmt.inviteByHash.get(tokenHash) !== undefined ||
            this.#stmt.inviteById.get(inviteIdOf(tokenHash)) !== undefined,
          handleIsUser: this.#stmt.userByHandle.get(v.handle) !== undefined,
          handleHasOpenInvite: (this.#stmt.invitesByHandle.all(v.handle) as Row[]).some((row) =>
            inviteIsLive(toInvite(row), now),
          ),
        });
        return toInvite(
          this.#stmt.insertInvite.get(
            inviteIdOf(tokenHash),
            tokenHash,
            v.handle,
            v.role,
            v.createdBy,
            now,
            now + v.ttlMs,
          ) as Row,
        );
      });
    });
  }

  listInvites(): Promise<Invite[]> {
    return this.#run("listInvites", () => (this.#stmt.listInvites.all() as Row[]).map(toInvite));
  }

  cancelInvite(idOrToken: string): Promise<Invite> {
    return this.#run("cancelInvite", () => {
      const ref = parseInviteRef(idOrToken);
      return this.#tx(() => {
        const row = (
          ref.by === "id" ? this.#stmt.inviteById.get(ref.id) : this.#stmt.inviteByHash.get(ref.tokenHash)
        ) as Row | undefined;
        // A token is never echoed: a miss by token is named by the id it would have had.
        const shown = ref.by === "id" ? ref.id : inviteIdOf(ref.tokenHash);
        const invite = checkCancelInvite(shown, row === undefined ? undefined : toInvite(row));
        return toInvite(this.#stmt.cancelInvite.get(invite.tokenHash) as Row);
      });
    });
  }

  sweepInvites(before: number): Promise<number> {
    return this.#run("sweepInvites", () => {
      const cut = validateSweepBefore(before);
      return Number(this.#stmt.sweepInvites.run(cut, Date.now()).changes);
    });
  }

  consumeInvite(token: string, r: Registration): Promise<User> {
    return this.#run("consumeInvite", () => {
      const tokenHash = hashInviteToken(validateInviteToken(token));
      const v = validateRegistration(r);
      const outcome = this.#tx((): { user: User } | { exists: string } => {
        const row = this.#stmt.inviteByHash.get(tokenHash) as Row | undefined;
        const invite = row === undefined ? undefined : toInvite(row);
        const decision = decideConsume(invite, v.now, {
          userExists: this.#stmt.userByKey.get(v.signPub) !== undefined,
          handleTaken: invite !== undefined && this.#stmt.userByHandle.get(invite.handle) !== undefined,
        });
        const spent = Number(this.#stmt.spendInvite.run(v.signPub, Date.now(), tokenHash).changes);
        // decideConsume saw it open inside this IMMEDIATE transaction, so this holds; if it
        // ever did not, refusing is the safe answer.
        if (spent !== 1) throw new ConflictError("this invite token has already been used");
        if (decision === "user_exists") return { exists: v.signPub };
        const inv = invite!;
        return {
          user: toUser(this.#stmt.insertUser.get(v.signPub, v.kexPub, inv.handle, inv.role, Date.now()) as Row),
        };
      });
      // Committed: the token stays spent even though no user was made.
      if ("exists" in outcome) throw new UserExistsError(outcome.exists);
      return outcome.user;
    });
  }

  // ---- whole state ----

  snapshot(): Promise<Snapshot> {
    return this.#run("snapshot", () =>
      this.#tx(
        (): Snapshot => ({
          version: 1,
          users: (this.#stmt.snapUsers.all() as Row[]).map(toUser),
          rooms: (this.#stmt.snapRooms.all() as Row[]).map(toRoom),
          members: (this.#stmt.snapMembers.all() as Row[]).map(toMember),
          sealedKeys: (this.#stmt.snapKeys.all() as Row[]).map(toSealedKey),
          invites: (this.#stmt.snapInvites.all() as Row[]).map(toInvite),
        }),
        true,
      ),
    );
  }

  /** How often watchUsers looks at the change counters: one tiny query, no per-user reads. */
  static readonly WATCH_POLL_MS = 250;

  watchUsers(onChange: (signPub: string | null) => void): UserWatch {
    let last = this.#changeCounter();
    const timer = setInterval(() => {
      if (this.#closed) return;
      const now = this.#changeCounter();
      if (now === last) return;
      last = now;
      onChange(null);
    }, SqliteStore.WATCH_POLL_MS);
    // Not unref'd: a watch holds the process like the KV backend's watch does, until stop() or close().
    this.#watches.add(timer);
    return {
      stop: () => {
        clearInterval(timer);
        this.#watches.delete(timer);
      },
    };
  }

  /** Both counters as one value; an unreadable database reads as a change (the watcher then checks, and denies on error). */
  #changeCounter(): string {
    try {
      const row = this.#stmt.changeCounter.get() as Row;
      return `${String(row.v)}:${String(row.c)}`;
    } catch {
      return `error:${Date.now()}`;
    }
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    for (const timer of this.#watches) clearInterval(timer);
    this.#watches.clear();
    try {
      this.#db.close();
    } catch (err) {
      this.#log.warn({ err }, "closing the store's database failed");
    }
    return Promise.resolve();
  }
}
