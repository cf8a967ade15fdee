// A room deleted while its bus was down (the host-trusted CLI edits a stopped bus'
// store) leaves a stream behind: the next start removes it, and keeps every live room's.
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import t from "tap";
import { connectAsService } from "../../lib/auth/service-connection.ts";
import { loadServiceKeys } from "../../lib/auth/service-keys.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { startUnibus } from "../../lib/bus/unibus.ts";
import { openStore } from "../../lib/store/index.ts";
import { api, member } from "../helpers/bus.ts";

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
