// Signed control-plane requests (GET /v1/rooms/:id by a member: signature, skew,
// allowlist, nonce, membership, store read) vs unsigned GET /healthz on the same
// server, in one run: N concurrent workers over one undici keep-alive pool.
// The load comes from a worker thread, so the client does not share the server's
// event loop and what is compared is the server's work per request.
import crypto from "node:crypto";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { Agent } from "undici";
import { startUnibus } from "../lib/bus/unibus.ts";
import { ControlClient } from "../lib/client/control.ts";
import { signRequest } from "../lib/crypto/canonical.ts";
import { createIdentity, Identity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import type { BenchSection } from "./report.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

type Kind = "healthz" | "signed" | "signedInLoop";

interface Round {
  n: number;
  ms: number;
  samples: number[];
}

async function round(
  agent: Agent,
  origin: string,
  kind: Kind,
  n: number,
  workers: number,
  signer: Identity,
  roomPath: string,
): Promise<Round> {
  const uri = kind === "healthz" ? "/healthz" : roomPath;
  // Signed before the clock starts: what is measured is the server's cost of checking
  // a signature, not the client's cost of making one ("signedInLoop" includes both).
  const presigned =
    kind === "signed" ? Array.from({ length: n }, () => signRequest(signer, { method: "GET", uri })) : [];
  const samples: number[] = [];
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) {
      const s = performance.now();
      const headers =
        kind === "signed"
          ? presigned[i]
          : kind === "signedInLoop"
            ? signRequest(signer, { method: "GET", uri })
            : undefined;
      const res = await agent.request({ origin, path: uri, method: "GET", headers });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw new Error(`${kind}: ${res.statusCode} ${text}`);
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

interface LoadSetup {
  origin: string;
  ca: string;
  workers: number;
  roomPath: string;
  signSeed: string;
  kexSecret: string;
}

/** The load generator, in its own thread: runs one round per message. */
function loadThread(setup: LoadSetup): void {
  const agent = new Agent({ connect: { ca: setup.ca }, connections: setup.workers, keepAliveTimeout: 30_000 });
  const signer = new Identity(Buffer.from(setup.signSeed, "base64url"), Buffer.from(setup.kexSecret, "base64url"));
  parentPort!.on("message", (job: LoadJob | "close") => {
    if (job === "close") {
      void agent.close().then(() => parentPort!.close());
      return;
    }
    round(agent, setup.origin, job.kind, job.n, setup.workers, signer, setup.roomPath).then(
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
    run(kind: Kind, n: number): Promise<Round> {
      return new Promise((resolve, reject) => {
        pending = { resolve, reject };
        worker.postMessage({ kind, n } satisfies LoadJob);
      });
    },
    async close(): Promise<void> {
      const exited = new Promise((resolve) => worker.once("exit", resolve));
      worker.postMessage("close");
      await exited;
    },
  };
}

function combine(rounds: Round[]) {
  const n = rounds.reduce((a, r) => a + r.n, 0);
  const ms = rounds.reduce((a, r) => a + r.ms, 0);
  const s = summarize(rounds.flatMap((r) => r.samples));
  return { n, rate: n / (ms / 1000), p50: s.p50, p99: s.p99 };
}

export async function run(
  n = Number(process.env.BENCH_REQUESTS ?? 4000),
  workers = Number(process.env.BENCH_WORKERS ?? 8),
): Promise<BenchSection> {
  const binary = (await resolveNatsServer()).path;
  // No throttling: the per-IP and per-identity buckets would otherwise be what is measured.
  const bus = await startUnibus({
    natsServer: binary,
    rateLimit: { ratePerSec: 1e9, burst: 1e9, perIdentity: { ratePerSec: 1e9, burst: 1e9 } },
  });
  let load: ReturnType<typeof startLoad> | undefined;
  try {
    const alice = createIdentity();
    await bus.addUser(alice.signPub, { handle: "bench", kexPub: alice.kexPub });
    const api = new ControlClient({ baseUrl: bus.controlUrl, ca: bus.caPem, identity: alice });
    const room = await api.request<{ id: string }>("POST", "/v1/rooms", {
      encrypt: true,
      ownerSealedKey: crypto.randomBytes(48).toString("base64url"),
    });
    await api.close();
    const roomPath = `/v1/rooms/${room.id}`;
    const file = alice.toFile();
    load = startLoad({
      origin: bus.controlUrl,
      ca: bus.caPem,
      workers,
      roomPath,
      signSeed: file.signSeed,
      kexSecret: file.kexSecret,
    });
    const go = (kind: Kind, count: number) => load!.run(kind, count);

    // warm up the pool, the JIT and the store's statements on every path
    for (const kind of ["healthz", "signed", "signedInLoop"] as const) await go(kind, 300);
    const rounds = 4;
    const per = Math.ceil(n / rounds);
    const results: Record<Kind, Round[]> = { healthz: [], signed: [], signedInLoop: [] };
    for (let r = 0; r < rounds; r++) {
      // interleaved so drift on a shared machine hits every side alike
      for (const kind of ["healthz", "signed", "signedInLoop"] as const) results[kind].push(await go(kind, per));
    }
    const h = combine(results.healthz);
    const s = combine(results.signed);
    const l = combine(results.signedInLoop);
    const ratio = s.rate / h.rate;
    console.log(`\ncontrol plane, ${workers} workers, one keep-alive pool (${h.n} each)   req/s    p50 ms   p99 ms`);
    const line = (label: string, x: typeof h, extra = "") =>
      console.log(
        `  ${label.padEnd(44)} ${fmt(x.rate, 0).padStart(7)} ${fmt(x.p50).padStart(9)} ${fmt(x.p99).padStart(8)}${extra}`,
      );
    line("GET /healthz, unsigned (baseline)", h);
    line("GET /v1/rooms/:id, signed by a member", s, `   ${fmt(100 * ratio, 0)}% of unsigned`);
    line("  same, signing each request in the loop", l, `   ${fmt((100 * l.rate) / h.rate, 0)}% of unsigned`);
    console.log("  target: signed >= 40% of unsigned");
    const out = await writeResult("control", {
      n: h.n,
      workers,
      unsigned: h,
      signed: s,
      signedInLoop: l,
      ratio,
      ratioInLoop: l.rate / h.rate,
    });
    console.log(`  -> ${out}`);
    const baseline = "GET /healthz, unsigned";
    return {
      title: `Control plane, ${workers} workers, one keep-alive pool (${h.n} requests each)`,
      rows: [
        { name: baseline, value: h.rate, unit: "req/s" },
        { name: "GET /v1/rooms/:id, signed by a member", value: s.rate, unit: "req/s", baseline, ratio },
        {
          name: "same, signing each request in the loop",
          value: l.rate,
          unit: "req/s",
          baseline,
          ratio: l.rate / h.rate,
        },
      ],
      notes: ["Target: signed >= 40 % of unsigned."],
    };
  } finally {
    await load?.close();
    await bus.stop();
  }
}

if (!isMainThread) loadThread(workerData as LoadSetup);
else if (import.meta.main) await run();
