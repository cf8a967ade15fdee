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
import { encodeFrame } from "../../lib/crypto/frame.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
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

/** The longest stretch in which every attempt of one kind was refused. */
class RefusalWindow {
  #since: number | undefined;
  longestMs = 0;
  refused = 0;
  ok(): void {
    if (this.#since !== undefined) this.longestMs = Math.max(this.longestMs, performance.now() - this.#since);
    this.#since = undefined;
  }
  fail(): void {
    this.refused++;
    this.#since ??= performance.now();
  }
}

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
  const publishes = new RefusalWindow();
  const writes = new RefusalWindow();
  const acked: string[] = [];
  const written: string[] = [];
  let running = true;

  const publisher = (async () => {
    for (let i = 0; running; i++) {
      const text = `m-${i}`;
      const frame = encodeFrame({ roomId: room.id, epoch: 0, sender: admin, plaintext: text, sign: false });
      try {
        // A request on a persisted room's subject is answered by JetStream's PubAck once stored.
        const ack = await c.nc.request(room.subject, frame, { timeout: 2000 });
        if ((ack.json() as { seq?: number }).seq) {
          acked.push(text);
          publishes.ok();
        } else publishes.fail();
      } catch {
        publishes.fail();
      }
      await sleep(20);
    }
  })();
  const writer = (async () => {
    for (let i = 0; running; i++) {
      const id = createIdentity();
      let done = false;
      for (let n = 0; n < controls.length && !done; n++) {
        try {
          await controls[(i + n) % controls.length]!.request("POST", "/v1/users", {
            signPub: id.signPub,
            handle: `u${i}`,
          });
          done = true;
        } catch {
          // this node refused: the next one is asked
        }
      }
      if (done) {
        written.push(id.signPub);
        writes.ok();
      } else writes.fail();
      await sleep(50);
    }
  })();

  for (let i = 0; i < cluster.nodes.length; i++) {
    await sleep(500);
    await cluster.restart(i);
  }
  await sleep(500);
  running = false;
  await Promise.all([publisher, writer]);
  t.comment(
    `longest refused stretch: publish ${Math.round(publishes.longestMs)} ms (${publishes.refused} refused of ${acked.length + publishes.refused}), control-plane write ${Math.round(writes.longestMs)} ms (${writes.refused} refused of ${written.length + writes.refused})`,
  );
  t.ok(acked.length > 0 && written.length > 0, "traffic flowed during the restarts");

  const stored = new Set<string>();
  for await (const m of room.history()) stored.add(new TextDecoder().decode(m.data));
  t.same(
    acked.filter((x) => !stored.has(x)),
    [],
    `every acknowledged message is in the history (${acked.length})`,
  );
  const missing: string[] = [];
  for (const signPub of written) {
    if (
      !(await cluster.nodes[2]!.store.getUser(signPub).then(
        () => true,
        () => false,
      ))
    )
      missing.push(signPub);
  }
  t.same(missing, [], `every acknowledged write is in the store (${written.length})`);
});
