// Connects through the auth callout vs a static nkey user in the server config:
// same binary, same TLS, same client-side signer (node:crypto), in one run.
// Besides wall time, the CPU this thread spends per connect: the client's side for the
// static user, the client's and the callout's for the bus (the callout runs here too),
// so the difference is what the callout costs — a figure a loaded machine distorts
// far less than latency.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { connect as natsConnect } from "@nats-io/transport-node";
import { nkeySigner } from "../lib/auth/authenticator.ts";
import { startUnibus } from "../lib/bus/unibus.ts";
import { createIdentity, type Identity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import { NatsServerProcess } from "../lib/nats/process.ts";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../lib/tls/index.ts";
import type { BenchSection } from "./report.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

async function measure(url: string, ca: string, id: Identity, n: number) {
  const samples: number[] = [];
  const cpu0 = process.threadCpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    const nc = await natsConnect({
      servers: url,
      tls: { ca },
      authenticator: nkeySigner(id.nkey, (d) => id.sign(d)),
      reconnect: false,
    });
    samples.push(performance.now() - s);
    await nc.close();
  }
  const rate = n / ((performance.now() - t0) / 1000);
  const cpu = process.threadCpuUsage(cpu0);
  return { rate, cpuMsPerConnect: (cpu.user + cpu.system) / 1000 / n, ...summarize(samples) };
}

interface Figures {
  rate: number;
  p50: number;
  p99: number;
  cpuMsPerConnect: number;
}

function report(n: number, s: Figures, c: Figures): BenchSection {
  console.log(`\nconnect over TLS, sequential (${n} each)     conn/s     p50 ms   p99 ms   CPU ms/connect`);
  const line = (label: string, x: Figures, extra = "") =>
    console.log(
      `  ${label.padEnd(36)} ${fmt(x.rate, 0).padStart(8)} ${fmt(x.p50).padStart(9)} ${fmt(x.p99).padStart(8)} ${fmt(x.cpuMsPerConnect).padStart(16)}${extra}`,
    );
  line("static nkey user (baseline)", s);
  line("through the auth callout", c, `   ${fmt((100 * c.rate) / s.rate, 0)}% of static`);
  const calloutCpu = c.cpuMsPerConnect - s.cpuMsPerConnect;
  console.log(`  the callout's own CPU per connect (difference): ${fmt(calloutCpu)} ms`);
  console.log("  targets: >= 50% of static, p99 < 10 ms");
  const base = "static nkey user";
  return {
    title: "Connects over TLS, sequential",
    rows: [
      { name: "static nkey user", value: s.rate, unit: "conn/s", note: "baseline" },
      { name: "through the auth callout", value: c.rate, unit: "conn/s", baseline: base, ratio: c.rate / s.rate },
      { name: "through the auth callout p50", value: c.p50, unit: "ms", baseline: base, ratio: c.p50 / s.p50 },
      { name: "through the auth callout p99", value: c.p99, unit: "ms", baseline: base, ratio: c.p99 / s.p99 },
      { name: "the callout's own CPU per connect", value: calloutCpu, unit: "ms" },
    ],
    notes: ["targets: >= 50% of static, p99 < 10 ms"],
  };
}

export async function run(n = Number(process.env.BENCH_CONNECTS ?? 500)): Promise<BenchSection> {
  const binary = (await resolveNatsServer()).path;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-"));
  const id = createIdentity();
  const ca = await loadOrCreateCa(path.join(dir, "tls"));
  const cert = await loadOrCreateServerCertificate(path.join(dir, "tls"), ca, { name: "server", hosts: ["127.0.0.1"] });
  const staticServer = new NatsServerProcess({
    binary,
    workDir: path.join(dir, "static"),
    config: {
      serverName: "static",
      host: "127.0.0.1",
      port: -1,
      http: { host: "127.0.0.1", port: -1 },
      tls: { certFile: cert.certFile, keyFile: cert.keyFile, timeout: 2 },
      accounts: { APP: { users: [{ nkey: id.nkey }] } },
    },
  });
  const bus = await startUnibus({ natsServer: binary });
  try {
    const ports = await staticServer.start();
    await bus.addUser(id.signPub, { handle: "bench" });
    const staticUrl = `tls://127.0.0.1:${ports.nats}`;
    // warm-up both paths
    await measure(staticUrl, ca.certPem, id, 20);
    await measure(bus.natsUrl, bus.caPem, id, 20);
    const rounds = 4;
    const st: Awaited<ReturnType<typeof measure>>[] = [];
    const co: Awaited<ReturnType<typeof measure>>[] = [];
    for (let r = 0; r < rounds; r++) {
      st.push(await measure(staticUrl, ca.certPem, id, n / rounds));
      co.push(await measure(bus.natsUrl, bus.caPem, id, n / rounds));
    }
    const pick = (xs: typeof st) => ({
      rate: xs.reduce((a, x) => a + x.rate, 0) / xs.length,
      p50: xs.map((x) => x.p50).sort((a, b) => a - b)[Math.floor(xs.length / 2)]!,
      p99: Math.max(...xs.map((x) => x.p99)),
      cpuMsPerConnect: xs.reduce((a, x) => a + x.cpuMsPerConnect, 0) / xs.length,
    });
    const s = pick(st);
    const c = pick(co);
    const section = report(n, s, c);
    const file = await writeResult("connect", { n, static: s, callout: c, ratio: c.rate / s.rate });
    console.log(`  -> ${file}`);
    return section;
  } finally {
    await bus.stop();
    await staticServer.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await run();
