import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import t, { type Test } from "tap";
import { InvalidArgumentError, StoreUnavailableError } from "../../lib/errors.ts";
import { silentLogger } from "../../lib/log/index.ts";
import { newInviteToken, openSqliteStore, openStore, type Store } from "../../lib/store/index.ts";
import { applyMigrations, loadMigrations, MIGRATIONS_DIR } from "../../lib/store/migrate.ts";
import { tempDir } from "../helpers/fs.ts";
import { kexPubHex, signPubHex } from "./keys.ts";
import { storeSuite } from "./suite.ts";

const root = await tempDir(t);
let n = 0;
/** A fresh database file per call, all under one temp dir removed at the end. */
function dbFile(): string {
  return path.join(root, `store-${++n}`, "state.db");
}

function user(handle: string, role: "admin" | "member" = "member") {
  return { signPub: signPubHex(), kexPub: kexPubHex(), handle, role };
}

/** An encrypted room "r1" owned by `owner`. */
function roomOf(store: Store, owner: string) {
  return store.createRoom({
    id: "r1",
    subject: "room.r1",
    ownerSignPub: owner,
    encrypt: true,
    persist: false,
    signMsgs: false,
    ownerSealedKey: "AAAA",
  });
}

function rawRows(file: string, sql: string): Record<string, unknown>[] {
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    return db.prepare(sql).all();
  } finally {
    db.close();
  }
}

/** A StoreUnavailableError message must not leak where the data lives or what SQL ran. */
function assertGeneric(tt: Test, err: unknown, file: string): void {
  tt.type(err, StoreUnavailableError);
  const msg = (err as Error).message;
  tt.notOk(
    msg.includes(file) || msg.includes(path.dirname(file)) || msg.includes(path.basename(file)),
    "no path in the message",
  );
  tt.notMatch(
    msg,
    /\b(SELECT|INSERT|UPDATE|DELETE FROM|CREATE|PRAGMA|sqlite_master|schema_migrations)\b/i,
    "no SQL in the message",
  );
}

const files = new WeakMap<Store, string>();
await storeSuite(
  t,
  "sqlite",
  async () => {
    const file = dbFile();
    const store = await openSqliteStore(file);
    files.set(store, file);
    return store;
  },
  {
    sibling: (store) => openSqliteStore(files.get(store)!),
    // Rows as the store writes them, in one transaction of a second connection.
    seedInvites: async (store, invites) => {
      const db = new DatabaseSync(files.get(store)!);
      try {
        const ins = db.prepare(
          "INSERT INTO invites (id, token_hash, handle, role, created_by, created_at, expires_at, status, spent_by, spent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        db.exec("BEGIN IMMEDIATE");
        for (const i of invites) {
          ins.run(
            i.id,
            i.tokenHash,
            i.handle,
            i.role,
            i.createdBy,
            i.createdAt,
            i.expiresAt,
            i.status,
            i.spentBy,
            i.spentAt,
          );
        }
        db.exec("COMMIT");
      } finally {
        db.close();
      }
    },
  },
);

t.test("openStore picks the sqlite backend", async (t) => {
  const store = await openStore({ backend: "sqlite", file: dbFile(), logger: silentLogger });
  t.teardown(() => store.close());
  t.equal(store.backend, "sqlite");
  await store.addUser(user("alice"));
  t.equal((await store.listUsers()).length, 1);
});

t.test("bad open options are InvalidArgumentError", async (t) => {
  const err = await openStore({ backend: "nope" } as never).catch((e: unknown) => e);
  t.type(err, InvalidArgumentError);
  t.equal((err as InvalidArgumentError).field, "backend");
  for (const file of ["", ":memory:", undefined]) {
    const e = await openSqliteStore(file as string).catch((x: unknown) => x);
    t.type(e, InvalidArgumentError, String(file));
    t.equal((e as InvalidArgumentError).field, "file");
  }
});

t.test("migrations are recorded once and data survives reopening", async (t) => {
  const file = dbFile();
  const migrations = loadMigrations();
  const first = await openSqliteStore(file);
  const alice = await first.addUser(user("alice", "admin"));
  await first.close();

  const recorded = rawRows(file, "SELECT version, name, applied_at FROM schema_migrations ORDER BY version");
  t.same(
    recorded.map((r) => [r.version, r.name]),
    migrations.map((m) => [m.version, m.name]),
    "every migration is recorded with its name",
  );
  t.ok(
    recorded.every((r) => Number.isInteger(r.applied_at)),
    "applied_at is integer ms",
  );

  const second = await openSqliteStore(file);
  t.teardown(() => second.close());
  t.same(await second.getUser(alice.signPub), alice, "data survives reopening");
  t.equal(await second.hasAdmin(), true);
  t.same(
    rawRows(file, "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"),
    recorded,
    "nothing was re-applied",
  );
});

t.test("the database uses WAL, a busy timeout and foreign keys", async (t) => {
  const file = dbFile();
  const store = await openSqliteStore(file);
  await store.close();
  t.equal(rawRows(file, "PRAGMA journal_mode")[0]?.journal_mode, "wal", "WAL is persistent in the file");
  for (const f of readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith(".sql"))) {
    const sql = readFileSync(fileURLToPath(new URL(f, MIGRATIONS_DIR)), "utf8");
    t.notMatch(sql, /IF NOT EXISTS|\bBEGIN\b|\bCOMMIT\b/i, `${f}: no IF NOT EXISTS tricks, no own transaction`);
  }
  t.equal(rawRows(file, "PRAGMA foreign_key_list(room_members)").length, 2, "members reference rooms and users");
});

t.test("only pending migrations run, each recorded", async (t) => {
  const file = dbFile();
  const store = await openSqliteStore(file);
  await store.addUser(user("alice"));
  await store.close();

  // A newer release's migrations folder: today's files plus one more.
  const dir = await tempDir(t);
  const current = loadMigrations();
  for (const f of readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith(".sql"))) {
    copyFileSync(new URL(f, MIGRATIONS_DIR), path.join(dir, f));
  }
  const next = current.length + 1;
  const nextName = `${String(next).padStart(4, "0")}_probe.sql`;
  writeFileSync(path.join(dir, nextName), "CREATE TABLE probe (id INTEGER PRIMARY KEY) STRICT;\n");

  const db = new DatabaseSync(file);
  try {
    const result = applyMigrations(db, loadMigrations(dir), silentLogger);
    t.same(result, { applied: [next], version: next }, "only the new migration ran");
    t.same(applyMigrations(db, loadMigrations(dir), silentLogger).applied, [], "and not again");
    t.equal(db.prepare("SELECT count(*) AS c FROM users").get()?.c, 1, "existing data untouched");
  } finally {
    db.close();
  }

  // That database is now newer than this unibus.
  const err = await openSqliteStore(file).catch((e: unknown) => e);
  assertGeneric(t, err, file);
  t.match((err as Error).message, /newer unibus/);
  t.equal(rawRows(file, "SELECT count(*) AS c FROM users")[0]?.c, 1, "the refused database is left intact");
});

t.test("a database from a newer unibus is refused", async (t) => {
  const file = dbFile();
  await (await openSqliteStore(file)).close();
  const db = new DatabaseSync(file);
  db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)").run(
    9999,
    "future",
    Date.now(),
  );
  db.close();
  const err = await openSqliteStore(file).catch((e: unknown) => e);
  assertGeneric(t, err, file);
  t.match((err as Error).message, /newer unibus.*9999/);
});

t.test("a failing migration leaves the database unchanged", async (t) => {
  const file = dbFile();
  await (await openSqliteStore(file)).close();
  const dir = await tempDir(t);
  for (const f of readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith(".sql"))) {
    copyFileSync(new URL(f, MIGRATIONS_DIR), path.join(dir, f));
  }
  const next = loadMigrations().length + 1;
  writeFileSync(
    path.join(dir, `${String(next).padStart(4, "0")}_broken.sql`),
    "CREATE TABLE half (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n",
  );
  const db = new DatabaseSync(file);
  t.teardown(() => db.close());
  const err = (() => {
    try {
      applyMigrations(db, loadMigrations(dir), silentLogger);
    } catch (e) {
      return e;
    }
  })();
  assertGeneric(t, err, file);
  t.ok((err as Error).cause, "the SQLite error is kept as cause");
  t.same(
    db.prepare("SELECT name FROM sqlite_master WHERE name = 'half'").all(),
    [],
    "the half-applied table was rolled back",
  );
  t.equal(db.prepare("SELECT max(version) AS v FROM schema_migrations").get()?.v, next - 1, "not recorded");
});

t.test("a malformed migrations folder is refused", async (t) => {
  const cases: Record<string, Record<string, string>> = {
    "a gap": { "0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 1;" },
    "a duplicate version": { "0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 1;" },
    "a misnamed file": { "0001_a.sql": "SELECT 1;", "2-b.sql": "SELECT 1;" },
    "no files": { "README.md": "# nothing" },
  };
  for (const [label, files] of Object.entries(cases)) {
    const dir = await tempDir(t);
    for (const [f, sql] of Object.entries(files)) writeFileSync(path.join(dir, f), sql);
    t.throws(() => loadMigrations(dir), StoreUnavailableError, label);
  }
  t.throws(() => loadMigrations(path.join(root, "no-such-dir")), StoreUnavailableError, "a missing folder");
});

t.test("files are private: database 0600, created directory 0700", async (t) => {
  const file = dbFile();
  const store = await openSqliteStore(file);
  t.teardown(() => store.close());
  await store.addUser(user("alice"));
  t.equal(statSync(file).mode & 0o777, 0o600, "database file");
  t.equal(statSync(path.dirname(file)).mode & 0o777, 0o700, "directory it created");
  t.equal(statSync(`${file}-wal`).mode & 0o777, 0o600, "WAL file");
});

t.test("an existing database readable by others is tightened to 0600", async (t) => {
  const file = dbFile();
  await (await openSqliteStore(file)).close();
  chmodSync(file, 0o644);
  const store = await openSqliteStore(file);
  t.teardown(() => store.close());
  t.equal(statSync(file).mode & 0o777, 0o600);
});

t.test("a corrupt database file is StoreUnavailableError and is left as it was", async (t) => {
  const file = dbFile();
  mkdirSync(path.dirname(file), { recursive: true });
  const garbage = Buffer.alloc(16384, "this is not a sqlite database, it is garbage. ");
  writeFileSync(file, garbage, { mode: 0o600 });
  const err = await openSqliteStore(file).catch((e: unknown) => e);
  assertGeneric(t, err, file);
  t.ok((err as Error).cause, "the SQLite error is kept as cause");
  t.same(readFileSync(file), garbage, "the file was not overwritten");
});

t.test("a truncated database file is StoreUnavailableError", async (t) => {
  const file = dbFile();
  const store = await openSqliteStore(file);
  for (let i = 0; i < 50; i++) await store.addUser(user(`user${i}`));
  await store.close();
  const bytes = readFileSync(file);
  writeFileSync(file, Buffer.concat([bytes.subarray(0, 100), Buffer.alloc(bytes.length - 100, 0xa5)]));
  const err = await openSqliteStore(file).catch((e: unknown) => e);
  assertGeneric(t, err, file);
});

t.test("another application's SQLite file is refused, not modified", async (t) => {
  const file = dbFile();
  mkdirSync(path.dirname(file), { recursive: true });
  const other = new DatabaseSync(file);
  other.exec("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'x');");
  other.close();
  const err = await openSqliteStore(file).catch((e: unknown) => e);
  assertGeneric(t, err, file);
  t.same(rawRows(file, "SELECT id, name FROM users"), [{ id: 1, name: "x" }], "its data is untouched");
});

t.test("an unreadable path is StoreUnavailableError", async (t) => {
  const dirAsFile = path.dirname(dbFile());
  mkdirSync(dirAsFile, { recursive: true });
  const err = await openSqliteStore(dirAsFile).catch((e: unknown) => e);
  assertGeneric(t, err, dirAsFile);

  const blocker = path.join(path.dirname(dbFile()), "blocker");
  mkdirSync(path.dirname(blocker), { recursive: true });
  writeFileSync(blocker, "a file where a directory should be");
  const nested = path.join(blocker, "state.db");
  assertGeneric(t, await openSqliteStore(nested).catch((e: unknown) => e), nested);

  if (process.getuid?.() === 0) {
    t.comment("running as root: file permissions cannot make the database unreadable");
    return;
  }
  const locked = dbFile();
  await (await openSqliteStore(locked)).close();
  chmodSync(locked, 0o000);
  t.teardown(() => chmodSync(locked, 0o600));
  assertGeneric(t, await openSqliteStore(locked).catch((e: unknown) => e), locked);
});

t.test("a SQLite failure while running is StoreUnavailableError; nothing answers true", async (t) => {
  const file = dbFile();
  const store = await openSqliteStore(file);
  t.teardown(() => store.close());
  const admin = await store.addUser(user("alice", "admin"));
  // Someone damages the schema under a running store.
  const db = new DatabaseSync(file);
  db.exec("DROP TABLE users");
  db.close();
  for (const [label, call] of [
    ["isAuthorized", () => store.isAuthorized(admin.signPub)],
    ["hasAdmin", () => store.hasAdmin()],
    ["listUsers", () => store.listUsers()],
    ["addUser", () => store.addUser(user("bob"))],
  ] as const) {
    const result = await (call as () => Promise<unknown>)().then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    t.notOk("value" in result, `${label} did not answer`);
    if ("error" in result) {
      assertGeneric(t, result.error, file);
      t.ok((result.error as Error).cause, `${label}: cause kept`);
    }
  }
});

t.test("two stores on one file see each other's writes", async (t) => {
  const file = dbFile();
  const bus = await openSqliteStore(file);
  const cli = await openSqliteStore(file);
  t.teardown(async () => {
    await bus.close();
    await cli.close();
  });
  const alice = await cli.addUser(user("alice", "admin"));
  t.equal(await bus.isAuthorized(alice.signPub), true, "the bus sees the CLI's add");
  t.equal(await bus.hasAdmin(), true);
  await cli.revokeUser(alice.signPub);
  t.equal(await bus.isAuthorized(alice.signPub), false, "the bus sees the CLI's revoke");
  const bob = await bus.addUser(user("bob"));
  t.same(await cli.getUser(bob.signPub), bob, "and the other way round");
  await t.rejects(cli.addUser({ ...user("bob2"), signPub: bob.signPub }), { name: "UserExistsError" });
  await cli.deleteUser(bob.signPub);
  await t.rejects(bus.getUser(bob.signPub), { name: "NotFoundError" });
});

t.test("50 stores on one file, spread over 5 threads, race for one invite: one user", async (t) => {
  const file = dbFile();
  const store = await openSqliteStore(file);
  t.teardown(() => store.close());
  const token = newInviteToken();
  await store.createInvite({ token, handle: "racer", role: "member", createdBy: "host" });
  const start = new SharedArrayBuffer(4);
  type Outcome = { ok?: string; error?: string; reason?: string };
  type Message = { ready?: true; outcomes?: Outcome[] };
  const workers = Array.from(
    { length: 5 },
    () =>
      new Worker(new URL("./consume-worker.ts", import.meta.url), {
        workerData: {
          file,
          token,
          registrations: Array.from({ length: 10 }, () => ({ signPub: signPubHex(), kexPub: kexPubHex() })),
          start,
        },
        // Not the test runner's loader hooks: the worker only needs Node's type stripping.
        execArgv: ["--disable-warning=ExperimentalWarning"],
      }),
  );
  t.teardown(() => Promise.all(workers.map((w) => w.terminate())));
  const ready: Promise<void>[] = [];
  const finished = workers.map(
    (w) =>
      new Promise<Outcome[]>((resolve, reject) => {
        ready.push(new Promise<void>((r) => w.once("message", () => r())));
        w.on("message", (m: Message) => m.outcomes && resolve(m.outcomes));
        w.on("error", reject);
        w.on("exit", (code) => reject(new Error(`worker exited (${code}) without reporting`)));
      }),
  );
  // Every thread holds its open stores before any of them starts.
  await Promise.all(ready);
  const flag = new Int32Array(start);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
  const outcomes = (await Promise.all(finished)).flat();
  t.equal(outcomes.length, 50);
  const winners = outcomes.filter((o) => o.ok);
  t.equal(winners.length, 1, "exactly one registration succeeded");
  t.same(
    [...new Set(outcomes.filter((o) => !o.ok).map((o) => `${o.error}/${o.reason}`))],
    ["InviteRefusedError/spent"],
    "every other one was refused as spent (none failed otherwise)",
  );
  t.same(
    (await store.listUsers()).map((u) => u.signPub),
    [winners[0]!.ok],
    "one user, the winner",
  );
  t.equal((await store.listInvites())[0]?.spentBy, winners[0]!.ok);
});

t.test("a database from before rooms is upgraded in place, its users kept", async (t) => {
  const file = dbFile();
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new DatabaseSync(file);
  const [first] = loadMigrations();
  applyMigrations(db, [first!], silentLogger);
  const alice = user("alice", "admin");
  db.prepare(
    "INSERT INTO users (sign_pub, kex_pub, handle, role, status, created_at) VALUES (?, ?, ?, ?, 'active', 1)",
  ).run(alice.signPub, alice.kexPub, alice.handle, alice.role);
  db.close();

  const store = await openSqliteStore(file);
  t.teardown(() => store.close());
  t.equal((await store.getUser(alice.signPub)).createdAt, 1, "the old user is intact");
  const room = await roomOf(store, alice.signPub);
  t.equal(room.epoch, 1, "and can own a room at once");
  t.same(
    rawRows(file, "SELECT version FROM schema_migrations ORDER BY version").map((r) => r.version),
    loadMigrations().map((m) => m.version),
  );
});

t.test("the database file holds only invite token hashes, never a token", async (t) => {
  const file = dbFile();
  const store = await openSqliteStore(file);
  const tokens = [newInviteToken(), newInviteToken(), newInviteToken()];
  for (const [i, token] of tokens.entries()) {
    await store.createInvite({ token, handle: `h${i}`, role: "member", createdBy: "host" });
  }
  await store.cancelInvite(tokens[1]!);
  await store.consumeInvite(tokens[2]!, { signPub: signPubHex(), kexPub: kexPubHex() });
  await store.close();
  const bytes = Buffer.concat([file, `${file}-wal`].filter((f) => existsSync(f)).map((f) => readFileSync(f)));
  for (const token of tokens) {
    t.equal(bytes.indexOf(token), -1, "not the token in hex");
    t.equal(bytes.indexOf(Buffer.from(token, "hex")), -1, "nor its raw bytes");
  }
  t.ok(bytes.indexOf(createHash("sha256").update(tokens[0]!).digest("hex")) !== -1, "the hash is there");
});

t.test("the schema refuses what validation refuses, as a second line", async (t) => {
  const file = dbFile();
  const store = await openSqliteStore(file);
  const alice = await store.addUser(user("alice"));
  await store.close();
  const db = new DatabaseSync(file);
  t.teardown(() => db.close());
  const insert = db.prepare(
    "INSERT INTO rooms (id, subject, owner_sign_pub, encrypt, persist, sign_msgs, epoch, created_at) VALUES (?, ?, ?, 1, 0, 0, 1, 0)",
  );
  for (const subject of ["room.*", "room.>", "a b", "$SYS.x", "_INBOX.x"]) {
    t.throws(() => insert.run(`r-${subject.length}`, subject, alice.signPub), `subject ${subject}`);
  }
  t.throws(() => insert.run("r", "room.r", "f".repeat(64)), "an owner that is not a user");
  insert.run("r", "room.r", alice.signPub);
  t.throws(
    () =>
      db
        .prepare("INSERT INTO room_members VALUES ('r', ?, 'owner', 0), ('r', ?, 'owner', 0)")
        .run(alice.signPub, alice.signPub),
    "one owner per room",
  );
  t.throws(
    () => db.prepare("UPDATE rooms SET encrypt = 0, epoch = 2 WHERE id = 'r'").run(),
    "a cleartext room has no epochs",
  );
  t.throws(() => db.prepare("DELETE FROM users WHERE sign_pub = ?").run(alice.signPub), "an owner cannot vanish");
});

t.test("room and invite methods fail closed when SQLite fails under them", async (t) => {
  const file = dbFile();
  const store = await openSqliteStore(file);
  t.teardown(() => store.close());
  const alice = await store.addUser(user("alice"));
  const room = await roomOf(store, alice.signPub);
  const db = new DatabaseSync(file, { enableForeignKeyConstraints: false });
  db.exec("DROP TABLE room_members; DROP TABLE room_keys; DROP TABLE invites");
  db.close();
  for (const [label, call] of [
    ["isMember", () => store.isMember(room.id, alice.signPub)],
    ["listRoomsFor", () => store.listRoomsFor(alice.signPub)],
    ["getSealedKey", () => store.getSealedKey(room.id, alice.signPub)],
    ["listMembers", () => store.listMembers(room.id)],
    ["consumeInvite", () => store.consumeInvite(newInviteToken(), { signPub: signPubHex(), kexPub: kexPubHex() })],
    ["snapshot", () => store.snapshot()],
  ] as const) {
    const result = await (call as () => Promise<unknown>)().then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    t.notOk("value" in result, `${label} did not answer`);
    if ("error" in result) assertGeneric(t, result.error, file);
  }
  t.same(await store.getRoom(room.id), room, "the store itself still works for what is intact");
});
