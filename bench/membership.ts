// Membership changes at connect speed: how long createRoom() takes until its caller may
// use the room, and addMember() until the added member's connection holds the room,
// on one node and on a three-node cluster — against a plain TLS connect through the
// auth callout measured in the same run (a membership change is one re-admission).
// Bus and clients share this process, so each row also gives the CPU per operation of
// this process and of the nats-server(s): on a busy machine the latencies swing, the CPU
// figures much less.
import { connect as natsConnect } from "@nats-io/transport-node";
import { nkeySigner } from "../lib/auth/authenticator.ts";
import { startCluster } from "../lib/bus/cluster.ts";
import { startUnibus } from "../lib/bus/unibus.ts";
import { connect, type UnibusClient } from "../lib/client/connect.ts";
import { createIdentity, type Identity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import type { BenchRow, BenchSection } from "./report.ts";
import { fmt, processCpuMs, type Summary, summarize, writeResult } from "./stats.ts";

/** What the bench needs of a bus or a cluster: where the owner and the member connect. */
interface Target {
  label: string;
  caPem: string;
  addUser: (id: Identity, handle: string) => Promise<unknown>;
  owner: { natsUrl: string; controlUrl: string };
  member: { natsUrl: string; controlUrl: string };
  /** The nats-server processes, for their CPU time. */
  natsPids: Array<number | undefined>;
}

/** Latencies, and CPU ms per operation of this process (bus and clients) and of the nats-server(s). */
interface Timed extends Summary {
  cpuMs: number;
  natsCpuMs: number;
}

/** CPU so far: this process (all its threads) and the servers, in ms. */
function cpuNow(target: Target): { own: number; nats: number } {
  const u = process.cpuUsage();
  return {
    own: (u.user + u.system) / 1000,
    nats: target.natsPids.reduce<number>((a, pid) => a + processCpuMs(pid), 0),
  };
}

function withCpu(target: Target, n: number, samples: number[], c0: { own: number; nats: number }): Timed {
  const c = cpuNow(target);
  return { ...summarize(samples), cpuMs: (c.own - c0.own) / n, natsCpuMs: (c.nats - c0.nats) / n };
}

async function timed(target: Target, n: number, once: () => Promise<void>): Promise<Timed> {
  const samples: number[] = [];
  const c0 = cpuNow(target);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await once();
    samples.push(performance.now() - t0);
  }
  return withCpu(target, n, samples, c0);
}

/** The baseline: a TLS connect through the callout (nonce signed, user JWT issued), then close. */
function plainConnect(target: Target, id: Identity): () => Promise<void> {
  return async () => {
    const nc = await natsConnect({
      servers: target.member.natsUrl,
      tls: { ca: target.caPem },
      authenticator: nkeySigner(id.nkey, (d) => id.sign(d)),
      reconnect: false,
    });
    await nc.close();
  };
}

async function client(target: Target, at: Target["owner"], id: Identity): Promise<UnibusClient> {
  return connect({ natsUrl: at.natsUrl, controlUrl: at.controlUrl, ca: target.caPem, identity: id });
}

/** Resolves at `c`'s next reconnect: the moment it holds the permissions of its new admission. */
async function nextReconnect(c: UnibusClient): Promise<void> {
  for await (const s of c.nc.status()) if (s.type === "reconnect") return;
}

async function measure(target: Target, n: number) {
  const [alice, bob, probe] = [createIdentity(), createIdentity(), createIdentity()];
  await target.addUser(alice, "alice");
  await target.addUser(bob, "bob");
  await target.addUser(probe, "probe");
  const owner = await client(target, target.owner, alice);
  const member = await client(target, target.member, bob);
  try {
    const warm = Math.max(3, Math.floor(n / 10));
    await timed(target, warm, plainConnect(target, probe));
    await timed(target, warm, async () => void (await owner.createRoom()));
    const connects = await timed(target, n, plainConnect(target, probe));
    const creates = await timed(target, n, async () => void (await owner.createRoom()));
    const persisted = await timed(target, n, async () => void (await owner.createRoom({ persist: true })));
    const rooms = [];
    for (let i = 0; i < n; i++) rooms.push(await owner.createRoom());
    const adds: number[] = [];
    const c0 = cpuNow(target);
    for (const room of rooms) {
      const back = nextReconnect(member);
      const t0 = performance.now();
      await Promise.all([room.addMember(bob.signPub), back]);
      adds.push(performance.now() - t0);
    }
    return { connects, creates, persisted, adds: withCpu(target, n, adds, c0) };
  } finally {
    await owner.close();
    await member.close();
  }
}

function section(label: string, r: Awaited<ReturnType<typeof measure>>): BenchSection {
  const base = `TLS connect through the callout, p50 ${fmt(r.connects.p50)} ms`;
  const row = (name: string, s: Summary, p: "p50" | "p99"): BenchRow => ({
    name: `${name} ${p}`,
    value: s[p],
    unit: "ms",
    baseline: base,
    ratio: s[p] / r.connects.p50,
  });
  const cpu = (name: string, s: Timed): BenchRow => ({
    name: `${name}: CPU per op, this process + nats-server`,
    value: s.cpuMs + s.natsCpuMs,
    unit: "ms",
    note: `${fmt(s.cpuMs)} + ${fmt(s.natsCpuMs)}`,
  });
  return {
    title: `Membership changes, ${label}`,
    rows: [
      { name: "TLS connect through the callout p50", value: r.connects.p50, unit: "ms", note: "baseline" },
      { name: "TLS connect through the callout p99", value: r.connects.p99, unit: "ms" },
      cpu("TLS connect through the callout", r.connects),
      row("createRoom() until usable", r.creates, "p50"),
      row("createRoom() until usable", r.creates, "p99"),
      cpu("createRoom()", r.creates),
      row("createRoom({ persist: true }) until usable", r.persisted, "p50"),
      row("createRoom({ persist: true }) until usable", r.persisted, "p99"),
      cpu("createRoom({ persist: true })", r.persisted),
      row("addMember() until the member is re-admitted", r.adds, "p50"),
      row("addMember() until the member is re-admitted", r.adds, "p99"),
      cpu("addMember()", r.adds),
    ],
    notes: ["target: createRoom and addMember p50 well under 30 ms on one node"],
  };
}

function print(s: BenchSection): void {
  console.log(`\n${s.title}                                   ms    x connect p50`);
  for (const r of s.rows) {
    const ratio =
      r.ratio === undefined
        ? r.note && r.note !== "baseline"
          ? `   (${r.note})`
          : ""
        : `${fmt(r.ratio, 1).padStart(8)}x`;
    console.log(`  ${r.name.padEnd(70)} ${fmt(r.value).padStart(8)} ${ratio}`);
  }
  for (const note of s.notes ?? []) console.log(`  ${note}`);
}

async function oneNode(binary: string, n: number): Promise<BenchSection> {
  // One owner creating rooms back to back now signs more than the default 50 requests a
  // second per key (burst 100): the limiter would be measured, not the membership change.
  const rateLimit = { perIdentity: { ratePerSec: 10_000, burst: 10_000 } };
  const bus = await startUnibus({ natsServer: binary, rateLimit });
  try {
    const at = { natsUrl: bus.natsUrl, controlUrl: bus.controlUrl };
    const target: Target = {
      label: "one node (SQLite)",
      caPem: bus.caPem,
      addUser: (id, handle) => bus.addUser(id.signPub, { handle, kexPub: id.kexPub }),
      owner: at,
      member: at,
      natsPids: [bus.natsPid],
    };
    return section(target.label, await measure(target, n));
  } finally {
    await bus.stop();
  }
}

/** Owner on node 1, member on node 3: the member's kick crosses the cluster. */
async function threeNodes(binary: string, n: number): Promise<BenchSection> {
  const cluster = await startCluster({ nodes: 3, natsServer: binary });
  try {
    const [n1, , n3] = cluster.nodes;
    const target: Target = {
      label: "three-node cluster (KV), member on another node",
      caPem: cluster.caPem,
      addUser: (id, handle) => n1!.addUser(id.signPub, { handle, kexPub: id.kexPub }),
      owner: { natsUrl: n1!.natsUrl, controlUrl: n1!.controlUrl },
      member: { natsUrl: n3!.natsUrl, controlUrl: n3!.controlUrl },
      natsPids: cluster.nodes.map((node) => node.natsPid),
    };
    return section(target.label, await measure(target, n));
  } finally {
    await cluster.stop();
  }
}

export async function run(n = Number(process.env.BENCH_MEMBERSHIP ?? 60)): Promise<BenchSection[]> {
  const binary = (await resolveNatsServer()).path;
  const sections = [await oneNode(binary, n), await threeNodes(binary, n)];
  for (const s of sections) print(s);
  const file = await writeResult("membership", { n, sections });
  console.log(`  -> ${file}`);
  return sections;
}

if (import.meta.main) await run();
