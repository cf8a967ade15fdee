// `unibus status` over several nodes: three clustered nats-servers with JetStream and an
// R3 KV bucket named like the store's. Healthy reports the meta leader, peers and KV
// replicas; one node killed makes it degraded, naming that node.
import fs from "node:fs";
import path from "node:path";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import t from "tap";
import { NatsServerProcess } from "../../lib/nats/index.ts";
import { type BusStatus, collectStatus, formatStatus, nodeStatus, statusExitCode } from "../../lib/ops/index.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { freePort } from "../helpers/net.ts";

async function until(what: () => Promise<boolean>, attempts = 200): Promise<boolean> {
  for (let i = 0; i < attempts; i++) {
    if (await what()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

t.test("three nodes: meta leader, peers and KV replication; one node down is degraded", async (t) => {
  const dir = t.testdir();
  // Routes must be known before the servers start.
  const routePorts = await Promise.all([freePort(), freePort(), freePort()]);
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`);
  const nodes = routePorts.map(
    (port, i) =>
      new NatsServerProcess({
        binary: NATS_SERVER,
        workDir: path.join(dir, `n${i + 1}`),
        config: {
          serverName: `n${i + 1}`,
          host: "127.0.0.1",
          port: -1,
          http: { host: "127.0.0.1", port: -1 },
          jetstream: { storeDir: path.join(dir, `n${i + 1}`, "js") },
          // Without itself: the meta group sizes itself from the route list.
          cluster: { name: "unibus", host: "127.0.0.1", port, routes: routes.filter((_, j) => j !== i) },
        },
      }),
  );
  for (const n of nodes) t.teardown(() => n.stop());
  // Together: clustered JetStream is healthy only once a quorum has elected a meta leader.
  const ports = await Promise.all(nodes.map((n) => n.start()));
  const monitorUrls = ports.map((p) => `http://127.0.0.1:${p.monitoring}`);
  const natsUrls = ports.map((p) => `nats://127.0.0.1:${p.nats}`);

  // A node answers /healthz before the meta group has elected its leader and heard from
  // every peer; an R3 stream cannot be placed before that.
  t.ok(
    await until(async () => {
      const all = await Promise.all(monitorUrls.map((u) => nodeStatus(u)));
      const meta = all.find((n) => n.name && n.name === n.jetstream?.meta?.leader)?.jetstream?.meta;
      return meta?.peers.length === 2 && meta.peers.every((p) => p.current);
    }),
    "a meta leader was elected and sees both peers",
  );
  const nc = await connect({ servers: natsUrls });
  t.teardown(() => nc.close());
  // Right after the election the leader may not yet know the peers' resources and
  // refuses to place an R3 stream ("no suitable peers"); it learns them within moments.
  let lastError: unknown;
  const created = await until(async () => {
    try {
      await new Kvm(nc).create("unibus_users", { replicas: 3 });
      return true;
    } catch (err) {
      lastError = err;
      return false;
    }
  });
  t.ok(created, created ? "the R3 bucket was created" : `the R3 bucket could not be created: ${String(lastError)}`);

  // The run file `unibus up` writes, pointing at this process (alive) and the three monitors.
  const dataDir = path.join(dir, "bus");
  fs.mkdirSync(dataDir);
  fs.writeFileSync(
    path.join(dataDir, "run.json"),
    JSON.stringify({ pid: process.pid, natsUrls, controlUrls: [], monitorUrls, caFile: "", dataDir }),
  );

  let status: BusStatus | undefined;
  const healthy = await until(async () => {
    status = await collectStatus({ dataDir });
    return status.state === "healthy" && status.nodes.flatMap((n) => n.kv).length === 1;
  });
  t.ok(healthy, `healthy once replicas caught up: ${status?.problems.join("; ")}`);
  const s = status!;
  t.equal(statusExitCode(s), 0);
  t.same(
    s.nodes.map((n) => n.name),
    ["n1", "n2", "n3"],
  );
  const leader = s.nodes[0]?.jetstream?.meta?.leader;
  t.match(leader, /^n[123]$/, "a meta leader");
  for (const n of s.nodes) {
    t.match(n, {
      healthy: true,
      ports: { cluster: routePorts[s.nodes.indexOf(n)] },
      jetstream: { enabled: true, meta: { cluster: "unibus", size: 3, leader } },
    });
  }
  const metaLeader = s.nodes.find((n) => n.name === leader);
  t.equal(metaLeader?.jetstream?.meta?.peers.length, 2, "the meta leader reports its two followers");
  t.ok(
    metaLeader?.jetstream?.meta?.peers.every((p) => p.current),
    "both current",
  );
  const kv = s.nodes.flatMap((n) => n.kv);
  t.equal(kv.length, 1, "the bucket is reported once, by its leader");
  t.match(kv[0], { bucket: "unibus_users", stream: "KV_unibus_users", replicas: 3, leader: /^n[123]$/ });
  t.equal(s.nodes.find((n) => n.name === kv[0]?.leader)?.kv.length, 1);
  t.match(kv[0]?.followers, [{ current: true }, { current: true }]);
  const text = formatStatus(s);
  t.match(text, new RegExp(`jetstream: +cluster unibus, size 3, meta leader ${leader}`));
  t.match(text, /kv unibus_users: R3, leader n[123], n[123] current, n[123] current/);

  // One node down.
  const victim = 2;
  await nodes[victim]!.kill();
  const down = await collectStatus({ dataDir });
  t.equal(down.state, "degraded");
  t.equal(statusExitCode(down), 1);
  t.match(down.nodes[victim], { reachable: false, healthy: false });
  t.ok(
    down.problems.some((p) => p.includes(`node ${monitorUrls[victim]} is unreachable`)),
    "the problem names the node",
  );
  t.match(formatStatus(down), /^unibus: DEGRADED/);
});
