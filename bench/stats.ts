import { readFileSync } from "node:fs";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export interface Summary {
  n: number;
  p50: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

export function summarize(samples: number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    mean: sum / sorted.length,
    min: sorted[0] ?? Number.NaN,
    max: sorted.at(-1) ?? Number.NaN,
  };
}

/** CPU time `pid` has used so far in ms, from /proc (Linux; USER_HZ is 100 there); NaN where there is none. */
export function processCpuMs(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return Number.NaN;
  }
}

export const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");

/** Writes a benchmark's figures to bench/results/<name>.json and returns the path. */
export async function writeResult(name: string, result: unknown): Promise<string> {
  const dir = path.resolve("bench", "results");
  await fs.mkdir(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  await fs.writeFile(
    file,
    `${JSON.stringify({ name, at: new Date().toISOString(), ...(result as object) }, null, 2)}\n`,
  );
  return file;
}

/** A bare nats-server (no TLS, no auth) from spawn to ready, in ms: the baseline of start and restart figures. */
export async function timeBareNatsStart(binary: string): Promise<number> {
  const { NatsServerProcess } = await import("../lib/nats/process.ts");
  const os = await import("node:os");
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-"));
  const t0 = performance.now();
  const p = new NatsServerProcess({
    binary,
    workDir: dir,
    config: { serverName: "bare", host: "127.0.0.1", port: -1, http: { host: "127.0.0.1", port: -1 } },
  });
  await p.start();
  const ms = performance.now() - t0;
  await p.stop();
  await fs.rm(dir, { recursive: true, force: true });
  return ms;
}

/** A port free on 127.0.0.1 a moment ago: for servers that cannot pick one and tell (Mosquitto, route ports). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
