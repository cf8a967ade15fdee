// GET /v1/status on a three-node cluster on replicated KV: each node's control plane
// reports its own nats-server in the cluster's meta group, and the node that leads a KV
// bucket reports its two followers — what the console's health panel shows.
import t from "tap";
import { startCluster } from "../../lib/bus/cluster.ts";
import { ControlClient } from "../../lib/client/control.ts";
import type { NodeReport } from "../../lib/control/index.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

const cluster = await startCluster({ nodes: 3, natsServer: NATS_SERVER, readyTimeoutMs: 40_000 });
t.teardown(() => cluster.stop());
const admin = createIdentity();
await cluster.nodes[0]!.addUser(admin.signPub, { handle: "admin", role: "admin", kexPub: admin.kexPub });

/** Every node's report, read through that node's own control plane. */
async function reports(): Promise<NodeReport[]> {
  return Promise.all(
    cluster.controlUrls.map(async (baseUrl) => {
      const c = new ControlClient({ baseUrl, ca: cluster.caPem, identity: admin, timeoutMs: 15_000 });
      try {
        return await c.request<NodeReport>("GET", "/v1/status");
      } finally {
        await c.close();
      }
    }),
  );
}

/** Polls until every follower of the users bucket is current (replication settles after start), 30 s at most. */
async function settled(): Promise<NodeReport[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const all = await reports();
    const users = all.flatMap((r) => r.node.kv).find((b) => b.bucket === "unibus_users");
    if ((users?.followers.length === 2 && users.followers.every((f) => f.current)) || Date.now() > deadline) return all;
    await new Promise((r) => setTimeout(r, 250));
  }
}

t.test("each node reports itself in the meta group; the bucket leader reports its followers", async (t) => {
  const all = await settled();
  const names = all.map((r) => r.node.name);
  t.same(new Set(names).size, 3, "three different nodes answered, each about itself");
  for (const r of all) {
    t.equal(r.health.ok, true, `${r.node.name}: healthy`);
    t.match(r.health.parts, { nats: "up", store: "up", replay: "up", routes: "up" }, `${r.node.name}: its parts`);
    t.match(r.health.routes, { planned: 2, quorum: true, missing: [] }, `${r.node.name}: routed to both peers`);
    t.same(r.health.routes?.connected, names.filter((n) => n !== r.node.name).sort(), `${r.node.name}: by name`);
    t.match(r.node.jetstream?.meta, { size: 3, leader: /.+/ }, `${r.node.name}: in a meta group of three`);
  }
  const users = all
    .flatMap((r) => r.node.kv.map((b) => ({ ...b, reporter: r.node.name })))
    .filter((b) => b.bucket === "unibus_users");
  t.equal(users.length, 1, "the users bucket is reported once, by its leader");
  const bucket = users[0]!;
  t.equal(bucket.replicas, 3);
  t.equal(bucket.leader, bucket.reporter, "by the node that leads it");
  t.same(
    bucket.followers.map((f) => f.name).sort(),
    names.filter((n) => n !== bucket.leader).sort(),
    "its followers are the two other nodes",
  );
  t.ok(
    bucket.followers.every((f) => f.current),
    "and they are current",
  );
});
