// One node on the KV store: the same bus, its control plane on JetStream KV buckets.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { startUnibus } from "../../lib/bus/unibus.ts";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { openStore } from "../../lib/store/index.ts";
import { captureLogger } from "../helpers/log.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

t.test("golden path: a persisted encrypted room round trip, the store is KV and nothing else", async (t) => {
  const bus = await startUnibus({ store: "kv", natsServer: NATS_SERVER });
  t.teardown(() => bus.stop());
  t.equal(bus.store.backend, "kv");
  t.equal(bus.storeBackend, "kv");
  t.notOk(fs.existsSync(path.join(bus.dataDir, "store.db")), "no SQLite file");
  const state = await bus.storeReplication();
  t.same(
    state?.map((b) => [b.bucket, b.replicas, b.current]),
    [["unibus_users", 1, 1]],
    "one bucket holds every control record",
  );
  const health = await fetch(`${bus.monitorUrl}/healthz`);
  t.equal(health.status, 200);

  const alice = createIdentity();
  await bus.addUser(alice.signPub, { handle: "alice", kexPub: alice.kexPub, role: "admin" });
  const c = await connect({ natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, identity: alice });
  t.teardown(() => c.close());
  const room = await c.createRoom({ encrypt: true, persist: true });
  await room.publish("kept");
  await room.flush();
  // A room message is a core publish the stream stores on its own time: read until it is there (bounded).
  let history: string[] = [];
  for (let i = 0; i < 100 && history.length === 0; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 20));
    history = [];
    for await (const m of room.history()) history.push(new TextDecoder().decode(m.data));
  }
  t.same(history, ["kept"]);
  t.equal((await bus.store.getRoom(room.id)).epoch, 1, "the room is in KV");
});

t.test("a SQLite store beside an empty KV allowlist: the bus warns that a migration is due", async (t) => {
  const dataDir = t.testdir();
  const sqlite = await openStore({ backend: "sqlite", file: path.join(dataDir, "store.db") });
  const u = createIdentity();
  await sqlite.addUser({ signPub: u.signPub, handle: "old", role: "admin", kexPub: null });
  await sqlite.close();
  const { logger, text: lines } = captureLogger("warn");
  const bus = await startUnibus({
    dataDir,
    store: "kv",
    natsServer: NATS_SERVER,
    logger,
  });
  t.teardown(() => bus.stop());
  t.equal(await bus.store.isAuthorized(u.signPub), false, "the SQLite allowlist is not silently used");
  for (let i = 0; i < 100 && !lines.some((l) => l.includes("migrate-to-kv")); i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  t.ok(
    lines.some((l) => JSON.parse(l).msg.includes("run `unibus migrate-to-kv`")),
    "one warning names the command",
  );
});

t.test("a bad store option is refused before anything starts", async (t) => {
  await t.rejects(startUnibus({ store: "postgres" as "kv", natsServer: NATS_SERVER }), {
    code: "INVALID_ARGUMENT",
    field: "store",
    message: /store: "sqlite" or "kv"; got "postgres"/,
  });
});
