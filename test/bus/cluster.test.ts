import t, { type Test } from "tap";
import { startCluster, type UnibusCluster } from "../../lib/bus/cluster.ts";
import { metaStatus, notFormed } from "../../lib/bus/cluster-ready.ts";
import { connect, type UnibusClient } from "../../lib/client/connect.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { InvalidArgumentError, type UnibusError } from "../../lib/errors.ts";
import { isProcessAlive } from "../../lib/nats/index.ts";
import { reconnected } from "../helpers/bus.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { collector } from "../helpers/room.ts";

async function user(
  t: Test,
  c: UnibusCluster,
  handle: string,
  on: { nats: string | string[]; control: string },
): Promise<{ id: Identity; c: UnibusClient }> {
  const id = createIdentity();
  // Written through the first live node: the store is replicated, so every node must admit it.
  const via = c.nodes.find((n) => n.state === "running")!;
  // Right after a node died, its KV buckets elect new leaders: writes answer
  // "unavailable" for a few seconds. A caller retries; a write that timed out but
  // committed then reads as "exists".
  for (const until = Date.now() + 20_000; ; ) {
    try {
      await via.addUser(id.signPub, { handle, kexPub: id.kexPub });
      break;
    } catch (err) {
      if ((err as UnibusError).code === "USER_EXISTS") break;
      if ((err as UnibusError).code !== "STORE_UNAVAILABLE" || Date.now() > until) throw err;
    }
  }
  const client = await connect({
    natsUrl: on.nats,
    controlUrl: on.control,
    ca: c.caPem,
    identity: id,
    timeoutMs: 5000,
  });
  t.teardown(() => client.close());
  return { id, c: client };
}

t.test("bad options are refused before anything starts", async (t) => {
  await t.rejects(startCluster({ nodes: 1, natsServer: NATS_SERVER }), InvalidArgumentError);
  await t.rejects(startCluster({ nodes: 2.5, natsServer: NATS_SERVER }), InvalidArgumentError);
  await t.rejects(startCluster({ store: "etcd" as "kv", natsServer: NATS_SERVER }), {
    code: "INVALID_ARGUMENT",
    field: "store",
  });
  await t.rejects(startCluster({ replicas: 4, natsServer: NATS_SERVER }), InvalidArgumentError);
  await t.rejects(startCluster({ ports: { nats: 65534 }, natsServer: NATS_SERVER }), InvalidArgumentError);
});

t.test("notFormed reads /jsz views", async (t) => {
  const names = ["a", "b", "c"];
  const leaderView = (current = true) => ({
    server: "a",
    leader: "a",
    clusterSize: 3,
    replicas: [
      { name: "b", current: true, offline: false },
      { name: "c", current, offline: !current },
    ],
  });
  const other = (server: string, leader = "a") => ({ server, leader, clusterSize: 3 });
  t.equal(notFormed([leaderView(), other("b"), other("c")], names), undefined);
  t.match(notFormed([leaderView(false), other("b"), other("c")], names), /sees c as not current/);
  t.match(notFormed([leaderView(), other("b", ""), other("c")], names), /disagree/);
  t.match(notFormed([other("a", ""), other("b", ""), other("c", "")], names), /no meta leader/);
  t.match(notFormed([other("b", "x"), other("c", "x")], ["b", "c"]), /not a live node/);
});

t.test("three nodes: form, serve from any node, survive a SIGKILL, rejoin, stop clean", async (t) => {
  const cluster = await startCluster({ nodes: 3, natsServer: NATS_SERVER });
  t.teardown(() => cluster.stop());
  const { nodes } = cluster;
  t.equal(nodes.length, 3);
  t.equal(new Set(cluster.natsUrls).size, 3, "three NATS URLs");
  t.equal(new Set(cluster.controlUrls).size, 3, "three control planes");
  t.ok(
    nodes.every((n) => n.dataDir === cluster.dataDir),
    "one data dir root",
  );

  await t.test("one meta leader that sees every peer", async (t) => {
    const views = await Promise.all(nodes.map((n) => metaStatus(n.serverName, n.monitorUrl)));
    const leaders = new Set(views.map((v) => v.leader));
    t.equal(leaders.size, 1, "every node names the same leader");
    const [leader] = leaders;
    t.ok(
      nodes.some((n) => n.serverName === leader),
      "the leader is a node",
    );
    t.ok(
      views.every((v) => v.clusterSize === 3),
      "cluster size 3",
    );
    const lv = views.find((v) => v.server === leader);
    t.same(
      lv?.replicas?.map((r) => r.name).sort(),
      nodes
        .map((n) => n.serverName)
        .filter((n) => n !== leader)
        .sort(),
    );
    t.ok(
      lv?.replicas?.every((r) => r.current && !r.offline),
      "every peer current",
    );
  });

  const alice = await user(t, cluster, "alice", { nats: cluster.natsUrls[0]!, control: cluster.controlUrls[0]! });
  const bob = await user(t, cluster, "bob", { nats: cluster.natsUrls[2]!, control: cluster.controlUrls[2]! });
  t.equal(bob.c.nc.info?.server_name, nodes[2]!.serverName, "a user added through node 1 is admitted on node 3");
  const carol = await user(t, cluster, "carol", { nats: cluster.natsUrls, control: cluster.controlUrls[1]! });

  const room = await alice.c.createRoom({ encrypt: false });
  await reconnected(bob.c, () => room.addMember(bob.id));
  await reconnected(carol.c, () => room.addMember(carol.id));
  const atBob = collector(await bob.c.openRoom(room.id), { waitMs: 10_000 });
  const atCarol = collector(await carol.c.openRoom(room.id), { waitMs: 10_000 });
  await Promise.all([bob.c.nc.flush(), carol.c.nc.flush()]);
  // A flush proves a member's own server has its subscription, not that the routes have
  // carried the interest to alice's server yet (core NATS, at-most-once): publish until
  // both have one (bounded), then count from there.
  for (let i = 0; i < 50 && (atBob.texts().length === 0 || atCarol.texts().length === 0); i++) {
    await room.publish(`before-${i}`);
    await Promise.all([atBob.until(1, 100), atCarol.until(1, 100)]);
  }
  t.ok(atBob.texts().length >= 1, "a message from node 1 reaches a member on another node");
  t.ok(atCarol.texts().length >= 1, "and one on the third");
  await alice.c.nc.flush();
  await new Promise((r) => setTimeout(r, 200)); // let stragglers land before taking the counts
  const bobBase = atBob.texts().length;
  const carolBase = atCarol.texts().length;

  // A persisted room's stream is replicated on every node (replicas default 3).
  const kept = await alice.c.createRoom({ encrypt: false, persist: true });
  await kept.publish("kept");
  await reconnected(bob.c, () => kept.addMember(bob.id));
  const history: string[] = [];
  for await (const m of (await bob.c.openRoom(kept.id)).history()) history.push(new TextDecoder().decode(m.data));
  t.same(history, ["kept"], "history written through node 1 is read through node 3");
  const jsz = (await (await fetch(`${nodes[0]!.monitorUrl}/jsz?accounts=true&streams=true&config=true`)).json()) as {
    account_details?: { stream_detail?: { name: string; config?: { num_replicas?: number } }[] }[];
  };
  const stream = jsz.account_details?.flatMap((a) => a.stream_detail ?? []).find((d) => d.name === `ROOM_${kept.id}`);
  t.equal(stream?.config?.num_replicas, 3, "the room stream has 3 replicas");
  // Acknowledged publishes through node 3 into the R3 stream: each PubAck is checked by a
  // read-back that any replica may answer, one that has not applied the message yet too.
  const bobKept = await bob.c.openRoom(kept.id);
  const items = Array.from({ length: 50 }, (_, i) => `acked-${i}`);
  const acks = await bobKept.publishMany(items, { ack: true });
  t.same(
    acks.map((a) => a.seq),
    items.map((_, i) => i + 2),
    "every item acknowledged, in order",
  );
  t.equal((await bobKept.publish("one more", { ack: true })).seq, 52, "and a single one");

  // A kick makes a client reconnect to any node it knows, so who sits where is only
  // known now: the node carol (connected with every URL) is on is the one that crashes.
  const victim = nodes.findIndex((n) => n.serverName === carol.c.nc.info?.server_name);
  await t.test("SIGKILL the node carol is on", async (t) => {
    t.ok(victim >= 0, `carol is on node ${victim}`);
    const pid = nodes[victim]!.natsPid!;
    const clients = { alice, bob, carol };
    const moving = Object.entries(clients).filter(([, u]) => u.c.nc.info?.server_name === nodes[victim]!.serverName);
    const back = moving.map(async ([, u]) => {
      for await (const s of u.c.nc.status()) if (s.type === "reconnect") return;
    });
    await cluster.kill(victim);
    t.notOk(isProcessAlive(pid), "nats-server is gone");
    t.equal(cluster.nodes[victim]!.state, "stopped");
    await Promise.all(back);
    for (const [name, u] of Object.entries(clients)) {
      t.not(u.c.nc.info?.server_name, nodes[victim]!.serverName, `${name} is on a live node`);
      await u.c.nc.flush();
    }
    // Core NATS is at-most-once: until a failed-over client's re-sent subscription has
    // spread over the routes, a message may miss it. Publish until one arrives (bounded).
    let sent = 0;
    for (; sent < 50 && (atCarol.texts().length <= carolBase || atBob.texts().length <= bobBase); sent++) {
      await room.publish(`after-${sent}`);
      await Promise.all([atCarol.until(carolBase + 1, 100), atBob.until(bobBase + 1, 100)]);
    }
    t.ok(atCarol.texts().length > carolBase, "the failed-over client receives again");
    t.ok(atBob.texts().length > bobBase, "bob receives");
    if (!moving.some(([n]) => n === "bob") && !moving.some(([n]) => n === "alice")) {
      t.equal(await atBob.until(bobBase + sent), bobBase + sent, "clients on the other nodes lose nothing");
    }
    // A new connection is admitted by the surviving nodes' callouts.
    const live = (victim + 1) % 3;
    const dave = await user(t, cluster, "dave", { nats: cluster.natsUrls[live]!, control: cluster.controlUrls[live]! });
    // Admitted by a survivor (nats.js may move on to another node it learned of if the
    // first one holds the connect while a KV bucket elects a new leader).
    t.not(dave.c.nc.info?.server_name, nodes[victim]!.serverName, "a new connection is admitted by a survivor");
    t.notOk(dave.c.nc.isClosed());
  });

  await t.test("restart rejoins on the same ports", async (t) => {
    const before = { nats: cluster.natsUrls[victim], control: cluster.controlUrls[victim] };
    const node = await cluster.restart(victim);
    t.equal(node.state, "running");
    t.equal(cluster.nodes[victim], node);
    t.same({ nats: node.natsUrl, control: node.controlUrl }, before, "same URLs");
    const views = await cluster.waitReady(10_000);
    t.equal(views.length, 3, "meta leader sees 3 peers again");
    const erin = await user(t, cluster, "erin", { nats: node.natsUrl, control: node.controlUrl });
    t.equal(erin.c.nc.info?.server_name, node.serverName, "the rejoined node admits");
  });

  await t.test("stop() leaves no process", async (t) => {
    const pids = cluster.nodes.map((n) => n.natsPid!);
    t.ok(pids.every((p) => p > 0 && isProcessAlive(p)));
    await cluster.stop();
    t.ok(
      pids.every((p) => !isProcessAlive(p)),
      "every nats-server is gone",
    );
    t.ok(
      cluster.nodes.every((n) => n.state === "stopped"),
      "every node stopped",
    );
    await cluster.stop(); // idempotent
    await t.rejects(cluster.kill(0), { code: "STATE" });
  });
});

t.test("kill() and restart() refuse a bad index", async (t) => {
  const cluster = await startCluster({ nodes: 2, replicas: 1, natsServer: NATS_SERVER });
  t.teardown(() => cluster.stop());
  await t.rejects(cluster.kill(2), InvalidArgumentError);
  await t.rejects(cluster.restart(-1), InvalidArgumentError);
  t.equal(cluster.nodes.length, 2);
  await cluster.stop();
});
