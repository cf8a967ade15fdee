// The console's health panel on a three-node cluster on replicated KV: the node that
// leads the users bucket shows its replicas, the others the meta group they are in.
import t from "tap";
import { startCluster } from "../../lib/bus/cluster.ts";
import { ControlClient } from "../../lib/client/control.ts";
import type { NodeReport } from "../../lib/control/index.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { consoleBrowser, expectText, openConsole, signIn } from "../helpers/console.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

const cluster = await startCluster({ nodes: 3, natsServer: NATS_SERVER, readyTimeoutMs: 40_000 });
t.teardown(() => cluster.stop());
const admin = createIdentity();
await cluster.nodes[0]!.addUser(admin.signPub, { handle: "admin", role: "admin", kexPub: admin.kexPub });

/** The node whose report lists the users bucket with both followers current (it leads it), 30 s at most. */
async function usersBucketLeader(): Promise<number> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    for (const [i, baseUrl] of cluster.controlUrls.entries()) {
      const c = new ControlClient({ baseUrl, ca: cluster.caPem, identity: admin, timeoutMs: 15_000 });
      const report = await c.request<NodeReport>("GET", "/v1/status").finally(() => c.close());
      const users = report.node.kv.find((b) => b.bucket === "unibus_users");
      if (users?.followers.length === 2 && users.followers.every((f) => f.current)) return i;
    }
    if (Date.now() > deadline) throw new Error("no node reports the users bucket with two current followers");
    await new Promise((r) => setTimeout(r, 250));
  }
}

t.test("the bucket leader's console shows the replicas; another node's shows the meta group", async (t) => {
  const leader = await usersBucketLeader();
  const node = cluster.nodes[leader]!;
  const browser = await consoleBrowser(t, node);
  const { page } = await openConsole(t, browser, node);
  await signIn(page, admin);
  await page.locator("#node[data-healthy=true]").waitFor();
  await expectText(t, page, "#replication li[data-bucket=unibus_users]", /R3, leader \S+, \S+ current, \S+ current/);
  await expectText(t, page, "#node", /cluster \S+ of 3, meta leader \S+/);

  const other = cluster.nodes[(leader + 1) % 3]!;
  const otherBrowser = await consoleBrowser(t, other);
  const second = await openConsole(t, otherBrowser, other);
  await signIn(second.page, admin);
  await expectText(
    t,
    second.page,
    "#node",
    /cluster \S+ of 3, meta leader \S+/,
    "a follower node shows the meta group",
  );
});
