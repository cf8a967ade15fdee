// A legitimate member's signed request (POST /v1/rooms, with a body) while strangers
// and another member attack the control plane, in one run: idle bodies from one
// address and from 64 loopback addresses, trickling bodies, a TLS-handshake flood,
// a member trickling blob uploads, and a member flooding signed requests (per-identity
// limit, nonce share). Each
// phase's p50/p99 is printed as a ratio of the idle baseline measured first.
import net from "node:net";
import tls from "node:tls";
import { startUnibus, type Unibus } from "../lib/bus/unibus.ts";
import { ControlClient } from "../lib/client/control.ts";
import { sha256Hex, signRequest } from "../lib/crypto/canonical.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import type { BenchSection } from "./report.ts";
import { fmt, type Summary, summarize, writeResult } from "./stats.ts";

const MiB = 1024 * 1024;

interface Attack {
  name: string;
  start(bus: Unibus): Promise<() => void>;
}

function port(bus: Unibus): number {
  return Number(new URL(bus.controlUrl).port);
}

/** TLS sockets from `addresses` that send a POST declaring `length` bytes, then `drip` (or nothing). */
async function bodies(bus: Unibus, addresses: string[], length: number, dripMs?: number): Promise<() => void> {
  const sockets = await Promise.all(
    addresses.map(
      (localAddress) =>
        new Promise<tls.TLSSocket>((resolve) => {
          const raw = net.connect({ host: "127.0.0.1", port: port(bus), localAddress });
          const s = tls.connect({ socket: raw, host: "127.0.0.1", ca: bus.caPem }, () => {
            s.write(`POST /v1/rooms HTTP/1.1\r\nhost: x\r\ncontent-length: ${length}\r\n\r\n`, () => resolve(s));
          });
          s.on("error", () => {});
        }),
    ),
  );
  const timer = dripMs ? setInterval(() => sockets.forEach((s) => void s.write("x")), dripMs) : undefined;
  return () => {
    clearInterval(timer);
    for (const s of sockets) s.destroy();
  };
}

const range = (n: number, address: (i: number) => string) => Array.from({ length: n }, (_, i) => address(i));

const ATTACKS: Attack[] = [
  {
    name: "64 idle 1 MiB bodies, one address",
    start: (bus) =>
      bodies(
        bus,
        range(64, () => "127.0.0.2"),
        MiB,
      ),
  },
  {
    name: "128 idle 1 MiB bodies, 64 addresses",
    start: (bus) =>
      bodies(
        bus,
        range(128, (i) => `127.0.0.${10 + (i % 64)}`),
        MiB,
      ),
  },
  {
    name: "64 trickling bodies (1 B/100 ms), 16 addr",
    start: (bus) =>
      bodies(
        bus,
        range(64, (i) => `127.0.0.${80 + (i % 16)}`),
        4096,
        100,
      ),
  },
  {
    name: "handshake flood: 400 silent + 50 stalled",
    start: async (bus) => {
      const sockets = range(400, (i) => `127.0.0.${100 + (i % 4)}`).map((localAddress) =>
        net.connect({ host: "127.0.0.1", port: port(bus), localAddress }).on("error", () => {}),
      );
      for (const localAddress of range(50, () => "127.0.0.110")) {
        const s = net.connect({ host: "127.0.0.1", port: port(bus), localAddress }, () => {
          s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03]));
        });
        sockets.push(s.on("error", () => {}));
      }
      return () => {
        for (const s of sockets) s.destroy();
      };
    },
  },
  {
    name: "a member's 32 trickling blob uploads",
    start: async (bus) => {
      const mallory = createIdentity();
      await bus.addUser(mallory.signPub, { handle: `uploader${Date.now()}`, kexPub: mallory.kexPub });
      const api = new ControlClient({ baseUrl: bus.controlUrl, ca: bus.caPem, identity: mallory });
      const room = await api.request<{ id: string }>("POST", "/v1/rooms", { encrypt: false });
      await api.close();
      const uri = `/v1/rooms/${room.id}/blobs`;
      const sockets = await Promise.all(
        range(32, () => uri).map(
          (path) =>
            new Promise<tls.TLSSocket>((resolve) => {
              // Signed for a 1 MiB body of zeros, then sent a byte at a time.
              const headers = signRequest(mallory, {
                method: "PUT",
                uri: path,
                bodySha256: sha256Hex(Buffer.alloc(MiB)),
              });
              const head = Object.entries({ ...headers, "content-type": "application/octet-stream" })
                .map(([k, v]) => `${k}: ${v}\r\n`)
                .join("");
              const s = tls.connect({ host: "127.0.0.1", port: port(bus), ca: bus.caPem }, () => {
                s.write(`PUT ${path} HTTP/1.1\r\nhost: x\r\ncontent-length: ${MiB}\r\n${head}\r\n`, () => resolve(s));
              });
              s.on("error", () => {});
            }),
        ),
      );
      const timer = setInterval(() => sockets.forEach((s) => void s.write(Buffer.alloc(1))), 100);
      return () => {
        clearInterval(timer);
        for (const s of sockets) s.destroy();
      };
    },
  },
  {
    name: "another member floods signed requests",
    start: async (bus) => {
      const mallory = createIdentity();
      await bus.addUser(mallory.signPub, { handle: `mallory${Date.now()}`, kexPub: mallory.kexPub });
      const api = new ControlClient({ baseUrl: bus.controlUrl, ca: bus.caPem, identity: mallory });
      let on = true;
      const worker = async () => {
        while (on) await api.request("GET", "/v1/users").catch(() => {});
      };
      const workers = Array.from({ length: 8 }, worker);
      return () => {
        on = false;
        void Promise.all(workers).then(() => api.close());
      };
    },
  },
];

/** `n` signed requests, paced under the default per-identity limit (50/s). */
async function measure(api: ControlClient, n: number): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await api.request("POST", "/v1/rooms", { encrypt: false });
    samples.push(performance.now() - s);
    await new Promise((r) => setTimeout(r, 40));
  }
  return samples;
}

export async function run(n = Number(process.env.BENCH_REQUESTS ?? 100)): Promise<BenchSection> {
  const bus = await startUnibus({ natsServer: (await resolveNatsServer()).path });
  try {
    const alice = createIdentity();
    await bus.addUser(alice.signPub, { handle: "alice", kexPub: alice.kexPub });
    const api = new ControlClient({ baseUrl: bus.controlUrl, ca: bus.caPem, identity: alice });
    await measure(api, 20); // warm up
    const idle = summarize(await measure(api, n));
    const phases: { name: string; s: Summary }[] = [{ name: "idle (baseline)", s: idle }];
    for (const attack of ATTACKS) {
      const stop = await attack.start(bus);
      // Idle bodies are cut after the body window (5 s): re-arm the attack halfway through.
      const half = await measure(api, Math.ceil(n / 2));
      stop();
      const stop2 = await attack.start(bus);
      const rest = await measure(api, Math.floor(n / 2));
      stop2();
      phases.push({ name: attack.name, s: summarize([...half, ...rest]) });
    }
    await api.close();
    console.log(`\nlegitimate signed POST /v1/rooms under attack (${n} each)      p50 ms  p99 ms  p50 x  p99 x`);
    for (const { name, s } of phases) {
      console.log(
        `  ${name.padEnd(48)} ${fmt(s.p50).padStart(7)} ${fmt(s.p99).padStart(7)} ${fmt(s.p50 / idle.p50).padStart(6)} ${fmt(s.p99 / idle.p99).padStart(6)}`,
      );
    }
    const out = await writeResult("abuse", {
      n,
      phases: phases.map(({ name, s }) => ({ name, ...s, p50Ratio: s.p50 / idle.p50, p99Ratio: s.p99 / idle.p99 })),
    });
    console.log(`  -> ${out}`);
    return {
      title: `Legitimate signed POST /v1/rooms under attack (${n} each)`,
      rows: phases.map(({ name, s }, i) => ({
        name,
        value: s.p99,
        unit: "ms p99",
        ...(i > 0 ? { baseline: "idle", ratio: s.p99 / idle.p99 } : {}),
      })),
    };
  } finally {
    await bus.stop();
  }
}

if (import.meta.main) await run();
