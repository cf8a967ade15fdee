// What an operator sees of persisted rooms' storage: `unibus status` (stored and reserved
// against the budget and each room's ceiling) and `unibus room show` (the room's own
// retention and what it holds), on a real bus started by `unibus up` with its limits.
import path from "node:path";
import t, { type Test } from "tap";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { type CliResult, runCli, upOn } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const ok = (t: Test, r: CliResult, what: string) => t.equal(r.code, 0, `${what}: ${r.stderr}`);

async function addUser(t: Test, dataDir: string, handle: string): Promise<Identity> {
  const id = createIdentity();
  ok(t, await runCli(["user", "add", id.signPub, "--handle", handle, "--kex-pub", id.kexPub, "-d", dataDir]), handle);
  return id;
}

t.test("status and room show report room storage against the limits up was given", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const alice = await addUser(t, dataDir, "alice");
  const { ready } = await upOn(t, dataDir, [
    "--room-max-bytes",
    String(4 * MiB),
    "--room-storage-bytes",
    String(12 * MiB),
  ]);
  const d = ["-d", dataDir];
  const status = async () => {
    const r = await runCli(["status", "--json", ...d]);
    ok(t, r, "status");
    return JSON.parse(r.stdout);
  };
  const empty = await status();
  t.same(empty.roomStorage, {
    rooms: 0,
    storedBytes: 0,
    storedMessages: 0,
    reservedBytes: 0,
    budgetBytes: 12 * MiB,
    ceiling: { maxBytes: 4 * MiB, maxAgeMs: 90 * 86_400_000, maxMsgs: 1_000_000 },
  });

  const a = await connect({
    natsUrl: ready.natsUrls[0]!,
    controlUrl: ready.controlUrls[0]!,
    caFile: ready.caFile,
    identity: alice,
  });
  t.teardown(() => a.close());
  const small = await a.createRoom({ persist: true, retention: { maxBytes: 2 * MiB, maxMsgs: 100 } });
  const full = await a.createRoom({ persist: true });
  for (let i = 0; i < 5; i++) await small.publish(`hello ${i}`);
  await a.nc.flush();
  await waitFor("the five messages to be stored", async () => (await status()).roomStorage.storedMessages === 5);
  const s = (await status()).roomStorage;
  t.match(s, { rooms: 2, reservedBytes: 6 * MiB, budgetBytes: 12 * MiB, storedMessages: 5 });
  t.ok(s.storedBytes > 0, "stored bytes are counted");

  const text = await runCli(["status", ...d]);
  t.match(text.stdout, "room storage: 2 persisted room(s)");
  t.match(text.stdout, "their caps reserve 6 MiB of the 12 MiB budget");
  t.match(text.stdout, "each room at most 4 MiB, 90 day(s), 1000000 messages");
  t.notMatch(text.stdout, "the budget has", "another room at the ceiling still fits");

  // A third room at the ceiling leaves less than one more: status says what the next one must do.
  await a.createRoom({ persist: true });
  const tight = await runCli(["status", ...d]);
  t.match(tight.stdout, "the budget has 2 MiB left: a new persisted room must ask for a smaller retention.maxBytes");
  await a.createRoom({ persist: true, retention: { maxBytes: 2 * MiB } });
  t.equal((await status()).roomStorage.reservedBytes, 12 * MiB, "a room within what is left still fits");

  const show = await runCli(["room", "show", small.id, "--json", ...d]);
  ok(t, show, "room show");
  t.match(JSON.parse(show.stdout).history, {
    retention: { maxBytes: 2 * MiB, maxAgeMs: 90 * 86_400_000, maxMsgs: 100 },
    messages: 5,
  });
  const showText = await runCli(["room", "show", full.id, ...d]);
  t.match(showText.stdout, "history: keeps at most 4 MiB, 90 day(s), 1000000 messages; holds 0 message(s), 0 bytes");
});

t.test("room show on a stopped bus: the room, and the history limits said to be unknown", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const alice = await addUser(t, dataDir, "alice");
  const { ready, child, exited } = await upOn(t, dataDir);
  const a = await connect({
    natsUrl: ready.natsUrls[0]!,
    controlUrl: ready.controlUrls[0]!,
    caFile: ready.caFile,
    identity: alice,
  });
  const room = await a.createRoom({ persist: true });
  const plain = await a.createRoom({ persist: false });
  await a.close();
  child.kill("SIGTERM");
  await exited;
  const show = await runCli(["room", "show", room.id, "-d", dataDir]);
  ok(t, show, "room show");
  t.match(show.stdout, "history: limits unknown (the bus in the data dir is not running");
  const json = JSON.parse((await runCli(["room", "show", room.id, "--json", "-d", dataDir])).stdout);
  t.equal(json.history, null, "JSON: null, not a guess");
  const cleartext = JSON.parse((await runCli(["room", "show", plain.id, "--json", "-d", dataDir])).stdout);
  t.notOk("history" in cleartext, "a room without persistence has no history entry");
});
