// Connects through the auth callout vs a static nkey user in the server config:
// same binary, same TLS, same client-side signer (node:crypto), in one run.
// Besides wall time, the CPU this thread spends per connect: the client's side for the
// static user, the client's and the callout's for the bus (the callout runs here too),
// so the difference is what the callout costs — a figure a loaded machine distorts
// far less than latency.
// Then a member of 1, 100 and 1,000 rooms (SQLite, one node; KV too with
// BENCH_CONNECT_KV=1): latency, CPU per connect of this process (client + callout) and
// of nats-server (from /proc), and where the callout's time goes — the store read, the
// permissions, and the answer's encoding from scratch (the baseline) vs with the kept
// permission block (lib/auth/user-jwt.ts).
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { connect as natsConnect } from "@nats-io/transport-node";
import { nkeySigner } from "../lib/auth/authenticator.ts";
import { permissionsFor } from "../lib/auth/permissions.ts";
import { UserJwtEncoder } from "../lib/auth/user-jwt.ts";
import { startUnibus } from "../lib/bus/unibus.ts";
import { createIdentity, type Identity } from "../lib/crypto/identity.ts";
import { encodeJwt, NKeyPair } from "../lib/crypto/index.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import { NatsServerProcess } from "../lib/nats/process.ts";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../lib/tls/index.ts";
import type { BenchRow, BenchSection } from "./report.ts";
import { fmt, processCpuMs, type Summary, summarize, writeResult } from "./stats.ts";

async function measure(url: string, ca: string, id: Identity, n: number) {
  const samples: number[] = [];
  const cpu0 = process.threadCpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    const nc = await natsConnect({
      servers: url,
      tls: { ca },
      authenticator: nkeySigner(id.nkey, (d) => id.sign(d)),
      reconnect: false,
    });
    samples.push(performance.now() - s);
    await nc.close();
  }
  const rate = n / ((performance.now() - t0) / 1000);
  const cpu = process.threadCpuUsage(cpu0);
  return { rate, cpuMsPerConnect: (cpu.user + cpu.system) / 1000 / n, ...summarize(samples) };
}

interface Figures {
  rate: number;
  p50: number;
  p99: number;
  cpuMsPerConnect: number;
}

function report(n: number, s: Figures, c: Figures): BenchSection {
  console.log(`\nconnect over TLS, sequential (${n} each)     conn/s     p50 ms   p99 ms   CPU ms/connect`);
  const line = (label: string, x: Figures, extra = "") =>
    console.log(
      `  ${label.padEnd(36)} ${fmt(x.rate, 0).padStart(8)} ${fmt(x.p50).padStart(9)} ${fmt(x.p99).padStart(8)} ${fmt(x.cpuMsPerConnect).padStart(16)}${extra}`,
    );
  line("static nkey user (baseline)", s);
  line("through the auth callout", c, `   ${fmt((100 * c.rate) / s.rate, 0)}% of static`);
  const calloutCpu = c.cpuMsPerConnect - s.cpuMsPerConnect;
  console.log(`  the callout's own CPU per connect (difference): ${fmt(calloutCpu)} ms`);
  console.log("  targets: >= 50% of static, p99 < 10 ms");
  const base = "static nkey user";
  return {
    title: "Connects over TLS, sequential",
    rows: [
      { name: "static nkey user", value: s.rate, unit: "conn/s", note: "baseline" },
      { name: "through the auth callout", value: c.rate, unit: "conn/s", baseline: base, ratio: c.rate / s.rate },
      { name: "through the auth callout p50", value: c.p50, unit: "ms", baseline: base, ratio: c.p50 / s.p50 },
      { name: "through the auth callout p99", value: c.p99, unit: "ms", baseline: base, ratio: c.p99 / s.p99 },
      { name: "the callout's own CPU per connect", value: calloutCpu, unit: "ms" },
    ],
    notes: ["targets: >= 50% of static, p99 < 10 ms"],
  };
}

/** CPU milliseconds per call of a synchronous step (this thread), over `n` calls. */
function cpuPerCall(n: number, fn: () => unknown): number {
  const c0 = process.threadCpuUsage();
  for (let i = 0; i < n; i++) fn();
  const c = process.threadCpuUsage(c0);
  return (c.user + c.system) / 1000 / n;
}

interface ByRooms {
  rooms: number;
  subjects: number;
  answerBytes: number;
  connect: Summary;
  busCpuMs: number;
  natsCpuMs: number;
  listRoomsCpuMs: number;
  permissionsCpuMs: number;
  encodeScratchCpuMs: number;
  encodeKeptCpuMs: number;
}

/** Connects of a member of 1, 100 and 1,000 rooms (half of them persisted), and where the time goes. */
async function byRooms(binary: string, store: "sqlite" | "kv", n: number, allPersisted = false): Promise<ByRooms[]> {
  const bus = await startUnibus({ natsServer: binary, store });
  const out: ByRooms[] = [];
  try {
    const id = createIdentity();
    await bus.addUser(id.signPub, { handle: "bench" });
    const opts = {
      servers: bus.natsUrl,
      tls: { ca: bus.caPem },
      authenticator: nkeySigner(id.nkey, (d: Uint8Array) => id.sign(d)),
      reconnect: false,
    };
    let have = 0;
    for (const rooms of [1, 100, 1000]) {
      for (; have < rooms; have += 20) {
        await Promise.all(
          Array.from({ length: Math.min(20, rooms - have) }, (_, j) => {
            const rid = (have + j).toString(16).padStart(24, "0");
            return bus.store.createRoom({
              id: rid,
              subject: `unibus.room.${rid}`,
              ownerSignPub: id.signPub,
              encrypt: false,
              persist: allPersisted || (have + j) % 2 === 0,
              signMsgs: false,
              ownerSealedKey: null,
            });
          }),
        );
      }
      // the steps of one admission, alone
      const c0 = process.threadCpuUsage();
      for (let i = 0; i < 50; i++) await bus.store.listRoomsFor(id.signPub);
      const c1 = process.threadCpuUsage(c0);
      const grants = await bus.store.listRoomsFor(id.signPub);
      const permissions = permissionsFor(id.signPub, grants);
      const issuer = NKeyPair.random("account");
      const userNkey = NKeyPair.random("user").publicKey;
      const claims = { userNkey, serverId: "NBENCH", name: "bench", permissions, exp: 2_000_000_000 };
      const scratch = () => {
        const nats = { type: "user", ...permissions, subs: 1000, data: -1, payload: 1 << 20 };
        const user = encodeJwt({ sub: userNkey, aud: "APP", name: "bench", exp: 2_000_000_000, nats }, issuer);
        const answer = { type: "authorization_response", jwt: user };
        return new TextEncoder().encode(encodeJwt({ sub: userNkey, aud: "NBENCH", nats: answer }, issuer));
      };
      const encoder = new UserJwtEncoder({ issuer, account: "APP", subs: 1000, payload: 1 << 20 });
      const answerBytes = encoder.encode(id.signPub, claims).length;
      // connects: warm-up, then measured
      for (let i = 0; i < 10; i++) await (await natsConnect(opts)).close();
      const samples: number[] = [];
      const bus0 = process.threadCpuUsage();
      const nats0 = processCpuMs(bus.natsPid);
      for (let i = 0; i < n; i++) {
        const s = performance.now();
        const nc = await natsConnect(opts);
        samples.push(performance.now() - s);
        await nc.close();
      }
      const busCpu = process.threadCpuUsage(bus0);
      out.push({
        rooms,
        subjects: permissions.pub.allow.length + permissions.sub.allow.length,
        answerBytes,
        connect: summarize(samples),
        busCpuMs: (busCpu.user + busCpu.system) / 1000 / n,
        natsCpuMs: (processCpuMs(bus.natsPid) - nats0) / n,
        listRoomsCpuMs: (c1.user + c1.system) / 1000 / 50,
        permissionsCpuMs: cpuPerCall(50, () => permissionsFor(id.signPub, grants)),
        encodeScratchCpuMs: cpuPerCall(20, scratch),
        encodeKeptCpuMs: cpuPerCall(20, () => encoder.encode(id.signPub, claims)),
      });
    }
  } finally {
    await bus.stop();
  }
  return out;
}

function reportByRooms(title: string, n: number, figures: ByRooms[]): BenchSection {
  console.log(`\n${title} (${n} sequential connects each)`);
  console.log(
    "  rooms  subjects  answer KB   p50 ms   p99 ms   CPU ms/connect: this process  nats-server" +
      "   | store read  permissions  answer from scratch  answer kept",
  );
  const rows: BenchRow[] = [];
  const one = figures[0]!;
  for (const f of figures) {
    console.log(
      `  ${String(f.rooms).padStart(5)} ${String(f.subjects).padStart(9)} ${fmt(f.answerBytes / 1024, 0).padStart(10)} ${fmt(f.connect.p50).padStart(8)} ${fmt(f.connect.p99).padStart(8)} ${fmt(f.busCpuMs).padStart(30)} ${fmt(f.natsCpuMs).padStart(12)}` +
        `   | ${fmt(f.listRoomsCpuMs).padStart(10)} ${fmt(f.permissionsCpuMs).padStart(12)} ${fmt(f.encodeScratchCpuMs).padStart(20)} ${fmt(f.encodeKeptCpuMs).padStart(12)}`,
    );
    const vsOne = f === one ? {} : { baseline: "member of 1 room", ratio: f.connect.p99 / one.connect.p99 };
    rows.push(
      { name: `member of ${f.rooms} rooms, connect p50`, value: f.connect.p50, unit: "ms" },
      { name: `member of ${f.rooms} rooms, connect p99`, value: f.connect.p99, unit: "ms", ...vsOne },
      { name: `member of ${f.rooms} rooms, CPU per connect, bus process`, value: f.busCpuMs, unit: "ms" },
      { name: `member of ${f.rooms} rooms, CPU per connect, nats-server`, value: f.natsCpuMs, unit: "ms" },
      {
        name: `member of ${f.rooms} rooms, answer encoding with the kept permission block`,
        value: f.encodeKeptCpuMs,
        unit: "ms CPU",
        baseline: `from scratch, ${fmt(f.encodeScratchCpuMs)} ms`,
        ratio: f.encodeKeptCpuMs / f.encodeScratchCpuMs,
      },
    );
  }
  console.log("  target: connect p99 < 20 ms at 1,000 rooms");
  return { title, rows, notes: ["target: connect p99 < 20 ms at 1,000 rooms"] };
}

export async function run(n = Number(process.env.BENCH_CONNECTS ?? 500)): Promise<BenchSection[]> {
  const binary = (await resolveNatsServer()).path;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-"));
  const id = createIdentity();
  const ca = await loadOrCreateCa(path.join(dir, "tls"));
  const cert = await loadOrCreateServerCertificate(path.join(dir, "tls"), ca, { name: "server", hosts: ["127.0.0.1"] });
  const staticServer = new NatsServerProcess({
    binary,
    workDir: path.join(dir, "static"),
    config: {
      serverName: "static",
      host: "127.0.0.1",
      port: -1,
      http: { host: "127.0.0.1", port: -1 },
      tls: { certFile: cert.certFile, keyFile: cert.keyFile, timeout: 2 },
      accounts: { APP: { users: [{ nkey: id.nkey }] } },
    },
  });
  const bus = await startUnibus({ natsServer: binary });
  try {
    const ports = await staticServer.start();
    await bus.addUser(id.signPub, { handle: "bench" });
    const staticUrl = `tls://127.0.0.1:${ports.nats}`;
    // warm-up both paths
    await measure(staticUrl, ca.certPem, id, 20);
    await measure(bus.natsUrl, bus.caPem, id, 20);
    const rounds = 4;
    const st: Awaited<ReturnType<typeof measure>>[] = [];
    const co: Awaited<ReturnType<typeof measure>>[] = [];
    for (let r = 0; r < rounds; r++) {
      st.push(await measure(staticUrl, ca.certPem, id, n / rounds));
      co.push(await measure(bus.natsUrl, bus.caPem, id, n / rounds));
    }
    const pick = (xs: typeof st) => ({
      rate: xs.reduce((a, x) => a + x.rate, 0) / xs.length,
      p50: xs.map((x) => x.p50).sort((a, b) => a - b)[Math.floor(xs.length / 2)]!,
      p99: Math.max(...xs.map((x) => x.p99)),
      cpuMsPerConnect: xs.reduce((a, x) => a + x.cpuMsPerConnect, 0) / xs.length,
    });
    const s = pick(st);
    const c = pick(co);
    const section = report(n, s, c);
    await bus.stop();
    const m = Number(process.env.BENCH_CONNECT_ROOMS ?? 200);
    const sqlite = await byRooms(binary, "sqlite", m);
    const sections = [section, reportByRooms("Connect by rooms of the member, SQLite", m, sqlite)];
    // What the per-room history subject costs: every room persisted (3 subjects a room) vs half (2.5)
    const persisted = await byRooms(binary, "sqlite", m, true);
    sections.push(
      reportByRooms(
        "Connect by rooms of the member, SQLite, every room persisted (3 subjects a room, not 2.5)",
        m,
        persisted,
      ),
    );
    const kv = process.env.BENCH_CONNECT_KV === "1" ? await byRooms(binary, "kv", m) : undefined;
    if (kv) sections.push(reportByRooms("Connect by rooms of the member, KV R1", m, kv));
    const file = await writeResult("connect", {
      n,
      static: s,
      callout: c,
      ratio: c.rate / s.rate,
      byRooms: { sqlite, persisted, ...(kv ? { kv } : {}) },
    });
    console.log(`  -> ${file}`);
    return sections;
  } finally {
    await bus.stop();
    await staticServer.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await run();
