// How the control plane scales with a team's history, in one run:
//  - invites: create + consume at 10 and at 10,000 invites in the store (SQLite and KV R1);
//    the 10-invite figure is the baseline of the 10,000 one.
//  - connect through the auth callout for a member of 1, 100 and 1,000 rooms (KV R1), with
//    where the time goes: the room listing alone, and the user JWT's permission count.
//    1 room is the baseline.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { connect as natsConnect } from "@nats-io/transport-node";
import { nkeySigner } from "../lib/auth/authenticator.ts";
import { permissionsFor } from "../lib/auth/permissions.ts";
import { startUnibus } from "../lib/bus/unibus.ts";
import { createIdentity, type Identity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import { newInviteToken, openStore, type Store } from "../lib/store/index.ts";
import type { BenchSection } from "./report.ts";
import { fmt, type Summary, summarize, writeResult } from "./stats.ts";

const OPS = Number(process.env.BENCH_KVSCALE_OPS ?? 100);

async function timed(n: number, fn: (i: number) => Promise<unknown>): Promise<Summary> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await fn(i);
    samples.push(performance.now() - s);
  }
  return summarize(samples);
}

let seq = 0;
const invite = (ttlMs = 3_600_000) => ({
  token: newInviteToken(),
  handle: `h${++seq}`,
  role: "member" as const,
  createdBy: "bench",
  ttlMs,
});

/** Fills the store to `total` invites (20 at a time), then times create + consume of fresh ones. */
async function invitesAt(store: Store, total: number): Promise<{ create: Summary; consume: Summary }> {
  const have = (await store.listInvites()).length;
  for (let at = have; at < total; at += 20) {
    await Promise.all(Array.from({ length: Math.min(20, total - at) }, () => store.createInvite(invite())));
  }
  const made = Array.from({ length: OPS }, () => invite());
  const create = await timed(OPS, (i) => store.createInvite(made[i]!));
  const consume = await timed(OPS, (i) => {
    const id = createIdentity();
    return store.consumeInvite(made[i]!.token, { signPub: id.signPub, kexPub: id.kexPub });
  });
  return { create, consume };
}

async function invites(stores: Record<string, Store>) {
  const out: Record<string, unknown> = {};
  console.log(`\ninvites: create / consume (${OPS} sequential ops each)   p50 ms   p99 ms   p50 at 10k / at 10`);
  for (const [name, store] of Object.entries(stores)) {
    const small = await invitesAt(store, 10);
    const large = await invitesAt(store, 10_000);
    for (const op of ["create", "consume"] as const) {
      for (const [label, s] of [
        ["10", small[op]],
        ["10,000", large[op]],
      ] as const) {
        const ratio = label === "10" ? "" : `x${fmt(s.p50 / small[op].p50)}`;
        console.log(
          `  ${name.padEnd(6)} ${op.padEnd(8)} at ${label.padEnd(7)}            ${fmt(s.p50).padStart(8)} ${fmt(s.p99).padStart(8)}   ${ratio}`,
        );
      }
    }
    out[name] = { at10: small, at10k: large };
  }
  return out;
}

async function connects(url: string, ca: string, id: Identity, n: number): Promise<Summary> {
  return timed(n, async () => {
    const nc = await natsConnect({
      servers: url,
      tls: { ca },
      authenticator: nkeySigner(id.nkey, (d) => id.sign(d)),
      reconnect: false,
    });
    await nc.close();
  });
}

type Timed = { p50: number; p99: number };

function kvscaleSection(inv: Record<string, unknown>, conn: Record<string, unknown>): BenchSection {
  const rows: BenchSection["rows"] = [];
  for (const [store, v] of Object.entries(
    inv as Record<string, { at10: Record<string, Timed>; at10k: Record<string, Timed> }>,
  )) {
    for (const op of ["create", "consume"]) {
      const base = v.at10[op]!.p50;
      rows.push({ name: `invite ${op}, ${store}, 10 invites`, value: base, unit: "ms p50" });
      const big = v.at10k[op]!.p50;
      rows.push({
        name: `invite ${op}, ${store}, 10,000 invites`,
        value: big,
        unit: "ms p50",
        baseline: `invite ${op}, ${store}, 10 invites`,
        ratio: big / base,
      });
    }
  }
  const byRooms = conn as Record<string, { connect: Timed }>;
  const one = byRooms["1"]?.connect.p99 ?? Number.NaN;
  for (const [rooms, v] of Object.entries(byRooms)) {
    rows.push({
      name: `connect through the callout (KV R1), member of ${rooms} rooms`,
      value: v.connect.p99,
      unit: "ms p99",
      baseline: "member of 1 room",
      ratio: v.connect.p99 / one,
    });
  }
  return {
    title: "KV store at scale: invites and connects",
    rows,
    notes: ["Target: connect p99 < 20 ms at 1,000 rooms."],
  };
}

async function connectByRooms(binary: string) {
  const bus = await startUnibus({ natsServer: binary, store: "kv" });
  const out: Record<string, unknown> = {};
  try {
    const id = createIdentity();
    await bus.store.addUser({ signPub: id.signPub, kexPub: id.kexPub, handle: "member", role: "member" });
    await connects(bus.natsUrl, bus.caPem, id, 20); // warm-up
    console.log("\nconnect through the callout, KV R1        p50 ms   p99 ms   listRoomsFor p50/p99 ms   JWT subjects");
    let have = 0;
    let base: Summary | undefined;
    for (const rooms of [1, 100, 1000]) {
      for (; have < rooms; have += 20) {
        await Promise.all(
          Array.from({ length: Math.min(20, rooms - have) }, (_, j) =>
            bus.store.createRoom({
              id: `bench${have + j}`,
              subject: `bench.room${have + j}`,
              ownerSignPub: id.signPub,
              encrypt: false,
              persist: (have + j) % 2 === 0,
              signMsgs: false,
              ownerSealedKey: null,
            }),
          ),
        );
      }
      const listing = await timed(OPS, () => bus.store.listRoomsFor(id.signPub));
      const perms = permissionsFor(id.signPub, await bus.store.listRoomsFor(id.signPub));
      const c = await connects(bus.natsUrl, bus.caPem, id, OPS);
      base ??= c;
      const subjects = perms.pub.allow.length + perms.sub.allow.length;
      console.log(
        `  member of ${String(rooms).padEnd(5)} rooms             ${fmt(c.p50).padStart(8)} ${fmt(c.p99).padStart(8)}   ${fmt(listing.p50).padStart(10)} / ${fmt(listing.p99).padEnd(10)}   ${subjects}   p50 x${fmt(c.p50 / base.p50)} of 1 room`,
      );
      out[String(rooms)] = { connect: c, listRoomsFor: listing, subjects };
    }
    console.log("  target: connect p99 < 20 ms at 1,000 rooms");
  } finally {
    await bus.stop();
  }
  return out;
}

export async function run(): Promise<BenchSection> {
  const binary = (await resolveNatsServer()).path;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-"));
  const sqlite = await openStore({ backend: "sqlite", file: path.join(dir, "store.db") });
  const bus = await startUnibus({ natsServer: binary, store: "kv" });
  try {
    const inv = await invites({ sqlite, kv: bus.store });
    await bus.stop();
    const conn = await connectByRooms(binary);
    const file = await writeResult("kvscale", { ops: OPS, invites: inv, connect: conn });
    console.log(`  -> ${file}`);
    return kvscaleSection(inv, conn);
  } finally {
    await sqlite.close();
    await bus.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await run();
