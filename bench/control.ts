// Signed control-plane requests (GET /v1/rooms/:id by a member: signature, skew,
// allowlist, nonce, membership, store read) vs unsigned GET /healthz on the same
// server, in one run: N concurrent workers over one undici keep-alive pool.
// /healthz asks nats-server's own health endpoint on every call (since the bus's health
// names each part), so it is no longer the cheapest request: the floor — an unsigned
// request for a path no route serves, answered 404 by the same pipeline — is the
// stricter baseline, and the target is read against it.
// The load comes from a worker thread, so the client does not share the server's
// event loop and what is compared is the server's work per request.
import crypto from "node:crypto";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { Agent } from "undici";
import { startUnibus, type Unibus } from "../lib/bus/unibus.ts";
import { ControlClient } from "../lib/client/control.ts";
import { signRequest } from "../lib/crypto/canonical.ts";
import { createIdentity, Identity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import type { BenchRow, BenchSection } from "./report.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

type Kind = "healthz" | "floor" | "signed" | "signedInLoop";

const KINDS = ["healthz", "floor", "signed", "signedInLoop"] as const;
const UNSIGNED: Partial<Record<Kind, { uri: string; status: number }>> = {
  healthz: { uri: "/healthz", status: 200 },
  floor: { uri: "/v1/no-such-route", status: 404 },
};

interface Round {
  n: number;
  ms: number;
  samples: number[];
  /** CPU time the server's thread (this one; the load runs in a worker) spent during the round. */
  busyMs?: number;
}

async function round(
  agent: Agent,
  origin: string,
  kind: Kind,
  n: number,
  workers: number,
  members: Member[],
): Promise<Round> {
  // Request i is sent by member i mod |members|: one member per worker keeps every key
  // far below its own share of the replay store, as a team of bots would be.
  const unsigned = UNSIGNED[kind];
  const uriOf = (i: number) => unsigned?.uri ?? members[i % members.length]!.roomPath;
  const signed = (i: number) => {
    const m = members[i % members.length]!;
    return signRequest(m.signer, { method: "GET", uri: m.roomPath });
  };
  // Signed before the clock starts: what is measured is the server's cost of checking
  // a signature, not the client's cost of making one ("signedInLoop" includes both).
  const presigned = kind === "signed" ? Array.from({ length: n }, (_, i) => signed(i)) : [];
  const samples: number[] = [];
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) {
      const uri = uriOf(i);
      const s = performance.now();
      const headers = kind === "signed" ? presigned[i] : kind === "signedInLoop" ? signed(i) : undefined;
      const res = await agent.request({ origin, path: uri, method: "GET", headers });
      const text = await res.body.text();
      if (res.statusCode !== (unsigned?.status ?? 200)) throw new Error(`${kind}: ${res.statusCode} ${text}`);
      samples.push(performance.now() - s);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: workers }, worker));
  return { n, ms: performance.now() - t0, samples };
}

interface LoadJob {
  kind: Kind;
  n: number;
}

/** A member as the load thread gets it: its keys and the room it reads. */
interface MemberSetup {
  signSeed: string;
  kexSecret: string;
  roomPath: string;
}

interface Member {
  signer: Identity;
  roomPath: string;
}

interface LoadSetup {
  origin: string;
  ca: string;
  workers: number;
  members: MemberSetup[];
}

/** The load generator, in its own thread: runs one round per message. */
function loadThread(setup: LoadSetup): void {
  const agent = new Agent({ connect: { ca: setup.ca }, connections: setup.workers, keepAliveTimeout: 30_000 });
  const members = setup.members.map((m) => ({
    signer: new Identity(Buffer.from(m.signSeed, "base64url"), Buffer.from(m.kexSecret, "base64url")),
    roomPath: m.roomPath,
  }));
  parentPort!.on("message", (job: LoadJob | "close") => {
    if (job === "close") {
      void agent.close().then(() => parentPort!.close());
      return;
    }
    round(agent, setup.origin, job.kind, job.n, setup.workers, members).then(
      (r) => parentPort!.postMessage({ ok: r }),
      (err: Error) => parentPort!.postMessage({ error: err.message }),
    );
  });
}

function startLoad(setup: LoadSetup) {
  const worker = new Worker(new URL(import.meta.url), { workerData: setup });
  let pending: { resolve: (r: Round) => void; reject: (err: Error) => void } | undefined;
  worker.on("message", (m: { ok?: Round; error?: string }) => {
    const p = pending;
    pending = undefined;
    if (m.ok) p?.resolve(m.ok);
    else p?.reject(new Error(m.error));
  });
  worker.on("error", (err) => pending?.reject(err));
  return {
    /**
     * One round, with the server thread's CPU time: CPU spent per request is what a
     * loaded, shared machine distorts least (throughput there mostly measures the
     * neighbours). nats-server's own work is in its process, not counted here.
     */
    async run(kind: Kind, n: number): Promise<Round> {
      const before = process.threadCpuUsage();
      const round = await new Promise<Round>((resolve, reject) => {
        pending = { resolve, reject };
        worker.postMessage({ kind, n } satisfies LoadJob);
      });
      const used = process.threadCpuUsage(before);
      return { ...round, busyMs: (used.user + used.system) / 1000 };
    },
    async close(): Promise<void> {
      const exited = new Promise((resolve) => worker.once("exit", resolve));
      worker.postMessage("close");
      await exited;
    },
  };
}

/** A new member of the bus, owner of one encrypted room. */
async function memberWithRoom(bus: Unibus, i: number): Promise<MemberSetup> {
  const id = createIdentity();
  await bus.addUser(id.signPub, { handle: `bench${i}`, kexPub: id.kexPub });
  const api = new ControlClient({ baseUrl: bus.controlUrl, ca: bus.caPem, identity: id });
  try {
    const room = await api.request<{ id: string }>("POST", "/v1/rooms", {
      encrypt: true,
      ownerSealedKey: crypto.randomBytes(48).toString("base64url"),
    });
    const file = id.toFile();
    return { signSeed: file.signSeed, kexSecret: file.kexSecret, roomPath: `/v1/rooms/${room.id}` };
  } finally {
    await api.close();
  }
}

type Figures = ReturnType<typeof combine>;

/** Prints the table and shapes it for the report: each figure against both baselines. */
function report(workers: number, f: Record<Kind, Figures>) {
  const vs = (x: Figures, base: Figures) => x.rate / base.rate;
  console.log(
    `\ncontrol plane, ${workers} workers, one keep-alive pool (${f.healthz.n} each)   req/s    p50 ms   p99 ms  server CPU µs/req`,
  );
  const line = (label: string, x: Figures, extra = "") =>
    console.log(
      `  ${label.padEnd(44)} ${fmt(x.rate, 0).padStart(7)} ${fmt(x.p50).padStart(9)} ${fmt(x.p99).padStart(8)} ${fmt(x.busyUsPerRequest, 0).padStart(13)}${extra}`,
    );
  // By server CPU: how many of these the server could answer per floor request's worth.
  const cpu = (x: Figures, base: Figures) => base.busyUsPerRequest / x.busyUsPerRequest;
  const pct = (x: Figures) =>
    `   ${fmt(100 * vs(x, f.floor), 0)}% of the floor (${fmt(100 * cpu(x, f.floor), 0)}% by server CPU), ${fmt(100 * vs(x, f.healthz), 0)}% of /healthz`;
  line("unsigned 404, the pipeline's floor (baseline)", f.floor);
  line("GET /healthz, unsigned (baseline)", f.healthz);
  line("GET /v1/rooms/:id, signed by a member", f.signed, pct(f.signed));
  line("  same, signing each request in the loop", f.signedInLoop, pct(f.signedInLoop));
  console.log("  target: signed >= 40% of unsigned (read against the floor)");
  const row = (name: string, x: Figures): BenchRow[] => [
    { name: `${name} vs the floor`, value: x.rate, unit: "req/s", baseline: "unsigned 404", ratio: vs(x, f.floor) },
    { name: `${name} vs /healthz`, value: x.rate, unit: "req/s", baseline: "GET /healthz", ratio: vs(x, f.healthz) },
  ];
  const section: BenchSection = {
    title: `Control plane, ${workers} concurrent workers`,
    rows: [
      { name: "unsigned 404 (floor)", value: f.floor.rate, unit: "req/s", note: "baseline" },
      { name: "GET /healthz, unsigned", value: f.healthz.rate, unit: "req/s", note: "baseline; probes nats-server" },
      ...row("signed GET /v1/rooms/:id", f.signed),
      {
        name: "signed GET /v1/rooms/:id, server CPU per request",
        value: f.signed.busyUsPerRequest,
        unit: "µs",
        baseline: `unsigned 404: ${fmt(f.floor.busyUsPerRequest, 0)} µs`,
        ratio: cpu(f.signed, f.floor),
      },
      ...row("signed, signing in the loop", f.signedInLoop),
    ],
    notes: ["target: signed >= 40% of unsigned, read against the floor"],
  };
  const json = {
    ...f,
    ratio: vs(f.signed, f.healthz),
    ratioFloor: vs(f.signed, f.floor),
    ratioFloorCpu: cpu(f.signed, f.floor),
  };
  return { section, json };
}

function combine(rounds: Round[]) {
  const n = rounds.reduce((a, r) => a + r.n, 0);
  const ms = rounds.reduce((a, r) => a + r.ms, 0);
  const s = summarize(rounds.flatMap((r) => r.samples));
  const busyMs = rounds.reduce((a, r) => a + (r.busyMs ?? 0), 0);
  return { n, rate: n / (ms / 1000), p50: s.p50, p99: s.p99, busyUsPerRequest: (1000 * busyMs) / n };
}

export async function run(
  n = Number(process.env.BENCH_REQUESTS ?? 4000),
  workers = Number(process.env.BENCH_WORKERS ?? 8),
): Promise<BenchSection> {
  const binary = (await resolveNatsServer()).path;
  // No throttling: the per-IP and per-identity buckets would otherwise be what is measured.
  const unlimited = { ratePerSec: 1e9, burst: 1e9 };
  const bus = await startUnibus({ natsServer: binary, rateLimit: { ...unlimited, perIdentity: unlimited } });
  let load: ReturnType<typeof startLoad> | undefined;
  try {
    const members: MemberSetup[] = [];
    for (let i = 0; i < workers; i++) members.push(await memberWithRoom(bus, i));
    load = startLoad({ origin: bus.controlUrl, ca: bus.caPem, workers, members });
    const go = (kind: Kind, count: number) => load!.run(kind, count);

    // warm up the pool, the JIT and the store's statements on every path
    for (const kind of KINDS) await go(kind, 300);
    const rounds = 4;
    const per = Math.ceil(n / rounds);
    const results: Record<Kind, Round[]> = { healthz: [], floor: [], signed: [], signedInLoop: [] };
    for (let r = 0; r < rounds; r++) {
      // interleaved so drift on a shared machine hits every side alike
      for (const kind of KINDS) results[kind].push(await go(kind, per));
    }
    const figures = report(workers, {
      healthz: combine(results.healthz),
      floor: combine(results.floor),
      signed: combine(results.signed),
      signedInLoop: combine(results.signedInLoop),
    });
    const out = await writeResult("control", { workers, ...figures.json });
    console.log(`  -> ${out}`);
    return figures.section;
  } finally {
    await load?.close();
    await bus.stop();
  }
}

if (!isMainThread) loadThread(workerData as LoadSetup);
else if (import.meta.main) await run();
