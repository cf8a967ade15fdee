// `unibus backup` / `unibus restore`: a backup taken while a writer runs restores into a
// new data dir with the same users, rooms, members, sealed keys, history and blobs; a
// partial or altered backup is refused with one line naming what is wrong.
import crypto from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import t, { type Test } from "tap";
import { connectAsService } from "../../lib/auth/service-connection.ts";
import { loadServiceKeys } from "../../lib/auth/service-keys.ts";
import type { RoomMessage } from "../../lib/client/room.ts";
import { encodeFrame } from "../../lib/crypto/frame.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { createBackup } from "../../lib/ops/backup.ts";
import { BackupError, verifyBackup } from "../../lib/ops/backup-format.ts";
import { collectStatus, runDoctor } from "../../lib/ops/index.ts";
import { restoreBackup } from "../../lib/ops/restore.ts";
import { writeRunInfo } from "../../lib/ops/run-file.ts";
import { openStore, type Snapshot } from "../../lib/store/index.ts";
import { client, member, testBus } from "../helpers/bus.ts";
import { runCli } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { waitFor } from "../helpers/wait.ts";

async function snapshotOf(dataDir: string): Promise<Snapshot> {
  const store = await openStore({ backend: "sqlite", file: path.join(dataDir, "store.db") });
  try {
    return await store.snapshot();
  } finally {
    await store.close();
  }
}

async function readAll(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

async function modes(dir: string): Promise<string[]> {
  const wrong: string[] = [];
  for (const e of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    const file = path.join(e.parentPath, e.name);
    // The server certificate is public; the bus issues it on start (not the backup's).
    if (path.relative(dir, file) === path.join("tls", "server.pem")) continue;
    const mode = (await fs.stat(file)).mode & 0o777;
    if (mode !== (e.isDirectory() ? 0o700 : 0o600)) wrong.push(`${path.relative(dir, file)} ${mode.toString(8)}`);
  }
  if (((await fs.stat(dir)).mode & 0o777) !== 0o700) wrong.push(". not 0700");
  return wrong;
}

/** A bus with two members, an encrypted persisted room with history and a blob; backed up while a writer runs. */
async function busWithBackup(t: Test) {
  const root = await tempDir(t, "backup");
  const dataDir = path.join(root, "bus");
  const bus = await testBus(t, { dataDir, natsServer: NATS_SERVER });
  await writeRunInfo(dataDir, bus);
  const alice = await member(bus, "alice", "admin");
  const bob = await member(bus, "bob");
  const c = await client(t, bus, alice);
  const room = await c.createRoom({ encrypt: true, persist: true });
  await room.addMember(bob.signPub);
  for (let i = 0; i < 50; i++) await room.publish(Buffer.from(`before ${i}`));
  const blobBytes = Buffer.from("a blob's bytes ".repeat(1000));
  const blob = await room.putBlob(blobBytes, { mimetype: "text/plain" });
  // The writer: publishes into the persisted room and adds users while the backup runs.
  let writing = true;
  let published = 0;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      await room.publish(Buffer.from(`during ${i}`));
      // publish() may resolve at once: yield, or the loop would starve the backup.
      await new Promise((r) => setImmediate(r));
      published++;
      if (i % 10 === 0) await bus.addUser(createIdentity().signPub, { handle: `w${i}`, role: "member" });
    }
  })();
  const out = path.join(root, "backup");
  const lines: string[] = [];
  const manifest = await createBackup({ dataDir, out, unibusVersion: "test", onProgress: (l) => lines.push(l) });
  writing = false;
  await writer;
  return { root, dataDir, bus, alice, bob, room, blob, blobBytes, out, manifest, lines, published };
}

t.test("a backup taken while a writer runs restores everything into a new data dir", async (t) => {
  const b = await busWithBackup(t);
  t.ok(b.published > 0, "the writer published during the backup");
  t.same(await modes(b.out), [], "the backup is 0600 files in 0700 dirs");
  t.ok(
    b.lines.some((l) => l.startsWith("history: room")),
    "progress names each room's history",
  );
  t.equal(b.manifest.counts.blobs, 1);
  t.ok(b.manifest.counts.messages >= 50, "every message published before the backup is in it");
  await verifyBackup(b.out);

  const restored = path.join(b.root, "restored");
  await restoreBackup({ backup: b.out, dataDir: restored, natsServer: NATS_SERVER });
  t.same(await modes(restored), [], "the restored data dir is 0600 files in 0700 dirs");

  // The store: identical to what the backup copied; rooms, members, keys as on the live bus.
  const after = await snapshotOf(restored);
  const live = await snapshotOf(b.dataDir);
  t.same(after.rooms, live.rooms);
  t.same(after.members, live.members);
  t.same(after.sealedKeys, live.sealedKeys);
  t.same(after.invites, live.invites);
  t.equal(after.users.length, b.manifest.counts.users);
  const liveUsers = new Map(live.users.map((u) => [u.signPub, u]));
  for (const u of after.users) t.same(u, liveUsers.get(u.signPub), `user ${u.handle} as it was`);
  t.ok(after.users.length >= 2);

  // History and blobs, through a bus started on the restored data dir, read by a member.
  const original: RoomMessage[] = [];
  for await (const m of b.room.history()) original.push(m);
  const bus2 = await testBus(t, { dataDir: restored, natsServer: NATS_SERVER });
  const bobClient = await client(t, bus2, b.bob);
  const room2 = await bobClient.openRoom(b.room.id);
  const history: RoomMessage[] = [];
  for await (const m of room2.history()) history.push(m);
  t.equal(history.length, b.manifest.counts.messages);
  t.same(
    history.map((m) => [m.seq, Buffer.from(m.data).toString(), m.sender]),
    original.slice(0, history.length).map((m) => [m.seq, Buffer.from(m.data).toString(), m.sender]),
    "the same messages, same sequence numbers, same senders",
  );
  const blob = await room2.getBlob(b.blob.id);
  t.same(await readAll(blob.data), b.blobBytes, "the blob decrypts to the same bytes");
  // The restored room still works: a new message is persisted after the old ones.
  await room2.publish(Buffer.from("after restore"));
  const newer = async () => {
    const last: string[] = [];
    for await (const m of room2.history({ fromSeq: history.at(-1)!.seq! + 1 }))
      last.push(Buffer.from(m.data).toString());
    return last;
  };
  // publish() is fire-and-forget: wait until the stream has stored it.
  await waitFor("the new message in the history", async () => (await newer()).length > 0);
  t.same(await newer(), ["after restore"]);
});

t.test("a partial or altered backup is refused, naming what is wrong", async (t) => {
  const b = await busWithBackup(t);
  const copy = async (name: string) => {
    const dir = path.join(b.root, name);
    await fs.cp(b.out, dir, { recursive: true });
    return dir;
  };
  const refused = async (dir: string, pattern: RegExp, what: string) => {
    const target = path.join(b.root, `restore-${path.basename(dir)}`);
    await t.rejects(restoreBackup({ backup: dir, dataDir: target }), pattern, what);
    t.notOk(await fs.stat(path.join(target, "store.db")).catch(() => undefined), `${what}: nothing restored`);
  };
  const stream = b.manifest.streams[0]!.file;

  const missing = await copy("missing");
  await fs.rm(path.join(missing, stream));
  await refused(missing, /is missing from .*: the backup is partial/, "a missing file");

  const altered = await copy("altered");
  const f = path.join(altered, stream);
  const text = await fs.readFile(f, "utf8");
  t.match(text, /"seq":1,/);
  await fs.writeFile(f, text.replace('"seq":1,', '"seq":9,'));
  await refused(altered, /does not match its SHA-256.*altered/, "a changed byte");

  const extra = await copy("extra");
  await fs.writeFile(path.join(extra, "blobs", "planted"), "x");
  await refused(extra, /blobs\/planted .* is not in the backup's manifest/, "an extra file");

  const noManifest = await copy("no-manifest");
  await fs.rm(path.join(noManifest, "manifest.json"));
  await refused(noManifest, /has no manifest\.json: the backup is partial/, "no manifest");

  const edited = await copy("edited");
  const mf = path.join(edited, "manifest.json");
  await fs.writeFile(mf, (await fs.readFile(mf, "utf8")).replace('"users": ', '"users": 1'));
  await refused(edited, /manifest\.json .* was altered/, "an edited manifest");

  // Through the CLI: one line, non-zero exit.
  const r = await runCli(["restore", missing, "--data-dir", path.join(b.root, "cli-target")]);
  t.equal(r.code, 1);
  t.match(r.stderr, /^unibus: .*is missing from .*: the backup is partial\n$/);
});

t.test("backup and restore refuse what they cannot do safely", async (t) => {
  const b = await busWithBackup(t);
  await t.rejects(
    createBackup({ dataDir: b.dataDir, out: b.out, unibusVersion: "test" }),
    { code: "BACKUP", message: /is not empty; give a new directory/ },
    "never writes into a non-empty directory",
  );
  await t.rejects(
    restoreBackup({ backup: b.out, dataDir: b.dataDir }),
    { code: "BACKUP", message: /is not empty; restore into a new data dir/ },
    "never restores over a bus",
  );
  await b.bus.stop();
  await fs.rm(path.join(b.dataDir, "run.json"), { force: true });
  const out = path.join(b.root, "offline");
  const err = await createBackup({ dataDir: b.dataDir, out, unibusVersion: "test" }).catch((e: unknown) => e);
  t.ok(err instanceof BackupError);
  t.match((err as Error).message, /is not running.*start it \(`unibus up --data-dir/);
  t.notOk(await fs.stat(out).catch(() => undefined), "no partial backup left behind");
});

t.test("status and doctor notice a persisted room whose stream is missing", async (t) => {
  const root = await tempDir(t, "nostream");
  const dataDir = path.join(root, "bus");
  const bus = await testBus(t, { dataDir, natsServer: NATS_SERVER });
  await writeRunInfo(dataDir, bus);
  const alice = await member(bus, "alice", "admin");
  const c = await client(t, bus, alice);
  const room = await c.createRoom({ encrypt: true, persist: true });
  await c.createRoom({ encrypt: true, persist: false });
  const history = (ds: Awaited<ReturnType<typeof runDoctor>>) => ds.filter((d) => d.check === "history");
  t.same(
    history(await runDoctor({ dataDir })).map((d) => d.level),
    ["ok"],
  );
  t.notMatch((await collectStatus({ dataDir })).problems.join("\n"), /history stream/);

  // What a data dir restored by hand looks like: the store knows the room, JetStream does not.
  const keys = await loadServiceKeys(dataDir);
  const nc = await connectAsService({ servers: [bus.natsUrl], caPem: bus.caPem, key: keys.app, name: "test" });
  t.teardown(() => nc.close());
  await (await jetstreamManager(nc)).streams.delete(`ROOM_${room.id}`);

  // The member reading history gets a typed error, not the broker's "no responders".
  const read = async () => {
    for await (const _ of room.history()) {
    }
  };
  await t.rejects(read(), { code: "HISTORY_UNAVAILABLE", message: /unibus doctor/ });

  const status = await collectStatus({ dataDir });
  t.equal(status.state, "degraded");
  t.match(
    status.problems.join("\n"),
    new RegExp(`1 persisted room\\(s\\) have no history stream \\(${room.id}\\).*unibus restore`),
  );
  const found = history(await runDoctor({ dataDir }));
  t.equal(found[0]?.level, "error");
  t.match(found[0]?.fix, /unibus restore/);
});

t.test("a room's history stops before a message of an epoch the store copy does not know", async (t) => {
  const root = await tempDir(t, "backup-epoch");
  const dataDir = path.join(root, "bus");
  const bus = await testBus(t, { dataDir, natsServer: NATS_SERVER });
  await writeRunInfo(dataDir, bus);
  const alice = await member(bus, "alice", "admin");
  const c = await client(t, bus, alice);
  const room = await c.createRoom({ encrypt: true, persist: true });
  for (let i = 0; i < 5; i++) await room.publish(`epoch 1 #${i}`);
  await room.flush();
  // What a rekey after the store copy leaves in the stream: a frame of an epoch (9) the
  // copied store has no key for, then more messages (stored through JetStream, acked).
  const keys = await loadServiceKeys(dataDir);
  const nc = await connectAsService({ servers: [bus.natsUrl], caPem: bus.caPem, key: keys.app, name: "test" });
  t.teardown(() => nc.close());
  const js = jetstream(nc);
  const future = encodeFrame({
    roomId: room.id,
    epoch: 9,
    sender: alice,
    plaintext: "rekeyed after the copy",
    roomKey: crypto.randomBytes(32),
    sign: false,
  });
  await js.publish(room.subject, future);
  await js.publish(
    room.subject,
    encodeFrame({ roomId: room.id, epoch: 1, sender: alice, plaintext: "x", sign: false }),
  );

  const lines: string[] = [];
  const out = path.join(root, "backup");
  const manifest = await createBackup({ dataDir, out, unibusVersion: "test", onProgress: (l) => lines.push(l) });
  const s = manifest.streams[0]!;
  t.same([s.messages, s.firstSeq, s.lastSeq], [5, 1, 5], "the five messages before it, nothing from it on");
  t.ok(
    lines.some(
      (l) =>
        l ===
        `history: room ${room.id}: stopped at seq 6, a message of epoch 9 (rekeyed after the store copy; the store has epoch 1)`,
    ),
    "progress says where and why it stopped",
  );
  const saved = (await fs.readFile(path.join(out, s.file), "utf8")).trim().split("\n");
  t.equal(saved.length, 5);
});
