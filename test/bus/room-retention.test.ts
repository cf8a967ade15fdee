// Per-room retention: a room's creator chooses its history limits at createRoom, within
// the bus's ceiling; a limit above it is refused with a typed error and nothing is stored;
// a smaller room takes a smaller share of the storage budget.
import { jetstreamManager } from "@nats-io/jetstream";
import t from "tap";
import { connectAsService } from "../../lib/auth/service-connection.ts";
import { loadOrCreateServiceKeys } from "../../lib/auth/service-keys.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { api, client, member, testBus } from "../helpers/bus.ts";
import { waitFor } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const DAY = 86_400_000;
const CEILING = { maxBytes: 4 * MiB, maxAgeMs: DAY, maxMsgs: 1000 };

async function streamInfo(bus: Unibus, roomId: string) {
  const keys = await loadOrCreateServiceKeys(bus.dataDir);
  const nc = await connectAsService({ servers: [bus.natsUrl], caPem: bus.caPem, key: keys.app, name: "test" });
  try {
    return await (await jetstreamManager(nc)).streams.info(`ROOM_${roomId}`);
  } finally {
    await nc.close();
  }
}

async function streamConfig(bus: Unibus, roomId: string) {
  return (await streamInfo(bus, roomId)).config;
}

t.test("per-room retention at createRoom", async (t) => {
  const bus = await testBus(t, { retention: CEILING, roomStorageBytes: 64 * MiB });
  const alice = await member(bus, "alice");
  const c = await client(t, bus, alice);

  t.test("a room chooses less than the ceiling: the stream keeps that, the rest is the ceiling", async (t) => {
    const room = await c.createRoom({ persist: true, retention: { maxBytes: MiB, maxMsgs: 10 } });
    t.same(room.retention, { maxBytes: MiB, maxAgeMs: DAY, maxMsgs: 10 }, "the answer says what the room keeps");
    const config = await streamConfig(bus, room.id);
    t.same([config.max_bytes, config.max_age, config.max_msgs], [MiB, DAY * 1_000_000, 10]);
    for (let i = 0; i < 15; i++) await room.publish(`m${i}`);
    await c.nc.flush();
    // The stream stores what the server took a moment later: wait for the 15th.
    await waitFor(
      "the stream to take all 15 messages",
      async () => (await streamInfo(bus, room.id)).state.last_seq === 15,
    );
    const kept: string[] = [];
    for await (const m of room.history()) kept.push(new TextDecoder().decode(m.data));
    t.same(kept, ["m5", "m6", "m7", "m8", "m9", "m10", "m11", "m12", "m13", "m14"], "the oldest went first");
  });

  t.test("no choice, or exactly the ceiling: the ceiling", async (t) => {
    const plain = await c.createRoom({ persist: true });
    t.same(plain.retention, CEILING);
    const exact = await c.createRoom({ persist: true, retention: CEILING });
    t.same(exact.retention, CEILING);
    const config = await streamConfig(bus, exact.id);
    t.same([config.max_bytes, config.max_msgs], [CEILING.maxBytes, CEILING.maxMsgs]);
    const unpersisted = await c.createRoom({ persist: false });
    t.equal(unpersisted.retention, undefined, "a room without history has no retention");
  });

  t.test("a member asking above the ceiling gets a typed error naming the limit; nothing is stored", async (t) => {
    const before = (await c.listMyRooms()).length;
    for (const [field, value] of [
      ["maxBytes", CEILING.maxBytes + 1],
      ["maxAgeMs", 365 * DAY],
      ["maxMsgs", Number.MAX_SAFE_INTEGER],
    ] as const) {
      await t.rejects(
        c.createRoom({ persist: true, retention: { [field]: value } }),
        {
          name: "ControlPlaneError",
          status: 400,
          code: "RETENTION_ABOVE_CEILING",
          message: new RegExp(`retention\\.${field} ${value} is above this bus's ceiling of ${CEILING[field]}`),
        },
        field,
      );
    }
    t.equal((await c.listMyRooms()).length, before, "no room was stored");
  });

  t.test("malformed choices are refused by the schema, as an attacker would send them", async (t) => {
    const raw = api(t, bus, alice);
    const create = (retention: unknown, persist = true) =>
      raw.request("POST", "/v1/rooms", { encrypt: false, persist, retention });
    await t.rejects(create({ maxBytes: 0 }), { status: 400, message: /retention\.maxBytes/ }, "zero");
    await t.rejects(create({ maxBytes: -1 }), { status: 400, message: /retention\.maxBytes/ }, "negative");
    await t.rejects(create({ maxMsgs: 1.5 }), { status: 400, message: /retention\.maxMsgs/ }, "fraction");
    await t.rejects(create({ maxBytes: "1" }), { status: 400, message: /retention\.maxBytes/ }, "a string");
    await t.rejects(create({ maxBytes: 1e300 }), { status: 400, message: /retention\.maxBytes/ }, "beyond any integer");
    await t.rejects(create({ replicas: 5 }), { status: 400, message: /unknown field "replicas"/ }, "an unknown limit");
    await t.rejects(
      create({ maxBytes: MiB }, false),
      { status: 400, message: /retention applies to persisted rooms only/ },
      "retention without persist",
    );
  });
});

t.test("a smaller room takes a smaller share of the budget, but rooms of a few bytes cannot multiply", async (t) => {
  const bus = await testBus(t, { retention: { maxBytes: 4 * MiB }, roomStorageBytes: 8 * MiB });
  const alice = await member(bus, "alice");
  const c = await client(t, bus, alice);
  for (let i = 0; i < 2; i++) await c.createRoom({ persist: true, retention: { maxBytes: 2 * MiB } });
  // As an attacker would: rooms asking for one byte each, to make streams without end.
  for (let i = 0; i < 4; i++) await c.createRoom({ persist: true, retention: { maxBytes: 1 } });
  await t.rejects(
    c.createRoom({ persist: true, retention: { maxBytes: 1 } }),
    { status: 507, code: "STORAGE_BUDGET", message: /rooms reserve 8388608 of 8388608 bytes; this room needs 1048576/ },
    "two half-ceiling rooms and four one-byte rooms (each reserving 1 MiB) fill an 8 MiB budget",
  );
  t.equal((await c.listMyRooms()).length, 6);
  const config = await streamConfig(bus, (await c.listMyRooms())[5]!.id);
  t.equal(config.max_bytes, 1, "the one-byte room keeps what it asked for; only its share of the budget is 1 MiB");
});
