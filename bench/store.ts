// The control-plane Store, operation by operation: SQLite (the baseline) vs JetStream KV
// at R1 (one server) and at R3 (a real 3-node cluster), all in one run. Each op is called
// N times one after another (latency per call, no concurrency); every phase runs on the
// three backends back to back, so drift on a shared machine hits each side alike.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { nkeySigner } from "../lib/auth/authenticator.ts";
import { loadOrCreateServiceKeys } from "../lib/auth/service-keys.ts";
import { startCluster, type UnibusCluster } from "../lib/bus/cluster.ts";
import { startUnibus, type Unibus } from "../lib/bus/unibus.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import { newRoomKey } from "../lib/crypto/room-key.ts";
import { sealRoomKey } from "../lib/crypto/seal.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import {
  type NewRoom,
  type NewUser,
  newInviteToken,
  openStore,
  type Registration,
  type Rekey,
  type Store,
} from "../lib/store/index.ts";
import type { BenchSection } from "./report.ts";
import { fmt, type Summary, summarize, writeResult } from "./stats.ts";

/** Valid inputs for one full pass of every op: user i owns room i, user i+1 is its member. */
interface Inputs {
  n: number;
  users: NewUser[];
  rooms: NewRoom[];
  /** Epoch-1 key of room i sealed to its member. */
  memberKeys: string[];
  /** Epoch 1 -> 2 for room i: keys for its owner and its member. */
  rekeys: Rekey[];
  invites: Array<{ token: string; handle: string }>;
  registrations: Registration[];
}

function makeInputs(tag: string, n: number): Inputs {
  const ids = Array.from({ length: n }, () => createIdentity());
  const joiners = Array.from({ length: n }, () => createIdentity());
  const users = ids.map((id, i) => ({
    signPub: id.signPub,
    kexPub: id.kexPub,
    handle: `${tag}u${i}`,
    role: "member" as const,
  }));
  const rooms: NewRoom[] = [];
  const memberKeys: string[] = [];
  const rekeys: Rekey[] = [];
  for (let i = 0; i < n; i++) {
    const owner = ids[i]!;
    const member = ids[(i + 1) % n]!;
    const roomId = `${tag}room${i}`;
    const seal = (kexPub: string, key: Uint8Array, epoch: number) =>
      sealRoomKey({ roomKey: key, recipientKexPub: kexPub, roomId, epoch });
    const k1 = newRoomKey();
    const k2 = newRoomKey();
    rooms.push({
      id: roomId,
      subject: `bench.${tag}.room${i}`,
      ownerSignPub: owner.signPub,
      encrypt: true,
      persist: false,
      signMsgs: false,
      ownerSealedKey: seal(owner.kexPub, k1, 1),
    });
    memberKeys.push(seal(member.kexPub, k1, 1));
    rekeys.push({
      fromEpoch: 1,
      sealedKeys: [
        { signPub: owner.signPub, sealed: seal(owner.kexPub, k2, 2) },
        { signPub: member.signPub, sealed: seal(member.kexPub, k2, 2) },
      ],
    });
  }
  return {
    n,
    users,
    rooms,
    memberKeys,
    rekeys,
    invites: Array.from({ length: n }, (_, i) => ({ token: newInviteToken(), handle: `${tag}inv${i}` })),
    registrations: joiners.map((j) => ({ signPub: j.signPub, kexPub: j.kexPub })),
  };
}

/** In order: each phase relies on what the ones before it wrote. */
const phases: Array<[string, (s: Store, x: Inputs, i: number) => Promise<unknown>]> = [
  ["addUser", (s, x, i) => s.addUser(x.users[i]!)],
  ["getUser", (s, x, i) => s.getUser(x.users[i]!.signPub)],
  ["isAuthorized", (s, x, i) => s.isAuthorized(x.users[i]!.signPub)],
  ["createRoom", (s, x, i) => s.createRoom(x.rooms[i]!)],
  [
    "addMember",
    (s, x, i) =>
      s.addMember(x.rooms[i]!.id, { signPub: x.users[(i + 1) % x.n]!.signPub, sealedKey: x.memberKeys[i]!, epoch: 1 }),
  ],
  ["isMember", (s, x, i) => s.isMember(x.rooms[i]!.id, x.users[(i + 1) % x.n]!.signPub)],
  ["listRoomsFor", (s, x, i) => s.listRoomsFor(x.users[i]!.signPub)],
  ["getSealedKey", (s, x, i) => s.getSealedKey(x.rooms[i]!.id, x.users[(i + 1) % x.n]!.signPub)],
  ["rekey", (s, x, i) => s.rekey(x.rooms[i]!.id, x.rekeys[i]!)],
  ["createInvite", (s, x, i) => s.createInvite({ ...x.invites[i]!, role: "member", createdBy: "host" })],
  ["consumeInvite", (s, x, i) => s.consumeInvite(x.invites[i]!.token, x.registrations[i]!)],
];

const backends = ["sqlite", "kvR1", "kvR3"] as const;
type Backend = (typeof backends)[number];

/** Sanity checks that the reads really found what the writes made (a bench of refusals would be fast and wrong). */
function check(op: string, result: unknown): void {
  const bad =
    ((op === "isAuthorized" || op === "isMember") && result !== true) ||
    (op === "listRoomsFor" && (result as unknown[]).length !== 2);
  if (bad) throw new Error(`${op} returned ${JSON.stringify(result)}: the bench's inputs are wrong`);
}

export async function run(n = Number(process.env.BENCH_OPS ?? 300)): Promise<BenchSection> {
  if (!Number.isInteger(n) || n < 2) throw new Error(`BENCH_OPS must be a whole number >= 2; got ${n}`);
  const binary = (await resolveNatsServer()).path;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-"));
  let bus: Unibus | undefined;
  let cluster: UnibusCluster | undefined;
  const stores: Partial<Record<Backend, Store>> = {};
  try {
    bus = await startUnibus({ natsServer: binary });
    cluster = await startCluster({ nodes: 3, store: "sqlite", natsServer: binary });
    const kv = async (dataDir: string, servers: string[], caPem: string, replicas: number) => {
      const keys = await loadOrCreateServiceKeys(dataDir);
      return openStore({
        backend: "kv",
        servers,
        caPem,
        authenticator: nkeySigner(keys.app.publicKey, (d) => keys.app.sign(d)),
        replicas,
        bucketPrefix: "bench_",
      });
    };
    stores.sqlite = await openStore({ backend: "sqlite", file: path.join(dir, "store.db") });
    stores.kvR1 = await kv(bus.dataDir, [bus.natsUrl], bus.caPem, 1);
    stores.kvR3 = await kv(cluster.dataDir, cluster.natsUrls, cluster.caPem, 3);

    // warm up the JIT, the statements and the connections on every op, with other data
    const warm = makeInputs("w", Math.min(30, n));
    for (const b of backends)
      for (const [, op] of phases) for (let i = 0; i < warm.n; i++) await op(stores[b]!, warm, i);

    const x = makeInputs("b", n);
    const results: Record<string, Record<Backend, Summary>> = {};
    for (const [name, op] of phases) {
      const row = {} as Record<Backend, Summary>;
      for (const b of backends) {
        const store = stores[b]!;
        const samples: number[] = [];
        for (let i = 0; i < n; i++) {
          const t0 = performance.now();
          const r = await op(store, x, i);
          samples.push(performance.now() - t0);
          check(name, r);
        }
        row[b] = summarize(samples);
      }
      results[name] = row;
    }

    const ratio = (b: Backend, op: string) => results[op]![b].p50 / results[op]!["sqlite"].p50;
    const col = (s: Summary) => `${fmt(s.p50).padStart(8)} ${fmt(s.p99).padStart(8)}`;
    console.log(`\ncontrol-plane store, ${n} sequential calls per op (ms; ratio = KV p50 / SQLite p50)`);
    console.log(
      `  ${"op".padEnd(14)} ${"SQLite p50".padStart(10)} ${"p99".padStart(6)}   ${"KV R1 p50".padStart(9)} ${"p99".padStart(8)} ${"ratio".padStart(7)}   ${"KV R3 p50".padStart(9)} ${"p99".padStart(8)} ${"ratio".padStart(7)}`,
    );
    for (const [name] of phases) {
      const r = results[name]!;
      console.log(
        `  ${name.padEnd(14)} ${col(r.sqlite)}   ${col(r.kvR1)} ${`${fmt(ratio("kvR1", name), 1)}x`.padStart(7)}   ${col(r.kvR3)} ${`${fmt(ratio("kvR3", name), 1)}x`.padStart(7)}`,
      );
    }
    const file = await writeResult("store", {
      n,
      ms: results,
      ratioP50: Object.fromEntries(
        phases.map(([name]) => [name, { kvR1: ratio("kvR1", name), kvR3: ratio("kvR3", name) }]),
      ),
    });
    console.log(`  -> ${file}`);
    return {
      title: `Control-plane store, ${n} sequential calls per op`,
      rows: phases.flatMap(([name]) => [
        { name: `${name}, SQLite`, value: results[name]!.sqlite.p50, unit: "ms p50" },
        ...(["kvR1", "kvR3"] as const).map((b) => ({
          name: `${name}, ${b === "kvR1" ? "KV R1" : "KV R3"}`,
          value: results[name]![b].p50,
          unit: "ms p50",
          baseline: `${name}, SQLite`,
          ratio: ratio(b, name),
        })),
      ]),
    };
  } finally {
    for (const s of Object.values(stores)) await s.close().catch(() => {});
    await cluster?.stop();
    await bus?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await run();
