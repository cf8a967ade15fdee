// The websocket listener (browsers) is no side door: the same TLS, the same allowlist,
// the same broker ACL and the same kicks as the TLS client port.
import t from "tap";
import { loadOrCreateCa } from "../../lib/tls/index.ts";
import { api, client, member, testBus } from "../helpers/bus.ts";
import { wsConnect } from "../helpers/ws.ts";

interface Room {
  id: string;
  subject: string;
}

t.test("an allowlisted identity connects over wss and talks with a TCP client in its room", async (t) => {
  const bus = await testBus(t);
  t.match(bus.wsUrl, /^wss:\/\/127\.0\.0\.1:\d+$/);
  t.same(bus.wsUrls, [bus.wsUrl]);
  t.not(new URL(bus.wsUrl).port, new URL(bus.natsUrl).port);
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const room = await api(t, bus, alice).request<Room>("POST", "/v1/rooms", { encrypt: false });
  await api(t, bus, alice).request("POST", `/v1/rooms/${room.id}/members`, { signPub: bob.signPub, epoch: 1 });
  const ws = await wsConnect(bus.wsUrl, bus.caPem, alice);
  t.teardown(() => ws.close());
  const tcp = await client(t, bus, bob);
  const got: string[] = [];
  ws.subscribe(room.subject, { callback: (_e, m) => void got.push(m.string()) });
  const back = tcp.nc.subscribe(room.subject, { max: 1 });
  await ws.flush();
  tcp.nc.publish(room.subject, "from tcp");
  await tcp.nc.flush();
  ws.publish(room.subject, "from ws");
  for await (const m of back) if (m.string() === "from ws") break;
  await ws.flush();
  t.ok(got.includes("from tcp"), "the websocket client received the TCP client's message");
  // request/reply through its private inbox
  const inbox = `_INBOX.${alice.signPub}`;
  ws.subscribe(`${inbox}.echo`, { callback: (_e, m) => void m.respond(m.data) });
  t.equal((await ws.request(`${inbox}.echo`, "again", { timeout: 2000 })).string(), "again");
});

t.test("over wss an unknown identity is denied and a forged login too", async (t) => {
  const bus = await testBus(t);
  const { createIdentity } = await import("../../lib/crypto/identity.ts");
  const stranger = createIdentity();
  await t.rejects(wsConnect(bus.wsUrl, bus.caPem, stranger), /Authorization Violation/);
  // mallory claims alice's key but signs with her own
  const alice = await member(bus, "alice");
  const forged = Object.assign(Object.create(Object.getPrototypeOf(stranger)), stranger, {
    nkey: alice.nkey,
    signPub: alice.signPub,
  });
  forged.sign = (d: Uint8Array) => stranger.sign(d);
  await t.rejects(wsConnect(bus.wsUrl, bus.caPem, forged), /Authorization Violation/);
});

t.test("over wss the broker refuses subjects outside the identity's permissions", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const mallory = await member(bus, "mallory");
  const room = await api(t, bus, alice).request<Room>("POST", "/v1/rooms", { encrypt: false });
  const ws = await wsConnect(bus.wsUrl, bus.caPem, mallory);
  t.teardown(() => ws.close());
  for (const subject of [room.subject, ">", `_INBOX.${alice.signPub}.>`, "$SYS.>", "$JS.API.>"]) {
    const sub = ws.subscribe(subject);
    t.match(String(await sub.closed), /Permissions Violation/, `subscribe ${subject} refused`);
  }
});

t.test("revoking an identity closes its websocket connection and refuses it again", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const mallory = await member(bus, "mallory");
  const ws = await wsConnect(bus.wsUrl, bus.caPem, mallory, { reconnect: true });
  const closed = ws.closed();
  await api(t, bus, admin).request("POST", `/v1/users/${mallory.signPub}/revoke`);
  const err = await closed;
  t.ok(ws.isClosed(), "closed for good");
  t.match(String(err), /Authorization|authentication/i);
  await t.rejects(wsConnect(bus.wsUrl, bus.caPem, mallory), /Authorization Violation/);
});

t.test("a client that does not trust the bus CA cannot connect over wss; nor can plain ws", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const other = await loadOrCreateCa(t.testdir());
  await t.rejects(wsConnect(bus.wsUrl, other.certPem, alice));
  const plain = bus.wsUrl.replace(/^wss:/, "ws:");
  await t.rejects(wsConnect(plain, bus.caPem, alice));
});

t.test("a cluster: every node has a wss listener; revoking through node 1 closes a websocket on node 2", async (t) => {
  const { startCluster } = await import("../../lib/bus/cluster.ts");
  const { ControlClient } = await import("../../lib/client/control.ts");
  const { createIdentity } = await import("../../lib/crypto/identity.ts");
  const cluster = await startCluster({ nodes: 2 });
  t.teardown(() => cluster.stop());
  t.equal(cluster.wsUrls.length, 2);
  t.same(
    cluster.wsUrls,
    cluster.nodes.map((n) => n.wsUrl),
  );
  const [n1, n2] = cluster.nodes;
  const admin = createIdentity();
  const victim = createIdentity();
  await n1!.addUser(admin.signPub, { handle: "root", role: "admin", kexPub: admin.kexPub });
  await n1!.addUser(victim.signPub, { handle: "victim", kexPub: victim.kexPub });
  const ws = await wsConnect(n2!.wsUrl, cluster.caPem, victim, { reconnect: true });
  const closed = ws.closed();
  const api = new ControlClient({ baseUrl: n1!.controlUrl, ca: cluster.caPem, identity: admin });
  t.teardown(() => api.close());
  await api.request("POST", `/v1/users/${victim.signPub}/revoke`);
  t.match(String(await closed), /Authorization|authentication/i, "closed on node 2 after a revoke on node 1");
  await t.rejects(wsConnect(n2!.wsUrl, cluster.caPem, victim), /Authorization Violation/);
});
