// The broker-enforced ACL, as an attacker would probe it, and live revocation.
import type { NatsConnection } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { connect } from "../../lib/client/connect.ts";
import { api, client, member, nextReconnect, testBus } from "../helpers/bus.ts";

interface Room {
  id: string;
  subject: string;
}

async function refusedSubscribe(t: Test, nc: NatsConnection, subject: string): Promise<void> {
  const sub = nc.subscribe(subject);
  const err = await sub.closed;
  t.match(String(err), /Permissions Violation for Subscription/, `subscribe ${subject} refused by the broker`);
}

/** Collects what a subscription receives. */
function collect(nc: NatsConnection, subject: string): string[] {
  const got: string[] = [];
  nc.subscribe(subject, { callback: (e, m) => void (e ? undefined : got.push(m.string())) });
  return got;
}

const settle = async (...ncs: NatsConnection[]) => {
  for (const nc of ncs) await nc.flush();
};

t.test("a registered non-member is refused every way into a room", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const mallory = await member(bus, "mallory");
  const room = await api(t, bus, alice).request<Room>("POST", "/v1/rooms", { encrypt: false, persist: true });
  const a = await client(t, bus, alice);
  const m = await client(t, bus, mallory);
  for (const subject of [
    room.subject,
    ">",
    "unibus.>",
    "unibus.room.*",
    "unibus.room.>",
    "_INBOX.>",
    "$JS.API.>",
    "$KV.>",
    "$SYS.>",
  ]) {
    await refusedSubscribe(t, m.nc, subject);
  }
  // publishing into the room: refused, alice receives nothing
  const got = collect(a.nc, room.subject);
  await a.nc.flush();
  m.nc.publish(room.subject, "intrusion");
  await settle(m.nc, a.nc);
  t.same(got, [], "nothing reached the room");
  // JetStream: no consumer on the room's stream, no direct get, no stream info
  for (const subject of [
    `$JS.API.CONSUMER.CREATE.ROOM_${room.id}`,
    `$JS.API.CONSUMER.CREATE.ROOM_${room.id}.x.${room.subject}`,
    `$JS.API.DIRECT.GET.ROOM_${room.id}`,
    `$JS.API.STREAM.INFO.ROOM_${room.id}`,
    "$JS.API.STREAM.LIST",
  ]) {
    await t.rejects(
      m.nc.request(
        subject,
        JSON.stringify({ stream_name: `ROOM_${room.id}`, config: { deliver_subject: "_INBOX.x" } }),
        { timeout: 1000 },
      ),
      { message: /Permissions Violation for Publish/ },
      `request ${subject} refused`,
    );
  }
});

t.test("a member's JetStream rights stop at reading its room's history", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const room = await api(t, bus, alice).request<Room>("POST", "/v1/rooms", { encrypt: false, persist: true });
  const a = await client(t, bus, alice);
  await a.nc.request(room.subject, "first", { timeout: 2000 }).catch(() => {});
  await t.rejects(
    a.nc.request(`$JS.API.STREAM.INFO.ROOM_${room.id}`, "", { timeout: 2000 }),
    { message: /Permissions Violation for Publish/ },
    "not even stream info",
  );
  const got = await a.nc.request(`$JS.API.DIRECT.GET.ROOM_${room.id}`, JSON.stringify({ seq: 1 }), { timeout: 2000 });
  t.equal(got.string(), "first", "direct get of its own room's history");
  // Settles the open question for our design: a member cannot create any consumer, so a
  // push consumer's deliver subject can never be aimed anywhere.
  await t.rejects(
    a.nc.request(
      `$JS.API.CONSUMER.CREATE.ROOM_${room.id}`,
      JSON.stringify({ stream_name: `ROOM_${room.id}`, config: { deliver_subject: "unibus.room.elsewhere" } }),
      { timeout: 1000 },
    ),
    { message: /Permissions Violation for Publish/ },
    "no push consumer even on its own room",
  );
});

t.test("connect → create a room → publish, on one connection", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const a = await client(t, bus, alice);
  const reconnected = nextReconnect(a.nc);
  const room = await api(t, bus, alice).request<Room>("POST", "/v1/rooms", { encrypt: false });
  await reconnected; // the control plane kicked the connection before answering
  const got: string[] = [];
  const sub = a.nc.subscribe(room.subject, { callback: (e, m) => void (e ? undefined : got.push(m.string())) });
  a.nc.publish(room.subject, "hello room");
  await a.nc.flush();
  t.same(got, ["hello room"]);
  t.notOk(sub.isClosed(), "the subscription is live");
});

t.test("add and remove members on live connections", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const aApi = api(t, bus, alice);
  const a = await client(t, bus, alice);
  const b = await client(t, bus, bob);
  const aKicked = nextReconnect(a.nc);
  const room = await aApi.request<Room>("POST", "/v1/rooms", { encrypt: false });
  await aKicked;
  const aliceGot = collect(a.nc, room.subject);

  // bob is added while connected: his connection re-authenticates, no reconnect call
  const bKicked = nextReconnect(b.nc);
  await aApi.request("POST", `/v1/rooms/${room.id}/members`, { signPub: bob.signPub, epoch: 1 });
  await bKicked;
  const bobGot: string[] = [];
  const bobErrors: string[] = [];
  b.nc.subscribe(room.subject, {
    // with a callback, nats.js reports a refused (re)subscription here, as (err, undefined)
    callback: (e, m) => void (e ? bobErrors.push(String(e)) : bobGot.push(m.string())),
  });
  await b.nc.flush();
  b.nc.publish(room.subject, "bob joined");
  await settle(b.nc, a.nc);
  a.nc.publish(room.subject, "welcome");
  await settle(a.nc, b.nc);
  t.same(aliceGot, ["bob joined", "welcome"]);
  t.same(bobGot, ["bob joined", "welcome"]);

  // bob is removed: his live subscription dies; alice's keeps flowing
  const bKickedAgain = nextReconnect(b.nc);
  await aApi.request("DELETE", `/v1/rooms/${room.id}/members/${bob.signPub}`);
  await within(bKickedAgain, "bob's reconnect after removal");
  await b.nc.flush();
  t.match(bobErrors, [/Permissions Violation for Subscription/], "bob's client is told its resubscription was refused");
  // and the broker, the judge, holds no subscription to the room for bob's connection
  const subs = await subscriptionsOf(bus, b.nc);
  t.notOk(
    subs.includes(room.subject),
    `bob's live connection lost the room subscription (has ${JSON.stringify(subs)})`,
  );
  a.nc.publish(room.subject, "after removal");
  await settle(a.nc, b.nc);
  t.same(bobGot, ["bob joined", "welcome"], "bob received nothing after removal");
  t.same(aliceGot, ["bob joined", "welcome", "after removal"], "alice keeps receiving without a gap");
  t.ok(await bus.store.isAuthorized(bob.signPub), "bob is still a user, just not in the room");
});

t.test("a member of hundreds of rooms: each reconnect holds exactly its rooms of that moment", async (t) => {
  // The callout keeps each identity's encoded permission block between connects
  // (lib/auth/user-jwt.ts): a removal must still take effect on the very next login, and
  // one identity's block must never reach another's connection.
  const bus = await testBus(t);
  const root = await member(bus, "root", "admin");
  const alice = await member(bus, "alice");
  const mallory = await member(bus, "mallory");
  const rooms: Room[] = [];
  for (let i = 0; i < 300; i++) {
    const id = `acl${i.toString(16).padStart(21, "0")}`;
    const room = await bus.store.createRoom({
      id,
      subject: `unibus.room.${id}`,
      ownerSignPub: root.signPub,
      encrypt: false,
      persist: i % 2 === 0,
      signMsgs: false,
    });
    await bus.store.addMember(id, { signPub: alice.signPub });
    rooms.push(room);
  }
  const [first, last] = [rooms[0]!, rooms.at(-1)!];
  const a = await client(t, bus, alice);
  const aliceGot = collect(a.nc, last.subject);
  await a.nc.flush();
  a.nc.publish(last.subject, "in the 300th room");
  await settle(a.nc);
  t.same(aliceGot, ["in the 300th room"], "alice reaches her 300th room");

  // mallory logs in right after alice: none of alice's rooms, not one
  const m = await client(t, bus, mallory);
  for (const room of [first, last]) await refusedSubscribe(t, m.nc, room.subject);
  await t.rejects(
    m.nc.request(`$JS.API.DIRECT.GET.ROOM_${first.id}`, JSON.stringify({ seq: 1 }), { timeout: 1000 }),
    { message: /Permissions Violation for Publish/ },
    "no history of alice's persisted room",
  );

  // alice is removed from the first room: her next login (the kick) no longer holds it
  const kicked = nextReconnect(a.nc);
  await api(t, bus, root).request("DELETE", `/v1/rooms/${first.id}/members/${alice.signPub}`);
  await within(kicked, "alice's reconnect after removal");
  await refusedSubscribe(t, a.nc, first.subject);
  await t.rejects(
    a.nc.request(`$JS.API.DIRECT.GET.ROOM_${first.id}`, JSON.stringify({ seq: 1 }), { timeout: 1000 }),
    { message: /Permissions Violation for Publish/ },
    "no history of the room she left",
  );
  const stillGot = collect(a.nc, last.subject);
  await a.nc.flush();
  a.nc.publish(last.subject, "still here");
  await settle(a.nc);
  t.same(stillGot, ["still here"], "the other 299 rooms stay");
});

t.test("a revoked user's live connection is closed and every reconnect is denied", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const mallory = await member(bus, "mallory");
  const m = await connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: mallory });
  const closed = m.closed();
  await api(t, bus, admin).request("POST", `/v1/users/${mallory.signPub}/revoke`);
  const err = await closed;
  t.ok(m.nc.isClosed(), "the connection is closed for good");
  t.match(String(err), /Authorization|authentication/i, "it ended with an authorization error");
  await t.rejects(connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: mallory, timeoutMs: 5000 }), {
    code: "AUTH_DENIED",
  });
});

t.test("revoking through the host-trusted store (the CLI path) also closes live connections", async (t) => {
  const bus = await testBus(t);
  const mallory = await member(bus, "mallory");
  const m = await connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: mallory });
  const closed = m.closed();
  await bus.store.revokeUser(mallory.signPub);
  await closed;
  t.ok(m.nc.isClosed());
});

/** Bounds a wait so a broken expectation fails with a name instead of a suite timeout. */
async function within<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** The subscriptions nats-server holds for a connection (from its monitoring port). */
async function subscriptionsOf(bus: Unibus, nc: NatsConnection): Promise<string[]> {
  const cid = nc.info?.client_id;
  const connz = (await (await fetch(`${bus.monitorUrl}/connz?subs=1&cid=${cid}`)).json()) as {
    connections: { cid: number; subscriptions_list?: string[] }[];
  };
  return connz.connections.find((c) => c.cid === cid)?.subscriptions_list ?? [];
}
