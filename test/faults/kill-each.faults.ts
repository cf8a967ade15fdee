// The kill-each-kind-of-node fault test (`npm run test:faults`, not part of `npm test`: it
// runs a three-node cluster under load for about three minutes).
//
// Under steady load — logins through the callout with a room listing, publishes acknowledged
// by a persisted room's stream, control-plane writes — SIGKILL in turn the nats-server of:
// the JetStream meta leader, the node leading the KV users bucket, the node leading the
// room's stream, and a plain follower (a node that just restarted gracefully, so it handed
// every leadership over). Supervision restarts each killed server. Asserted: every
// acknowledged message and write is there at the end, and after each kill logins and
// writes work again through every node. The refused stretches are printed (no timing is
// asserted: this machine is shared).
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { startCluster } from "../../lib/bus/cluster.ts";
import { jetStreamLeaders } from "../../lib/bus/cluster-ready.ts";
import { connect } from "../../lib/client/connect.ts";
import { ControlClient } from "../../lib/client/control.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { type Load, steadyLoad } from "../helpers/load.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

/** How long the load runs after each kill (4 kills: about three minutes in all). */
const PHASE_MS = Number(process.env.FAULTS_PHASE_MS ?? 30_000);
const USERS_STREAM = "KV_unibus_users";

const cluster = await startCluster({ nodes: 3, natsServer: NATS_SERVER, readyTimeoutMs: 60_000 });
t.teardown(() => cluster.stop());
const admin = createIdentity();
await cluster.nodes[0]!.addUser(admin.signPub, { handle: "admin", role: "admin", kexPub: admin.kexPub });
const controls = cluster.controlUrls.map(
  (baseUrl) => new ControlClient({ baseUrl, ca: cluster.caPem, identity: admin, timeoutMs: 15_000 }),
);
t.teardown(() => Promise.all(controls.map((c) => c.close())));

const client = await connect({
  natsUrl: cluster.natsUrls,
  controlUrl: cluster.controlUrls[0]!,
  ca: cluster.caPem,
  identity: admin,
});
t.teardown(() => client.close());
const room = await client.createRoom({ encrypt: false, persist: true });
const roomStream = `ROOM_${room.id}`;

/** The nodes whose nats-server is up; logins go through these only. */
const down = new Set<number>();
const live = () => cluster.nodes.map((_, i) => i).filter((i) => !down.has(i));

/** Who leads what, as the first live node sees it. */
async function leaders() {
  return jetStreamLeaders(cluster.nodes[live()[0]!]!.monitorUrl);
}
const ms = (x: number) => `${Math.round(x)} ms`;
const indexOf = (name: string | undefined) => cluster.nodes.findIndex((n) => n.serverName === name);

/** SIGKILLs node i's nats-server and waits until supervision has it back and the cluster is ready. */
async function crash(i: number): Promise<void> {
  const node = cluster.nodes[i]!;
  const pid = node.natsPid;
  if (pid === undefined) throw new Error(`node ${i} has no nats-server to kill`);
  const restarted = once(node, "nats-restarted");
  down.add(i);
  process.kill(pid, "SIGKILL");
  await restarted;
  down.delete(i);
  await cluster.waitReady();
}

/** A login and a write through every node: the service is back everywhere. */
async function servesEverywhere(tag: string): Promise<void> {
  for (const [i, c] of controls.entries()) {
    const id = createIdentity();
    await c.request("POST", "/v1/users", { signPub: id.signPub, handle: `${tag}-n${i}` });
    await c.request("GET", `/v1/users/${admin.signPub}/rooms`);
  }
}

const load: Load = steadyLoad({
  client,
  room,
  sender: admin,
  controls,
  logins: { natsUrls: cluster.natsUrls, ca: cluster.caPem, nodes: live },
});

const kinds: Array<{ kind: string; pick: () => Promise<number> }> = [
  { kind: "the meta leader", pick: async () => indexOf((await leaders()).meta) },
  { kind: "the users bucket's leader", pick: async () => indexOf((await leaders()).streams[USERS_STREAM]) },
  { kind: "the room stream's leader", pick: async () => indexOf((await leaders()).streams[roomStream]) },
  {
    kind: "a plain follower",
    pick: async () => {
      // A graceful restart hands every leadership over: the node then leads nothing.
      const i = (indexOf((await leaders()).meta) + 1) % cluster.nodes.length;
      await cluster.restart(i);
      return i;
    },
  },
];

for (const { kind, pick } of kinds) {
  await t.test(`SIGKILL of ${kind}`, async (t) => {
    await sleep(2000); // steady traffic before the kill
    const victim = await pick();
    t.ok(victim >= 0, `found ${kind} (node ${victim})`);
    const seen = await leaders();
    const led = Object.entries(seen.streams).flatMap(([s, l]) => (l === cluster.nodes[victim]!.serverName ? [s] : []));
    if (kind === "a plain follower") {
      t.same([led, seen.meta === cluster.nodes[victim]!.serverName], [[], false], "it leads no group");
    }
    const before = { p: load.publishes.refused, w: load.writes.refused, l: load.logins.refused, ok: load.loginsOk };
    for (const w of [load.publishes, load.writes, load.logins]) w.longestGapMs = 0;
    const acked = { p: load.acked.length, w: load.written.length };
    await crash(victim);
    await sleep(PHASE_MS);
    await servesEverywhere(`after-${victim}-${Date.now()}`);
    t.ok(load.acked.length > acked.p, "publishes were acknowledged after the kill");
    t.ok(load.written.length > acked.w, "writes were acknowledged after the kill");
    t.ok(load.loginsOk > before.ok, "logins went through after the kill");
    t.comment(
      `killed ${cluster.nodes[victim]!.serverName} (led: ${seen.meta === cluster.nodes[victim]!.serverName ? "meta, " : ""}${led.join(", ") || "nothing"}); ` +
        `refused since: publishes ${load.publishes.refused - before.p}, writes ${load.writes.refused - before.w}, logins ${load.logins.refused - before.l}; ` +
        `longest time between two successes: publish ${ms(load.publishes.longestGapMs)}, write ${ms(load.writes.longestGapMs)}, login ${ms(load.logins.longestGapMs)}`,
    );
  });
}

await t.test("nothing acknowledged was lost", async (t) => {
  await load.stop();
  t.comment(
    `longest refused stretch over the run: publish ${Math.round(load.publishes.longestMs)} ms, ` +
      `write ${Math.round(load.writes.longestMs)} ms, login ${Math.round(load.logins.longestMs)} ms; ` +
      `acknowledged: ${load.acked.length} publishes, ${load.written.length} writes, ${load.loginsOk} logins`,
  );
  const stored = new Set<string>();
  for await (const m of room.history()) stored.add(new TextDecoder().decode(m.data));
  t.same(
    load.acked.filter((x) => !stored.has(x)),
    [],
    `every acknowledged message is in the history (${load.acked.length})`,
  );
  // Read through every node: a write must be there whichever node answers.
  for (const node of cluster.nodes) {
    const users = new Set((await node.store.listUsers()).map((u) => u.signPub));
    t.same(
      load.written.filter((k) => !users.has(k)),
      [],
      `every acknowledged write is read back through ${node.serverName} (${load.written.length})`,
    );
  }
});
