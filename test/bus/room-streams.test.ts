// A room deleted while its bus was down (the host-trusted CLI edits a stopped bus'
// store) leaves a stream behind: the next start removes it, and keeps every live room's.
// RoomStreams.ensure() on a real JetStream: after a budget check of its own, or right
// away when createRoom has just reserved the room's storage; idempotent either way, and
// a stream found under the room's name gets the caps it lacks.
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import t from "tap";
import { connectAsService } from "../../lib/auth/service-connection.ts";
import { loadServiceKeys } from "../../lib/auth/service-keys.ts";
import { DEFAULT_RETENTION, RoomStreams, StorageBudgetError } from "../../lib/bus/streams.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { startUnibus } from "../../lib/bus/unibus.ts";
import { openStore } from "../../lib/store/index.ts";
import { api, member, testBus } from "../helpers/bus.ts";

async function streams(bus: Unibus): Promise<string[]> {
  const keys = await loadServiceKeys(bus.dataDir);
  const nc = await connectAsService({ servers: [bus.natsUrl], caPem: bus.caPem, key: keys.app, name: "test" });
  try {
    const names: string[] = [];
    for await (const s of (await jetstreamManager(nc)).streams.list()) names.push(s.config.name);
    return names.filter((n) => n.startsWith("ROOM_")).sort();
  } finally {
    await nc.close();
  }
}

t.test("a start prunes the streams of rooms deleted while the bus was down", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const first = await startUnibus({ dataDir });
  let second: Unibus | undefined;
  t.teardown(async () => {
    await first.stop();
    await second?.stop();
  });
  const alice = await member(first, "alice");
  const a = api(t, first, alice);
  const gone = await a.request<{ id: string }>("POST", "/v1/rooms", { encrypt: false, persist: true });
  const kept = await a.request<{ id: string }>("POST", "/v1/rooms", { encrypt: false, persist: true });
  t.same(await streams(first), [`ROOM_${gone.id}`, `ROOM_${kept.id}`].sort());
  await first.stop();

  const store = await openStore({ backend: "sqlite", file: path.join(dataDir, "store.db") });
  await store.deleteRoom(gone.id);
  await store.close();

  second = await startUnibus({ dataDir });
  let left = await streams(second);
  for (let i = 0; i < 100 && left.length > 1; i++) {
    await new Promise((r) => setTimeout(r, 50)); // the prune runs in the background of the start
    left = await streams(second);
  }
  t.same(left, [`ROOM_${kept.id}`], "only the live room's stream is left");
});

t.test(
  "ensure(): a reserved room's stream is added at once, idempotently; an uncapped one found under its name gets caps",
  async (t) => {
    const bus = await testBus(t);
    const keys = await loadServiceKeys(bus.dataDir);
    const budget = (5 * DEFAULT_RETENTION.maxBytes) / 2; // two rooms at the ceiling fit, a third does not
    const streams = new RoomStreams({ servers: [bus.natsUrl], caPem: bus.caPem, keys, budgetBytes: budget });
    await streams.start();
    t.teardown(() => streams.stop());
    const nc = await connectAsService({ servers: [bus.natsUrl], caPem: bus.caPem, key: keys.app, name: "test" });
    t.teardown(() => nc.close());
    const jsm = await jetstreamManager(nc);

    await streams.ensure({ id: "aaaa", subject: "unibus.room.aaaa" }, { maxMsgs: 10 }, { reserved: true });
    const made = (await jsm.streams.info("ROOM_aaaa")).config;
    t.match(made, { subjects: ["unibus.room.aaaa"], max_msgs: 10, max_bytes: DEFAULT_RETENTION.maxBytes });
    await streams.ensure({ id: "aaaa", subject: "unibus.room.aaaa" }, { maxMsgs: 10 }, { reserved: true });
    t.equal((await jsm.streams.info("ROOM_aaaa")).config.max_msgs, 10, "a second call changes nothing");

    // a stream from before streams were capped, under the name of a room being created
    await jsm.streams.add({ name: "ROOM_bbbb", subjects: ["unibus.room.bbbb"] });
    await streams.ensure({ id: "bbbb", subject: "unibus.room.bbbb" }, undefined, { reserved: true });
    t.match(
      (await jsm.streams.info("ROOM_bbbb")).config,
      { max_bytes: DEFAULT_RETENTION.maxBytes, max_msgs: DEFAULT_RETENTION.maxMsgs },
      "the existing stream got the caps",
    );

    // without a reservation, ensure() checks the budget itself: a third room at the ceiling is over it
    await t.rejects(streams.ensure({ id: "cccc", subject: "unibus.room.cccc" }), StorageBudgetError);
    await t.rejects(jsm.streams.info("ROOM_cccc"), /stream not found/i, "and no stream was made");
  },
);
