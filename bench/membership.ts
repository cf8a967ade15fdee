// Membership changes at connect speed: how long createRoom() takes until its caller may
// use the room, and addMember() until the added member's connection holds the room,
// on one node and on a three-node cluster — against a plain TLS connect through the
// auth callout measured in the same run (a membership change is one re-admission).
import { connect as natsConnect } from "@nats-io/transport-node";
import { nkeySigner } from "../lib/auth/authenticator.ts";
import { startCluster } from "../lib/bus/cluster.ts";
import { startUnibus } from "../lib/bus/unibus.ts";
import { connect, type UnibusClient } from "../lib/client/connect.ts";
import { createIdentity, type Identity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import type { BenchRow, BenchSection } from "./report.ts";
import { fmt, type Summary, summarize, writeResult } from "./stats.ts";

/** What the bench needs of a bus or a cluster: where the owner and the member connect. */
interface Target {
  label: string;
  caPem: string;
  addUser: (id: Identity, handle: string) => Promise<unknown>;
  owner: { natsUrl: string; controlUrl: string };
  member: { natsUrl: string; controlUrl: string };
}

async function timed(n: number, once: () => Promise<void>): Promise<Summary> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await once();
    samples.push(performance.now() - t0);
  }
  return summarize(samples);
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
    await timed(warm, plainConnect(target, probe));
    await timed(warm, async () => void (await owner.createRoom()));
    const connects = await timed(n, plainConnect(target, probe));
    const creates = await timed(n, async () => void (await owner.createRoom()));
    const adds: number[] = [];
    for (let i = 0; i < n; i++) {
      const room = await owner.createRoom();
      const back = nextReconnect(member);
      const t0 = performance.now();
      await Promise.all([room.addMember(bob.signPub), back]);
      adds.push(performance.now() - t0);
    }
    return { connects, creates, adds: summarize(adds.slice(Math.min(warm, n - 1))) };
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
  return {
    title: `Membership changes, ${label}`,
    rows: [
      { name: "TLS connect through the callout p50", value: r.connects.p50, unit: "ms", note: "baseline" },
      { name: "TLS connect through the callout p99", value: r.connects.p99, unit: "ms" },
      row("createRoom() until usable", r.creates, "p50"),
      row("createRoom() until usable", r.creates, "p99"),
      row("addMember() until the member is re-admitted", r.adds, "p50"),
      row("addMember() until the member is re-admitted", r.adds, "p99"),
    ],
    notes: ["target: createRoom and addMember p50 well under 30 ms on one node"],
  };
}

function print(s: BenchSection): void {
  console.log(`\n${s.title}                                   ms    x connect p50`);
  for (const r of s.rows) {
    const ratio = r.ratio === undefined ? "" : `${fmt(r.ratio, 1).padStart(8)}x`;
    console.log(`  ${r.name.padEnd(52)} ${fmt(r.value).padStart(8)} ${ratio}`);
  }
  for (const note of s.notes ?? []) console.log(`  ${note}`);
}

async function oneNode(binary: string, n: number): Promise<BenchSection> {
  const bus = await startUnibus({ natsServer: binary });
  try {
    const at = { natsUrl: bus.natsUrl, controlUrl: bus.controlUrl };
    const target: Target = {
      label: "one node (SQLite)",
      caPem: bus.caPem,
      addUser: (id, handle) => bus.addUser(id.signPub, { handle, kexPub: id.kexPub }),
      owner: at,
      member: at,
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
