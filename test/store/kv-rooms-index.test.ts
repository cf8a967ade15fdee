import crypto from "node:crypto";
import path from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { silentLogger } from "../../lib/log/index.ts";
import { FLOOR_NATS_VERSION, installNatsServer, PINNED_NATS_VERSION } from "../../lib/nats/binary.ts";
import { NatsServerProcess } from "../../lib/nats/process.ts";
import { type KvStore, openKvStore } from "../../lib/store/index.ts";
import { encodeJson, key, type RoomRec } from "../../lib/store/kv-layout.ts";
import { BARRIER_KEY, bucketSource, RoomIndex, sequenceReader } from "../../lib/store/kv-rooms-index.ts";
import { tempDir } from "../helpers/fs.ts";
import { startJetStream } from "../helpers/nats.ts";
import { newUser, roomInput } from "./context.ts";

// listRoomsFor answers from an in-memory index fed by a watch on the rooms bucket. These
// tests are about what matters on the connect path: the index never grants a room its
// member is not in — a change written through another node is reflected at once.

const { url } = await startJetStream(t, "kvidx");

const prefix = () => `t${crypto.randomBytes(5).toString("hex")}_`;

/** Two stores on one set of buckets, each with its own connection: two nodes' views. */
async function twoNodes(tt: Test): Promise<[KvStore, KvStore]> {
  const bucketPrefix = prefix();
  const a = await openKvStore({ servers: url, bucketPrefix, storage: "memory" });
  const b = await openKvStore({ servers: url, bucketPrefix, storage: "memory" });
  tt.teardown(() => Promise.all([a.close(), b.close()]));
  return [a, b];
}

/** A store on fresh buckets, and its control bucket opened on a connection of its own. */
async function storeAndBucket(t: Test) {
  const bucketPrefix = prefix();
  const store = await openKvStore({ servers: url, bucketPrefix, storage: "memory" });
  t.teardown(() => store.close());
  const conn = await connect({ servers: url });
  t.teardown(() => conn.close());
  const name = `${bucketPrefix}users`;
  const kv = await new Kvm(jetstream(conn)).open(name);
  return { store, conn, kv, name };
}

const ids = (rooms: Array<{ id: string }>) => rooms.map((r) => r.id).sort();

t.test("a removal, a room deletion and a user deletion on another node are reflected at once", async (t) => {
  const [a, b] = await twoNodes(t);
  const owner = await b.addUser(newUser("owner"));
  const bob = await b.addUser(newUser("bob"));
  const rooms = [];
  for (let i = 0; i < 30; i++) {
    const r = await b.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
    await b.addMember(r.id, { signPub: bob.signPub });
    rooms.push(r.id);
  }
  t.same(ids(await a.listRoomsFor(bob.signPub)), [...rooms].sort(), "the index is loaded and current");
  // Each change is written on b and read back on a right after b's write is acknowledged.
  for (let i = 0; i < 10; i++) {
    await b.removeMember(rooms[i]!, bob.signPub);
    t.notOk(ids(await a.listRoomsFor(bob.signPub)).includes(rooms[i]!), `removal ${i} seen at once`);
  }
  for (let i = 10; i < 20; i++) {
    await b.deleteRoom(rooms[i]!);
    t.notOk(ids(await a.listRoomsFor(bob.signPub)).includes(rooms[i]!), `deletion ${i} seen at once`);
  }
  t.same(ids(await a.listRoomsFor(bob.signPub)), rooms.slice(20).sort(), "exactly the rooms left");
  await b.deleteUser(bob.signPub);
  t.same(await a.listRoomsFor(bob.signPub), [], "a deleted user is in no room");
  t.equal((await a.listRoomsFor(owner.signPub)).length, 20, "the owner keeps the rooms not deleted");
});

t.test("a gained room and a role change are seen at once too", async (t) => {
  const [a, b] = await twoNodes(t);
  const owner = await b.addUser(newUser("owner"));
  const bob = await b.addUser(newUser("bob"));
  t.same(await a.listRoomsFor(bob.signPub), [], "no rooms yet");
  const r = await b.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
  await b.addMember(r.id, { signPub: bob.signPub });
  t.same(
    (await a.listRoomsFor(bob.signPub)).map((x) => [x.id, x.role]),
    [[r.id, "member"]],
  );
  await b.transferRoom(r.id, bob.signPub);
  t.same(
    (await a.listRoomsFor(bob.signPub)).map((x) => [x.id, x.role]),
    [[r.id, "owner"]],
    "the transfer is reflected",
  );
  t.same(
    (await a.listRoomsFor(owner.signPub)).map((x) => [x.id, x.role]),
    [[r.id, "member"]],
  );
});

t.test("what the index ignores: uncommitted rooms, forged reverse-index entries, unreadable records", async (t) => {
  const [a] = await twoNodes(t);
  const mallory = await a.addUser(newUser("mallory"));
  const owner = await a.addUser(newUser("owner"));
  const real = await a.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
  const b = a.buckets;
  // A reverse-index entry naming a room mallory is not in grants nothing.
  await b.memberof.put(key.memberOf(mallory.signPub, real.id), "1");
  // A room record still being created (or abandoned by a crash) lists mallory.
  const ghost = roomInput(owner, { encrypt: false, ownerSealedKey: null });
  const rec: RoomRec = {
    room: { ...ghost, encrypt: false, persist: false, signMsgs: false, epoch: 1, createdAt: 1 } as RoomRec["room"],
    members: [{ signPub: mallory.signPub, role: "member", addedAt: 1 }],
    committed: false,
    lock: null,
  };
  await b.rooms.put(key.room(ghost.id), encodeJson(rec));
  await b.rooms.put("garbage", new TextEncoder().encode("{not json"));
  t.same(await a.listRoomsFor(mallory.signPub), [], "mallory is in no room");
  // The room record is the truth: one committed without its reverse-index entry (as an
  // interrupted write could leave it) is listed — which also shows the index answered,
  // since the direct path starts from the reverse index.
  const direct = roomInput(owner, { encrypt: false, ownerSealedKey: null });
  await b.rooms.put(
    key.room(direct.id),
    encodeJson({ ...rec, room: { ...rec.room, id: direct.id, subject: direct.subject }, committed: true }),
  );
  t.same(ids(await a.listRoomsFor(mallory.signPub)), [direct.id], "a committed record counts, reverse index or not");
  t.same(ids(await a.listRoomsFor(owner.signPub)), [real.id], "the owner's room is listed, the broken record skipped");
});

t.test("RoomIndex gives no answer rather than a stale one", async (t) => {
  const { store, kv } = await storeAndBucket(t);
  const owner = await store.addUser(newUser("owner"));
  const r = await store.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
  const index = new RoomIndex(bucketSource(kv), silentLogger);
  t.equal(await index.roomsOf(owner.signPub, 1, 50), undefined, "not started: no answer");
  index.start();
  const seq = await index.barrier();
  t.same(
    (await index.roomsOf(owner.signPub, seq, 5000))?.map((x) => x.rec.room.id),
    [r.id],
    "caught up with the bucket",
  );
  t.equal(await index.roomsOf(owner.signPub, seq + 1000, 50), undefined, "a sequence it has not seen: no answer");
  // A waiter is answered as soon as the watch applies the write it waits for.
  const pending = index.roomsOf(owner.signPub, seq + 1, 10_000);
  await store.deleteRoom(r.id);
  t.same(await pending, [], "the deletion, once applied");
  index.stop();
  t.equal(await index.roomsOf(owner.signPub, 0, 50), undefined, "stopped: no answer");
});

// What the store reads when JetStream refuses a direct read (no meta leader; the fault
// test kills one): users and room records, with the revision a compare-and-swap needs.
t.test("RoomIndex keeps users and room records with their revisions, as of a barrier", async (t) => {
  const { store, kv } = await storeAndBucket(t);
  const index = new RoomIndex(bucketSource(kv), silentLogger);
  t.teardown(() => index.stop());
  t.equal(await index.userAt("ab".repeat(32), 1, 50), undefined, "not started: no answer");
  index.start();
  const owner = await store.addUser(newUser("owner"));
  const r = await store.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
  let seq = await index.barrier();
  const u = await index.userAt(owner.signPub, seq, 5000);
  t.equal(u?.value.handle, "owner", "a user written before the barrier");
  t.equal(u?.revision, (await kv.get(owner.signPub))?.revision, "with the revision to compare-and-swap against");
  const room = await index.roomAt(r.id, seq, 5000);
  t.equal(room?.value.committed, true);
  t.equal(room?.revision, (await kv.get(`rooms.${r.id}`))?.revision);
  t.equal(await index.userAt("cd".repeat(32), seq, 5000), null, "an unknown user: none (not 'no answer')");
  t.equal(await index.roomAt("nope", seq, 5000), null);
  await store.revokeUser(owner.signPub);
  await store.deleteRoom(r.id);
  seq = await index.barrier();
  t.equal((await index.userAt(owner.signPub, seq, 5000))?.value.status, "revoked", "a revocation, once applied");
  t.equal(await index.roomAt(r.id, seq, 5000), null, "a deletion, once applied");
  await kv.put("handles.x", "{}");
  t.equal(await index.userAt("handles.x", await index.barrier(), 5000), null, "other sections are not users");
  t.equal(await index.userAt(owner.signPub, seq + 1000, 50), undefined, "a sequence it has not seen: no answer");
});

t.test("a rooms bucket made anew (restored, recreated) drops what the index held", async (t) => {
  const [a, b] = await twoNodes(t);
  const owner = await b.addUser(newUser("owner"));
  const r = await b.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
  t.same(ids(await a.listRoomsFor(owner.signPub)), [r.id], "indexed");
  // The bucket's stream is deleted and made again, empty: its sequence starts over.
  const conn = await connect({ servers: url });
  t.teardown(() => conn.close());
  const name = `${a.bucketPrefix}users`;
  const jsm = await jetstreamManager(conn);
  const { config } = await jsm.streams.info(`KV_${name}`);
  await jsm.streams.delete(`KV_${name}`);
  await jsm.streams.add(config);
  t.same(await a.listRoomsFor(owner.signPub), [], "the room of the old stream is not granted");
  // Users live in the same bucket: the owner went with it.
  await b.addUser({ signPub: owner.signPub, kexPub: owner.kexPub, handle: owner.handle, role: owner.role });
  const again = await b.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
  t.same(ids(await a.listRoomsFor(owner.signPub)), [again.id], "and the new stream is indexed");
});

// A watch whose consumer lived on a node that died delivers nothing until a new consumer is
// placed (which needs the meta leader): a store, its bucket, the bucket with a watch that
// stays silent, and a reader of the bucket's stream by sequence.
async function silentWatch(t: Test) {
  const { store, conn, kv, name } = await storeAndBucket(t);
  const silent = async () => ({ stop: () => {}, async *[Symbol.asyncIterator]() {} }) as never;
  const muted = Object.assign(Object.create(kv) as typeof kv, { watch: silent });
  return { store, kv, muted, reader: sequenceReader(await jetstreamManager(conn), name) };
}

// With its watch silent, the index reads the stream by sequence.
t.test("with its watch silent, the index catches up by reading the stream by sequence", async (t) => {
  const { store, muted, reader } = await silentWatch(t);
  const index = new RoomIndex(bucketSource(muted, reader), silentLogger);
  t.teardown(() => index.stop());
  index.start();
  const owner = await store.addUser(newUser("owner"));
  const bob = await store.addUser(newUser("bob"));
  const r = await store.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
  await store.addMember(r.id, { signPub: bob.signPub, role: "member", sealedKey: null });
  let seq = await index.barrier();
  t.same(
    (await index.roomsOf(bob.signPub, seq, 50))?.map((x) => x.rec.room.id),
    [r.id],
    "bob's room, read by sequence",
  );
  t.equal((await index.userAt(owner.signPub, seq, 50))?.value.handle, "owner");
  await store.removeMember(r.id, bob.signPub);
  await store.revokeUser(bob.signPub);
  seq = await index.barrier();
  t.same(await index.roomsOf(bob.signPub, seq, 50), [], "the removal, read by sequence");
  t.equal((await index.userAt(bob.signPub, seq, 50))?.value.status, "revoked", "the revocation too");
  const noReader = new RoomIndex(bucketSource(muted), silentLogger);
  t.teardown(() => noReader.stop());
  noReader.start();
  t.equal(await noReader.userAt(owner.signPub, await noReader.barrier(), 50), undefined, "without a reader: no answer");
});

// The bucket keeps one revision per key: a change overwritten before a reader gets to it is
// gone from the stream, and the reader meets the key again only at its later revision. Bob is
// added to the room (kept at revision a), a barrier B is written, then carol is added (the room
// record moves to c > B and a is gone). An index that took "the highest revision read" for
// "complete up to" answered at B without the room: bob lost a room he is in. The catch-up by
// sequence reads a gap where a was, so it cannot claim B until it has read to the end.
t.test("the catch-up by sequence does not answer past a change it could not read", async (t) => {
  const { store, kv, muted, reader } = await silentWatch(t);
  const index = new RoomIndex(bucketSource(muted, reader), silentLogger);
  t.teardown(() => index.stop());
  index.start();
  const owner = await store.addUser(newUser("owner"));
  const bob = await store.addUser(newUser("bob"));
  const carol = await store.addUser(newUser("carol"));
  const r = await store.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
  await store.addMember(r.id, { signPub: bob.signPub, role: "member", sealedKey: null });
  const added = (await kv.get(`rooms.${r.id}`))!.revision;
  const seq = await index.barrier();
  await store.addMember(r.id, { signPub: carol.signPub, role: "member", sealedKey: null });
  t.ok((await kv.get(`rooms.${r.id}`))!.revision > seq, "the room record moved past the barrier");
  t.not((await kv.get(`rooms.${r.id}`))!.revision, added, "and its revision with bob is gone");
  t.same(
    (await index.roomsOf(bob.signPub, seq, 50))?.map((x) => x.rec.room.id),
    [r.id],
    "bob's room, at its later revision",
  );
  t.same(
    (await index.roomsOf(carol.signPub, seq, 50))?.map((x) => x.rec.room.id),
    [r.id],
    "carol's too: the index read to the end, past the barrier",
  );
  // Edge: a barrier the stream has not reached (a sequence from the future) is no answer, not a guess.
  t.equal(await index.roomsOf(bob.signPub, seq + 1000, 50), undefined, "a sequence not in the stream: no answer");
});

// The same on the watch: a new watch first delivers every key's last revision, skipping all
// the overwritten ones. The room (bob added at a, then carol at c) comes after a thousand other
// records written after the barrier B; the barrier's own marker comes before them. An index
// that moved to the highest revision delivered answered at B before the room arrived.
t.test(
  "a new watch answers only once it has delivered what is pending, not at the first change past the barrier",
  async (t) => {
    const { store, kv } = await storeAndBucket(t);
    const owner = await store.addUser(newUser("owner"));
    const bob = await store.addUser(newUser("bob"));
    const carol = await store.addUser(newUser("carol"));
    const r = await store.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
    await store.addMember(r.id, { signPub: bob.signPub, role: "member", sealedKey: null });
    const index = new RoomIndex(bucketSource(kv), silentLogger);
    t.teardown(() => index.stop());
    const seq = await index.barrier(); // before the watch is made: its marker is in what it first delivers
    const filler = new TextEncoder().encode("{}");
    for (let i = 0; i < 1000; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => kv.put(`filler${i + j}`, filler)));
    }
    await store.addMember(r.id, { signPub: carol.signPub, role: "member", sealedKey: null });
    index.start();
    t.same(
      (await index.roomsOf(bob.signPub, seq, 10_000))?.map((x) => x.rec.room.id),
      [r.id],
      "bob's room is there when the index answers",
    );
    // Once loaded, a change right after what it has applied moves it on: a new barrier is answered at once.
    await store.removeMember(r.id, bob.signPub);
    t.same(await index.roomsOf(bob.signPub, await index.barrier(), 10_000), [], "a removal after loading");
  },
);

// nats-server 2.10 (the floor release) gives a LastPerSubject consumer with two filter
// subjects on a file-stored stream only part of the second filter's keys: a watch on
// ["*", "rooms.>"] made on a bucket whose rooms are older than its users left the older rooms
// out (seen: every room last written before some point, ~1 in 3 of them; no user missing),
// and still counted them as pending. 2.15 delivers them all. The index watched exactly that,
// so a node whose watch was (re)made during a rolling restart, on a 2.10 node, admitted
// members without rooms they are in. It now watches the whole bucket: one filter.
t.test(
  "a watch made on a loaded bucket holds every room and user, on the floor release and the current one",
  async (t) => {
    const { UNIBUS_NATS_SERVER: _, ...env } = process.env;
    for (const version of [FLOOR_NATS_VERSION, PINNED_NATS_VERSION]) {
      const binary = await installNatsServer({ version, env });
      const dir = await tempDir(t);
      const server = new NatsServerProcess({
        binary: binary.path,
        workDir: dir,
        config: { serverName: "watch", host: "127.0.0.1", port: -1, jetstream: { storeDir: path.join(dir, "js") } },
      });
      t.teardown(() => server.stop());
      const conn = await connect({ servers: `nats://127.0.0.1:${(await server.start()).nats}` });
      t.teardown(() => conn.close());
      const kv = await new Kvm(jetstream(conn)).create(`${prefix()}users`, { history: 1 });
      // As on a bus that has run a while: rooms made early, then users and other sections'
      // keys (sealed keys, the barrier's marker) written after them.
      const member = "ab".repeat(32);
      const room = (id: string, n: number): RoomRec => ({
        room: {
          id,
          subject: `r.${id}`,
          encrypt: false,
          persist: false,
          signMsgs: false,
          epoch: n,
          createdAt: n,
        } as RoomRec["room"],
        members: [{ signPub: member, role: "member", addedAt: n }],
        committed: true,
        lock: null,
      });
      const rooms = Array.from({ length: 100 }, (_, i) => `room${i}`);
      const batches = async (n: number, put: (i: number) => Promise<unknown>) => {
        for (let i = 0; i < n; i += 50)
          await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, j) => put(i + j)));
      };
      await batches(200, (i) =>
        kv.put(`rooms.${rooms[i % rooms.length]}`, encodeJson(room(rooms[i % rooms.length]!, i))),
      );
      await batches(400, (i) =>
        i % 2 === 0
          ? kv.put(i.toString(16).padStart(64, "0"), encodeJson({ handle: `u${i}` }))
          : i % 4 === 1
            ? kv.put(`keys.x${i}.${member}.1`, "sealed")
            : kv.put(`rooms.${BARRIER_KEY}`, "{}"),
      );
      const index = new RoomIndex(bucketSource(kv), silentLogger);
      t.teardown(() => index.stop());
      index.start();
      const seq = await index.barrier();
      t.same(
        (await index.roomsOf(member, seq, 10_000))?.map((x) => x.rec.room.id).sort(),
        [...rooms].sort(),
        `nats-server ${binary.version}: every room`,
      );
      t.equal(
        (await index.userAt("0".repeat(64), seq, 10_000))?.value.handle,
        "u0",
        `nats-server ${binary.version}: a user`,
      );
      await conn.close();
      await server.stop();
    }
  },
);
