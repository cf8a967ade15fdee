// Publish → receive through a room, in one run on one server: raw nats.js on the
// room's subject (baseline), a cleartext room, an encrypted room, an encrypted and
// signed room; plus what the crypto alone allows (AEAD seal+open, Ed25519 sign+verify).
import crypto from "node:crypto";
import { startUnibus } from "../lib/bus/unibus.ts";
import { connect, type UnibusClient } from "../lib/client/connect.ts";
import type { Room } from "../lib/client/room.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

const N = Number(process.env.BENCH_MESSAGES ?? 20_000);

interface Row {
  name: string;
  size: number;
  rate: number;
  p50: number;
  p99: number;
}

/** Throughput: publish N as fast as possible, time until the last arrives. */
async function throughput(
  send: (i: number) => void | Promise<void>,
  received: () => number,
  flush: () => Promise<void>,
): Promise<number> {
  const start = received();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    await send(i);
    if (i % 1000 === 999) await flush();
  }
  await flush();
  while (received() - start < N) await new Promise((r) => setImmediate(r));
  return N / ((performance.now() - t0) / 1000);
}

/** Latency: one message in flight at a time, 1,000 round trips. */
async function latency(
  send: () => void | Promise<void>,
  next: () => Promise<void>,
): Promise<{ p50: number; p99: number }> {
  const samples: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const t0 = performance.now();
    const arrived = next();
    await send();
    await arrived;
    samples.push(performance.now() - t0);
  }
  const s = summarize(samples);
  return { p50: s.p50, p99: s.p99 };
}

function counter() {
  let count = 0;
  let waiter: (() => void) | undefined;
  return {
    hit() {
      count++;
      waiter?.();
    },
    get count() {
      return count;
    },
    next() {
      return new Promise<void>((resolve) => {
        waiter = () => {
          waiter = undefined;
          resolve();
        };
      });
    },
  };
}

async function roomRow(name: string, room: Room, subscriber: Room, pub: UnibusClient, size: number): Promise<Row> {
  const c = counter();
  const sub = subscriber.subscribe({ callback: () => c.hit() });
  await new Promise((r) => setTimeout(r, 100));
  const payload = crypto.randomBytes(size);
  const rate = await throughput(
    () => room.publish(payload),
    () => c.count,
    () => pub.nc.flush(),
  );
  const lat = await latency(
    () => room.publish(payload),
    () => c.next(),
  );
  sub.unsubscribe();
  return { name, size, rate, ...lat };
}

function cryptoLimits(size: number) {
  // a KeyObject made once, as the frame code does
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

export async function run(): Promise<void> {
  const bus = await startUnibus();
  const a = createIdentity();
  const b = createIdentity();
  await bus.addUser(a.signPub, { handle: "pub", kexPub: a.kexPub });
  await bus.addUser(b.signPub, { handle: "sub", kexPub: b.kexPub });
  const opts = { natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem };
  const pub = await connect({ ...opts, identity: a });
  const sub = await connect({ ...opts, identity: b });
  const rows: Row[] = [];
  const limits: Record<number, { aead: number; sign: number }> = {};
  try {
    const rooms: Record<string, [Room, Room]> = {};
    for (const [name, o] of [
      ["cleartext room", { encrypt: false }],
      ["encrypted room", { encrypt: true }],
      ["encrypted + signed", { encrypt: true, signMsgs: true }],
    ] as const) {
      const room = await pub.createRoom(o);
      const back = (async () => {
        for await (const s of sub.nc.status()) if (s.type === "reconnect") return;
      })();
      await room.addMember(b);
      await back;
      rooms[name] = [room, await sub.openRoom(room.id)];
    }
    for (const size of [256, 4096]) {
      // raw nats.js on the cleartext room's subject: the same server, connections and ACL
      const [clear] = rooms["cleartext room"]!;
      const c = counter();
      const rawSub = sub.nc.subscribe(clear.subject, { callback: () => c.hit() });
      await sub.nc.flush();
      const payload = crypto.randomBytes(size);
      const rate = await throughput(
        () => pub.nc.publish(clear.subject, payload),
        () => c.count,
        () => pub.nc.flush(),
      );
      const lat = await latency(
        () => pub.nc.publish(clear.subject, payload),
        () => c.next(),
      );
      rawSub.unsubscribe();
      rows.push({ name: "raw nats.js (baseline)", size, rate, ...lat });
      for (const name of Object.keys(rooms)) {
        const [room, subscriber] = rooms[name]!;
        rows.push(await roomRow(name, room, subscriber, pub, size));
      }
      limits[size] = cryptoLimits(size);
    }
  } finally {
    await pub.close();
    await sub.close();
    await bus.stop();
  }
  console.log(`\npublish → receive, ${N} messages per row            msg/s    p50 ms   p99 ms   vs`);
  for (const r of rows) {
    const raw = rows.find((x) => x.size === r.size && x.name.startsWith("raw"))!;
    const lim = limits[r.size]!;
    const vs =
      r.name === "cleartext room"
        ? `${fmt((100 * r.rate) / raw.rate, 0)}% of raw`
        : r.name === "encrypted room"
          ? `${fmt((100 * r.rate) / lim.aead, 0)}% of AEAD-alone`
          : r.name.startsWith("encrypted +")
            ? `${fmt((100 * r.rate) / lim.sign, 0)}% of sign+verify-alone`
            : "";
    console.log(
      `  ${`${r.name}, ${r.size} B`.padEnd(44)} ${fmt(r.rate, 0).padStart(8)} ${fmt(r.p50).padStart(9)} ${fmt(r.p99).padStart(8)}   ${vs}`,
    );
  }
  for (const [size, l] of Object.entries(limits)) {
    console.log(
      `  crypto alone, ${size} B: AEAD seal+open ${fmt(l.aead, 0)}/s; Ed25519 sign+verify ${fmt(l.sign, 0)}/s`,
    );
  }
  console.log("  targets: cleartext >= 90% of raw; encrypted >= 80% of AEAD alone; signed >= 80% of sign+verify alone");
  console.log(`  -> ${await writeResult("messaging", { n: N, rows, cryptoLimits: limits })}`);
}

if (import.meta.main) await run();
