// KvStore.snapshot() while writers run (what an online backup reads): every snapshot
// taken during a churn of room creations, member additions, rekeys, room deletions and
// user deletions is a valid state — each member is a user and holds its key of the
// room's current epoch, no key belongs to a room it does not list or an epoch it has
// not reached — and with the writers stopped it equals a quiet snapshot.
import crypto from "node:crypto";
import t from "tap";
import { type KvStore, openKvStore, type Snapshot } from "../../lib/store/index.ts";
import { startJetStream } from "../helpers/nats.ts";
import { newUser, roomInput, sealed } from "./context.ts";

const { url } = await startJetStream(t, "kvsnap");
const bucketPrefix = `t${crypto.randomBytes(5).toString("hex")}_`;
const open = () => openKvStore({ servers: url, bucketPrefix, storage: "memory", timeoutMs: 20_000 });
const writer: KvStore = await open();
const reader: KvStore = await open();
t.teardown(() => Promise.all([writer.close(), reader.close()]));

/** The invariants a restored store needs; each broken one named. */
function problems(s: Snapshot): string[] {
  const out: string[] = [];
  const users = new Set(s.users.map((u) => u.signPub));
  const rooms = new Map(s.rooms.map((r) => [r.id, r]));
  const keys = new Set(s.sealedKeys.map((k) => `${k.roomId}.${k.signPub}.${k.epoch}`));
  for (const m of s.members) {
    const room = rooms.get(m.roomId);
    if (!room) out.push(`member of a missing room ${m.roomId}`);
    else if (room.encrypt && !keys.has(`${m.roomId}.${m.signPub}.${room.epoch}`))
      out.push(`member ${m.signPub.slice(0, 8)} of ${m.roomId} without its epoch-${room.epoch} key`);
    if (!users.has(m.signPub)) out.push(`member ${m.signPub.slice(0, 8)} of ${m.roomId} is no user`);
  }
  for (const r of s.rooms) if (!users.has(r.ownerSignPub)) out.push(`room ${r.id} without its owner`);
  for (const k of s.sealedKeys) {
    const room = rooms.get(k.roomId);
    if (!room) out.push(`key of a missing room ${k.roomId}`);
    else if (k.epoch > room.epoch) out.push(`key of ${k.roomId} for epoch ${k.epoch} > ${room.epoch}`);
  }
  return out;
}

t.test("snapshots taken during churn are valid states; at rest, equal to a quiet one", async (t) => {
  const owner = await writer.addUser(newUser("owner"));
  let stop = false;
  let rounds = 0;
  const churn = (async () => {
    for (let i = 0; !stop; i++) {
      const guest = await writer.addUser(newUser(`guest${i}`));
      const room = await writer.createRoom(roomInput(owner, { persist: true }));
      await writer.addMember(room.id, { signPub: guest.signPub, sealedKey: sealed(), epoch: 1 });
      await writer.rekey(room.id, {
        fromEpoch: 1,
        sealedKeys: [owner.signPub, guest.signPub].map((signPub) => ({ signPub, sealed: sealed() })),
      });
      // Every other round goes again: a room and a user deleted while snapshots read.
      if (i % 2 === 1) {
        await writer.deleteRoom(room.id);
        await writer.deleteUser(guest.signPub);
      }
      rounds++;
    }
  })();
  const seen: string[] = [];
  let snapshots = 0;
  while (rounds < 30) {
    const s = await reader.snapshot();
    snapshots++;
    seen.push(...problems(s));
  }
  stop = true;
  await churn;
  t.same(seen, [], `${snapshots} snapshots over ${rounds} rounds of churn, none broken`);
  t.ok(snapshots > 1, "several snapshots ran while writers wrote");

  const quiet = await reader.snapshot();
  t.same(problems(quiet), []);
  t.equal(quiet.rooms.length, Math.ceil(rounds / 2), "the rooms left standing");
  t.same(await writer.snapshot(), quiet, "a second reader at rest sees the same state");
});

t.test("a room and a user deleted between the room records and the keys are left out whole", async (t) => {
  const prefix = `t${crypto.randomBytes(5).toString("hex")}_`;
  const w = await openKvStore({ servers: url, bucketPrefix: prefix, storage: "memory", timeoutMs: 20_000 });
  const r = await openKvStore({ servers: url, bucketPrefix: prefix, storage: "memory", timeoutMs: 20_000 });
  t.teardown(() => Promise.all([w.close(), r.close()]));
  const owner = await w.addUser(newUser("owner"));
  const guest = await w.addUser(newUser("guest"));
  const kept = await w.createRoom(roomInput(owner));
  const doomed = await w.createRoom(roomInput(owner));
  await w.addMember(doomed.id, { signPub: guest.signPub, sealedKey: sealed(), epoch: 1 });
  await w.addMember(kept.id, { signPub: guest.signPub, sealedKey: sealed(), epoch: 1 });
  const before = await r.snapshot();
  t.equal(before.rooms.length, 2);

  // The interleaving a backup meets: the deletions land once the room records are read,
  // before the sealed keys are (the reader's keys listing waits for them).
  const keys = r.buckets.keys;
  const history = keys.history.bind(keys);
  let deleted = false;
  keys.history = async (opts) => {
    if (!deleted) {
      deleted = true;
      await w.deleteRoom(doomed.id);
      await w.deleteUser(guest.signPub);
    }
    return history(opts);
  };
  const during = await r.snapshot();
  t.ok(deleted, "the deletions ran inside the snapshot");
  t.same(problems(during), [], "no member without its key, no member who is no user");
  t.same(
    during.rooms.map((x) => x.id),
    [kept.id],
    "the deleted room is left out",
  );
  t.same(
    during.users.map((u) => u.handle),
    ["owner"],
    "the deleted user is left out",
  );
  t.same(
    during.members.map((m) => [m.roomId, m.signPub]),
    [[kept.id, owner.signPub]],
  );
  t.same(await r.snapshot(), during, "and that is the state now");
});
