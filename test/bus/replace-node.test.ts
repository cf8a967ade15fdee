// Replacing a lost node (docs/operations.md, cluster maintenance): a node whose disk is
// gone comes back under its old server name with an empty jetstream/ dir and is sent
// every bucket and stream by the leaders — the writes made while it was gone included.
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { startCluster } from "../../lib/bus/cluster.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

t.test("a node restarted under its name with an empty disk catches up on everything", async (t) => {
  const dataDir = t.testdir();
  const cluster = await startCluster({ nodes: 3, dataDir, natsServer: NATS_SERVER, readyTimeoutMs: 60_000 });
  t.teardown(() => cluster.stop());
  for (let i = 0; i < 3; i++) await cluster.nodes[0]!.addUser(createIdentity().signPub, { handle: `u${i}` });
  const name = cluster.nodes[2]!.serverName;
  await cluster.kill(2);
  const disk = path.join(dataDir, "jetstream", name);
  t.ok(fs.existsSync(disk), "the node had a JetStream dir");
  fs.rmSync(disk, { recursive: true, force: true });
  // A bucket the lost node led elects a new leader first: until then a write is refused (503 in the API).
  const late = createIdentity().signPub;
  for (;;) {
    const added = await cluster.nodes[0]!.addUser(late, { handle: "while-gone" }).catch((e: unknown) => e);
    if (!(added instanceof Error)) break;
    t.equal((added as { code?: string }).code, "STORE_UNAVAILABLE", "refused only as unavailable, while it elects");
    await sleep(200);
  }

  const node = await cluster.restart(2); // resolves once every bucket is current on every node
  t.equal(node.serverName, name, "the same name");
  const handles = (await node.store.listUsers()).map((u) => u.handle).sort();
  t.same(handles, ["u0", "u1", "u2", "while-gone"], "every user, the one added while it was gone too");
  const replication = (await node.storeReplication()) ?? [];
  t.ok(replication.length > 0, "KV buckets are reported");
  t.ok(
    replication.every((b) => b.replicas === 3 && b.current === 3),
    "every bucket at R3 with three current replicas",
  );
  t.ok(fs.existsSync(disk), "its JetStream dir was rebuilt");
});
