import crypto from "node:crypto";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { silentLogger } from "../../lib/log/index.ts";
import { type KvStore, openKvStore } from "../../lib/store/index.ts";
import { encodeJson, key, type RoomRec } from "../../lib/store/kv-layout.ts";
import { bucketSource, RoomIndex, sequenceReader } from "../../lib/store/kv-rooms-index.ts";
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
  const bucketPrefix = prefix();
  const store = await openKvStore({ servers: url, bucketPrefix, storage: "memory" });
  t.teardown(() => store.close());
  const owner = await store.addUser(newUser("owner"));
  const r = await store.createRoom(roomInput(owner, { encrypt: false, ownerSealedKey: null }));
  const conn = await connect({ servers: url });
  t.teardown(() => conn.close());
  const kv = await new Kvm(jetstream(conn)).open(`${bucketPrefix}users`);
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
  const bucketPrefix = prefix();
  const store = await openKvStore({ servers: url, bucketPrefix, storage: "memory" });
  t.teardown(() => store.close());
  const conn = await connect({ servers: url });
  t.teardown(() => conn.close());
  const kv = await new Kvm(jetstream(conn)).open(`${bucketPrefix}users`);
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
// placed (which needs the meta leader). The index then reads the stream by sequence.
t.test("with its watch silent, the index catches up by reading the stream by sequence", async (t) => {
  const bucketPrefix = prefix();
  const store = await openKvStore({ servers: url, bucketPrefix, storage: "memory" });
  t.teardown(() => store.close());
  const conn = await connect({ servers: url });
  t.teardown(() => conn.close());
  const name = `${bucketPrefix}users`;
  const kv = await new Kvm(jetstream(conn)).open(name);
  const silent = async () => ({ stop: () => {}, async *[Symbol.asyncIterator]() {} }) as never;
  const muted = Object.assign(Object.create(kv) as typeof kv, { watch: silent });
  const src = bucketSource(muted, sequenceReader(await jetstreamManager(conn), name));
  const index = new RoomIndex(src, silentLogger);
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
