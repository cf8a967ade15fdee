// Acknowledged publish into a persisted room against the plain publish, in the same run:
// 256 B messages into one persisted encrypted room, the median of 3 interleaved rounds.
// The baseline publishes pipelined until a reader in the same process has every message
// (what the messaging bench measures); the ack rows until every acknowledgement — the
// stream's PubAck and the read-back that checks it — has resolved.
import crypto from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { startUnibus } from "../lib/bus/unibus.ts";
import type { Room } from "../lib/client/room.ts";
import { pubSubPair } from "./pair.ts";
import type { BenchRow, BenchSection } from "./report.ts";
import { fmt, writeResult } from "./stats.ts";

const N = Number(process.env.BENCH_MESSAGES ?? 20_000);
/** Awaited one by one, each message is a round trip or two: fewer, so a round stays seconds long. */
const N_AWAITED = Math.ceil(N / 10);
const ROUNDS = 3;
const SIZE = 256;
const BATCH = 100;
const BASELINE = "publish, pipelined (until the reader has all)";

interface Lane {
  name: string;
  messages: number;
  run(room: Room, reader: Room, payload: Uint8Array, n: number): Promise<void>;
}

const lanes: Lane[] = [
  {
    name: BASELINE,
    messages: N,
    async run(room, reader, payload, n) {
      let got = 0;
      let all: () => void = () => {};
      const done = new Promise<void>((r) => {
        all = r;
      });
      const sub = reader.subscribe({ callback: () => void (++got === n && all()), maxPending: 4 * n });
      try {
        await sleep(50); // the subscription is on the server
        for (let i = 0; i < n; i++) await room.publish(payload);
        await Promise.race([done, sleep(30_000)]);
        if (got < n) throw new Error(`${n - got} of ${n} messages did not arrive`);
      } finally {
        sub.unsubscribe();
      }
    },
  },
  {
    name: "publish({ ack: true }), awaited one by one",
    messages: N_AWAITED,
    async run(room, _reader, payload, n) {
      for (let i = 0; i < n; i++) await room.publish(payload, { ack: true });
    },
  },
  {
    name: `publishMany({ ack: true }), ${BATCH} a call`,
    messages: N,
    async run(room, _reader, payload, n) {
      for (let i = 0; i < n; i += BATCH) {
        await room.publishMany(
          Array.from({ length: Math.min(BATCH, n - i) }, () => payload),
          { ack: true },
        );
      }
    },
  },
];

export async function run(): Promise<BenchSection[]> {
  const bus = await startUnibus();
  const { pub, sub } = await pubSubPair(bus);
  const rates = new Map<string, number[]>();
  try {
    const room = await pub.createRoom({ encrypt: true, persist: true });
    await room.addMember(sub.identity);
    const reader = await sub.openRoom(room.id);
    await sleep(500); // the reader's connection holds the room's subject
    const payload = crypto.randomBytes(SIZE);
    for (const lane of lanes) await lane.run(room, reader, payload, Math.min(lane.messages, 2000)); // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      for (const lane of lanes) {
        const t0 = performance.now();
        await lane.run(room, reader, payload, lane.messages);
        const rate = lane.messages / ((performance.now() - t0) / 1000);
        rates.set(lane.name, [...(rates.get(lane.name) ?? []), rate]);
      }
    }
  } finally {
    await pub.close();
    await sub.close();
    await bus.stop();
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const base = median(rates.get(BASELINE)!);
  const rows: BenchRow[] = [];
  console.log(`\npersisted encrypted room, ${SIZE} B, median of ${ROUNDS}                    msg/s   vs plain`);
  for (const [name, rs] of rates) {
    const value = median(rs);
    rows.push({
      name,
      value,
      unit: "msg/s",
      baseline: BASELINE,
      ratio: value / base,
      note: `rounds ${rs.map((r) => fmt(r, 0)).join(", ")}`,
    });
    console.log(`  ${name.padEnd(58)} ${fmt(value, 0).padStart(8)} ${fmt((100 * value) / base, 0).padStart(5)} %`);
  }
  void writeResult("ack", { n: N, awaited: N_AWAITED, rounds: ROUNDS, size: SIZE, rows });
  return [
    {
      title: `Acknowledged publish into a persisted encrypted room, ${SIZE} B, median of ${ROUNDS} (${N} messages a round, ${N_AWAITED} awaited one by one)`,
      rows,
      notes: [
        "An acknowledged message costs the stream's PubAck and a read-back by direct get that checks it; the plain publish is the baseline.",
      ],
    },
  ];
}

if (import.meta.main) await run();
