// Live revocation across a cluster: a change made through one node's control plane
// closes the connection wherever it lives, whichever node's callout admitted it.
import t from "tap";
import { startCluster } from "../../lib/bus/cluster.ts";
import { connect } from "../../lib/client/connect.ts";
import { ControlClient } from "../../lib/client/control.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";

t.test("revoking through node 1 closes a connection on node 3 and denies its reconnects", async (t) => {
  const cluster = await startCluster({ nodes: 3 });
  t.teardown(() => cluster.stop());
  const [n1, , n3] = cluster.nodes;
  const admin = createIdentity();
  await n1!.addUser(admin.signPub, { handle: "root", role: "admin", kexPub: admin.kexPub });
  const api = new ControlClient({ baseUrl: n1!.controlUrl, ca: cluster.caPem, identity: admin });
  t.teardown(() => api.close());

  // several connections on node 3, so the callouts of different nodes admit them
  const victims = [];
  for (let i = 0; i < 4; i++) {
    const id = createIdentity();
    await n1!.addUser(id.signPub, { handle: `v${i}`, kexPub: id.kexPub });
    victims.push({ id, c: await connect({ natsUrl: n3!.natsUrl, ca: cluster.caPem, identity: id }) });
  }
  for (const v of victims) {
    const closed = v.c.closed();
    await api.request("POST", `/v1/users/${v.id.signPub}/revoke`);
    await closed;
    t.ok(v.c.nc.isClosed(), `${v.id.signPub.slice(0, 8)}: closed on node 3 after a revoke on node 1`);
    await t.rejects(connect({ natsUrl: n3!.natsUrl, ca: cluster.caPem, identity: v.id, timeoutMs: 5000 }), {
      code: "AUTH_DENIED",
    });
  }
});
