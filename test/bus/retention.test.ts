// One member (or one runaway bot) cannot fill the disk through a persisted room: each
// room's history is capped (the oldest go first), the caps of all rooms stay within a
// budget, and control-plane writes keep succeeding however much a member publishes.
import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import t from "tap";
import { connectAsService } from "../../lib/auth/service-connection.ts";
import { loadOrCreateServiceKeys } from "../../lib/auth/service-keys.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { api, client, member, testBus } from "../helpers/bus.ts";

const MiB = 1024 * 1024;

/** A room stream's state as JetStream reports it, read with the bus's own service key. */
async function streamState(bus: Unibus, roomId: string) {
  const keys = await loadOrCreateServiceKeys(bus.dataDir);
  const nc = await connectAsService({ servers: [bus.natsUrl], caPem: bus.caPem, key: keys.app, name: "test" });
  try {
    const info = await (await jetstreamManager(nc)).streams.info(`ROOM_${roomId}`);
    return { bytes: info.state.bytes, messages: info.state.messages, config: info.config };
  } finally {
    await nc.close();
  }
}

t.test(
  "a member publishing far beyond the room's cap: the room stops at its cap, oldest first, the control plane still writes",
  async (t) => {
    const bus = await testBus(t, { retention: { maxBytes: 1 * MiB } });
    const alice = await member(bus, "alice", "admin");
    const c = await client(t, bus, alice);
    const room = await c.createRoom({ encrypt: true, persist: true });
    const chunk = new Uint8Array(64 * 1024).fill(7);
    for (let i = 0; i < 200; i++) {
      chunk[0] = i;
      await room.publish(chunk);
      if (i % 20 === 19) await room.flush();
    }
    await room.flush();
    let state = await streamState(bus, room.id);
    for (let tries = 0; state.messages === 0 && tries < 50; tries++) {
      await sleep(50);
      state = await streamState(bus, room.id);
    }
    t.ok(state.bytes <= 1 * MiB, `the stream holds at most its cap (${state.bytes} bytes after 12.8 MB published)`);
    t.equal(state.config.discard, "old", "the oldest messages are the ones discarded");
    t.ok(state.config.max_age > 0 && state.config.max_msgs > 0, "age and count are capped too");
    const kept: number[] = [];
    for await (const m of room.history()) kept.push(m.data[0]!);
    t.ok(kept.length > 0 && kept[0] !== 0, `the first messages went (oldest kept: #${kept[0]})`);
    t.equal(kept.at(-1), 199, "the newest message is kept");

    const newcomer = createIdentity();
    const added = await api(t, bus, alice).request("POST", "/v1/users", {
      signPub: newcomer.signPub,
      handle: "newcomer",
    });
    t.match(added, { handle: "newcomer" }, "a control-plane write succeeds after the flood");
  },
);

t.test("the rooms' storage budget: a persisted room beyond it is refused with 507 and nothing is stored", async (t) => {
  const bus = await testBus(t, { retention: { maxBytes: 1 * MiB }, roomStorageBytes: 2 * MiB });
  const alice = await member(bus, "alice");
  const c = await client(t, bus, alice);
  await c.createRoom({ persist: true });
  await c.createRoom({ persist: true });
  const before = (await c.listMyRooms()).length;
  await t.rejects(c.createRoom({ persist: true }), { status: 507, code: "STORAGE_BUDGET" }, "the third is refused");
  t.equal((await c.listMyRooms()).length, before, "no room was stored without its history");
  const cleartext = await c.createRoom({ persist: false });
  t.ok(cleartext.id, "a room without persistence is still created");
});

t.test("bad retention options are refused before anything starts, naming the option", async (t) => {
  await t.rejects(testBus(t, { retention: { maxBytes: 0 } }), {
    code: "INVALID_ARGUMENT",
    field: "retention.maxBytes",
  });
  await t.rejects(testBus(t, { retention: { maxAgeMs: -5 } }), {
    code: "INVALID_ARGUMENT",
    field: "retention.maxAgeMs",
  });
  await t.rejects(testBus(t, { retention: { maxBytes: 2 * MiB }, roomStorageBytes: MiB }), {
    code: "INVALID_ARGUMENT",
    field: "roomStorage.budgetBytes",
  });
});
