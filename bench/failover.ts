// Failover of the replicated control plane: SIGKILL the node whose nats-server leads the
// KV users bucket's stream, then time how long until a control-plane write issued after the
// kill is acknowledged (target < 5 s), and check that no acknowledged write went missing.
//
// What dominates, from polling a survivor's /jsz every 100 ms during each round: Raft
// elections, nothing of ours. nats-server does not react to the dropped route; each Raft
// group the victim led (the meta group and every KV bucket's stream: users, nonces,
// blobs, ...) waits out its follower election timeout, a random 4-9 s after the
// last heartbeat (hard-coded in nats-server's server/raft.go; heartbeats every 1 s), so a
// new leader shows up 3-9 s after the kill, independently per group. Every control-plane
// record lives in one bucket (users), so a user write needs that group and the nonces
// bucket's (replay protection): the failover time is the later of those two elections
// (seen to within ~50 ms of it) when the victim led both, one election otherwise. The unavailability window is longer by the store's 3 s operation
// timeout: a write issued just before the election is refused (503) when it runs out.
// Shortening this means fewer Raft groups on a write's path or shorter election timeouts
// in nats-server, not changes to the control plane's code.
import { connect as natsConnect } from "@nats-io/transport-node";
import { nkeySigner } from "../lib/auth/authenticator.ts";
import { startCluster, type UnibusCluster } from "../lib/bus/cluster.ts";
import { jetStreamLeaders } from "../lib/bus/cluster-ready.ts";
import { ControlClient } from "../lib/client/control.ts";
import { createIdentity, type Identity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import type { BenchSection } from "./report.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

const TARGET_MS = 5000;
const USERS_STREAM = "KV_unibus_users";
const PACE_MS = 50;
const MAX_IN_FLIGHT = 50;
/** Acks to see after the first post-kill success before stopping. */
const SETTLE_MS = 2000;
/** A round gives up on failover after this long (the cluster is then broken, not slow). */
const GIVE_UP_MS = 40_000;

interface Attempt {
  handle: string;
  issued: number;
  done?: number;
  /** 200 for an ack, the HTTP status of a refusal, 0 for a transport error. */
  status?: number;
}

interface StreamLeaders {
  at: number;
  meta?: string;
  streams: Record<string, string | undefined>;
}

/** Every KV stream's leader as one node sees it (undefined while it has none). */
async function leadersFrom(monitorUrl: string): Promise<StreamLeaders | undefined> {
  try {
    const { meta, streams } = await jetStreamLeaders(monitorUrl);
    const kv = Object.fromEntries(Object.entries(streams).filter(([name]) => name.startsWith("KV_")));
    return { at: performance.now(), meta, streams: kv };
  } catch {
    return undefined;
  }
}

/** What each round kills: the node leading the users bucket (default) or the meta leader. */
const VICTIM = process.env.BENCH_FAILOVER_VICTIM === "meta" ? "meta" : "users";

async function kvLeader(cluster: UnibusCluster): Promise<string | undefined> {
  for (const n of cluster.nodes.filter((b) => b.state === "running")) {
    const seen = await leadersFrom(n.monitorUrl);
    const l = VICTIM === "meta" ? seen?.meta : seen?.streams[USERS_STREAM];
    if (l) return l;
  }
  return undefined;
}

interface Login {
  issued: number;
  done: number;
  ok: boolean;
}

/** Logs in through `url` (the callout) every 100 ms until stopped: one connect + close each. */
function probeLogins(url: string, ca: string, id: Identity): { logins: Login[]; stop: () => Promise<void> } {
  const logins: Login[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const issued = performance.now();
      let ok = true;
      try {
        const nc = await natsConnect({
          servers: url,
          tls: { ca },
          authenticator: nkeySigner(id.nkey, (d) => id.sign(d)),
          reconnect: false,
          timeout: 20_000,
        });
        await nc.close();
      } catch {
        ok = false;
      }
      logins.push({ issued, done: performance.now(), ok });
      await sleep(Math.max(0, 100 - (performance.now() - issued)));
    }
  })();
  return {
    logins,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

/** After the kill: failed logins, and the longest a login took to be answered (either way). */
function loginFigures(logins: Login[], tKill: number): { failed: number; worstMs: number; lastSlowMs: number } {
  const after = logins.filter((l) => l.done >= tKill);
  const worstMs = Math.max(0, ...after.map((l) => l.done - l.issued));
  // The service is back once a login is answered as fast as before the kill (< 1 s).
  const slow = after.filter((l) => !l.ok || l.done - l.issued >= 1000);
  const lastSlowMs = slow.length ? Math.max(...slow.map((l) => l.done)) - tKill : 0;
  return { failed: after.filter((l) => !l.ok).length, worstMs, lastSlowMs };
}

/** Polls one surviving node's view of the leaders every 100 ms until stopped. */
function pollLeaders(monitorUrl: string): { samples: StreamLeaders[]; stop: () => Promise<void> } {
  const samples: StreamLeaders[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      const s = await leadersFrom(monitorUrl);
      if (s) samples.push(s);
      await sleep(Math.max(0, 100 - (performance.now() - t0)));
    }
  })();
  return {
    samples,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    return (err as { status?: number }).status ?? 0;
  }
}

/**
 * Clients for one node. undici's Agent opens at most 8 connections per client; with one
 * client we would measure its queue (writes issued after the kill waiting behind ones that
 * are timing out) rather than the cluster, so the in-flight cap is spread over enough clients.
 */
function clientPool(cluster: UnibusCluster, i: number, admin: Identity): ControlClient[] {
  return Array.from(
    { length: Math.ceil(MAX_IN_FLIGHT / 8) },
    () =>
      new ControlClient({ baseUrl: cluster.controlUrls[i]!, ca: cluster.caPem, identity: admin, timeoutMs: 15_000 }),
  );
}

interface RoundResult {
  victim: string;
  writer: string;
  baseline: { p50: number; p99: number };
  failoverMs: number;
  unavailableMs: number;
  attempts: number;
  acked: number;
  refused: Record<string, number>;
  longestAckGapMs: number;
  /** Logins through the surviving writer node after the kill. */
  logins: { failed: number; worstMs: number; lastSlowMs: number };
  /** ms after the kill at which the polled survivor first saw each KV stream (and the meta group) led by a survivor. */
  newLeaderMs: Record<string, number>;
  restartMs: number;
  /** Acknowledged handles the first read through the just-restarted victim did not list. */
  staleFirstRead: number;
  lost: number;
}

async function round(cluster: UnibusCluster, admin: Identity, r: number, tag: string): Promise<RoundResult> {
  const leader = await kvLeader(cluster);
  const victim = cluster.nodes.findIndex((n) => n.serverName === leader);
  if (victim < 0)
    throw new Error(`round ${r}: no node leads ${USERS_STREAM} (leader ${leader}); the cluster is not ready`);
  const w = (victim + 1) % cluster.nodes.length;
  const pool = clientPool(cluster, w, admin);
  let seq = 0;
  const attempt = (): Attempt & { settled: Promise<void> } => {
    const id = createIdentity();
    const a: Attempt = { handle: `${tag}r${r}w${seq++}`, issued: performance.now() };
    const client = pool[seq % pool.length]!;
    const settled = statusOf(client.request("POST", "/v1/users", { signPub: id.signPub, handle: a.handle })).then(
      (s) => {
        a.status = s;
        a.done = performance.now();
      },
    );
    return Object.assign(a, { settled });
  };

  try {
    // 1. the same-run baseline: sequential writes through the node that will survive
    const base: number[] = [];
    for (let i = 0; i < 100; i++) {
      const a = attempt();
      await a.settled;
      if (a.status !== 200) throw new Error(`round ${r}: baseline write refused with ${a.status}`);
      base.push(a.done! - a.issued);
    }
    const b = summarize(base);

    // 2-4. paced writes; kill the leader's node one second in
    const poll = pollLeaders(cluster.nodes[w]!.monitorUrl);
    const probe = probeLogins(cluster.nodes[w]!.natsUrl, cluster.caPem, admin);
    const attempts: Attempt[] = [];
    const pending = new Set<Promise<void>>();
    let tKill = Number.POSITIVE_INFINITY;
    const killed = (async () => {
      await sleep(1000);
      tKill = performance.now();
      await cluster.kill(victim);
    })();
    const start = performance.now();
    for (;;) {
      const now = performance.now();
      const first = attempts.find((a) => a.issued >= tKill && a.status === 200);
      if (first && now - first.done! >= SETTLE_MS) break;
      if (now - start > GIVE_UP_MS) break;
      if (pending.size < MAX_IN_FLIGHT) {
        const a = attempt();
        attempts.push(a);
        pending.add(a.settled);
        void a.settled.then(() => pending.delete(a.settled));
      }
      await sleep(PACE_MS);
    }
    await killed;
    await Promise.all(pending);
    await poll.stop();
    await probe.stop();

    // 5. the figures
    const after = attempts.filter((a) => a.issued >= tKill);
    const firstOk = after.find((a) => a.status === 200);
    const failoverMs = firstOk ? firstOk.done! - tKill : Number.NaN;
    const bad = attempts.filter((a) => a.status !== 200);
    const unavailableMs = bad.length ? Math.max(...bad.map((a) => a.done!)) - tKill : 0;
    const refused: Record<string, number> = {};
    for (const a of bad) refused[String(a.status)] = (refused[String(a.status)] ?? 0) + 1;
    const acks = attempts
      .filter((a) => a.status === 200)
      .map((a) => a.done!)
      .sort((x, y) => x - y);
    let longestAckGapMs = 0;
    for (let i = 1; i < acks.length; i++) longestAckGapMs = Math.max(longestAckGapMs, acks[i]! - acks[i - 1]!);
    const victimName = cluster.nodes[victim]!.serverName;
    const newLeaderMs: Record<string, number> = {};
    for (const s of poll.samples.filter((x) => x.at >= tKill)) {
      const led = { meta: s.meta, ...s.streams };
      for (const [name, l] of Object.entries(led))
        if (l && l !== victimName && newLeaderMs[name] === undefined) newLeaderMs[name] = s.at - tKill;
    }
    // A stream whose leader was elsewhere all along shows up at ~0: keep only the ones the kill moved.
    const ledByVictim = new Set<string>();
    for (const s of poll.samples.filter((x) => x.at < tKill)) {
      if (s.meta === victimName) ledByVictim.add("meta");
      for (const [name, l] of Object.entries(s.streams)) if (l === victimName) ledByVictim.add(name);
    }
    for (const name of Object.keys(newLeaderMs)) if (!ledByVictim.has(name)) delete newLeaderMs[name];

    // 6. bring the victim back and read through it
    const t0 = performance.now();
    await cluster.restart(victim);
    const restartMs = performance.now() - t0;
    const handlesOn = async (i: number) => new Set((await cluster.nodes[i]!.store.listUsers()).map((u) => u.handle));
    const ackedHandles = attempts.filter((a) => a.status === 200).map((a) => a.handle);
    const firstRead = await handlesOn(victim);
    const missingFirst = ackedHandles.filter((h) => !firstRead.has(h));
    // Missing on the first read is not yet lost: read again through every node after a pause.
    let missing = missingFirst;
    if (missingFirst.length) {
      await sleep(2000);
      const views = await Promise.all(cluster.nodes.map((_, i) => handlesOn(i)));
      missing = missingFirst.filter((h) => !views.some((v) => v.has(h)));
      console.error(
        `\n!!! round ${r}: ${missingFirst.length} acknowledged write(s) missing from the first read through the restarted ${victimName} ` +
          `(${missingFirst.slice(0, 5).join(", ")}); 2 s later, through every node: ${missing.length} still missing\n`,
      );
    }
    if (missing.length)
      console.error(
        `\n!!! round ${r}: ${missing.length} ACKNOWLEDGED WRITE(S) LOST: ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ", ..." : ""}\n`,
      );

    return {
      victim: victimName,
      writer: cluster.nodes[w]!.serverName,
      baseline: { p50: b.p50, p99: b.p99 },
      failoverMs,
      unavailableMs,
      attempts: attempts.length,
      acked: ackedHandles.length,
      refused,
      longestAckGapMs,
      logins: loginFigures(probe.logins, tKill),
      newLeaderMs,
      restartMs,
      staleFirstRead: missingFirst.length,
      lost: missing.length,
    };
  } finally {
    await Promise.all(pool.map((c) => c.close()));
  }
}

export async function run(rounds = Number(process.env.BENCH_ROUNDS ?? 3)): Promise<BenchSection> {
  if (!Number.isInteger(rounds) || rounds < 1)
    throw new Error(`BENCH_ROUNDS must be a whole number >= 1; got ${rounds}`);
  const binary = (await resolveNatsServer()).path;
  const cluster = await startCluster({ nodes: 3, natsServer: binary });
  try {
    const admin = createIdentity();
    await cluster.nodes[0]!.addUser(admin.signPub, { handle: "admin", role: "admin", kexPub: admin.kexPub });
    // warm up the JIT, the TLS sessions and the store on every node
    for (let i = 0; i < cluster.nodes.length; i++) {
      const c = new ControlClient({ baseUrl: cluster.controlUrls[i]!, ca: cluster.caPem, identity: admin });
      for (let k = 0; k < 20; k++) {
        const id = createIdentity();
        await c.request("POST", "/v1/users", { signPub: id.signPub, handle: `warm${i}x${k}` });
      }
      await c.close();
    }

    const results: RoundResult[] = [];
    console.log(
      `\nfailover: SIGKILL the ${VICTIM === "meta" ? "JetStream meta leader's" : "KV users stream leader's"} node, 3 nodes, R3 (${rounds} rounds, ms)`,
    );
    for (let r = 1; r <= rounds; r++) {
      const x = await round(cluster, admin, r, "f");
      results.push(x);
      const moved = Object.entries(x.newLeaderMs)
        .sort((a, b) => a[1] - b[1])
        .map(([n, ms]) => `${n.replace(/^KV_unibus_/, "")} ${fmt(ms, 0)}`)
        .join(", ");
      console.log(
        `  round ${r}: killed ${x.victim}, writing via ${x.writer}; baseline write p50 ${fmt(x.baseline.p50)} p99 ${fmt(x.baseline.p99)}`,
      );
      console.log(
        `    failover ${fmt(x.failoverMs, 0)}  unavailable ${fmt(x.unavailableMs, 0)}  longest ack gap ${fmt(x.longestAckGapMs, 0)}  ` +
          `attempts ${x.attempts} acked ${x.acked} refused ${JSON.stringify(x.refused)}  restart ${fmt(x.restartMs, 0)}  stale first read ${x.staleFirstRead}  lost ${x.lost}`,
      );
      console.log(
        `    logins via ${x.writer}: failed ${x.logins.failed}, slowest ${fmt(x.logins.worstMs, 0)}, slow or failing until ${fmt(x.logins.lastSlowMs, 0)} after the kill`,
      );
      console.log(`    new leader seen after kill: ${moved || "(none polled)"}`);
    }

    const fo = summarize(results.map((x) => x.failoverMs).filter(Number.isFinite));
    const un = summarize(results.map((x) => x.unavailableMs));
    const gap = summarize(results.map((x) => x.longestAckGapMs));
    const base = summarize(results.map((x) => x.baseline.p50));
    const lost = results.reduce((s, x) => s + x.lost, 0);
    const failed = results.filter((x) => !Number.isFinite(x.failoverMs)).length;
    const ratio = fo.p50 / base.p50;
    console.log(`\n  summary                        p50      max`);
    console.log(
      `  failover               ${fmt(fo.p50, 0).padStart(8)} ${fmt(fo.max, 0).padStart(8)}   target < ${TARGET_MS}`,
    );
    console.log(`  unavailable window     ${fmt(un.p50, 0).padStart(8)} ${fmt(un.max, 0).padStart(8)}`);
    console.log(`  longest ack gap        ${fmt(gap.p50, 0).padStart(8)} ${fmt(gap.max, 0).padStart(8)}`);
    const lg = summarize(results.map((x) => x.logins.lastSlowMs));
    console.log(`  logins slow/failing    ${fmt(lg.p50, 0).padStart(8)} ${fmt(lg.max, 0).padStart(8)}`);
    console.log(`  baseline write p50     ${fmt(base.p50).padStart(8)} ${fmt(base.max).padStart(8)}`);
    console.log(`  failover / baseline p50: ${fmt(ratio, 0)}x`);
    console.log(
      `  target < ${TARGET_MS} ms: ${fo.max < TARGET_MS && failed === 0 ? "met" : "MISSED"} (met in ${results.filter((x) => x.failoverMs < TARGET_MS).length}/${rounds} rounds)`,
    );
    if (failed) console.log(`  !!! ${failed} round(s) saw no successful write within ${GIVE_UP_MS} ms of the kill`);
    const stale = results.reduce((s, x) => s + x.staleFirstRead, 0);
    console.log(
      `  acknowledged writes missing from the first read through the restarted node: ${stale} (found again 2 s later unless lost)`,
    );
    console.log(lost ? `  !!! LOST ACKNOWLEDGED WRITES: ${lost} !!!` : "  lost acknowledged writes: 0");
    const file = await writeResult("failover", {
      rounds,
      targetMs: TARGET_MS,
      victim: VICTIM,
      ms: { failover: fo, unavailable: un, longestAckGap: gap, loginsSlowOrFailing: lg, baselineWriteP50: base },
      ratioFailoverToBaselineP50: ratio,
      lost,
      staleFirstRead: stale,
      perRound: results,
    });
    console.log(`  -> ${file}`);
    const baseline = `sequential write p50 before the kill, ${fmt(base.p50)} ms`;
    return {
      title: `Failover after SIGKILL of the ${VICTIM === "meta" ? "meta leader" : "users bucket's leader"} (3 nodes, ${rounds} rounds)`,
      rows: [
        { name: "first acknowledged write after the kill, p50", value: fo.p50, unit: "ms", baseline, ratio },
        {
          name: "first acknowledged write after the kill, max",
          value: fo.max,
          unit: "ms",
          baseline,
          ratio: fo.max / base.p50,
        },
        { name: "writes refused or unanswered until, max", value: un.max, unit: "ms" },
        { name: "logins slow (>= 1 s) or failing until, p50", value: lg.p50, unit: "ms" },
        { name: "logins slow (>= 1 s) or failing until, max", value: lg.max, unit: "ms" },
        { name: "acknowledged writes lost", value: lost, unit: "writes" },
      ],
      notes: ["An election takes 4-9 s after the leader's last heartbeat (nats-server's hard-coded RAFT timers)."],
    };
  } finally {
    await cluster.stop();
  }
}

if (import.meta.main) await run();
