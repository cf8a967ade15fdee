// What a member can make other members' clients do with the frames it publishes: the
// order of checks, bounded key requests, and `verified` meaning "signed by a member"
// (docs/protocol.md §7). Requests are counted by the bus' own metrics.
import crypto from "node:crypto";
import t, { type Test } from "tap";
import type { Unibus } from "../../lib/bus/unibus.ts";
import type { DroppedFrame, Room, RoomMessage } from "../../lib/client/room.ts";
import { encodeFrame, type FrameSender } from "../../lib/crypto/frame.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { newRoomKey } from "../../lib/crypto/room-key.ts";
import { member, reconnected, testBus, user } from "../helpers/bus.ts";
import { waitFor } from "../helpers/wait.ts";

/** The control-plane requests a received frame can cause. */
const FRAME_ROUTES = ["rooms.keys.get", "rooms.get", "rooms.members.list"];

async function requestsSoFar(bus: Unibus, status?: string): Promise<number> {
  const { values } = await bus.metrics.httpRequests.get();
  return values
    .filter((v) => FRAME_ROUTES.includes(String(v.labels.route)) && (!status || String(v.labels.status) === status))
    .reduce((n, v) => n + v.value, 0);
}

/**
 * Messages and whole drops (sender and epoch too, which test/helpers/room.ts does not
 * keep) of one subscription; `upTo(text)` waits until `text` arrived.
 */
function watch(room: Room, who: string) {
  const got: RoomMessage[] = [];
  const drops: DroppedFrame[] = [];
  room.subscribe({ callback: (m) => void got.push(m), onDrop: (d) => void drops.push(d) });
  const texts = () => got.map((m) => new TextDecoder().decode(m.data));
  return {
    got,
    drops,
    texts,
    reasons: () => [...new Set(drops.map((d) => d.reason))].sort(),
    upTo: (text: string) => waitFor(`"${text}" at ${who}`, () => texts().includes(text)),
  };
}

/** alice owns a signMsgs room; bob and carol are members, each with the room open. */
async function signedRoom(t: Test, opts: { signMsgs?: boolean } = {}) {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const carol = await user(t, bus, "carol");
  const room = await alice.c.createRoom({ signMsgs: opts.signMsgs ?? true });
  await reconnected(bob.c, () => room.addMember(bob.id));
  await reconnected(carol.c, () => room.addMember(carol.id));
  const bobRoom = await bob.c.openRoom(room.id);
  const carolRoom = await carol.c.openRoom(room.id);
  const key = (await bobRoom.keyFor(1))!;
  const atCarol = watch(carolRoom, "carol");
  const atAlice = watch(room, "alice");
  await carol.c.nc.flush();
  await alice.c.nc.flush();
  // Each receiver reads the member list and fetches the epoch-1 key once, on a member's
  // first signed frame.
  bob.c.nc.publish(
    room.subject,
    encodeFrame({ roomId: room.id, epoch: 1, sender: bob.id, plaintext: "warm-up", roomKey: key, sign: true }),
  );
  await atCarol.upTo("warm-up");
  await atAlice.upTo("warm-up");
  return { bus, alice, bob, carol, room, bobRoom, carolRoom, key, atCarol, atAlice };
}

function frameBy(sender: FrameSender, o: { roomId: string; epoch: number; key?: Uint8Array; sign: boolean }) {
  return encodeFrame({
    roomId: o.roomId,
    epoch: o.epoch,
    sender,
    plaintext: "flood",
    ...(o.key ? { roomKey: o.key } : {}),
    sign: o.sign,
  });
}

/** Publishes `text` from `room` until `seen()`: a receiver whose request budget is spent drops the first ones. */
async function publishUntil(room: Room, text: string, seen: () => boolean): Promise<void> {
  await waitFor(`"${text}" to get through`, async () => {
    await room.publish(text);
    await new Promise((r) => setTimeout(r, 200));
    return seen();
  });
}

t.test("a member flooding frames at random epochs: bounded requests, live traffic keeps flowing", async (t) => {
  const { bus, bob, room, atCarol, atAlice } = await signedRoom(t);
  const before = await requestsSoFar(bus);
  const started = performance.now();
  const frames = 2000;
  for (let i = 0; i < frames; i++) {
    // Valid signatures by a member, so every frame reaches the key step; epoch 2 and 3
    // are poisoned too, before they exist.
    const epoch = i < 20 ? 2 + (i % 2) : crypto.randomInt(2, 2 ** 32);
    bob.c.nc.publish(room.subject, frameBy(bob.id, { roomId: room.id, epoch, key: newRoomKey(), sign: true }));
    if (i % 200 === 0) await room.publish(`live ${i / 200}`);
  }
  await bob.c.nc.flush();
  await room.publish("end of flood");
  await atCarol.upTo("end of flood");
  await atAlice.upTo("end of flood");
  const elapsedSec = (performance.now() - started) / 1000;
  await new Promise((r) => setTimeout(r, 100)); // the last answers' metrics are counted on finish
  const made = (await requestsSoFar(bus)) - before;
  const live = Array.from({ length: frames / 200 }, (_, i) => `live ${i}`);
  t.same(
    atCarol.texts().filter((m) => m.startsWith("live")),
    live,
    "every live message reached carol, in order",
  );
  // Per receiver: 8 key or room requests at once then one a second, and one member-list
  // read at most per second; two receivers.
  const bound = 2 * (8 + 2 * (Math.ceil(elapsedSec) + 1));
  t.ok(made <= bound, `${made} requests for ${frames} frames over ${elapsedSec.toFixed(1)} s (bound ${bound})`);
  t.ok(made < frames / 20, "nowhere near one request per frame");
  t.same(atCarol.reasons(), ["unknown-epoch"], "the flood is dropped as unknown-epoch, nothing else");
  t.equal(atCarol.drops.length, frames);

  // Epochs 2 and 3 were claimed before they existed; once they do, they work.
  t.equal(await room.rekey(), 2);
  await publishUntil(room, "after rekey", () => atCarol.texts().includes("after rekey"));
  t.equal(atCarol.got.at(-1)?.epoch, 2, "a rekey after the flood reaches carol");
});

t.test("frames that fail before the key step cause no request, with their own reasons", async (t) => {
  const { bus, bob, room, key, atCarol } = await signedRoom(t);
  const before = await requestsSoFar(bus);
  const epochs = [0, 5, 77, 2 ** 31, 2 ** 31 + 1, 2 ** 32 - 1];
  const forger = { signPub: bob.id.signPub, sign: () => crypto.randomBytes(64) };
  const truncated = frameBy(bob.id, { roomId: room.id, epoch: 9, key, sign: true }).subarray(0, 60);
  for (const epoch of epochs) {
    const send = (f: Uint8Array) => bob.c.nc.publish(room.subject, f);
    send(frameBy(bob.id, { roomId: room.id, epoch, key, sign: false })); // unsigned
    send(frameBy(forger, { roomId: room.id, epoch, key, sign: true })); // bad signature
    send(frameBy(bob.id, { roomId: room.id, epoch, sign: true })); // cleartext in an encrypted room
  }
  bob.c.nc.publish(room.subject, truncated);
  // Out of range: refused without asking, although bob is a member and signed them.
  bob.c.nc.publish(room.subject, frameBy(bob.id, { roomId: room.id, epoch: 0, key, sign: true }));
  bob.c.nc.publish(room.subject, frameBy(bob.id, { roomId: room.id, epoch: 2 ** 31 + 1, key, sign: true }));
  await bob.c.nc.flush();
  await room.publish("sentinel");
  await atCarol.upTo("sentinel");
  await new Promise((r) => setTimeout(r, 100));
  t.equal((await requestsSoFar(bus)) - before, 0, "not one request");
  const count = (reason: string) => atCarol.drops.filter((d) => d.reason === reason).length;
  t.equal(count("unsigned"), epochs.length);
  t.equal(count("bad-signature"), epochs.length);
  t.equal(count("wrong-mode"), epochs.length);
  t.equal(count("malformed"), 1);
  t.equal(count("unknown-epoch"), 2);
  t.same(atCarol.reasons(), ["bad-signature", "malformed", "unknown-epoch", "unsigned", "wrong-mode"]);
});

t.test("a key refused once is not asked for again", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const dave = await user(t, bus, "dave");
  const room = await alice.c.createRoom({ signMsgs: true });
  await reconnected(bob.c, () => room.addMember(bob.id));
  await room.rekey();
  // dave joins at epoch 2: epoch 1 exists, but was never his.
  await reconnected(dave.c, () => room.addMember(dave.id));
  const bobRoom = await bob.c.openRoom(room.id);
  const atDave = watch(await dave.c.openRoom(room.id), "dave");
  await dave.c.nc.flush();
  const epochOne = (await bobRoom.keyFor(1))!;
  const refusedBefore = await requestsSoFar(bus, "403");
  for (let i = 0; i < 50; i++) {
    bob.c.nc.publish(room.subject, frameBy(bob.id, { roomId: room.id, epoch: 1, key: epochOne, sign: true }));
  }
  await bob.c.nc.flush();
  await room.publish("sentinel");
  await atDave.upTo("sentinel");
  await new Promise((r) => setTimeout(r, 100));
  t.equal((await requestsSoFar(bus, "403")) - refusedBefore, 1, "one refusal, remembered");
  t.equal(atDave.drops.length, 50);
  t.same(atDave.reasons(), ["unknown-epoch"]);
});

t.test("verified means signed by a member: a non-member's signature is dropped as not-a-member", async (t) => {
  for (const signMsgs of [true, false]) {
    await t.test(`signMsgs: ${signMsgs}`, async (t) => {
      const { bus, bob, room, key, atAlice } = await signedRoom(t, { signMsgs });
      // mallory is on the allowlist but not in the room; bob, who holds the room key,
      // publishes a frame mallory signed.
      const mallory = await member(bus, "mallory");
      const stranger = createIdentity();
      const send = (f: Uint8Array) => bob.c.nc.publish(room.subject, f);
      send(frameBy(mallory, { roomId: room.id, epoch: 1, key, sign: true }));
      send(frameBy(stranger, { roomId: room.id, epoch: 1, key, sign: true }));
      send(encodeFrame({ roomId: room.id, epoch: 1, sender: bob.id, plaintext: "by bob", roomKey: key, sign: true }));
      await bob.c.nc.flush();
      await atAlice.upTo("by bob");
      t.same(
        atAlice.drops.map((d) => [d.reason, d.sender, d.epoch]),
        [
          ["not-a-member", mallory.signPub, 1],
          ["not-a-member", stranger.signPub, 1],
        ],
      );
      const byBob = atAlice.got.find((m) => new TextDecoder().decode(m.data) === "by bob");
      t.match(byBob, { sender: bob.id.signPub, epoch: 1, verified: true });
      t.notOk(
        atAlice.got.some((m) => m.sender !== bob.id.signPub && m.verified),
        "nothing else is verified",
      );
    });
  }
});

t.test("a removed member's signatures verify for the epochs it was a member of, not after", async (t) => {
  const { alice, bob, room, key, atCarol } = await signedRoom(t, { signMsgs: false });
  await room.removeMember(bob.id); // rekeys to epoch 2
  const epochTwo = (await room.keyFor(2))!;
  // The member list may be re-read once a second; let carol's warm-up read age past that.
  await new Promise((r) => setTimeout(r, 1100));
  await room.publish("epoch two"); // unsigned: carol follows the rekey without reading the list
  await atCarol.upTo("epoch two");
  // bob can no longer publish; anyone holding the keys can relay what he signed.
  const relay = (f: Uint8Array) => alice.c.nc.publish(room.subject, f);
  const byBob = (epoch: number, roomKey: Uint8Array, plaintext: string) =>
    encodeFrame({ roomId: room.id, epoch, sender: bob.id, plaintext, roomKey, sign: true });
  relay(byBob(1, key, "written while a member"));
  relay(byBob(2, epochTwo, "written after removal"));
  await alice.c.nc.flush();
  await room.publish("sentinel");
  await atCarol.upTo("sentinel");
  t.match(
    atCarol.got.find((m) => new TextDecoder().decode(m.data) === "written while a member"),
    { sender: bob.id.signPub, epoch: 1, verified: true },
  );
  t.notOk(atCarol.texts().includes("written after removal"));
  t.same(
    atCarol.drops.map((d) => [d.reason, d.sender, d.epoch]),
    [["not-a-member", bob.id.signPub, 2]],
  );
});

t.test("history waits for the request budget instead of dropping: every epoch is read", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const room = await alice.c.createRoom({ persist: true, signMsgs: true });
  await reconnected(bob.c, () => room.addMember(bob.id));
  const epochs = 12; // more than the live budget's burst
  for (let epoch = 1; epoch <= epochs; epoch++) {
    if (epoch > 1) await room.rekey();
    await room.publish(`epoch ${epoch}`);
  }
  await alice.c.nc.flush();
  const drops: DroppedFrame[] = [];
  const seen: RoomMessage[] = [];
  for await (const m of (await bob.c.openRoom(room.id)).history({ onDrop: (d) => void drops.push(d) })) seen.push(m);
  t.same(drops, []);
  t.same(
    seen.map((m) => [new TextDecoder().decode(m.data), m.epoch, m.verified]),
    Array.from({ length: epochs }, (_, i) => [`epoch ${i + 1}`, i + 1, true]),
  );
});
