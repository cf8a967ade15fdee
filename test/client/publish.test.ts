// The data path. Publishing: publish and publishMany queue frames on the connection and
// hand them to nats.js together once per turn; order holds across both, flush() and
// close() never leave a frame behind, and a batch with one bad or oversized item sends
// nothing. Receiving: frames open synchronously unless one waits for a request, and
// then the frames after it wait too.
import type { NatsConnection } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { Outbox } from "../../lib/client/outbox.ts";
import type { Room } from "../../lib/client/room.ts";
import { encodeFrame, FRAME_HEADER_BYTES } from "../../lib/crypto/frame.ts";
import { InvalidArgumentError, StateError } from "../../lib/errors.ts";
import { client, member, reconnected, testBus, user } from "../helpers/bus.ts";
import { collector } from "../helpers/room.ts";

async function pair(t: Test, encrypt: boolean) {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const room = await alice.c.createRoom({ encrypt });
  await reconnected(bob.c, () => room.addMember(bob.id));
  const bobRoom = await bob.c.openRoom(room.id);
  const atBob = collector(bobRoom);
  await bob.c.nc.flush();
  return { bus, alice, bob, room, bobRoom, atBob };
}

const texts = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

for (const encrypt of [true, false]) {
  t.test(`publishMany delivers every item in order, interleaved with publish (encrypt: ${encrypt})`, async (t) => {
    const { room, atBob } = await pair(t, encrypt);
    await room.publish("first");
    await room.publishMany(["a", new TextEncoder().encode("b"), "c"]);
    await room.publish("middle");
    await room.publishMany(texts(500, "m"));
    await room.publish("last");
    t.equal(await atBob.until(506), 506);
    t.same(atBob.texts(), ["first", "a", "b", "c", "middle", ...texts(500, "m"), "last"]);
  });
}

t.test("an empty list sends nothing and resolves", async (t) => {
  const { room, atBob } = await pair(t, true);
  await room.publishMany([]);
  await room.publish("marker");
  await atBob.until(1);
  await room.flush();
  t.same(atBob.texts(), ["marker"], "only what came after");
});

t.test("an oversized or non-bytes item rejects the whole batch before anything is sent", async (t) => {
  const { alice, room, atBob } = await pair(t, true);
  const max = alice.c.nc.info!.max_payload;
  const huge = new Uint8Array(max); // the frame adds its header, nonce and tag: over the limit
  const oversized = await room.publishMany(["ok-1", huge, "ok-2"]).catch((e: unknown) => e);
  t.ok(oversized instanceof InvalidArgumentError, "InvalidArgumentError");
  t.match(oversized, { code: "INVALID_ARGUMENT", field: "items", message: /item 1 .*at most .*nothing was sent/ });
  const notBytes = await room.publishMany(["ok-3", 42 as unknown as string]).catch((e: unknown) => e);
  t.match(notBytes, { field: "items", message: /item 1 is not a Uint8Array or a string/ });
  const notArray = await room.publishMany("abc" as unknown as string[]).catch((e: unknown) => e);
  t.match(notArray, { field: "items", message: /array/ });
  const single = await room.publish(huge).catch((e: unknown) => e);
  t.match(single, { field: "data", message: /the message makes a .*at most/ });
  await room.publish("after");
  await room.flush();
  await atBob.until(1);
  t.same(atBob.texts(), ["after"], "none of the rejected items reached the room");
});

t.test("flush resolves once the server has what was published in this same turn", async (t) => {
  const { alice, room } = await pair(t, false);
  // The server echoes alice's own frames to her raw subscription before it answers the
  // flush's PING, on the same connection: after flush() they have arrived.
  let echoed = 0;
  const raw = alice.c.nc.subscribe(room.subject, { callback: () => void echoed++ });
  await alice.c.nc.flush();
  void room.publish("x");
  void room.publishMany(["y", "z"]);
  await room.flush();
  t.equal(echoed, 3, "all three reached the server before flush resolved");
  raw.unsubscribe();
});

t.test("close right after publishing loses nothing; publishing on a closed client is refused", async (t) => {
  const bus = await testBus(t);
  const bob = await user(t, bus, "bob");
  const alice = await client(t, bus, await member(bus, "alice")); // closing it twice is fine
  const room = await alice.createRoom({ encrypt: true });
  await reconnected(bob.c, () => room.addMember(bob.id));
  const atBob = collector(await bob.c.openRoom(room.id));
  await bob.c.nc.flush();
  for (const m of texts(200, "c")) await room.publish(m);
  await alice.close();
  t.equal(await atBob.until(200), 200, "every frame queued before close arrived");
  t.same(atBob.texts(), texts(200, "c"));
  const one = await room.publish("late").catch((e: unknown) => e);
  t.ok(one instanceof StateError, "publish: StateError");
  const many = await room.publishMany(["late"]).catch((e: unknown) => e);
  t.ok(many instanceof StateError, "publishMany: StateError");
  t.match(many, { code: "STATE", actual: "closed" });
});

t.test("a member whose key is not yet fetched publishes after fetching it, in order", async (t) => {
  const { bob, atBob } = await pair(t, true);
  const [info] = await bob.c.listMyRooms();
  const fresh: Room = await bob.c.openRoom(info!.id); // holds no key yet
  const pending = fresh.publishMany(["k1", "k2"]);
  const after = fresh.publish("k3");
  await Promise.all([pending, after]);
  await fresh.flush();
  t.equal(await atBob.until(3), 3);
  t.same(atBob.texts(), ["k1", "k2", "k3"]);
});

t.test("a received frame that waits for its key holds back the frames after it", async (t) => {
  const { bus, alice, room, atBob } = await pair(t, true);
  const carol = await user(t, bus, "carol");
  await reconnected(carol.c, () => room.addMember(carol.id));
  const carolRoom = await carol.c.openRoom(room.id); // at epoch 1, and stays there: it never refreshes
  await room.publish("epoch 1");
  await room.flush();
  t.equal(await atBob.until(1), 1, "bob holds the key of epoch 1");
  await room.rekey(); // bob learns of epoch 2 only from the next frame, and must fetch its key
  await room.publish("epoch 2, key fetched first");
  await room.flush(); // the server has routed it to bob before carol's frame below
  await carolRoom.publish("epoch 1 again, openable at once");
  await carolRoom.flush();
  t.equal(await atBob.until(3), 3);
  t.same(atBob.texts(), ["epoch 1", "epoch 2, key fetched first", "epoch 1 again, openable at once"], "arrival order");
  t.same(
    atBob.got.map((m) => [m.epoch, m.sender]),
    [
      [1, alice.id.signPub],
      [2, alice.id.signPub],
      [1, carol.id.signPub],
    ],
  );
});

// Cleartext unsigned rooms write their frames in place into the connection's outbox, as
// NATS PUB commands handed to nats.js once per turn or per 32 KiB.

t.test(
  "cleartext frames on the wire are encodeFrame's bytes: empty, unicode, bytes, through publish and publishMany",
  async (t) => {
    const { alice, room, atBob } = await pair(t, false);
    const wire: Uint8Array[] = [];
    const raw = alice.c.nc.subscribe(room.subject, { callback: (_e, m) => void wire.push(m.data) });
    await alice.c.nc.flush();
    const items: Array<Uint8Array | string> = [
      "",
      new Uint8Array(0),
      "héllo ✓ 🦄",
      "a\ud800b",
      Uint8Array.of(0, 255, 10, 13),
    ];
    for (const item of items) await room.publish(item);
    await room.publishMany(items);
    await room.flush();
    t.equal(await atBob.until(10), 10);
    const want = (p: Uint8Array | string) =>
      Buffer.from(encodeFrame({ roomId: room.id, epoch: room.epoch, sender: alice.id, plaintext: p, sign: false }));
    t.same(
      wire.map((w) => Buffer.from(w)),
      [...items, ...items].map(want),
      "byte-identical frames, in order",
    );
    const asBytes = (p: Uint8Array | string) => Buffer.from(typeof p === "string" ? Buffer.from(p, "utf8") : p);
    t.same(
      atBob.got.map((m) => Buffer.from(m.data)),
      [...items, ...items].map(asBytes),
      "bob reads the payloads",
    );
    t.ok(atBob.got.every((m) => m.sender === alice.id.signPub && !m.verified && m.epoch === room.epoch));
    raw.unsubscribe();
  },
);

t.test(
  "a cleartext frame exactly at the server's limit goes; one byte more is refused and nothing is sent",
  async (t) => {
    const { alice, room, atBob } = await pair(t, false);
    const max = alice.c.nc.info!.max_payload;
    const over = await room.publish(new Uint8Array(max - FRAME_HEADER_BYTES + 1)).catch((e: unknown) => e);
    t.ok(over instanceof InvalidArgumentError);
    t.match(over, {
      field: "data",
      message: new RegExp(`makes a ${max + 1}-byte frame; the server takes at most ${max}`),
    });
    const overMany = await room.publishMany(["ok", "x".repeat(max - FRAME_HEADER_BYTES + 1)]).catch((e: unknown) => e);
    t.match(overMany, { field: "items", message: /item 1 .*nothing was sent/ });
    const notBytes = await room.publish(7 as unknown as string).catch((e: unknown) => e);
    t.match(notBytes, { field: "data", message: /not a Uint8Array or a string/ });
    await room.publish("small before");
    await room.publish(new Uint8Array(max - FRAME_HEADER_BYTES).fill(9));
    await room.publish("small after");
    await room.flush();
    t.equal(await atBob.until(3, 20_000), 3);
    t.same(
      atBob.got.map((m) => m.data.length),
      [12, max - FRAME_HEADER_BYTES, 11],
      "only the three that fit, in order, the largest whole",
    );
    t.ok(atBob.got[1]!.data.every((b) => b === 9));
  },
);

t.test("a burst far beyond the outbox's buffer keeps every frame and its order", async (t) => {
  const { alice, room, atBob } = await pair(t, false);
  const before = alice.c.nc.stats().outMsgs;
  // one synchronous run: 3000 frames of ~300 B (several hand-offs and slabs), with a
  // frame larger than a slab in the middle
  const sent: string[] = [];
  for (let i = 0; i < 3000; i++) {
    const m = i === 1500 ? `big-${"b".repeat(200_000)}` : `m${i}-${"x".repeat(256)}`;
    sent.push(m);
    void room.publish(m);
  }
  await room.flush();
  t.equal(await atBob.until(3000, 30_000), 3000);
  t.same(atBob.texts(), sent, "every frame, in order");
  t.equal(alice.c.nc.stats().outMsgs - before, 3000, "nats.js counts what the outbox handed it");
});

t.test("a connection without nats.js's protocol handler gets frames through nc.publish, in order", async (t) => {
  const { alice, room, atBob } = await pair(t, false);
  const nc = alice.c.nc;
  // the same connection seen through only its public surface
  const plain = {
    publish: (s: string, d: Uint8Array) => nc.publish(s, d),
    flush: () => nc.flush(),
    isClosed: () => nc.isClosed(),
  } as unknown as NatsConnection;
  const box = new Outbox(plain);
  t.equal(box.reserve(room.subject, 40), -1, "no in-place writing");
  const frame = (p: string) =>
    encodeFrame({ roomId: room.id, epoch: room.epoch, sender: alice.id, plaintext: p, sign: false });
  box.pushOne(room.subject, frame("one"));
  box.push(room.subject, [frame("two"), frame("three")]);
  await box.flush();
  t.equal(await atBob.until(3), 3);
  t.same(atBob.texts(), ["one", "two", "three"]);
});
