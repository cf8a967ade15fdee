// Membership changes take effect the moment the call returns: the new room's subject
// is usable at once (publish and subscribe), several changes in a row each pay only a
// reconnect (no back-off between them), and the broker still refuses everyone else.
// Edges: rooms created at the same time on one client, a member with two connections,
// a member added while offline, a persisted room JetStream refuses; and a connection
// the bus refuses as it logs in again gets a typed error, never a room it cannot use.
import type { NatsConnection } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import { startCluster } from "../../lib/bus/cluster.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { connect, type UnibusClient } from "../../lib/client/connect.ts";
import type { Room } from "../../lib/client/room.ts";
import type { AccessChange } from "../../lib/control/index.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { AuthDeniedError, ReadmissionRefusedError } from "../../lib/errors.ts";
import { client, connectOnce, member, nextReconnect, reconnected, testBus, user } from "../helpers/bus.ts";
import { collector } from "../helpers/room.ts";

/** Every refusal nats.js reports on `nc` (a refused publish arrives as an async error status). */
function permissionErrors(nc: NatsConnection): string[] {
  const errors: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === "error") errors.push(String(s.error));
  })();
  return errors;
}

/** Subscribes and publishes on `room` through `c` without waiting for anything first; both must work. */
async function usableAtOnce(t: Test, c: UnibusClient, room: Room, text: string): Promise<void> {
  const got = collector(room);
  await room.publish(text);
  await c.nc.flush();
  t.equal(await got.until(1), 1, `${text}: the message published right away came back to the subscription`);
  t.same(got.texts(), [text]);
  got.sub.unsubscribe();
}

async function refusedSubscribe(t: Test, nc: NatsConnection, subject: string): Promise<void> {
  const sub = nc.subscribe(subject);
  t.match(String(await sub.closed), /Permissions Violation for Subscription/, `the broker refuses ${subject}`);
}

/** How many times `nc` reconnects from now on. */
function reconnects(nc: NatsConnection): { count: number } {
  const seen = { count: 0 };
  void (async () => {
    for await (const s of nc.status()) if (s.type === "reconnect") seen.count++;
  })();
  return seen;
}

/** The rooms `bus` creates from now on, as its access-change events name them. */
function createdRooms(bus: Unibus): Array<Extract<AccessChange, { type: "room-created" }>> {
  const created: Array<Extract<AccessChange, { type: "room-created" }>> = [];
  bus.on("access-change", (change) => {
    if (change.type === "room-created") created.push(change);
  });
  return created;
}

t.test("rooms created one after another are each usable the moment createRoom returns", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const mallory = await user(t, bus, "mallory");
  const errors = permissionErrors(alice.c.nc);
  const rooms: Room[] = [];
  // back to back: each re-admission follows the last within nats.js' reconnect wait
  for (const encrypt of [false, true, false, true]) {
    const room = await alice.c.createRoom({ encrypt });
    rooms.push(room);
    await usableAtOnce(t, alice.c, room, `room ${rooms.length}`);
  }
  t.same(errors, [], "no publish or subscription of alice was refused");
  for (const room of rooms) await refusedSubscribe(t, mallory.c.nc, room.subject);
  // nor can a non-member publish into one
  const got = collector(rooms[0]!);
  await alice.c.nc.flush();
  mallory.c.nc.publish(rooms[0]!.subject, "intrusion");
  await mallory.c.nc.flush();
  await rooms[0]!.publish("after");
  t.equal(await got.until(1), 1);
  t.same(got.texts(), ["after"], "only the member's message arrived");
});

t.test("an added member can use the room as soon as its connection is back, add after add", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const errors = permissionErrors(bob.c.nc);
  for (let i = 1; i <= 3; i++) {
    const room = await alice.c.createRoom({ encrypt: false });
    // addMember answers only after bob's connection was kicked; it is back on its own
    await reconnected(bob.c, () => room.addMember(bob.id));
    const atBob = await bob.c.openRoom(room.id);
    await usableAtOnce(t, bob.c, atBob, `bob in room ${i}`);
  }
  t.same(errors, [], "no publish or subscription of bob was refused");
});

t.test("a connection that was never a member is still refused after a change it was not part of", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const room = await alice.c.createRoom({ encrypt: false });
  await reconnected(bob.c, () => room.addMember(bob.id));
  // carol, registered but not a member, connects with the same kind of credentials
  const carol = await user(t, bus, "carol");
  await refusedSubscribe(t, carol.c.nc, room.subject);
  // and an unknown key is not admitted at all
  const stranger = createIdentity();
  await t.rejects(
    connectOnce(
      bus,
      nkeySigner(stranger.nkey, (d) => stranger.sign(d)),
    ),
    /Authorization Violation/,
  );
  // bob's connection still holds the room after those refusals
  const atBob = await bob.c.openRoom(room.id);
  await usableAtOnce(t, bob.c, atBob, "bob after carol");
});

t.test("in a cluster: a room created on one node and a member on another hold at once", async (t) => {
  const cluster = await startCluster({ nodes: 3 });
  t.teardown(() => cluster.stop());
  const [n1, , n3] = cluster.nodes;
  const join = async (node: Unibus, handle: string) => {
    const id = createIdentity();
    await n1!.addUser(id.signPub, { handle, kexPub: id.kexPub });
    const c = await connect({ natsUrl: node.natsUrl, controlUrl: node.controlUrl, ca: cluster.caPem, identity: id });
    t.teardown(() => c.close());
    return { id, c };
  };
  const alice = await join(n1!, "alice");
  const bob = await join(n3!, "bob");
  const mallory = await join(n3!, "mallory");
  const errors = permissionErrors(bob.c.nc);
  for (let i = 1; i <= 2; i++) {
    const room = await alice.c.createRoom({ encrypt: false });
    await usableAtOnce(t, alice.c, room, `alice on node 1, room ${i}`);
    // bob's connection lives on node 3; the kick crosses the cluster
    await reconnected(bob.c, () => room.addMember(bob.id));
    await usableAtOnce(t, bob.c, await bob.c.openRoom(room.id), `bob on node 3, room ${i}`);
    await refusedSubscribe(t, mallory.c.nc, room.subject);
  }
  t.same(errors, [], "no publish or subscription of bob was refused");
});

t.test("rooms created at the same time on one client: each is held the moment its createRoom returns", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const mallory = await user(t, bus, "mallory");
  const errors = permissionErrors(alice.c.nc);
  // Each subscribes the moment its createRoom returns, while the others still kick the
  // connection: a subscription sent on a login that lacks its room would be refused.
  const rooms = await Promise.all(
    [false, true, false, true, false].map(async (encrypt) => {
      const room = await alice.c.createRoom({ encrypt });
      return { room, got: collector(room) };
    }),
  );
  await alice.c.nc.flush();
  for (const [i, { room, got }] of rooms.entries()) {
    await room.publish(`room ${i + 1}`);
    t.equal(await got.until(1), 1, `room ${i + 1}: its early subscription gets its message`);
    t.same(got.texts(), [`room ${i + 1}`]);
  }
  t.same(errors, [], "no publish or subscription of alice was refused");
  t.equal(new Set(rooms.map((r) => r.room.id)).size, 5, "five rooms");
  for (const { room } of rooms) await refusedSubscribe(t, mallory.c.nc, room.subject);
});

t.test("a member with two connections: addMember re-admits both with the room", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const bobToo = await client(t, bus, bob.id);
  const errors = [permissionErrors(bob.c.nc), permissionErrors(bobToo.nc)];
  const room = await alice.c.createRoom({ encrypt: true });
  const back = [nextReconnect(bob.c.nc), nextReconnect(bobToo.nc)];
  await room.addMember(bob.id);
  await Promise.all(back);
  await usableAtOnce(t, bob.c, await bob.c.openRoom(room.id), "bob's first connection");
  await usableAtOnce(t, bobToo, await bobToo.openRoom(room.id), "bob's second connection");
  t.same(errors, [[], []], "neither connection was refused anything");
});

t.test("adding a member who is offline: nobody waits, and the member holds the room once connected", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await member(bus, "bob");
  const room = await alice.c.createRoom({ encrypt: true });
  const aliceBack = reconnects(alice.c.nc);
  await room.addMember(bob);
  t.same(await bus.store.listRoomsFor(bob.signPub).then((rs) => rs.map((r) => r.id)), [room.id], "bob is a member");
  await alice.c.nc.flush();
  t.equal(aliceBack.count, 0, "the owner's connection was not kicked: its rights did not change");
  const c = await client(t, bus, bob);
  const errors = permissionErrors(c.nc);
  await usableAtOnce(t, c, await c.openRoom(room.id), "bob, connected after being added");
  t.same(errors, []);
});

t.test(
  "a persisted room JetStream refuses: 507, the room taken back, and the owner does not keep its subject",
  async (t) => {
    // JetStream's whole file store is smaller than one room's cap: the stream is refused
    // after the room was stored and while the owner is already logging in again with it.
    const bus = await testBus(t, { jetstreamMaxFileBytes: 1024 * 1024 });
    const alice = await user(t, bus, "alice");
    const created = createdRooms(bus);
    const err = await alice.c.createRoom({ encrypt: false, persist: true }).catch((e: unknown) => e);
    t.match(err, { status: 507, code: "STORAGE_FULL" }, "refused as a full store");
    t.equal(created.length, 1, "the room had been stored");
    t.same(await bus.store.listRoomsFor(alice.id.signPub), [], "and was taken back");
    await refusedSubscribe(t, alice.c.nc, created[0]!.subject);
    const room = await alice.c.createRoom({ encrypt: false });
    await usableAtOnce(t, alice.c, room, "a room without history, right after");
  },
);

t.test(
  "the bus refuses the connection as it logs in again: a typed error naming the room, no permissions left",
  async (t) => {
    const bus = await testBus(t);
    const alice = await user(t, bus, "alice");
    const created = createdRooms(bus);
    // Revoked after the room is stored and before the kick (the event comes in between):
    // the re-admission that should bring the room's permissions is refused instead.
    bus.once("access-change", (change) => {
      if (change.type === "room-created") void bus.store.revokeUser(alice.id.signPub);
    });
    const err = await alice.c.createRoom({ encrypt: true }).catch((e: unknown) => e);
    t.ok(err instanceof ReadmissionRefusedError, "ReadmissionRefusedError");
    t.ok(err instanceof AuthDeniedError, "which is an AuthDeniedError");
    t.match(err, { code: "AUTH_DENIED", roomId: created[0]?.roomId });
    t.match((err as Error).message, /refused when logging in again to take room [0-9a-f]+'s permissions/);
    t.ok((await bus.store.getRoom(created[0]!.roomId)).id, "the room itself exists");
    t.ok(alice.c.nc.isClosed(), "the connection is closed: it holds neither the old permissions nor the new");
    t.ok((await alice.c.closed()) instanceof AuthDeniedError, "closed() says why");
    await t.rejects(
      connectOnce(
        bus,
        nkeySigner(alice.id.nkey, (d) => alice.id.sign(d)),
      ),
      /Authorization Violation/,
      "and a new login is refused too",
    );
  },
);
