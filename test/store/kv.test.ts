import crypto from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { InvalidArgumentError, StoreUnavailableError, UserExistsError } from "../../lib/errors.ts";
import {
  InviteRefusedError,
  type KvStore,
  newInviteToken,
  openKvStore,
  openStore,
  type Store,
} from "../../lib/store/index.ts";
import { encodeJson, key } from "../../lib/store/kv-layout.ts";
import { startJetStream } from "../helpers/nats.ts";
import { kexPubHex, signPubHex } from "./keys.ts";
import { storeSuite } from "./suite.ts";

const { url } = await startJetStream(t, "kv1", { http: { host: "127.0.0.1", port: -1 } });

const nc = await connect({ servers: url });
t.teardown(() => nc.close());

/** A fresh set of buckets per store, so subtests never see each other. */
const prefix = () => `t${crypto.randomBytes(5).toString("hex")}_`;
const prefixes = new WeakMap<Store, string>();

async function open(opts: { bucketPrefix?: string } = {}): Promise<KvStore> {
  const bucketPrefix = opts.bucketPrefix ?? prefix();
  const store = await openKvStore({ nc, bucketPrefix, storage: "memory" });
  prefixes.set(store, bucketPrefix);
  return store;
}

/** Eight stores, each with its own connection, on one fresh set of buckets: to race writes. */
async function racers(t: Test): Promise<KvStore[]> {
  const bucketPrefix = prefix();
  const stores = await Promise.all(
    Array.from({ length: 8 }, () => openKvStore({ servers: url, bucketPrefix, storage: "memory", timeoutMs: 10_000 })),
  );
  t.teardown(() => Promise.all(stores.map((s) => s.close())));
  return stores;
}

await storeSuite(t, "kv", () => open(), {
  sibling: (store) => open({ bucketPrefix: prefixes.get(store)! }),
  // As the snapshot importer writes them: each record with its id claim and handle index entry.
  seedInvites: async (store, invites) => {
    const b = (store as KvStore).buckets.invites;
    for (let i = 0; i < invites.length; i += 200) {
      await Promise.all(
        invites
          .slice(i, i + 200)
          .flatMap((inv) => [
            b.put(key.invite(inv.tokenHash), encodeJson(inv)),
            b.put(key.inviteOfId(inv.id), encodeJson({ tokenHash: inv.tokenHash })),
            b.put(key.inviteOfHandle(inv.handle), encodeJson({ tokenHash: inv.tokenHash })),
          ]),
      );
    }
  },
});

t.test("openStore picks the kv backend and does not close a connection it was given", async (t) => {
  const store = await openStore({ backend: "kv", nc, bucketPrefix: prefix(), storage: "memory" });
  t.equal(store.backend, "kv");
  await store.addUser({ signPub: signPubHex(), handle: "alice", role: "admin" });
  t.equal(await store.hasAdmin(), true);
  await store.close();
  t.equal(nc.isClosed(), false, "the caller's connection is still open");
});

t.test("the store can own its connection (servers) and closes it", async (t) => {
  const store = await openKvStore({ servers: url, bucketPrefix: prefix(), storage: "memory" });
  const u = await store.addUser({ signPub: signPubHex(), handle: "alice", role: "member" });
  t.equal(await store.isAuthorized(u.signPub), true);
  await store.close();
  await t.rejects(store.getUser(u.signPub), StoreUnavailableError);
});

t.test("bad open options are InvalidArgumentError", async (t) => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ nc, replicas: 0 }, "replicas"],
    [{ nc, replicas: 6 }, "replicas"],
    [{ nc, replicas: 1.5 }, "replicas"],
    [{ nc, timeoutMs: 0 }, "timeoutMs"],
    [{ nc, bucketPrefix: "a.b" }, "bucketPrefix"],
    [{}, "servers"],
  ];
  for (const [o, field] of cases) {
    const err = await openKvStore(o as never).catch((e: unknown) => e);
    t.type(err, InvalidArgumentError, field);
    t.equal((err as InvalidArgumentError).field, field);
  }
});

t.test("one bucket, named unibus_users by default, at the requested replication", async (t) => {
  const store = await openKvStore({ nc, storage: "memory" });
  t.teardown(() => store.close());
  const state = await store.replicationState();
  t.same(
    state.map((s) => s.bucket),
    ["unibus_users"],
  );
  t.ok(state.every((s) => s.replicas === 1));
});

t.test("invite double-spend race: many consumers on separate connections, exactly one wins", async (t) => {
  const bucketPrefix = prefix();
  const first = await open({ bucketPrefix });
  t.teardown(() => first.close());
  const token = newInviteToken();
  await first.createInvite({ token, handle: "newbie", role: "member", createdBy: "host" });
  const n = 12;
  const stores = await Promise.all(
    Array.from({ length: n }, () => openKvStore({ servers: url, bucketPrefix, storage: "memory", timeoutMs: 10_000 })),
  );
  t.teardown(() => Promise.all(stores.map((s) => s.close())));
  const regs = stores.map(() => ({ signPub: signPubHex(), kexPub: kexPubHex() }));
  const outcomes = await Promise.all(
    stores.map((s, i) =>
      s.consumeInvite(token, regs[i]!).then(
        (u) => ({ ok: u.signPub }),
        (err: unknown) => ({ err }),
      ),
    ),
  );
  const winners = outcomes.filter((o) => "ok" in o);
  t.equal(winners.length, 1, "exactly one registration");
  for (const o of outcomes) {
    if ("err" in o)
      t.match(o.err, InviteRefusedError, "the others are refused") &&
        t.equal((o.err as InviteRefusedError).reason, "spent");
  }
  const users = await first.listUsers();
  t.equal(users.length, 1, "one user made");
  t.equal(users[0]!.handle, "newbie");
  const [inv] = await first.listInvites();
  t.match(inv, { status: "spent", spentBy: users[0]!.signPub });
});

t.test("handle uniqueness under concurrency: one addUser per handle wins", async (t) => {
  const stores = await racers(t);
  const results = await Promise.allSettled(
    stores.map((s) => s.addUser({ signPub: signPubHex(), handle: "same", role: "member" })),
  );
  t.equal(results.filter((r) => r.status === "fulfilled").length, 1);
  t.equal((await stores[0]!.listUsers()).length, 1);
  const same = signPubHex();
  const dup = await Promise.allSettled(
    stores.map((s, i) => s.addUser({ signPub: same, handle: `h${i}`, role: "member" })),
  );
  t.equal(dup.filter((r) => r.status === "fulfilled").length, 1, "one addUser per key");
  t.ok(
    dup.every(
      (r) => r.status === "fulfilled" || r.reason instanceof UserExistsError || r.reason?.name === "ConflictError",
    ),
  );
});

t.test("renames to one handle under concurrency: exactly one user ends up with it", async (t) => {
  const stores = await racers(t);
  const users = await Promise.all(
    stores.map((s, i) => s.addUser({ signPub: signPubHex(), handle: `racer${i}`, role: "member" })),
  );
  const results = await Promise.allSettled(stores.map((s, i) => s.updateUser(users[i]!.signPub, { handle: "wanted" })));
  t.equal(results.filter((r) => r.status === "fulfilled").length, 1, "one rename wins");
  t.ok(
    results.every((r) => r.status === "fulfilled" || r.reason?.name === "ConflictError"),
    "the others conflict",
  );
  const holders = (await stores[0]!.listUsers()).filter((u) => u.handle === "wanted");
  t.equal(holders.length, 1, "one user holds the handle");
});

t.test("concurrent rekeys from the same epoch: exactly one wins, the keys are its own", async (t) => {
  const bucketPrefix = prefix();
  const a = await open({ bucketPrefix });
  t.teardown(() => a.close());
  const alice = await a.addUser({ signPub: signPubHex(), kexPub: kexPubHex(), handle: "alice", role: "admin" });
  const room = await a.createRoom({
    id: "race",
    subject: "room.race",
    ownerSignPub: alice.signPub,
    encrypt: true,
    persist: false,
    signMsgs: false,
    ownerSealedKey: crypto.randomBytes(48).toString("base64url"),
  });
  const stores = await Promise.all(
    Array.from({ length: 6 }, () => openKvStore({ servers: url, bucketPrefix, storage: "memory", timeoutMs: 10_000 })),
  );
  t.teardown(() => Promise.all(stores.map((s) => s.close())));
  const sealedBy = stores.map(() => crypto.randomBytes(48).toString("base64url"));
  const results = await Promise.allSettled(
    stores.map((s, i) =>
      s.rekey(room.id, { fromEpoch: 1, sealedKeys: [{ signPub: alice.signPub, sealed: sealedBy[i]! }] }),
    ),
  );
  const won = results.findIndex((r) => r.status === "fulfilled");
  t.equal(results.filter((r) => r.status === "fulfilled").length, 1, "one rekey wins");
  t.equal((await a.getRoom(room.id)).epoch, 2);
  t.equal((await a.getSealedKey(room.id, alice.signPub, 2)).sealed, sealedBy[won], "the winner's key, not a loser's");
});

t.test("a stopped server: operations fail within the timeout, predicates fail closed", async (t) => {
  const { server: s2, ports: p2 } = await startJetStream(t, "kv2");
  const own: NatsConnection = await connect({
    servers: `127.0.0.1:${p2.nats}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 50,
  });
  t.teardown(() => own.close());
  // Several read attempts (READ_ATTEMPT_MS each) fit in the deadline: they end with it.
  const store = await openKvStore({ nc: own, timeoutMs: 2500 });
  t.teardown(() => store.close());
  const admin = await store.addUser({ signPub: signPubHex(), kexPub: kexPubHex(), handle: "root", role: "admin" });
  t.equal(await store.isAuthorized(admin.signPub), true, "authorized while up");
  await s2.stop();
  const calls: Array<[string, () => Promise<unknown>]> = [
    ["isAuthorized", () => store.isAuthorized(admin.signPub)],
    ["hasAdmin", () => store.hasAdmin()],
    ["isMember", () => store.isMember("r1", admin.signPub)],
    ["roomIfMember", () => store.roomIfMember("0".repeat(24), admin.signPub)],
    ["getUser", () => store.getUser(admin.signPub)],
    ["listRoomsFor", () => store.listRoomsFor(admin.signPub)],
    ["addUser", () => store.addUser({ signPub: signPubHex(), handle: "x", role: "member" })],
    ["listUsers", () => store.listUsers()],
    ["snapshot", () => store.snapshot()],
    ["consumeInvite", () => store.consumeInvite(newInviteToken(), { signPub: signPubHex(), kexPub: kexPubHex() })],
  ];
  const results = await Promise.all(
    calls.map(([, call]) =>
      call().then(
        (value) => ({ value }),
        (error: unknown) => ({ error }),
      ),
    ),
  );
  for (const [i, [label]] of calls.entries()) {
    const r = results[i]!;
    t.ok("error" in r, `${label} does not answer`);
    t.type("error" in r ? r.error : r.value, StoreUnavailableError, `${label}: StoreUnavailableError`);
    t.notMatch(String((r as { error?: Error }).error?.message), /127\.0\.0\.1/, `${label}: no address in the message`);
  }
});

t.test("an interrupted write is invisible, and its leftovers are taken over", async (t) => {
  const store = await open();
  t.teardown(() => store.close());
  const b = store.buckets;
  const alice = await store.addUser({ signPub: signPubHex(), kexPub: kexPubHex(), handle: "alice", role: "admin" });
  const bob = signPubHex();
  const long = Date.now() - 60_000;
  // A createRoom that died after claiming id and subject and writing a key and index entry.
  const room = {
    id: "ghost",
    subject: "room.ghost",
    ownerSignPub: alice.signPub,
    encrypt: true,
    persist: false,
    signMsgs: false,
    epoch: 1,
    createdAt: long,
  };
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  await b.rooms.put(
    "ghost",
    enc({
      room,
      members: [{ signPub: alice.signPub, role: "owner", addedAt: long }],
      committed: false,
      lock: { tag: "x", until: long },
    }),
  );
  await b.subjects.put(Buffer.from("room.ghost").toString("hex"), enc({ roomId: "ghost", at: long }));
  await b.keys.put(`ghost.${alice.signPub}.1`, "c3RhbGU");
  await b.memberof.put(`${alice.signPub}.ghost`, "1");
  // An addUser that died after claiming its handle.
  await b.handles.put(Buffer.from("bob").toString("hex"), enc({ signPub: bob, at: long }));

  await t.rejects(store.getRoom("ghost"), { name: "NotFoundError" }, "an uncommitted room does not exist");
  t.equal(await store.isMember("ghost", alice.signPub), false);
  t.same(await store.listRoomsFor(alice.signPub), []);
  const snap = await store.snapshot();
  t.same([snap.rooms, snap.members, snap.sealedKeys], [[], [], []], "nothing of it in a snapshot");

  const sealed = crypto.randomBytes(48).toString("base64url");
  const made = await store.createRoom({ ...room, ownerSealedKey: sealed });
  t.equal(made.id, "ghost", "the abandoned id and subject are taken over");
  t.equal((await store.getSealedKey("ghost", alice.signPub)).sealed, sealed, "with its own key, not the stale one");
  const u = await store.addUser({ signPub: signPubHex(), handle: "bob", role: "member" });
  t.equal(u.handle, "bob", "an abandoned handle claim is taken over");
});

t.test("a live in-flight claim is respected", async (t) => {
  const store = await open();
  t.teardown(() => store.close());
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  await store.buckets.handles.put(Buffer.from("carol").toString("hex"), enc({ signPub: signPubHex(), at: Date.now() }));
  await t.rejects(store.addUser({ signPub: signPubHex(), handle: "carol", role: "member" }), { name: "ConflictError" });
});

t.test("racing invites for one handle: at most one stays open", async (t) => {
  const stores = await racers(t);
  const results = await Promise.allSettled(
    stores.map((s) => s.createInvite({ token: newInviteToken(), handle: "zed", role: "member", createdBy: "host" })),
  );
  const ok = results.filter((r) => r.status === "fulfilled").length;
  t.ok(ok <= 1, `at most one made (${ok})`);
  t.ok(
    results.every((r) => r.status === "fulfilled" || r.reason?.name === "ConflictError"),
    "the others are conflicts",
  );
  t.equal((await stores[0]!.listInvites()).length, ok, "only the survivor is stored");
});

t.test("deleteUser racing createRoom never leaves a room without its owner", async (t) => {
  const bucketPrefix = prefix();
  const [a, b] = await Promise.all(
    [0, 1].map(() => openKvStore({ servers: url, bucketPrefix, storage: "memory", timeoutMs: 10_000 })),
  );
  t.teardown(() => Promise.all([a!.close(), b!.close()]));
  for (let i = 0; i < 10; i++) {
    const owner = await a!.addUser({ signPub: signPubHex(), kexPub: kexPubHex(), handle: `o${i}`, role: "member" });
    await Promise.allSettled([
      a!.createRoom({
        id: `race${i}`,
        subject: `race.r${i}`,
        ownerSignPub: owner.signPub,
        encrypt: false,
        persist: false,
        signMsgs: false,
      }),
      b!.deleteUser(owner.signPub),
    ]);
    const snap = await a!.snapshot();
    for (const room of snap.rooms) {
      t.ok(
        snap.users.some((u) => u.signPub === room.ownerSignPub),
        `room ${room.id} has its owner`,
      );
    }
  }
});
