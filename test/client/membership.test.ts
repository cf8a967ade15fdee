// Membership changes take effect the moment the call returns: the new room's subject
// is usable at once (publish and subscribe), several changes in a row each pay only a
// reconnect (no back-off between them), and the broker still refuses everyone else.
import type { NatsConnection } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import { startCluster } from "../../lib/bus/cluster.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { connect, type UnibusClient } from "../../lib/client/connect.ts";
import type { Room } from "../../lib/client/room.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { connectOnce, reconnected, testBus, user } from "../helpers/bus.ts";
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
