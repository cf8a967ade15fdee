// The per-message cost of a cleartext room against raw nats.js on the room's subject,
// as CPU time of this process, which other load on the machine moves less than msg/s.
// Four lanes, 256 B messages, pipelined: each side publishing alone
// (no subscriber: what publishing costs) and publishing to a subscriber in the same
// process (publish + receive). Receive ≈ the difference.
//
//   npm run bench -- hotpath              CPU µs per message, median of interleaved rounds
//   HOTPATH_LANES="room publish + receive" node --cpu-prof bench/hotpath.ts   one lane, profiled
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { startUnibus } from "../lib/bus/unibus.ts";
import { connect, type UnibusClient } from "../lib/client/connect.ts";
import type { Room } from "../lib/client/room.ts";
import { createIdentity, loadIdentity, saveIdentity } from "../lib/crypto/identity.ts";
import type { BenchSection } from "./report.ts";
import { fmt } from "./stats.ts";

const SIZE = 256;
const N = Number(process.env.BENCH_MESSAGES ?? 100_000);
const ROUNDS = 5;
const WARMUP = 5_000;
const STALL_MS = 10_000;
const LANES = ["raw publish", "room publish", "raw publish + receive", "room publish + receive"] as const;
type LaneName = (typeof LANES)[number];

interface Job {
  natsUrl: string;
  controlUrl: string;
  ca: string;
  pubFile: string;
  subFile: string;
  roomId: string;
}

interface Peers {
  pub: UnibusClient;
  sub: UnibusClient;
  room: Room;
  reader: Room;
}

async function peers(job: Job): Promise<Peers> {
  const opts = { natsUrl: job.natsUrl, controlUrl: job.controlUrl, ca: job.ca };
  const pub = await connect({ ...opts, identity: await loadIdentity(job.pubFile) });
  const sub = await connect({ ...opts, identity: await loadIdentity(job.subFile) });
  return { pub, sub, room: await pub.openRoom(job.roomId), reader: await sub.openRoom(job.roomId) };
}

/** Sends `n` messages through `lane` and returns once the server (or the subscriber) has them all. */
async function drive(p: Peers, lane: LaneName, n: number): Promise<void> {
  const payload = crypto.randomBytes(SIZE);
  const receive = lane.endsWith("receive");
  const raw = lane.startsWith("raw");
  let got = 0;
  let allIn: () => void = () => {};
  const done = new Promise<void>((r) => {
    allIn = r;
  });
  const count = () => {
    if (++got === n) allIn();
  };
  let stop = () => {};
  if (receive && raw) {
    const s = p.sub.nc.subscribe(p.room.subject, { callback: count });
    stop = () => s.unsubscribe();
  } else if (receive) {
    const s = p.reader.subscribe({ callback: count, maxPending: 4 * n });
    stop = () => s.unsubscribe();
  }
  try {
    if (receive) await p.sub.nc.flush();
    if (raw) for (let i = 0; i < n; i++) p.pub.nc.publish(p.room.subject, payload);
    else for (let i = 0; i < n; i++) await p.room.publish(payload);
    if (!receive) return raw ? await p.pub.nc.flush() : await p.room.flush();
    let seen = -1;
    while (got < n && got !== seen) {
      seen = got;
      await Promise.race([done, sleep(STALL_MS)]);
    }
    if (got < n) throw new Error(`${lane}: ${n - got} of ${n} messages lost`);
  } finally {
    stop();
  }
}

/** CPU µs per message of `lane`, this process. */
async function cpuPerMessage(p: Peers, lane: LaneName, n: number): Promise<number> {
  const cpu0 = process.cpuUsage();
  await drive(p, lane, n);
  const cpu = process.cpuUsage(cpu0);
  return (cpu.user + cpu.system) / n;
}

/** A bus with two users and a cleartext room they share; identities in a temp dir. */
async function setUp() {
  const bus = await startUnibus();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "unibus-hotpath-"));
  const a = createIdentity();
  const b = createIdentity();
  await bus.addUser(a.signPub, { handle: "pub", kexPub: a.kexPub });
  await bus.addUser(b.signPub, { handle: "sub", kexPub: b.kexPub });
  const job: Job = {
    natsUrl: bus.natsUrl,
    controlUrl: bus.controlUrl,
    ca: bus.caPem,
    pubFile: path.join(dir, "pub.json"),
    subFile: path.join(dir, "sub.json"),
    roomId: "",
  };
  await saveIdentity(a, job.pubFile);
  await saveIdentity(b, job.subFile);
  const owner = await connect({ natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, identity: a });
  const room = await owner.createRoom({ encrypt: false });
  await room.addMember(b);
  job.roomId = room.id;
  await owner.close();
  return {
    job,
    async stop() {
      await bus.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** HOTPATH_LANES=a,b picks lanes (for a profile of one of them); all four by default. */
function lanes(): LaneName[] {
  const picked = process.env.HOTPATH_LANES?.split(",") ?? [...LANES];
  for (const l of picked) if (!(LANES as readonly string[]).includes(l)) throw new Error(`unknown lane ${l}`);
  return picked as LaneName[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export async function run(): Promise<BenchSection[]> {
  const { job, stop } = await setUp();
  const p = await peers(job);
  const cpu = new Map<LaneName, number[]>();
  try {
    for (const lane of LANES) await drive(p, lane, WARMUP);
    for (let round = 0; round < ROUNDS; round++) {
      for (const lane of lanes()) cpu.set(lane, [...(cpu.get(lane) ?? []), await cpuPerMessage(p, lane, N)]);
    }
  } finally {
    await p.pub.close();
    await p.sub.close();
    await stop();
  }
  const m = (l: LaneName) => median(cpu.get(l) ?? [Number.NaN]);
  console.log(`\ncleartext room vs raw nats.js, ${SIZE} B, pipelined, ${N} messages, median of ${ROUNDS}: µs CPU/msg`);
  for (const [lane, xs] of cpu) {
    console.log(`  ${lane.padEnd(26)} ${fmt(m(lane)).padStart(7)}   rounds ${xs.map((x) => fmt(x)).join(", ")}`);
  }
  const recvRaw = m("raw publish + receive") - m("raw publish");
  const recvRoom = m("room publish + receive") - m("room publish");
  console.log(`  receive (difference)       raw ${fmt(recvRaw)}   room ${fmt(recvRoom)}`);
  const ratio = m("raw publish + receive") / m("room publish + receive");
  console.log(`  room at ${fmt(100 * ratio, 0)} % of raw nats.js by CPU per message (publish + receive)`);
  const row = (name: string, lane: LaneName, base: LaneName) => ({
    name,
    value: m(lane),
    unit: "µs CPU/msg",
    baseline: base,
    ratio: m(lane) / m(base),
  });
  return [
    {
      title: `Hot path: CPU per message, cleartext room vs raw nats.js (${SIZE} B, pipelined, ${N} a round, median of ${ROUNDS})`,
      rows: [
        row("raw nats.js publish", "raw publish", "raw publish"),
        row("cleartext room publish", "room publish", "raw publish"),
        row("raw nats.js publish + receive", "raw publish + receive", "raw publish + receive"),
        row("cleartext room publish + receive", "room publish + receive", "raw publish + receive"),
      ],
      notes: [
        "Publisher and subscriber in one process; ratio above 100 % means more CPU than raw nats.js. Receive is the difference of the two lanes of one side.",
      ],
    },
  ];
}

if (import.meta.main) await run();
