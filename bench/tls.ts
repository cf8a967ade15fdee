// What TLS costs a pipelined publish → subscribe stream (256 B messages, publisher and
// subscriber in one process, no flush until the end), every row against bare
// nats-server without TLS in the same run: nats.js over TLS as it ships and with the
// client's CoalescingTransport, the unibus client (TLS + callout user on a room's
// subject) before and after, and what Node's own TLS socket moves in the same shape.
import { fork } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { type NatsConnection, type NodeConnectionOptions, connect as natsConnect } from "@nats-io/transport-node";
import { startUnibus } from "../lib/bus/unibus.ts";
import { connect, type UnibusClient } from "../lib/client/connect.ts";
import { connectCoalescing } from "../lib/client/transport.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import { NatsServerProcess } from "../lib/nats/process.ts";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../lib/tls/index.ts";
import type { BenchRow, BenchSection } from "./report.ts";
import { fmt, processCpuMs, summarize, writeResult } from "./stats.ts";

const N = Number(process.env.BENCH_TLS_MESSAGES ?? 100_000);
const SIZE = 256;
const ROUNDS = 3;
/** Hand the event loop back every this many publishes, so the subscriber reads while the publisher writes. */
const YIELD_EVERY = 1000;

const turn = () => new Promise<void>((r) => setImmediate(r));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** msg/s of one pipelined stream on `subject`: publish N, stop the clock when the N-th arrives. */
async function stream(pub: NatsConnection, sub: NatsConnection, subject: string): Promise<number> {
  let got = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const s = sub.subscribe(subject, {
    callback: () => {
      if (++got === N) done();
    },
  });
  await sub.flush();
  const rate = await publishAll(pub, subject, all);
  s.unsubscribe();
  return rate;
}

/** Publishes N messages pipelined and returns msg/s once `arrived` resolves. */
async function publishAll(pub: NatsConnection, subject: string, arrived: Promise<void>): Promise<number> {
  const payload = new Uint8Array(SIZE).fill(7);
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    pub.publish(subject, payload);
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await turn();
  }
  await arrived;
  return N / ((performance.now() - t0) / 1000);
}

/** A row's figures: median msg/s, and CPU per message of this process plus the server's. */
interface Measure {
  rate: number;
  clientUs: number;
  serverUs: number;
}

/**
 * A warm-up round (JIT, Go's TLS record-size ramp), then ROUNDS measured ones. CPU time is
 * reported beside msg/s because on a shared machine it moves far less than the wall clock.
 */
async function measureRounds(serverPid: number | undefined, once: () => Promise<number>): Promise<Measure> {
  await once();
  const client0 = process.cpuUsage();
  const server0 = processCpuMs(serverPid);
  const rates: number[] = [];
  for (let r = 0; r < ROUNDS; r++) rates.push(await once());
  const client = process.cpuUsage(client0);
  const msgs = ROUNDS * N;
  return {
    rate: median(rates),
    clientUs: (client.user + client.system) / msgs,
    serverUs: ((processCpuMs(serverPid) - server0) * 1000) / msgs,
  };
}

interface Certs {
  caPem: string;
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
}

async function makeCerts(dir: string): Promise<Certs> {
  const ca = await loadOrCreateCa(path.join(dir, "ca"));
  const cert = await loadOrCreateServerCertificate(path.join(dir, "server"), ca, { name: "bench" });
  return { caPem: ca.certPem, ...cert };
}

/** A bare nats-server (no auth), with or without TLS, stopped by the returned stop(). */
async function startBare(binary: string, dir: string, certs: Certs, withTls: boolean) {
  const server = new NatsServerProcess({
    binary,
    workDir: dir,
    config: {
      serverName: "bench",
      host: "127.0.0.1",
      port: -1,
      ...(withTls ? { tls: { certFile: certs.certFile, keyFile: certs.keyFile } } : {}),
    },
  });
  const ports = await server.start();
  const opts = {
    servers: `${withTls ? "tls" : "nats"}://127.0.0.1:${ports.nats}`,
    ...(withTls ? { tls: { ca: certs.caPem } } : {}),
  };
  return { port: ports.nats, opts, pid: server.pid, stop: () => server.stop() };
}

/** Bare nats-server: pub and sub each on their own nats.js connection made by `dial`. */
async function bareRow(
  binary: string,
  dir: string,
  certs: Certs,
  withTls: boolean,
  dial: (opts: NodeConnectionOptions) => Promise<NatsConnection>,
): Promise<Measure> {
  const bare = await startBare(binary, dir, certs, withTls);
  const pub = await dial(bare.opts);
  const sub = await dial(bare.opts);
  try {
    return await measureRounds(bare.pid, () => stream(pub, sub, "bench.tls"));
  } finally {
    await pub.close();
    await sub.close();
    await bare.stop();
  }
}

/**
 * What Node's TLS socket costs for nats-server's records with no NATS client on top: a
 * subscriber speaking the protocol by hand (INFO, STARTTLS, CONNECT, SUB) that only counts
 * bytes, fed by a nats.js publisher. The gap between this row and the Node TLS floor is
 * the price of the server's small records alone.
 */
async function rawSubscriberRow(binary: string, dir: string, certs: Certs): Promise<Measure> {
  const bare = await startBare(binary, dir, certs, true);
  const pub = await natsConnect(bare.opts);
  const socket = await rawTlsSubscriber(bare.port, certs.caPem, "bench.tls");
  try {
    const perMsg = `MSG bench.tls 1 ${SIZE}\r\n`.length + SIZE + 2;
    return await measureRounds(bare.pid, async () => {
      let got = 0;
      let done!: () => void;
      const all = new Promise<void>((resolve) => (done = resolve));
      const onData = (b: Buffer) => {
        got += b.length;
        if (got >= N * perMsg) done();
      };
      socket.on("data", onData);
      const rate = await publishAll(pub, "bench.tls", all);
      socket.off("data", onData);
      return rate;
    });
  } finally {
    socket.destroy();
    await pub.close();
    await bare.stop();
  }
}

async function rawTlsSubscriber(port: number, ca: string, subject: string): Promise<tls.TLSSocket> {
  const tcp = net.connect({ host: "127.0.0.1", port });
  await new Promise((resolve) => tcp.once("data", resolve)); // INFO
  const socket = tls.connect({ socket: tcp, ca, servername: "localhost" });
  await new Promise((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
  socket.write(`CONNECT {"verbose":false,"pedantic":false,"tls_required":true}\r\nSUB ${subject} 1\r\nPING\r\n`);
  await new Promise((resolve) => socket.once("data", resolve)); // PONG
  return socket;
}

/** The unibus client over TLS with its callout user, raw publish on a cleartext room's subject. */
async function unibusRow(coalesceReads: boolean): Promise<Measure> {
  const bus = await startUnibus();
  const a = createIdentity();
  const b = createIdentity();
  await bus.addUser(a.signPub, { handle: "pub", kexPub: a.kexPub });
  await bus.addUser(b.signPub, { handle: "sub", kexPub: b.kexPub });
  const opts = { natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, coalesceReads };
  let pub: UnibusClient | undefined;
  let sub: UnibusClient | undefined;
  try {
    pub = await connect({ ...opts, identity: a });
    sub = await connect({ ...opts, identity: b });
    const room = await pub.createRoom({ encrypt: false });
    const back = (async () => {
      for await (const s of sub.nc.status()) if (s.type === "reconnect") return;
    })();
    await room.addMember(b);
    await back;
    const [p, q] = [pub.nc, sub.nc];
    return await measureRounds(bus.natsPid, () => stream(p, q, room.subject));
  } finally {
    await pub?.close();
    await sub?.close();
    await bus.stop();
  }
}

/** Echoes every byte back over TLS or TCP; runs as a child process, as nats-server does. */
function echoServer(): void {
  const certs = JSON.parse(process.env.BENCH_ECHO ?? "{}") as Certs & { tls: boolean };
  const echo = (s: net.Socket) => s.pipe(s);
  const server = certs.tls
    ? tls.createServer({ cert: certs.certPem, key: certs.keyPem }, echo)
    : net.createServer(echo);
  server.listen(0, "127.0.0.1", () => process.send?.((server.address() as net.AddressInfo).port));
  process.on("disconnect", () => process.exit(0));
}

/**
 * Node's own floor in the same shape: one process writes N × 256 B in 32 KB writes (nats.js's
 * flush size) and reads them back through an echo child; msg/s until the last byte is back.
 */
async function nodeFloorRow(certs: Certs, withTls: boolean): Promise<Measure> {
  const child = fork(import.meta.filename, ["--echo"], {
    env: { ...process.env, BENCH_ECHO: JSON.stringify({ ...certs, tls: withTls }) },
    stdio: "inherit",
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once("message", (m) => resolve(Number(m)));
      child.once("exit", (code) => reject(new Error(`echo server exited (${code})`)));
    });
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = withTls
        ? tls.connect({ host: "127.0.0.1", port, ca: certs.caPem, servername: "localhost" }, () => resolve(s))
        : net.connect({ host: "127.0.0.1", port }, () => resolve(s));
      s.once("error", reject);
    });
    socket.setNoDelay(true);
    const measure = await measureRounds(child.pid, () => echoStream(socket));
    socket.destroy();
    return measure;
  } finally {
    child.kill();
  }
}

async function echoStream(socket: net.Socket): Promise<number> {
  const total = N * SIZE;
  const perWrite = Math.floor((32 * 1024) / SIZE);
  const chunk = Buffer.alloc(perWrite * SIZE, 7);
  let got = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const onData = (b: Buffer) => {
    got += b.length;
    if (got >= total) done();
  };
  socket.on("data", onData);
  const t0 = performance.now();
  for (let sent = 0; sent < N; sent += perWrite) {
    const n = Math.min(perWrite, N - sent);
    socket.write(n === perWrite ? chunk : chunk.subarray(0, n * SIZE));
    if (sent % YIELD_EVERY < perWrite) await turn();
  }
  await all;
  socket.off("data", onData);
  return N / ((performance.now() - t0) / 1000);
}

async function throughputSection(binary: string, dir: string, certs: Certs): Promise<BenchSection> {
  const measured: Array<[string, () => Promise<Measure>]> = [
    ["bare nats-server, plain TCP (nats.js)", () => bareRow(binary, dir, certs, false, natsConnect)],
    ["bare nats-server, TLS (nats.js transport as shipped)", () => bareRow(binary, dir, certs, true, natsConnect)],
    ["bare nats-server, TLS (CoalescingTransport)", () => bareRow(binary, dir, certs, true, connectCoalescing)],
    ["bare nats-server, TLS, raw socket subscriber (no NATS client)", () => rawSubscriberRow(binary, dir, certs)],
    ["unibus client, TLS + callout user, before (coalesceReads: false)", () => unibusRow(false)],
    ["unibus client, TLS + callout user, after (default)", () => unibusRow(true)],
    ["Node TCP socket floor (echo child, 32 KB writes)", () => nodeFloorRow(certs, false)],
    ["Node TLS socket floor (echo child, 32 KB writes)", () => nodeFloorRow(certs, true)],
  ];
  const rows: BenchRow[] = [];
  for (const [name, measure] of measured) {
    const m = await measure();
    const note = `CPU per message: client ${fmt(m.clientUs, 1)} µs + server ${fmt(m.serverUs, 1)} µs`;
    rows.push({ name, value: m.rate, unit: "msg/s", note });
  }
  const plain = rows[0]!;
  for (const r of rows) {
    r.baseline = plain.name;
    r.ratio = r.value / plain.value;
  }
  return {
    title: `TLS cost, pipelined publish → subscribe, ${SIZE} B, ${N} messages, median of ${ROUNDS}`,
    rows,
    notes: ["target: unibus client over TLS >= 50 % of bare plain TCP", "figures and cause: docs/performance-tls.md"],
  };
}

/** What waiting one event-loop turn before parsing costs a request/reply: p50 and p99 over TLS, both transports. */
async function latencySection(binary: string, dir: string, certs: Certs): Promise<BenchSection> {
  const bare = await startBare(binary, dir, certs, true);
  const rows: BenchRow[] = [];
  try {
    for (const [name, dial] of [
      ["nats.js transport as shipped", natsConnect],
      ["CoalescingTransport", connectCoalescing],
    ] as const) {
      const { p50, p99 } = await requestLatency(await dial(bare.opts), await dial(bare.opts));
      rows.push({ name: `request/reply p50, ${name}`, value: p50, unit: "ms" });
      rows.push({ name: `request/reply p99, ${name}`, value: p99, unit: "ms" });
    }
  } finally {
    await bare.stop();
  }
  for (const [i, r] of rows.entries()) {
    const base = rows[i % 2]!;
    r.baseline = base.name;
    r.ratio = r.value / base.value;
  }
  return { title: "TLS request/reply latency, 64 B, 2,000 sequential requests, bare nats-server", rows };
}

async function requestLatency(a: NatsConnection, b: NatsConnection): Promise<{ p50: number; p99: number }> {
  try {
    b.subscribe("bench.echo", {
      callback: (_err, m) => {
        m.respond(m.data);
      },
    });
    await b.flush();
    const samples: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const t0 = performance.now();
      await a.request("bench.echo", new Uint8Array(64));
      samples.push(performance.now() - t0);
    }
    const s = summarize(samples.slice(200)); // the first 200 warm up
    return { p50: s.p50, p99: s.p99 };
  } finally {
    await a.close();
    await b.close();
  }
}

function print(section: BenchSection): void {
  console.log(`\n${section.title}`);
  for (const r of section.rows) {
    const ratio = `${fmt(100 * r.ratio!, 0).padStart(4)} % of ${r.unit === "msg/s" ? "plain" : "nats.js"}`;
    console.log(
      `  ${r.name.padEnd(66)} ${fmt(r.value, r.unit === "ms" ? 3 : 0).padStart(8)} ${r.unit}  ${ratio}  ${r.note ?? ""}`,
    );
  }
}

export async function run(): Promise<BenchSection[]> {
  const binary = (await resolveNatsServer({ network: false })).path;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-tls-"));
  const sections: BenchSection[] = [];
  try {
    const certs = await makeCerts(dir);
    sections.push(await throughputSection(binary, dir, certs));
    sections.push(await latencySection(binary, dir, certs));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  for (const s of sections) print(s);
  console.log(`  -> ${await writeResult("tls", { n: N, size: SIZE, sections })}`);
  return sections;
}

if (process.argv.includes("--echo")) echoServer();
else if (import.meta.main) await run();
