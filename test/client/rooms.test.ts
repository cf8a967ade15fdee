// The client library end to end on a real bus: encrypted rooms, membership changes
// with rekeying, signatures, tampering, history, discovery.
import t from "tap";
import type { RoomMessage } from "../../lib/client/room.ts";
import { encodeFrame } from "../../lib/crypto/frame.ts";
import { newRoomKey } from "../../lib/crypto/room-key.ts";
import { reconnected, testBus, user } from "../helpers/bus.ts";
import { collector } from "../helpers/room.ts";

/** The member's client re-authenticates after being added; wait until its connection is back. */
t.test("two members exchange messages in an encrypted room", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const room = await alice.c.createRoom();
  t.match(room, { encrypt: true, persist: false, signMsgs: false, epoch: 1 });
  await reconnected(bob.c, () => room.addMember(bob.id));
  const [found] = await bob.c.listMyRooms();
  t.match(found, { id: room.id, role: "member" }, "bob discovers the room");
  const bobRoom = await bob.c.openRoom(room.id);
  const atBob = collector(bobRoom);
  const atAlice = collector(room);
  await bob.c.nc.flush();
  await alice.c.nc.flush();
  await room.publish("hello bob");
  await bobRoom.publish(new TextEncoder().encode("hello alice"));
  await atBob.until(2);
  await atAlice.until(2);
  t.same(atBob.texts(), ["hello bob", "hello alice"]);
  t.same(atAlice.texts(), ["hello bob", "hello alice"]);
  t.match(atBob.got[0], { sender: alice.id.signPub, epoch: 1, verified: false });
  t.same((await room.members()).map((m) => m.role).sort(), ["member", "owner"]);
});

t.test("a cleartext room works on loopback", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const room = await alice.c.createRoom({ encrypt: false, signMsgs: true });
  const got = collector(room);
  await alice.c.nc.flush();
  await room.publish("plain");
  await got.until(1);
  t.same(got.texts(), ["plain"]);
  t.equal(got.got[0]?.verified, true, "signed and verified");
});

t.test("a removed member cannot read what follows; the others carry on without a gap", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const carol = await user(t, bus, "carol");
  const room = await alice.c.createRoom();
  await reconnected(bob.c, () => room.addMember(bob.id));
  await reconnected(carol.c, () => room.addMember(carol.id));
  const bobRoom = await bob.c.openRoom(room.id);
  const carolRoom = await carol.c.openRoom(room.id);
  const atBob = collector(bobRoom);
  const atCarol = collector(carolRoom);
  await Promise.all([bob.c.nc.flush(), carol.c.nc.flush()]);
  await room.publish("one");
  await atCarol.until(1);
  await reconnected(bob.c, () => room.removeMember(bob.id));
  t.equal(room.epoch, 2, "removal moved the room to epoch 2");
  await room.publish("two");
  await atCarol.until(2);
  t.equal(carolRoom.epoch, 2, "carol followed the room to epoch 2 on its first frame");
  await carolRoom.publish("three");
  await atCarol.until(3);
  t.same(atCarol.texts(), ["one", "two", "three"], "carol: no gap across the rekey");
  t.same(
    atCarol.got.map((m) => m.epoch),
    [1, 2, 2],
    "carol now sends with the new key too",
  );
  t.same(atBob.texts(), ["one"], "bob got nothing after his removal");
  // and bob can never obtain the epoch-2 key
  t.equal(await bobRoom.keyFor(2), undefined, "the epoch-2 key is not served to bob");
});

t.test("tampered, unsigned and forged frames are dropped and counted", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const room = await alice.c.createRoom({ signMsgs: true });
  await reconnected(bob.c, () => room.addMember(bob.id));
  const bobRoom = await bob.c.openRoom(room.id);
  const drops: string[] = [];
  const atAlice = collector(room, { drops });
  await alice.c.nc.flush();
  const key = await bobRoom.keyFor(1);
  // bob holds the room key, but tries frames alice must refuse
  const good = encodeFrame({ roomId: room.id, epoch: 1, sender: bob.id, plaintext: "ok", roomKey: key!, sign: true });
  const tampered = Uint8Array.from(good);
  tampered[60] = (tampered[60] ?? 0) ^ 1;
  const unsigned = encodeFrame({
    roomId: room.id,
    epoch: 1,
    sender: bob.id,
    plaintext: "unsigned",
    roomKey: key!,
    sign: false,
  });
  // claims to be alice, signed by bob
  const forged = encodeFrame({
    roomId: room.id,
    epoch: 1,
    sender: { signPub: alice.id.signPub, sign: (d) => bob.id.sign(d) },
    plaintext: "forged",
    roomKey: key!,
    sign: true,
  });
  const wrongKey = encodeFrame({
    roomId: room.id,
    epoch: 1,
    sender: bob.id,
    plaintext: "wrong key",
    roomKey: newRoomKey(),
    sign: true,
  });
  for (const f of [tampered, unsigned, forged, wrongKey, new Uint8Array([1, 2, 3]), good])
    bob.c.nc.publish(room.subject, f);
  await bob.c.nc.flush();
  await atAlice.until(1);
  await new Promise((r) => setTimeout(r, 100));
  t.same(atAlice.texts(), ["ok"], "only the good frame is delivered");
  t.equal(atAlice.got[0]?.verified, true);
  t.same(drops.sort(), ["bad-signature", "bad-signature", "malformed", "undecryptable", "unsigned"].sort());
  t.equal(room.dropped.unsigned, 1);
});

t.test("history of a persisted room replays in order across a rekey", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const room = await alice.c.createRoom({ persist: true });
  await reconnected(bob.c, () => room.addMember(bob.id));
  await room.publish("before rekey");
  await room.flush();
  await room.rekey();
  await room.publish("after rekey");
  await room.flush();
  const bobRoom = await bob.c.openRoom(room.id);
  const seen: RoomMessage[] = [];
  for await (const m of bobRoom.history()) seen.push(m);
  t.same(
    seen.map((m) => [new TextDecoder().decode(m.data), m.epoch, m.seq]),
    [
      ["before rekey", 1, 1],
      ["after rekey", 2, 2],
    ],
  );
  await t.rejects(
    async () => {
      const plain = await alice.c.createRoom({ persist: false });
      for await (const _ of plain.history()) break;
    },
    { code: "INVALID_ARGUMENT" },
  );
});

t.test("an invited bot finds its room with listMyRooms and reads from it", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bot = await user(t, bus, "bot");
  t.same(await bot.c.listMyRooms(), []);
  const room = await alice.c.createRoom({ persist: true });
  await room.publish("welcome, bot");
  await reconnected(bot.c, () => room.addMember(bot.id));
  const [mine] = await bot.c.listMyRooms();
  const botRoom = await bot.c.openRoom(mine!.id);
  const history: string[] = [];
  for await (const m of botRoom.history()) history.push(new TextDecoder().decode(m.data));
  t.same(history, ["welcome, bot"]);
});
