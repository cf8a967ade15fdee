import crypto from "node:crypto";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { ConflictError } from "../../lib/errors.ts";
import { silentLogger } from "../../lib/log/index.ts";
import { newInviteToken, openKvStore, type Snapshot } from "../../lib/store/index.ts";
import { KvStore } from "../../lib/store/kv.ts";
import { BUCKETS, type Buckets, bucketName, encodeJson, key, sectionsOf } from "../../lib/store/kv-layout.ts";
import { relayout } from "../../lib/store/kv-relayout.ts";
import { startJetStream } from "../helpers/nats.ts";
import { newUser, roomInput, sealed } from "./context.ts";

// Stores written by the previous KV layout (one bucket per kind of record) must still
// open: a bus moves them into the one bucket as it opens, the admin CLI (bind) reads
// them as they are. The old-layout data here is written by the store's own code over
// buckets laid out the old way, so it is what that version wrote.

const { url } = await startJetStream(t, "kvrelayout");
const nc = await connect({ servers: url });
t.teardown(() => nc.close());
const jsm = await jetstreamManager(nc);
const kvm = new Kvm(jetstream(nc));

const prefix = () => `t${crypto.randomBytes(5).toString("hex")}_`;

/** The previous layout's buckets, each kind in its own. */
async function legacyBuckets(p: string): Promise<Buckets> {
  const opened = await Promise.all(
    BUCKETS.map((b) => kvm.create(bucketName(p, b), { history: 1, storage: "memory", allow_direct: false })),
  );
  return Object.fromEntries(BUCKETS.map((b, i) => [b, opened[i]!])) as unknown as Buckets;
}

async function streamNames(p: string): Promise<string[]> {
  const out: string[] = [];
  for await (const n of jsm.streams.names()) if (n.startsWith(`KV_${p}`)) out.push(n);
  return out.sort();
}

/** A store of the previous layout with users, rooms (members, keys across a rekey), invites; and its snapshot. */
async function oldStore(t: Test, p: string) {
  const old = new KvStore(nc, false, await legacyBuckets(p), {
    timeoutMs: 5000,
    logger: silentLogger,
    replicas: 1,
    prefix: p,
  });
  const alice = await old.addUser(newUser("alice.dot.", { role: "admin" }));
  const bob = await old.addUser(newUser("bob"));
  const carol = await old.addUser(newUser("carol"));
  const room = await old.createRoom(roomInput(alice));
  await old.addMember(room.id, { signPub: bob.signPub, role: "member", sealedKey: sealed(), epoch: 1 });
  await old.addMember(room.id, { signPub: carol.signPub, role: "member", sealedKey: sealed(), epoch: 1 });
  await old.removeMember(room.id, carol.signPub, {
    fromEpoch: 1,
    sealedKeys: [
      { signPub: alice.signPub, sealed: sealed() },
      { signPub: bob.signPub, sealed: sealed() },
    ],
  });
  const plain = await old.createRoom(roomInput(bob, { encrypt: false, ownerSealedKey: null }));
  const token = newInviteToken();
  await old.createInvite({ token, handle: "dave", role: "member", createdBy: "alice" });
  const snap = await old.snapshot();
  await old.close();
  t.equal(snap.users.length, 3);
  t.equal(snap.sealedKeys.length, 5, "epoch 1 (alice, bob, carol) and epoch 2 (alice, bob)");
  return { alice, bob, carol, room, plain, token, snap };
}

t.test("a store of the previous layout opens: everything moved into one bucket, the old buckets gone", async (t) => {
  const p = prefix();
  const { alice, bob, carol, room, plain, token, snap } = await oldStore(t, p);
  t.equal((await streamNames(p)).length, 7, "seven buckets before");

  const store = await openKvStore({ nc, bucketPrefix: p, storage: "memory" });
  t.teardown(() => store.close());
  t.same(await streamNames(p), [`KV_${p}users`], "one bucket after");
  t.same(await store.snapshot(), snap, "the same state, record for record");

  // What the connect path and the clients read.
  t.equal(await store.isAuthorized(bob.signPub), true);
  t.same(
    (await store.listRoomsFor(bob.signPub)).map((r) => r.id).sort(),
    [room.id, plain.id].sort(),
    "bob's rooms, from the index",
  );
  t.same(await store.listRoomsFor(carol.signPub), [], "carol was removed before the move");
  t.equal((await store.getSealedKey(room.id, bob.signPub)).epoch, 2, "the current epoch's key");
  t.equal((await store.getSealedKey(room.id, carol.signPub, 1)).epoch, 1, "old epochs kept");

  // The claims moved too: uniqueness still holds across old and new records.
  await t.rejects(store.addUser(newUser("alice.dot.")), ConflictError, "a moved handle claim still counts");
  await t.rejects(store.createRoom(roomInput(alice, { subject: room.subject })), ConflictError, "a moved subject");
  await t.rejects(
    store.createInvite({ token: newInviteToken(), handle: "dave", role: "member", createdBy: "alice" }),
    ConflictError,
    "dave's open invite still blocks a second one",
  );
  const dave = await store.consumeInvite(token, { signPub: newUser("x").signPub, kexPub: newUser("x").kexPub! });
  t.equal(dave.handle, "dave", "an invite made before the move is consumed after it");

  // And the moved store takes writes like any other.
  await store.removeMember(room.id, bob.signPub);
  t.same(
    (await store.listRoomsFor(bob.signPub)).map((r) => r.id),
    [plain.id],
  );
  await store.deleteUser(carol.signPub);
  await t.rejects(store.getUser(carol.signPub));
});

t.test("the admin CLI's binding reads a previous-layout store as it is and moves nothing", async (t) => {
  const p = prefix();
  const { bob, room, plain, snap } = await oldStore(t, p);
  const bound = await openKvStore({ nc, bucketPrefix: p, bind: true });
  t.teardown(() => bound.close());
  t.same(await bound.snapshot(), snap);
  t.same((await bound.listRoomsFor(bob.signPub)).map((r) => r.id).sort(), [room.id, plain.id].sort());
  t.equal((await streamNames(p)).length, 7, "still seven buckets: the running bus owns the move");
  const state = await bound.replicationState();
  t.equal(state.length, 7, "each old bucket's replication");
});

t.test("nodes opening one old store at once all end up on the same state", async (t) => {
  const p = prefix();
  const { snap } = await oldStore(t, p);
  const opened = await Promise.allSettled(
    [1, 2, 3].map(() => openKvStore({ servers: url, bucketPrefix: p, storage: "memory" })),
  );
  // A node whose old bucket vanished under it (another finished first) fails and opens again.
  const stores = await Promise.all(
    opened.map((o) =>
      o.status === "fulfilled" ? o.value : openKvStore({ servers: url, bucketPrefix: p, storage: "memory" }),
    ),
  );
  t.teardown(() => Promise.all(stores.map((s) => s.close())));
  for (const s of stores) t.same(await s.snapshot(), snap);
  t.same(await streamNames(p), [`KV_${p}users`]);
});

t.test("a late copy never brings back what the new layout changed or deleted", async (t) => {
  const p = prefix();
  const store = await openKvStore({ nc, bucketPrefix: p, storage: "memory" });
  t.teardown(() => store.close());
  const owner = await store.addUser(newUser("owner"));
  const bob = await store.addUser(newUser("bob"));
  const room = await store.createRoom(roomInput(owner));
  await store.addMember(room.id, { signPub: bob.signPub, role: "member", sealedKey: sealed(), epoch: 1 });
  const before: Snapshot = await store.snapshot();
  // An old bucket still holding bob's membership (as a node that crashed mid-move left it)...
  const stale = await kvm.create(bucketName(p, "memberof"), { history: 1, storage: "memory" });
  await stale.put(key.memberOf(bob.signPub, room.id), "1");
  const staleRooms = await kvm.create(bucketName(p, "rooms"), { history: 1, storage: "memory" });
  await staleRooms.put(key.room(room.id), encodeJson({ stale: true }));
  // ...while the new layout removed him since.
  await store.removeMember(room.id, bob.signPub);
  const kv = await kvm.open(bucketName(p, "users"));
  const copied = await relayout(kvm, jsm, p, ["memberof", "rooms"], sectionsOf(kv), silentLogger);
  t.equal(copied, 0, "nothing copied over a deleted or changed record");
  t.same(await store.listRoomsFor(bob.signPub), [], "bob stays removed");
  t.same((await store.listMembers(room.id)).length, before.members.length - 1, "the room record is the new one");
  t.same(await streamNames(p), [`KV_${p}users`], "the old buckets are gone");
});
