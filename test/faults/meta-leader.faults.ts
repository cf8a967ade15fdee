// Losing the JetStream meta leader must not cost logins (`npm run test:faults`, not part of
// `npm test`: a three-node cluster, about a minute).
//
// The meta leader's node is SIGKILLed — chosen so that it does not also lead the control
// plane's bucket, which would add that stream's own election to what is measured — and
// logins go on through the two survivors the whole time the meta group elects (4-9 s,
// nats-server's hard-coded timeout) and after: each one a NATS connect through the auth
// callout (allowlist read + room listing) and a signed `GET /v1/users/:me/rooms` (the
// client's listMyRooms). Asserted: every one of them succeeds. Before the store answered a
// refused read from its watch, nats-server's "JetStream cluster not available" to every
// stream message get in that window held or failed them. Latencies are printed, not asserted.
import { setTimeout as sleep } from "node:timers/promises";
import { connect as natsConnect } from "@nats-io/transport-node";
import t from "tap";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import { startCluster } from "../../lib/bus/cluster.ts";
import { jetStreamLeaders } from "../../lib/bus/cluster-ready.ts";
import { connect } from "../../lib/client/connect.ts";
import { ControlClient } from "../../lib/client/control.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

/** How long logins go on after the kill (the meta election takes 4-9 s). */
const AFTER_MS = Number(process.env.FAULTS_PHASE_MS ?? 25_000);
/** The control plane's records, and the replay protection of signed requests. */
const CONTROL_STREAMS = ["KV_unibus_users", "KV_unibus_nonces"];

const cluster = await startCluster({ nodes: 3, natsServer: NATS_SERVER, readyTimeoutMs: 60_000 });
t.teardown(() => cluster.stop());
const me = createIdentity();
await cluster.nodes[0]!.addUser(me.signPub, { handle: "me", role: "admin", kexPub: me.kexPub });
const controls = cluster.controlUrls.map(
  (baseUrl) => new ControlClient({ baseUrl, ca: cluster.caPem, identity: me, timeoutMs: 20_000 }),
);
t.teardown(() => Promise.all(controls.map((c) => c.close())));
const client = await connect({
  natsUrl: cluster.natsUrls,
  controlUrl: cluster.controlUrls[0]!,
  ca: cluster.caPem,
  identity: me,
});
t.teardown(() => client.close());
const rooms = [await client.createRoom({ encrypt: true }), await client.createRoom({ encrypt: false, persist: true })];
const mine = rooms.map((r) => r.id).sort();

const indexOf = (name: string | undefined) => cluster.nodes.findIndex((n) => n.serverName === name);

/**
 * The meta leader, made not to lead the buckets a login and a signed request need too (a
 * graceful restart hands its leaderships over): their own elections are another matter.
 */
async function metaOnlyLeader(): Promise<number> {
  for (let tries = 0; ; tries++) {
    const seen = await jetStreamLeaders(cluster.nodes[0]!.monitorUrl);
    const meta = indexOf(seen.meta);
    const led = CONTROL_STREAMS.map((s) => indexOf(seen.streams[s]));
    if (meta >= 0 && led.every((l) => l >= 0 && l !== meta)) return meta;
    if (tries >= 8) throw new Error("the meta leader kept leading a control-plane bucket through 8 restarts");
    await cluster.restart(Math.max(meta, 0));
  }
}

interface Attempt {
  at: number;
  ms: number;
  node: number;
  err?: string;
}

/** Logins (connect + listMyRooms) through node `i` until `until()` says stop. */
async function loginLoop(i: number, out: Attempt[], running: () => boolean): Promise<void> {
  while (running()) {
    const at = performance.now();
    try {
      const nc = await natsConnect({
        servers: cluster.natsUrls[i]!,
        tls: { ca: cluster.caPem },
        authenticator: nkeySigner(me.nkey, (d) => me.sign(d)),
        reconnect: false,
        timeout: 20_000,
      });
      await nc.close();
      const listed = (await controls[i]!.request("GET", `/v1/users/${me.signPub}/rooms`)) as Array<{ id: string }>;
      const ids = listed.map((r) => r.id).sort();
      if (JSON.stringify(ids) !== JSON.stringify(mine)) throw new Error(`listed ${ids.join(",")}`);
      out.push({ at, ms: performance.now() - at, node: i });
    } catch (err) {
      out.push({ at, ms: performance.now() - at, node: i, err: (err as Error).message });
    }
    await sleep(50);
  }
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

t.test("SIGKILL of the meta leader: every login and room listing through the survivors succeeds", async (t) => {
  const victim = await metaOnlyLeader();
  const victimName = cluster.nodes[victim]!.serverName;
  const survivors = cluster.nodes.map((_, i) => i).filter((i) => i !== victim);
  const attempts: Attempt[] = [];
  let running = true;
  const loops = survivors.map((i) => loginLoop(i, attempts, () => running));
  await sleep(2000); // logins before the kill
  const pid = cluster.nodes[victim]!.natsPid;
  t.ok(pid, `node ${victim} (${victimName}) leads the meta group, not the users or nonces bucket`);
  const tKill = performance.now();
  process.kill(pid!, "SIGKILL");
  // Watch a survivor for the new meta leader, to say how long the logins ran without one.
  let elected: number | undefined;
  const watcher = (async () => {
    while (elected === undefined && performance.now() - tKill < AFTER_MS) {
      const seen = await jetStreamLeaders(cluster.nodes[survivors[0]!]!.monitorUrl).catch(() => undefined);
      if (seen?.meta && seen.meta !== victimName) elected = performance.now() - tKill;
      else await sleep(100);
    }
  })();
  await sleep(AFTER_MS);
  running = false;
  await Promise.all([...loops, watcher]);
  await cluster.waitReady();

  const after = attempts.filter((a) => a.at >= tKill);
  const failed = after.filter((a) => a.err !== undefined);
  const leaderless = after.filter((a) => elected !== undefined && a.at + a.ms <= tKill + elected);
  t.ok(elected !== undefined, `a new meta leader was elected (${Math.round(elected ?? -1)} ms after the kill)`);
  t.ok(after.length > 0, "logins were attempted after the kill");
  t.same(
    failed.map((a) => `node ${a.node} at +${Math.round(a.at - tKill)} ms: ${a.err}`),
    [],
    "no login or room listing failed",
  );
  const ms = after.map((a) => a.ms);
  t.comment(
    `after the kill: ${after.length} logins, ${failed.length} failed, ${leaderless.length} done while the meta group had no leader; ` +
      `p50 ${Math.round(pct(ms, 50))} ms, p99 ${Math.round(pct(ms, 99))} ms, max ${Math.round(Math.max(...ms))} ms; slowest: ` +
      [...after]
        .sort((a, b) => b.ms - a.ms)
        .slice(0, 4)
        .map((a) => `node ${a.node} +${Math.round(a.at - tKill)} ms took ${Math.round(a.ms)} ms`)
        .join(", "),
  );
});
