// A three-node cluster whose control plane lives on replicated JetStream KV, real
// processes: writes through one node are read through another, a nonce is spent on
// every node, a SIGKILLed minority loses no acknowledged write, and a lost quorum makes
// the bus refuse (callout denies, control plane 503) until the nodes come back.

import t from "tap";
import { request } from "undici";
import { startCluster } from "../../lib/bus/cluster.ts";
import { ClusterNotReadyError, jetStreamLeaders } from "../../lib/bus/cluster-ready.ts";
import { connect } from "../../lib/client/connect.ts";
import { ControlClient } from "../../lib/client/control.ts";
import { signRequest } from "../../lib/crypto/canonical.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { trustingAgent } from "../helpers/http.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

// Generous: after losing the majority, the restarted nodes' meta group needs RAFT
// elections (4-9 s timeouts in nats-server) and this machine is shared.
const cluster = await startCluster({ nodes: 3, natsServer: NATS_SERVER, readyTimeoutMs: 40_000 });
t.teardown(() => cluster.stop());

const admin = createIdentity();
await cluster.nodes[0]!.addUser(admin.signPub, { handle: "admin", role: "admin", kexPub: admin.kexPub });
const clients: ControlClient[] = [];
t.teardown(() => Promise.all(clients.map((c) => c.close())));
/** A control-plane client for node i's URL (kept across restarts: the port is pinned). */
function control(i: number, identity: Identity = admin): ControlClient {
  const c = new ControlClient({ baseUrl: cluster.controlUrls[i]!, ca: cluster.caPem, identity, timeoutMs: 15_000 });
  clients.push(c);
  return c;
}

/** Answers with the HTTP status instead of throwing on a refusal. */
async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    return (err as { status?: number }).status ?? 0;
  }
}

/** Retries a request refused with 503 (the store or replay bucket electing a leader), for up to 30 s. */
async function untilServed<T>(request: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await request();
    } catch (err) {
      if ((err as { status?: number }).status !== 503 || Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

/** The server that leads the KV users bucket's stream, from the nodes' monitoring endpoints. */
async function kvLeader(): Promise<string | undefined> {
  for (const n of cluster.nodes.filter((b) => b.state === "running")) {
    const leader = (await jetStreamLeaders(n.monitorUrl)).streams.KV_unibus_users;
    if (leader) return leader;
  }
  return undefined;
}

t.test("the store is KV, replicated three ways, every replica current", async (t) => {
  t.equal(cluster.store, "kv");
  for (const node of cluster.nodes) t.equal(node.store.backend, "kv", `${node.serverName} runs on KV`);
  const state = await cluster.nodes[1]!.storeReplication();
  t.same(
    state?.map((b) => b.bucket),
    ["unibus_users"],
    "one bucket holds every control record",
  );
  t.ok(
    state?.every((b) => b.replicas === 3 && b.current === 3),
    JSON.stringify(state),
  );
});

t.test("a user and a room written through node 1 are read and admitted through node 3", async (t) => {
  const bob = createIdentity();
  await control(0).request("POST", "/v1/users", { signPub: bob.signPub, handle: "bob", kexPub: bob.kexPub });
  const read = await control(2).request<{ handle: string }>("GET", `/v1/users/${bob.signPub}`);
  t.equal(read.handle, "bob");
  const c = await connect({
    natsUrl: cluster.natsUrls[2]!,
    controlUrl: cluster.controlUrls[0]!,
    ca: cluster.caPem,
    identity: bob,
    timeoutMs: 10_000,
  });
  t.teardown(() => c.close());
  t.equal(c.nc.info?.server_name, cluster.nodes[2]!.serverName, "node 3's callout admits bob");
  const room = await c.createRoom({ encrypt: true });
  const seen = await cluster.nodes[2]!.store.getRoom(room.id);
  t.equal(seen.epoch, 1);
  t.same(
    (await cluster.nodes[1]!.store.listMembers(room.id)).map((m) => m.signPub),
    [bob.signPub],
  );
});

t.test("a request replayed on another node is refused", async (t) => {
  const uri = "/v1/users";
  const headers = signRequest(admin, { method: "GET", uri, body: "" });
  const agent = trustingAgent(t, cluster.caPem);
  const send = async (i: number) => {
    const res = await request(`${cluster.controlUrls[i]}${uri}`, { headers, dispatcher: agent });
    return { status: res.statusCode, body: (await res.body.json()) as { error?: string } };
  };
  const first = await send(0);
  t.equal(first.status, 200, "first sighting on node 1");
  for (const i of [1, 2, 0]) {
    const again = await send(i);
    t.equal(again.status, 401, `replayed on node ${i + 1}`);
    t.equal(again.body.error, "auth_replayed");
  }
});

t.test("SIGKILL the KV leader's node: writes continue and no acknowledged write is lost", async (t) => {
  const leader = await kvLeader();
  const victim = cluster.nodes.findIndex((n) => n.serverName === leader);
  t.ok(victim >= 0, `the users bucket is led by ${leader}`);
  const writer = control((victim + 1) % 3);
  // A client on the victim fails over (it knows every URL).
  const carol = createIdentity();
  await cluster.nodes[(victim + 1) % 3]!.addUser(carol.signPub, { handle: "carol" });
  // Given the victim's URL only, it learns the others from the cluster (connect_urls).
  const cc = await connect({
    natsUrl: cluster.natsUrls[victim]!,
    ca: cluster.caPem,
    identity: carol,
    timeoutMs: 10_000,
  });
  t.teardown(() => cc.close());
  t.equal(cc.nc.info?.server_name, leader, "carol sits on the victim");
  const moved = (async () => {
    for await (const s of cc.nc.status()) if (s.type === "reconnect") return;
  })();

  const acked: Array<{ handle: string; signPub: string }> = [];
  const refused: number[] = [];
  let n = 0;
  const write = async () => {
    const id = createIdentity();
    const handle = `w${n++}`;
    const code = await status(writer.request("POST", "/v1/users", { signPub: id.signPub, handle }));
    if (code === 200) acked.push({ handle, signPub: id.signPub });
    else refused.push(code);
  };
  for (let i = 0; i < 5; i++) await write();
  await cluster.kill(victim);
  const afterKill = acked.length;
  const deadline = Date.now() + 30_000;
  while (acked.length < afterKill + 10 && Date.now() < deadline) await write();
  t.ok(acked.length >= afterKill + 10, `writes continue after the kill (${acked.length - afterKill} acknowledged)`);
  t.ok(
    refused.every((c) => c === 503),
    `a write refused during the failover is a 503, never anything else: ${JSON.stringify(refused)}`,
  );
  await moved;
  t.not(cc.nc.info?.server_name, leader, "the client failed over");
  await cc.nc.flush();

  const survivor = cluster.nodes[(victim + 1) % 3]!;
  const node = await cluster.restart(victim);
  // Each acknowledged write is read by key (a get answered by the bucket's leader), through
  // a survivor and through the returned node. (A listing is not the check: it runs on a
  // temporary consumer that a just-returned replica may serve while it still catches up —
  // seen: the last write missing from a listing for a moment.)
  for (const via of [survivor, node]) {
    const found = await Promise.all(acked.map((w) => via.store.getUser(w.signPub).then((u) => u.handle)));
    t.same(
      found,
      acked.map((w) => w.handle),
      `all ${acked.length} acknowledged writes, read through ${via.serverName}`,
    );
  }
});

t.test("SIGKILL two of three: quorum lost, the bus refuses and never admits; restarting recovers", async (t) => {
  const dave = createIdentity();
  await cluster.nodes[0]!.addUser(dave.signPub, { handle: "dave" });
  await cluster.kill(1);
  await cluster.kill(2);
  const alone = cluster.nodes[0]!;
  await t.rejects(
    connect({ natsUrl: alone.natsUrl, ca: cluster.caPem, identity: dave, timeoutMs: 15_000 }),
    { code: "AUTH_DENIED" },
    "the callout denies a known user it cannot check",
  );
  const stranger = createIdentity();
  await t.rejects(connect({ natsUrl: alone.natsUrl, ca: cluster.caPem, identity: stranger, timeoutMs: 15_000 }), {
    code: "AUTH_DENIED",
  });
  const err = await control(0)
    .request("GET", `/v1/users/${dave.signPub}`)
    .catch((e: unknown) => e);
  t.match(err, { status: 503 }, "the control plane answers 503");
  t.equal(await status(control(0).request("POST", "/v1/users", { signPub: stranger.signPub, handle: "x" })), 503);

  // One node back is a majority again: the bus serves.
  await cluster.restart(1);
  const c = await connect({ natsUrl: alone.natsUrl, ca: cluster.caPem, identity: dave, timeoutMs: 15_000 });
  t.teardown(() => c.close());
  // The client may be admitted by either node of the majority: a first attempt refused while
  // the store's group elects is retried against the servers the cluster advertised (seen on
  // the floor nats-server: admitted by the restarted node).
  const majority = [alone.serverName, cluster.nodes[1]!.serverName];
  t.ok(majority.includes(c.nc.info?.server_name ?? ""), "admitted again once the quorum is back");
  // The replay bucket's group elects its leader only once two replicas are back (a 4-9 s
  // RAFT timer, seen past the restart's readiness on nats-server 2.15): until then a
  // signed request is refused with 503, never served unchecked. Recovery is the claim.
  const back = await untilServed(() => control(1).request<{ handle: string }>("GET", `/v1/users/${dave.signPub}`));
  t.equal(back.handle, "dave", "the data is intact, read through the restarted node");
  // An attempt that timed out may still have been written: its retry is then told 409.
  await untilServed(() =>
    control(0)
      .request("POST", "/v1/users", { signPub: stranger.signPub, handle: "x" })
      .catch((err: { status?: number }) => {
        if (err.status !== 409) throw err;
      }),
  );
  const written = await control(0).request<{ handle: string }>("GET", `/v1/users/${stranger.signPub}`);
  t.equal(written.handle, "x", "a write is served again, and reads back");

  // The last node rejoins. Seen under a loaded CI run: JetStream's meta leader did not call
  // it "current" for 40 s after its restart (a nats-server catch-up), so readiness is not
  // awaited here; serving through it is.
  await cluster.restart(2).catch((err: unknown) => {
    if (!(err instanceof ClusterNotReadyError)) throw err;
    t.comment(`not ready yet: ${err.message}`);
  });
  const third = cluster.nodes[2]!;
  t.equal(third.state, "running");
  await third.whenStoreReady();
  const viaThird = await control(2).request<{ handle: string }>("GET", `/v1/users/${stranger.signPub}`);
  t.equal(viaThird.handle, "x", "the write made with two nodes is read through the third");
});
