import { setTimeout as sleep } from "node:timers/promises";
import { Agent, request } from "undici";
import { startUnibus, type Unibus } from "../lib/bus/unibus.ts";
import { connect } from "../lib/client/connect.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import type { BenchSection } from "./report.ts";
import { fmt, summarize, timeBareNatsStart, writeResult } from "./stats.ts";

async function healthStatus(bus: Unibus, agent: Agent): Promise<number> {
  try {
    const res = await request(`${bus.controlUrl}/healthz`, { dispatcher: agent });
    await res.body.dump();
    return res.statusCode;
  } catch {
    return 0;
  }
}

async function until(check: () => Promise<boolean>, started: number): Promise<number> {
  while (!(await check())) await sleep(5);
  return performance.now() - started;
}

export async function run(rounds = Number(process.env.BENCH_ROUNDS ?? 10)): Promise<BenchSection> {
  const binary = (await resolveNatsServer()).path;
  // Enough restarts for every round within the budget's window, and a short healthy run
  // resets the backoff: each round measures a first restart, not a backoff grown by the last.
  const bus = await startUnibus({
    natsServer: binary,
    supervise: { maxRestarts: rounds + 1, windowMs: 60_000, healthyAfterMs: 1000 },
  });
  const agent = new Agent({ connect: { ca: bus.caPem } });
  const me = createIdentity();
  await bus.addUser(me.signPub, { handle: "bench", kexPub: me.kexPub });
  const c = await connect({ natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, identity: me });
  const room = await c.createRoom({ encrypt: true });
  let delivered = 0;
  void (async () => {
    for await (const _ of room.subscribe()) delivered++;
  })();
  const to503: number[] = [];
  const to200: number[] = [];
  const toDelivery: number[] = [];
  const bare: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      bare.push(await timeBareNatsStart(binary));
      const seen = delivered;
      const t0 = performance.now();
      process.kill(bus.natsPid!, "SIGKILL");
      to503.push(await until(async () => (await healthStatus(bus, agent)) === 503, t0));
      to200.push(await until(async () => (await healthStatus(bus, agent)) === 200, t0));
      toDelivery.push(
        await until(async () => {
          await room.publish("ping").catch(() => {});
          await sleep(5);
          return delivered > seen;
        }, t0),
      );
      // A healthy run between kills, so the backoff starts over each round.
      await sleep(1500);
    }
  } finally {
    await c.close();
    await agent.close();
    await bus.stop();
  }
  const s = {
    bare: summarize(bare),
    to503: summarize(to503),
    to200: summarize(to200),
    toDelivery: summarize(toDelivery),
  };
  const row = (label: string, x: { p50: number; max: number }) =>
    `  ${label.padEnd(44)} ${fmt(x.p50).padStart(8)} ${fmt(x.max).padStart(8)}   ratio ${fmt(x.p50 / s.bare.p50)}x`;
  console.log(`\nSIGKILL of nats-server (${rounds} rounds, ms)              p50      max`);
  console.log(
    `  bare nats-server start (baseline)            ${fmt(s.bare.p50).padStart(8)} ${fmt(s.bare.max).padStart(8)}`,
  );
  console.log(row("kill to /healthz 503", s.to503));
  console.log(row("kill to /healthz 200 again", s.to200));
  console.log(row("kill to first message at a subscribed client", s.toDelivery));
  const file = await writeResult("heal", { rounds, ms: s });
  console.log(`  -> ${file}`);
  const baseline = "bare nats-server start";
  const healed = (name: string, x: { p50: number }) => ({
    name,
    value: x.p50,
    unit: "ms p50",
    baseline,
    ratio: x.p50 / s.bare.p50,
  });
  return {
    title: `SIGKILL of nats-server (${rounds} rounds)`,
    rows: [
      { name: baseline, value: s.bare.p50, unit: "ms p50" },
      healed("kill to /healthz 503", s.to503),
      healed("kill to /healthz 200 again", s.to200),
      healed("kill to first message at a subscribed client", s.toDelivery),
    ],
  };
}

if (import.meta.main) await run();
