// Connects through the auth callout vs a static nkey user in the server config:
// same binary, same TLS, same client-side signer (node:crypto), in one run.
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
  return { rate: n / ((performance.now() - t0) / 1000), ...summarize(samples) };
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
    });
    const s = pick(st);
    const c = pick(co);
    console.log(`\nconnect over TLS, sequential (${n} each)     conn/s     p50 ms   p99 ms`);
    console.log(
      `  static nkey user (baseline)          ${fmt(s.rate, 0).padStart(8)} ${fmt(s.p50).padStart(9)} ${fmt(s.p99).padStart(8)}`,
    );
    console.log(
      `  through the auth callout             ${fmt(c.rate, 0).padStart(8)} ${fmt(c.p50).padStart(9)} ${fmt(c.p99).padStart(8)}   ${fmt((100 * c.rate) / s.rate, 0)}% of static`,
    );
    console.log("  targets: >= 50% of static, p99 < 10 ms");
    const file = await writeResult("connect", { n, static: s, callout: c, ratio: c.rate / s.rate });
    console.log(`  -> ${file}`);
    const baseline = "static nkey user";
    return {
      title: `Connect over TLS, sequential (${n} each)`,
      rows: [
        { name: "static nkey user", value: s.rate, unit: "conn/s" },
        { name: "through the auth callout", value: c.rate, unit: "conn/s", baseline, ratio: c.rate / s.rate },
        { name: "through the auth callout", value: c.p99, unit: "ms p99", baseline, ratio: c.p99 / s.p99 },
      ],
      notes: ["Targets: callout >= 50 % of static, p99 < 10 ms."],
    };
  } finally {
    await bus.stop();
    await staticServer.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await run();
