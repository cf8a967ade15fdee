// startUnibus() to ready vs a bare nats-server (same binary) to ready, in one run.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startUnibus } from "../lib/bus/unibus.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import type { BenchSection } from "./report.ts";
import { fmt, summarize, timeBareNatsStart, writeResult } from "./stats.ts";

export async function run(rounds = Number(process.env.BENCH_ROUNDS ?? 15)): Promise<BenchSection> {
  const binary = (await resolveNatsServer()).path;
  const bare: number[] = [];
  const bus: number[] = [];
  const busReused: number[] = [];
  const keptDir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-"));
  try {
    // warm the page cache and the data dir once
    await (await startUnibus({ natsServer: binary, dataDir: keptDir })).stop();
    for (let i = 0; i < rounds; i++) {
      // interleave so drift on a shared machine hits both sides alike
      bare.push(await timeBareNatsStart(binary));

      let t0 = performance.now();
      const b = await startUnibus({ natsServer: binary });
      bus.push(performance.now() - t0);
      await b.stop();

      t0 = performance.now();
      const r = await startUnibus({ natsServer: binary, dataDir: keptDir });
      busReused.push(performance.now() - t0);
      await r.stop();
    }
  } finally {
    await fs.rm(keptDir, { recursive: true, force: true });
  }
  const s = { bare: summarize(bare), fresh: summarize(bus), reused: summarize(busReused) };
  console.log(`\nstart to ready (${rounds} rounds, ms)             p50      p99`);
  console.log(`  bare nats-server (baseline)         ${fmt(s.bare.p50).padStart(8)} ${fmt(s.bare.p99).padStart(8)}`);
  console.log(
    `  startUnibus(), fresh temp dir       ${fmt(s.fresh.p50).padStart(8)} ${fmt(s.fresh.p99).padStart(8)}   ratio ${fmt(s.fresh.p50 / s.bare.p50)}x`,
  );
  console.log(
    `  startUnibus(), existing data dir    ${fmt(s.reused.p50).padStart(8)} ${fmt(s.reused.p99).padStart(8)}   ratio ${fmt(s.reused.p50 / s.bare.p50)}x`,
  );
  console.log(`  targets: <= 500 ms and <= 3x bare`);
  const file = await writeResult("start", {
    rounds,
    ms: s,
    ratio: { fresh: s.fresh.p50 / s.bare.p50, reused: s.reused.p50 / s.bare.p50 },
  });
  console.log(`  -> ${file}`);
  const baseline = "bare nats-server start";
  return {
    title: `Start to ready (${rounds} rounds)`,
    rows: [
      { name: baseline, value: s.bare.p50, unit: "ms p50" },
      {
        name: "startUnibus(), fresh temp dir",
        value: s.fresh.p50,
        unit: "ms p50",
        baseline,
        ratio: s.fresh.p50 / s.bare.p50,
      },
      {
        name: "startUnibus(), existing data dir",
        value: s.reused.p50,
        unit: "ms p50",
        baseline,
        ratio: s.reused.p50 / s.bare.p50,
      },
    ],
    notes: ["Targets: <= 500 ms and <= 3x bare."],
  };
}

if (import.meta.main) await run();
