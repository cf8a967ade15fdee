// Publish → receive of 256 B messages, publisher and subscriber in one process, every
// row publishing pipelined (no flush per batch) until every message arrived; the
// median of 3 interleaved rounds. Rows: a bare nats-server (no TLS, no auth); raw
// nats.js on a room's subject through the bus (TLS, callout user) — the 100 % baseline;
// cleartext, encrypted, and encrypted + signed rooms; the same cleartext room through
// publishMany; Mosquitto 2 with TLS and an ACL file when it is at hand. Then latency
// with one message in flight, and what the crypto alone allows.
import crypto from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type NatsConnection, connect as natsConnect } from "@nats-io/transport-node";
import { startUnibus } from "../lib/bus/unibus.ts";
import type { UnibusClient } from "../lib/client/connect.ts";
import type { Room } from "../lib/client/room.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import { NatsServerProcess } from "../lib/nats/process.ts";
import { startMosquitto } from "./mosquitto.ts";
import { pubSubPair } from "./pair.ts";
import type { BenchRow, BenchSection } from "./report.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

const N = Number(process.env.BENCH_MESSAGES ?? 50_000);
const ROUNDS = 3;
const SIZE = 256;
/** A row that receives nothing new for this long has lost messages: it is reported, not waited for. */
const STALL_MS = 10_000;
const PUBLISH_MANY_BATCH = 100;

/** One way to move messages: subscribe (counting arrivals), then publish n, pipelined. */
interface Lane {
  name: string;
  /** Messages a round: fewer for rows held to their crypto's pace, so a round stays seconds long. */
  messages?: number;
  subscribe(onMessage: () => void): Promise<() => void>;
  send(payload: Uint8Array, n: number): void | Promise<void>;
}

interface Measured {
  rate: number;
  lost: number;
  /** CPU time of this process (publisher and subscriber) per message, µs: what other load on the machine barely moves. */
  cpu: number;
}

/** Publishes n through `lane` and times until the last arrives (or arrivals stall). */
async function throughput(lane: Lane, n: number): Promise<Measured> {
  let got = 0;
  let allIn: () => void = () => {};
  const done = new Promise<void>((r) => {
    allIn = r;
  });
  const stop = await lane.subscribe(() => {
    if (++got === n) allIn();
  });
  try {
    const payload = crypto.randomBytes(SIZE);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await lane.send(payload, n);
    let seen = -1;
    while (got < n && got !== seen) {
      seen = got;
      await Promise.race([done, sleep(STALL_MS)]);
    }
    const ms = performance.now() - t0 - (got < n ? STALL_MS : 0);
    const cpu = process.cpuUsage(cpu0);
    return { rate: got / (ms / 1000), lost: n - got, cpu: (cpu.user + cpu.system) / Math.max(1, got) };
  } finally {
    stop();
  }
}

/** One message in flight at a time: p50 and p99 of the round trip, in ms. */
async function latency(lane: Lane, rounds = 500): Promise<{ p50: number; p99: number }> {
  let arrived: () => void = () => {};
  const stop = await lane.subscribe(() => arrived());
  const payload = crypto.randomBytes(SIZE);
  const samples: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const t0 = performance.now();
      const next = new Promise<void>((r) => {
        arrived = r;
      });
      await lane.send(payload, 1);
      await Promise.race([next, sleep(STALL_MS)]);
      samples.push(performance.now() - t0);
    }
  } finally {
    stop();
  }
  const s = summarize(samples);
  return { p50: s.p50, p99: s.p99 };
}

function natsLane(name: string, pub: NatsConnection, sub: NatsConnection, subject: string): Lane {
  return {
    name,
    async subscribe(onMessage) {
      const s = sub.subscribe(subject, { callback: () => onMessage() });
      await sub.flush();
      return () => s.unsubscribe();
    },
    send(payload, n) {
      for (let i = 0; i < n; i++) pub.publish(subject, payload);
    },
  };
}

function roomLane(name: string, room: Room, reader: Room, readerNc: NatsConnection, many = false): Lane {
  return {
    name,
    ...(room.signMsgs ? { messages: Math.ceil(N / 10) } : {}),
    async subscribe(onMessage) {
      // room enough for a whole pipelined burst: what is measured is speed, not the slow-reader guard
      const s = reader.subscribe({ callback: () => onMessage(), maxPending: 4 * N });
      await readerNc.flush();
      return () => s.unsubscribe();
    },
    async send(payload, n) {
      if (!many) {
        for (let i = 0; i < n; i++) await room.publish(payload);
        return;
      }
      for (let i = 0; i < n; i += PUBLISH_MANY_BATCH) {
        await room.publishMany(Array.from({ length: Math.min(PUBLISH_MANY_BATCH, n - i) }, () => payload));
      }
    },
  };
}

/** A bare nats-server: no TLS, no auth, nats.js at both ends. */
async function bareServer() {
  const binary = (await resolveNatsServer()).path;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-"));
  const server = new NatsServerProcess({
    binary,
    workDir: dir,
    config: { serverName: "bare", host: "127.0.0.1", port: -1, http: { host: "127.0.0.1", port: -1 } },
  });
  const ports = await server.start();
  const pub = await natsConnect({ servers: `nats://127.0.0.1:${ports.nats}` });
  const sub = await natsConnect({ servers: `nats://127.0.0.1:${ports.nats}` });
  return {
    lane: natsLane("bare nats-server, no TLS, no auth", pub, sub, "bench.bare"),
    async stop() {
      await pub.close();
      await sub.close();
      await server.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** A room of each kind, owned by `pub` and opened by `sub`, ready to deliver. */
async function rooms(pub: UnibusClient, sub: UnibusClient) {
  const made: Record<string, [Room, Room]> = {};
  for (const [name, o] of [
    ["cleartext room", { encrypt: false }],
    ["encrypted room", { encrypt: true }],
    ["encrypted + signed room", { encrypt: true, signMsgs: true }],
  ] as const) {
    const room = await pub.createRoom(o);
    await room.addMember(sub.identity);
    made[name] = [room, await sub.openRoom(room.id)];
  }
  return made;
}

/** Sends until one message gets through: the reader's connection has its new permissions. */
async function ready(lane: Lane): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    let got = false;
    const stop = await lane.subscribe(() => {
      got = true;
    });
    await lane.send(Buffer.alloc(SIZE), 1);
    await sleep(100);
    stop();
    if (got) return;
  }
  throw new Error(`${lane.name}: no message arrived in 5 s`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function cryptoLimits(size: number) {
  const key = crypto.createSecretKey(crypto.randomBytes(32));
  const payload = crypto.randomBytes(size);
  const rounds = 20_000;
  let t0 = performance.now();
  for (let i = 0; i < rounds; i++) {
    const nonce = crypto.randomBytes(12);
    const c = crypto.createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    const ct = Buffer.concat([c.update(payload), c.final()]);
    const tag = c.getAuthTag();
    const d = crypto.createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    d.setAuthTag(tag);
    Buffer.concat([d.update(ct), d.final()]);
  }
  const aead = rounds / ((performance.now() - t0) / 1000);
  const id = createIdentity();
  const pub = crypto.createPublicKey({
    key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), Buffer.from(id.signPub, "hex")]),
    format: "der",
    type: "spki",
  });
  t0 = performance.now();
  for (let i = 0; i < rounds / 4; i++) {
    const sig = id.sign(payload);
    crypto.verify(null, payload, pub, sig);
  }
  const sign = rounds / 4 / ((performance.now() - t0) / 1000);
  return { aead, sign };
}

const BASELINE = "raw nats.js on the room's subject";

export async function run(): Promise<BenchSection[]> {
  const bus = await startUnibus();
  const bare = await bareServer();
  const mosquitto = await startMosquitto();
  const { pub, sub } = await pubSubPair(bus);
  const rates = new Map<string, Measured[]>();
  const lat = new Map<string, { p50: number; p99: number }>();
  const notes: string[] = [];
  try {
    const r = await rooms(pub, sub);
    const [clear, clearReader] = r["cleartext room"]!;
    const lanes: Lane[] = [bare.lane, natsLane(BASELINE, pub.nc, sub.nc, clear.subject)];
    for (const [name, [room, reader]] of Object.entries(r)) lanes.push(roomLane(name, room, reader, sub.nc));
    lanes.push(
      roomLane(`cleartext room, publishMany (${PUBLISH_MANY_BATCH} a call)`, clear, clearReader, sub.nc, true),
    );
    if (typeof mosquitto === "string") notes.push(`Mosquitto row skipped: ${mosquitto}.`);
    else {
      const { pub: mp, sub: ms, topic } = mosquitto;
      lanes.push({
        name: `Mosquitto ${mosquitto.version}, TLS + ACL file, mqtt.js`,
        async subscribe(onMessage) {
          ms.on("message", () => onMessage());
          return () => void ms.removeAllListeners("message");
        },
        send(payload, n) {
          for (let i = 0; i < n; i++) mp.publish(topic, payload, { qos: 0 });
        },
      });
    }
    for (const lane of lanes) {
      await ready(lane);
      await throughput(lane, Math.min(lane.messages ?? N, 5000)); // warm-up: JIT, buffers
    }
    for (let round = 0; round < ROUNDS; round++) {
      // interleaved so drift on a shared machine hits every row alike
      for (const lane of lanes) {
        rates.set(lane.name, [...(rates.get(lane.name) ?? []), await throughput(lane, lane.messages ?? N)]);
      }
    }
    for (const lane of lanes.slice(1)) lat.set(lane.name, await latency(lane));
  } finally {
    await pub.close();
    await sub.close();
    await bus.stop();
    await bare.stop();
    if (typeof mosquitto !== "string") await mosquitto.stop();
  }
  return report(rates, lat, notes);
}

function report(
  rates: Map<string, Measured[]>,
  lat: Map<string, { p50: number; p99: number }>,
  notes: string[],
): BenchSection[] {
  const base = median(rates.get(BASELINE)!.map((m) => m.rate));
  const baseCpu = median(rates.get(BASELINE)!.map((m) => m.cpu));
  const cpuRows: BenchRow[] = [];
  const limits = cryptoLimits(SIZE);
  const rows: BenchRow[] = [];
  console.log(
    `\npublish → receive, ${SIZE} B, pipelined, ${N} messages, median of ${ROUNDS}     msg/s   vs raw   µs CPU/msg`,
  );
  for (const [name, ms] of rates) {
    const value = median(ms.map((m) => m.rate));
    const lost = Math.max(...ms.map((m) => m.lost));
    const vsCrypto = name.startsWith("encrypted room")
      ? `; ${fmt((100 * value) / limits.aead, 0)} % of AEAD seal+open alone`
      : name.startsWith("encrypted + signed")
        ? `; ${fmt((100 * value) / limits.sign, 0)} % of sign+verify alone`
        : "";
    const note = `rounds ${ms.map((m) => fmt(m.rate, 0)).join(", ")}${lost ? `; ${lost} lost` : ""}${vsCrypto}`;
    rows.push({ name, value, unit: "msg/s", baseline: BASELINE, ratio: value / base, note });
    const cpu = median(ms.map((m) => m.cpu));
    cpuRows.push({ name, value: cpu, unit: "µs CPU/msg", baseline: BASELINE, ratio: cpu / baseCpu });
    console.log(
      `  ${name.padEnd(58)} ${fmt(value, 0).padStart(8)} ${fmt((100 * value) / base, 0).padStart(5)} % ${fmt(cpu, 1).padStart(9)}`,
    );
  }
  for (const n of notes) console.log(`  ${n}`);
  const baseLat = lat.get(BASELINE)!;
  const latRows: BenchRow[] = [];
  console.log("\none message in flight, 500 round trips                         p50 ms   p99 ms");
  for (const [name, l] of lat) {
    latRows.push({ name, value: l.p50, unit: "ms p50", baseline: BASELINE, ratio: l.p50 / baseLat.p50 });
    latRows.push({ name, value: l.p99, unit: "ms p99", baseline: BASELINE, ratio: l.p99 / baseLat.p99 });
    console.log(`  ${name.padEnd(58)} ${fmt(l.p50).padStart(8)} ${fmt(l.p99).padStart(8)}`);
  }
  console.log(
    `  crypto alone, ${SIZE} B: AEAD seal+open ${fmt(limits.aead, 0)}/s; sign+verify ${fmt(limits.sign, 0)}/s`,
  );
  console.log(
    "  targets: cleartext room >= 90 % of raw; encrypted >= 80 % of AEAD alone; signed >= 80 % of sign+verify",
  );
  void writeResult("messaging", { n: N, rounds: ROUNDS, size: SIZE, rows, latency: latRows, cryptoLimits: limits });
  return [
    {
      title: `Messaging: publish → receive, ${SIZE} B, pipelined, median of ${ROUNDS} (${N} messages a round, signed rooms ${Math.ceil(N / 10)})`,
      rows,
      notes: [...notes, "Publisher and subscriber in one process; target: cleartext room >= 90 % of the baseline."],
    },
    {
      title: "Messaging: CPU time per message in the benchmark's process (same rounds)",
      rows: cpuRows,
      notes: [
        "Publisher and subscriber together, median of the rounds; the brokers' own CPU is not in it. Less moved by other load on a shared machine than msg/s; ratio above 100 % means more CPU than raw nats.js.",
      ],
    },
    {
      title: `Messaging: one message in flight (${SIZE} B, 500 round trips)`,
      rows: latRows,
      notes: ["Ratio above 100 % means slower than raw nats.js on the same subject."],
    },
    {
      title: `Crypto alone (${SIZE} B, no messaging)`,
      rows: [
        { name: "ChaCha20-Poly1305 seal + open", value: limits.aead, unit: "ops/s" },
        { name: "Ed25519 sign + verify", value: limits.sign, unit: "ops/s" },
      ],
    },
  ];
}

if (import.meta.main) await run();
