// A rolling restart of a three-node KV cluster (stop a node, start it, wait until the
// cluster is ready, next) under steady publishing into a persisted room and steady
// control-plane writes: nothing acknowledged is lost, and a stopping node hands its
// JetStream leaderships over instead of leaving its groups to an election.
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { startCluster } from "../../lib/bus/cluster.ts";
import { jetStreamLeaders } from "../../lib/bus/cluster-ready.ts";
import type { HandoverResult } from "../../lib/bus/handover.ts";
import { connect } from "../../lib/client/connect.ts";
import { ControlClient } from "../../lib/client/control.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { assertNothingLost, steadyLoad } from "../helpers/load.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

const cluster = await startCluster({ nodes: 3, natsServer: NATS_SERVER, readyTimeoutMs: 40_000 });
t.teardown(() => cluster.stop());
const admin = createIdentity();
await cluster.nodes[0]!.addUser(admin.signPub, { handle: "admin", role: "admin", kexPub: admin.kexPub });

/** Control clients, one per node: a writer moves on to the next node when one refuses. */
const controls = cluster.controlUrls.map(
  (baseUrl) => new ControlClient({ baseUrl, ca: cluster.caPem, identity: admin, timeoutMs: 5000 }),
);
t.teardown(() => Promise.all(controls.map((c) => c.close())));

t.test("a stopping node hands over the JetStream groups it leads", async (t) => {
  const node = cluster.nodes[0]!;
  const before = await jetStreamLeaders(node.monitorUrl);
  const ledBefore = Object.entries(before.streams).flatMap(([name, l]) => (l === node.serverName ? [name] : []));
  const handover = once(node, "handover");
  const restarted = cluster.restart(0);
  const [result] = (await handover) as [HandoverResult];
  t.same([...result.streams].sort(), ledBefore.sort(), `asked every group it led to step down (${ledBefore.length})`);
  t.same(result.stillLed, [], "and led none when it stopped");
  await restarted;
});

t.test("rolling restart under traffic: no acknowledged message or write is lost", async (t) => {
  const c = await connect({
    natsUrl: cluster.natsUrls,
    controlUrl: cluster.controlUrls[0]!,
    ca: cluster.caPem,
    identity: admin,
  });
  t.teardown(() => c.close());
  const room = await c.createRoom({ encrypt: false, persist: true });
  const load = steadyLoad({ client: c, room, sender: admin, controls });
  const { publishes, writes, acked, written } = load;

  for (let i = 0; i < cluster.nodes.length; i++) {
    await sleep(500);
    await cluster.restart(i);
  }
  await sleep(500);
  await load.stop();
  t.comment(
    `longest refused stretch: publish ${Math.round(publishes.longestMs)} ms (${publishes.refused} refused of ${acked.length + publishes.refused}), control-plane write ${Math.round(writes.longestMs)} ms (${writes.refused} refused of ${written.length + writes.refused})`,
  );
  t.ok(acked.length > 0 && written.length > 0, "traffic flowed during the restarts");

  await assertNothingLost(t, load, room, cluster.nodes[2]!.store);
});
