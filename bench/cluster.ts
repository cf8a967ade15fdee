// startCluster({ nodes: 3 }) to ready (one JetStream meta leader that sees every peer), fresh temp dir each round.
import { startCluster } from "../lib/bus/cluster.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import type { BenchSection } from "./report.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

export async function run(rounds = Number(process.env.BENCH_ROUNDS ?? 5)): Promise<BenchSection> {
  const binary = (await resolveNatsServer()).path;
  const ready: number[] = [];
  const stop: number[] = [];
  for (let i = 0; i < rounds; i++) {
    let t0 = performance.now();
    const cluster = await startCluster({ nodes: 3, natsServer: binary });
    ready.push(performance.now() - t0);
    t0 = performance.now();
    await cluster.stop();
    stop.push(performance.now() - t0);
  }
  const s = { ready: summarize(ready), stop: summarize(stop) };
  console.log(`\n3-node cluster (${rounds} rounds, ms)                p50      p99`);
  console.log(`  start to ready                      ${fmt(s.ready.p50).padStart(8)} ${fmt(s.ready.p99).padStart(8)}`);
  console.log(`  stop                                ${fmt(s.stop.p50).padStart(8)} ${fmt(s.stop.p99).padStart(8)}`);
  console.log("  target: start to ready <= 3000 ms");
  const file = await writeResult("cluster", { rounds, ms: s, samples: { ready } });
  console.log(`  -> ${file}`);
  return {
    title: `3-node cluster (${rounds} rounds)`,
    rows: [
      { name: "start to ready", value: s.ready.p50, unit: "ms p50" },
      { name: "start to ready", value: s.ready.p99, unit: "ms p99" },
      { name: "stop", value: s.stop.p50, unit: "ms p50" },
    ],
    notes: ["Target: start to ready <= 3000 ms."],
  };
}

if (import.meta.main) await run();
