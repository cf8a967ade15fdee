// Live revocation from the store's users watch: an allowlist edit written straight to the
// replicated store (as the admin CLI does, bypassing every control plane) closes the
// identity's connections on every node, and leaves everyone else connected.
import t from "tap";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import { loadServiceKeys } from "../../lib/auth/service-keys.ts";
import { startCluster } from "../../lib/bus/cluster.ts";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { openKvStore } from "../../lib/store/index.ts";

t.test("a revoke or delete written to the store directly closes the connections on every node", async (t) => {
  const cluster = await startCluster({ nodes: 3, store: "kv" });
  t.teardown(() => cluster.stop());
  const n1 = cluster.nodes[0]!;
  const keys = await loadServiceKeys(cluster.dataDir);
  // Like the CLI: its own connection to the store, no control plane involved.
  const store = await openKvStore({
    servers: n1.natsUrl,
    caPem: cluster.caPem,
    authenticator: nkeySigner(keys.app.publicKey, (d) => keys.app.sign(d)),
    bind: true,
  });
  t.teardown(() => store.close());

  const make = async (handle: string) => {
    const id = createIdentity();
    await store.addUser({ signPub: id.signPub, kexPub: id.kexPub, handle, role: "member" });
    // one connection through each node, so each node's watch has its own to close
    const conns = await Promise.all(
      cluster.nodes.map((n) => connect({ natsUrl: n.natsUrl, ca: cluster.caPem, identity: id, timeoutMs: 10_000 })),
    );
    t.teardown(() => Promise.all(conns.map((c) => c.close())));
    return { id, conns };
  };
  const bystander = await make("bystander");
  const revoked = await make("revoked");
  const deleted = await make("deleted");

  let closed = revoked.conns.map((c) => c.nc.closed());
  await store.revokeUser(revoked.id.signPub);
  await Promise.all(closed);
  t.ok(
    revoked.conns.every((c) => c.nc.isClosed()),
    "revoked: closed on all three nodes",
  );

  closed = deleted.conns.map((c) => c.nc.closed());
  await store.deleteUser(deleted.id.signPub);
  await Promise.all(closed);
  t.ok(
    deleted.conns.every((c) => c.nc.isClosed()),
    "deleted: closed on all three nodes",
  );

  // The bystander's connections answer a round trip on every node: never kicked.
  for (const c of bystander.conns) {
    t.notOk(c.nc.isClosed());
    await c.nc.flush();
  }
});
