// Live revocation latency, and connect latency through the callout as a user's
// memberships (and so its permissions) grow: 1, 100 and 1,000 rooms.
import { startUnibus } from "../lib/bus/unibus.ts";
import { connect } from "../lib/client/connect.ts";
import { ControlClient } from "../lib/client/control.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import type { BenchSection } from "./report.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

export async function run(): Promise<BenchSection> {
  const trials = Number(process.env.BENCH_REVOCATIONS ?? 50);
  const bus = await startUnibus();
  const admin = createIdentity();
  await bus.addUser(admin.signPub, { handle: "root", role: "admin", kexPub: admin.kexPub });
  const api = new ControlClient({ baseUrl: bus.controlUrl, ca: bus.caPem, identity: admin });
  const kicked: number[] = [];
  const denied: number[] = [];
  const closedForGood: number[] = [];
  const connects: Record<string, ReturnType<typeof summarize>> = {};
  try {
    // 1. revocation: from the revoke call returning to the connection closed (and a reconnect denied)
    for (let i = 0; i < trials; i++) {
      const u = createIdentity();
      await bus.addUser(u.signPub, { handle: `u${i}`, kexPub: u.kexPub });
      const c = await connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: u });
      let disconnectAt = 0;
      let deniedAt = 0;
      const watch = (async () => {
        for await (const s of c.nc.status()) {
          if (s.type === "disconnect" && !disconnectAt) disconnectAt = performance.now();
          if (s.type === "error" && !deniedAt && /authorization/i.test(String((s as { error?: Error }).error)))
            deniedAt = performance.now();
        }
      })();
      const closed = c.nc.closed();
      await api.request("POST", `/v1/users/${u.signPub}/revoke`);
      const returned = performance.now();
      await closed; // closed for good: nats.js gives up after its reconnects are denied
      const end = performance.now();
      void watch;
      kicked.push(Math.max(0, (disconnectAt || end) - returned));
      denied.push(Math.max(0, (deniedAt || end) - returned));
      closedForGood.push(end - returned);
    }
    // 2. connect latency by number of rooms
    for (const rooms of [1, 100, 1000]) {
      const u = createIdentity();
      await bus.addUser(u.signPub, { handle: `rooms${rooms}`, kexPub: u.kexPub });
      for (let r = 0; r < rooms; r++) {
        const id = `${rooms.toString(16).padStart(4, "0")}${r.toString(16).padStart(20, "0")}`;
        await bus.store.createRoom({
          id,
          subject: `unibus.room.${id}`,
          ownerSignPub: u.signPub,
          encrypt: false,
          persist: r % 2 === 0,
          signMsgs: false,
        });
      }
      const samples: number[] = [];
      for (let i = 0; i < 200; i++) {
        const t0 = performance.now();
        const c = await connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: u });
        samples.push(performance.now() - t0);
        await c.close();
      }
      connects[rooms] = summarize(samples);
    }
  } finally {
    await api.close();
    await bus.stop();
  }
  const k = summarize(kicked);
  const d = summarize(denied);
  const g = summarize(closedForGood);
  console.log(`\nlive revocation, ${trials} trials, ms after the revoke call returned   p50      p99`);
  console.log(
    `  connection closed by the server (kick)               ${fmt(k.p50).padStart(8)} ${fmt(k.p99).padStart(8)}   (target p99 < 500)`,
  );
  console.log(
    `  first reconnect denied by the callout                ${fmt(d.p50).padStart(8)} ${fmt(d.p99).padStart(8)}`,
  );
  console.log(
    `  client gives up (closed for good)                    ${fmt(g.p50).padStart(8)} ${fmt(g.p99).padStart(8)}`,
  );
  console.log("\nconnect through the callout, by rooms the user is in      p50 ms   p99 ms");
  for (const [rooms, s] of Object.entries(connects)) {
    console.log(`  ${rooms.padStart(5)} rooms ${"".padEnd(42)} ${fmt(s.p50).padStart(8)} ${fmt(s.p99).padStart(8)}`);
  }
  console.log("  target: p99 < 20 ms at 1,000 rooms");
  console.log(
    `  -> ${await writeResult("acl", { revocation: { kicked: k, reconnectDenied: d, closedForGood: g }, connectByRooms: connects })}`,
  );
  const one = connects[1]!;
  return {
    title: `Live revocation (${trials} trials) and connect by rooms the user is in`,
    rows: [
      { name: "revoke returned to connection closed (kick)", value: k.p99, unit: "ms p99" },
      { name: "revoke returned to first reconnect denied", value: d.p99, unit: "ms p99" },
      { name: "revoke returned to client closed for good", value: g.p50, unit: "ms p50" },
      ...Object.entries(connects).map(([rooms, s]) => ({
        name: `connect through the callout, member of ${rooms} rooms`,
        value: s.p99,
        unit: "ms p99",
        baseline: "member of 1 room",
        ratio: s.p99 / one.p99,
      })),
    ],
    notes: ["Targets: kick p99 < 500 ms; connect p99 < 20 ms at 1,000 rooms."],
  };
}

if (import.meta.main) await run();
