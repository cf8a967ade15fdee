// Room history layout on three nodes: one R3 stream per persisted room (what the bus does)
// against one R3 stream for every room (a subject per room, per-subject limits), measured on
// a bare three-node JetStream cluster so that only the layout differs:
//  - "creating a room": a stream create (per-room layout) vs nothing on JetStream but the
//    room's first message (shared layout); p50/p99 of the create;
//  - the three servers' resident memory and the number of RAFT groups as rooms grow;
//  - reading one room's last 10 messages (direct get by subject) among all the others.
// BENCH_STREAM_ROOMS (default 300) rooms for the per-room layout (each is a RAFT group:
// the machine decides how far it goes), BENCH_SHARED_ROOMS (default 10000) for the shared one.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import { NatsServerProcess } from "../lib/nats/process.ts";
import type { BenchRow, BenchSection } from "./report.ts";
import { fmt, freePort, summarize, writeResult } from "./stats.ts";

const PER_ROOM = Number(process.env.BENCH_STREAM_ROOMS ?? 300);
const SHARED = Number(process.env.BENCH_SHARED_ROOMS ?? 10_000);
const HISTORY_READS = 200;

async function startBareCluster(binary: string, dir: string): Promise<NatsServerProcess[]> {
  const routePorts = await Promise.all([0, 1, 2].map(() => freePort()));
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`);
  const servers = routePorts.map(
    (port, i) =>
      new NatsServerProcess({
        binary,
        workDir: path.join(dir, `n${i}`),
        readyTimeoutMs: 60_000,
        config: {
          serverName: `n${i}`,
          host: "127.0.0.1",
          port: -1,
          jetstream: { storeDir: path.join(dir, `n${i}`, "js") },
          cluster: { name: "bench", host: "127.0.0.1", port, routes },
        },
      }),
  );
  await Promise.all(servers.map(async (_s, i) => fs.mkdir(path.join(dir, `n${i}`), { recursive: true })));
  await Promise.all(servers.map((s) => s.start()));
  return servers;
}

/** Resident memory of the servers, MB (from /proc: what the kernel holds for them). */
async function rssMb(servers: NatsServerProcess[]): Promise<number> {
  let kb = 0;
  for (const s of servers) {
    const status = await fs.readFile(`/proc/${s.pid}/status`, "utf8").catch(() => "");
    kb += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  }
  return kb / 1024;
}

async function jsReady(nc: NatsConnection): Promise<JetStreamManager> {
  for (;;) {
    try {
      const jsm = await jetstreamManager(nc, { timeout: 5000 });
      await jsm.getAccountInfo();
      return jsm;
    } catch {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** A room's stream as the bus makes one (R3, file, limits per room). */
const roomStream = (i: number) => ({
  name: `ROOM_${i}`,
  subjects: [`room.${i}`],
  num_replicas: 3,
  max_bytes: 1024 * 1024,
  max_msgs: 10_000,
  allow_direct: true,
});

async function timedCreates(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await fn(i);
    ms.push(performance.now() - s);
  }
  return ms;
}

/** p50 ms of reading one room's last 10 messages by subject (direct get, newest first). */
async function historyRead(nc: NatsConnection, stream: string, subjectOf: (i: number) => string, rooms: number) {
  const jsm = await jetstreamManager(nc);
  const ms: number[] = [];
  for (let k = 0; k < HISTORY_READS; k++) {
    const subject = subjectOf((k * 7919) % rooms);
    const s = performance.now();
    let seq: number | undefined;
    for (let m = 0; m < 10; m++) {
      const got = await jsm.direct
        .getMessage(stream, seq === undefined ? { last_by_subj: subject } : { next_by_subj: subject, seq: seq + 1 })
        .catch(() => null);
      if (!got) break;
      seq = got.seq;
    }
    ms.push(performance.now() - s);
  }
  return summarize(ms);
}

/** A fresh bare cluster and a connection to its first node for `fn`, everything stopped and removed after. */
/**
 * A new room's first message. An R3 stream that was just added may not have elected its
 * leader yet, and a publish then gets no responder (nats.js says "jetstream is not
 * enabled"): sent again until the leader answers, within 10 s. What a room's creation
 * costs until its first message is stored, as the bus's createRoom waits for.
 */
async function firstPublish(js: ReturnType<typeof jetstream>, subject: string): Promise<void> {
  const until = performance.now() + 10_000;
  for (;;) {
    try {
      await js.publish(subject, new Uint8Array(256));
      return;
    } catch (err) {
      if ((err as Error).name !== "JetStreamNotEnabled" || performance.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

async function withBareCluster<T>(
  binary: string,
  fn: (c: {
    jsm: JetStreamManager;
    js: ReturnType<typeof jetstream>;
    nc: NatsConnection;
    servers: NatsServerProcess[];
  }) => Promise<T>,
): Promise<T> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-streams-"));
  const servers = await startBareCluster(binary, dir);
  const nc = await connect({ servers: `nats://127.0.0.1:${servers[0]!.ports!.nats}` });
  try {
    const jsm = await jsReady(nc);
    return await fn({ jsm, js: jetstream(nc), nc, servers });
  } finally {
    await nc.close();
    await Promise.all(servers.map((s) => s.stop()));
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<BenchSection> {
  const binary = (await resolveNatsServer()).path;
  const rows: BenchRow[] = [];
  const out: Record<string, unknown> = {};

  // One stream per room.
  await withBareCluster(binary, async ({ jsm, js, nc, servers }) => {
    const idle = await rssMb(servers);
    const creates = await timedCreates(PER_ROOM, async (i) => {
      await jsm.streams.add(roomStream(i));
      await firstPublish(js, `room.${i}`);
    });
    await new Promise((r) => setTimeout(r, 2000));
    const full = await rssMb(servers);
    const c = summarize(creates);
    const read = await historyRead(nc, "ROOM_0", () => "room.0", 1);
    const perRoom = (full - idle) / PER_ROOM;
    out.perRoom = { rooms: PER_ROOM, create: c, idleMb: idle, fullMb: full, perRoomMb: perRoom, read };
    rows.push(
      {
        name: `per-room streams: create a room (stream + first message), ${PER_ROOM} rooms`,
        value: c.p50,
        unit: "ms p50",
      },
      { name: "per-room streams: create a room", value: c.p99, unit: "ms p99" },
      {
        name: `per-room streams: 3 servers' memory at ${PER_ROOM} rooms`,
        value: full,
        unit: "MB RSS",
        note: `idle ${fmt(idle)} MB`,
      },
      { name: "per-room streams: memory per room (3 servers)", value: perRoom, unit: "MB" },
      {
        name: "per-room streams: 10,000 rooms, extrapolated",
        value: idle + perRoom * 10_000,
        unit: "MB RSS",
        note: "linear extrapolation, not measured",
      },
    );
    console.log(
      `per-room: create p50 ${fmt(c.p50)} ms p99 ${fmt(c.p99)} ms; RSS ${fmt(idle)} -> ${fmt(full)} MB (${fmt(perRoom)} MB/room)`,
    );
  });

  // One stream for every room.
  await withBareCluster(binary, async ({ jsm, js, nc, servers }) => {
    const idle = await rssMb(servers);
    await jsm.streams.add({
      name: "ROOMS",
      subjects: ["room.>"],
      num_replicas: 3,
      max_msgs_per_subject: 10_000,
      allow_direct: true,
    });
    const firsts = await timedCreates(SHARED, (i) => js.publish(`room.${i}`, new Uint8Array(256)));
    await new Promise((r) => setTimeout(r, 2000));
    const full = await rssMb(servers);
    const c = summarize(firsts);
    const read = await historyRead(nc, "ROOMS", (i) => `room.${i}`, SHARED);
    out.shared = { rooms: SHARED, firstMessage: c, idleMb: idle, fullMb: full, read };
    rows.push(
      { name: `one shared stream: a room's first message, ${SHARED} rooms`, value: c.p50, unit: "ms p50" },
      { name: "one shared stream: a room's first message", value: c.p99, unit: "ms p99" },
      {
        name: `one shared stream: 3 servers' memory at ${SHARED} rooms`,
        value: full,
        unit: "MB RSS",
        note: `idle ${fmt(idle)} MB`,
      },
      { name: `one shared stream: read a room's last 10 messages among ${SHARED}`, value: read.p50, unit: "ms p50" },
    );
    console.log(
      `shared: first message p50 ${fmt(c.p50)} ms p99 ${fmt(c.p99)} ms; RSS ${fmt(idle)} -> ${fmt(full)} MB; read p50 ${fmt(read.p50)} ms`,
    );
  });
  const file = await writeResult("streams", out);
  console.log(`  -> ${file}`);
  return {
    title: "Room history layout on three nodes (bare JetStream, R3)",
    rows,
    notes: [
      "Only the layout differs: no TLS, no auth, no unibus layer. A per-room stream is its own RAFT group on every node; the shared stream is one group whatever the number of rooms.",
    ],
  };
}
