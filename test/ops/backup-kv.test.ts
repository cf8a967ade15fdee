// `unibus backup` / `unibus restore` on a three-node KV cluster: a backup taken while
// writers publish, add users and rekey restores into a new cluster (new data dirs) with
// the same users, rooms, members, sealed keys and invites, history a member decrypts
// and blobs byte for byte; a partial backup is refused, and so is a cluster in use.
import crypto from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import t, { type Test } from "tap";
import { loadOrCreateServiceKeys } from "../../lib/auth/service-keys.ts";
import { startCluster, type UnibusCluster } from "../../lib/bus/cluster.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { connect } from "../../lib/client/connect.ts";
import type { RoomMessage } from "../../lib/client/room.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { createBackup } from "../../lib/ops/backup.ts";
import { BackupError, KV_STORE_FILE, verifyBackup } from "../../lib/ops/backup-format.ts";
import { restoreBackup } from "../../lib/ops/restore.ts";
import { writeRunInfo } from "../../lib/ops/run-file.ts";
import { newInviteToken, type Snapshot } from "../../lib/store/index.ts";
import { member } from "../helpers/bus.ts";
import { oneLineError, runCli } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { waitFor } from "../helpers/wait.ts";

async function modes(dir: string, skip: (rel: string) => boolean = () => false): Promise<string[]> {
  const wrong: string[] = [];
  for (const e of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    const file = path.join(e.parentPath, e.name);
    const rel = path.relative(dir, file);
    if (skip(rel)) continue;
    const mode = (await fs.stat(file)).mode & 0o777;
    if (mode !== (e.isDirectory() ? 0o700 : 0o600)) wrong.push(`${rel} ${mode.toString(8)}`);
  }
  if (((await fs.stat(dir)).mode & 0o777) !== 0o700) wrong.push(". not 0700");
  return wrong;
}

async function cluster3(t: Test, dataDir: string): Promise<UnibusCluster> {
  const c = await startCluster({ nodes: 3, dataDir, natsServer: NATS_SERVER, readyTimeoutMs: 60_000 });
  t.teardown(() => c.stop());
  await writeRunInfo(dataDir, c);
  return c;
}

async function clientOf(t: Test, c: UnibusCluster, identity: Identity) {
  const client = await connect({
    natsUrl: c.natsUrls,
    controlUrl: c.controlUrls[0]!,
    ca: c.caPem,
    identity,
    timeoutMs: 15_000,
  });
  // Closed in teardown unless the test closed it first (closing twice is an error).
  let closed = false;
  const close = client.close.bind(client);
  client.close = async () => {
    if (closed) return;
    closed = true;
    await close();
  };
  t.teardown(() => client.close());
  return client;
}

async function readAll(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

const text = (m: RoomMessage) => Buffer.from(m.data).toString();

t.test("a KV cluster backed up while writers run restores into a new cluster", async (t) => {
  const root = await tempDir(t, "kvbackup");
  const a = await cluster3(t, path.join(root, "a"));
  const node: Unibus = a.nodes[0]!;
  const alice = await member(node, "alice", "admin");
  const bob = await member(node, "bob");
  const carol = await member(node, "carol");
  const c = await clientOf(t, a, alice);
  const room = await c.createRoom({ encrypt: true, persist: true, signMsgs: true });
  await room.addMember(bob.signPub);
  await room.addMember(carol.signPub);
  for (let i = 0; i < 20; i++) await room.publish(`epoch 1 #${i}`);
  await room.rekey();
  for (let i = 0; i < 10; i++) await room.publish(`epoch 2 #${i}`);
  await room.removeMember(carol.signPub); // epoch 3: carol never gets its key
  for (let i = 0; i < 10; i++) await room.publish(`epoch 3 #${i}`);
  const plain = await c.createRoom({ encrypt: false, persist: true });
  await plain.publish("in the clear");
  await c.createRoom({ encrypt: true }); // not persisted: no history to keep
  const invite = await node.store.createInvite({
    token: newInviteToken(),
    handle: "dave",
    role: "member",
    createdBy: "alice",
  });
  const blobBytes = crypto.randomBytes(700 * 1024 + 5);
  const blob = await room.putBlob(blobBytes, { mimetype: "application/octet-stream" });
  await room.flush();

  // The writers: publish, add users and rekey while the backup runs.
  let writing = true;
  let published = 0;
  let rekeyed = 0;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      await room.publish(`during #${i}`);
      await new Promise((r) => setImmediate(r));
      published++;
      if (i % 10 === 0) await node.addUser(createIdentity().signPub, { handle: `w${i}`, role: "member" });
      if (i % 25 === 24) {
        await room.rekey();
        rekeyed++;
      }
    }
  })();
  const out = path.join(root, "backup");
  const lines: string[] = [];
  const manifest = await createBackup({
    dataDir: a.dataDir,
    out,
    unibusVersion: "test",
    onProgress: (l) => lines.push(l),
  });
  writing = false;
  await writer;
  await room.flush();
  t.ok(published > 0, `the writer published ${published} messages (${rekeyed} rekeys) during the backup`);

  t.equal(manifest.store, "kv", "the manifest says where the store came from");
  t.same(await modes(out), [], "the backup is 0600 files in 0700 dirs");
  t.ok(
    lines.some((l) => /^store: reading the KV buckets/.test(l)) && lines.some((l) => l.startsWith("history: room")),
    "progress names the store and each room's history",
  );
  await verifyBackup(out);
  t.equal(manifest.counts.blobs, 1);
  t.equal(manifest.counts.streams, 2, "both persisted rooms' history");
  const saved = JSON.parse(await fs.readFile(path.join(out, KV_STORE_FILE), "utf8")) as Snapshot;

  // The backup against the live cluster, now that the writers stopped.
  const live = await node.store.snapshot();
  t.same(
    saved.rooms.map((r) => r.id),
    live.rooms.map((r) => r.id),
  );
  for (const r of saved.rooms) {
    const now = live.rooms.find((x) => x.id === r.id)!;
    t.ok(r.epoch <= now.epoch && r.epoch >= (r.id === room.id ? 3 : 1), `room ${r.id} at epoch ${r.epoch}`);
  }
  t.same(saved.members, live.members, "members as they were");
  const liveKeys = new Set(live.sealedKeys.map((k) => JSON.stringify(k)));
  t.ok(
    saved.sealedKeys.every((k) => liveKeys.has(JSON.stringify(k))),
    "every sealed key in the backup is the live one",
  );
  for (const r of saved.rooms.filter((x) => x.encrypt)) {
    const members = saved.members.filter((m) => m.roomId === r.id).map((m) => m.signPub);
    for (const signPub of members) {
      const has = saved.sealedKeys.some((k) => k.roomId === r.id && k.signPub === signPub && k.epoch === r.epoch);
      t.ok(has, `member ${signPub.slice(0, 8)} of ${r.id} has its key of epoch ${r.epoch}`);
    }
  }
  const liveUsers = new Map(live.users.map((u) => [u.signPub, u]));
  for (const u of saved.users) t.same(u, liveUsers.get(u.signPub), `user ${u.handle} as it is`);
  for (const who of [alice, bob, carol]) t.ok(saved.users.some((u) => u.signPub === who.signPub));
  t.same(saved.invites, live.invites);
  t.equal(saved.invites[0]?.tokenHash, invite.tokenHash);

  const bobA = await clientOf(t, a, bob);
  const original: RoomMessage[] = [];
  for await (const m of (await bobA.openRoom(room.id)).history()) original.push(m);
  await bobA.close();
  const roomHistory = manifest.streams.find((s) => s.roomId === room.id)!;
  t.ok(roomHistory.messages >= 40, "everything published before the backup began is in it");
  await a.stop(); // the machine is shared: the original is no longer needed

  // A partial backup is refused before anything is written.
  const partial = path.join(root, "partial");
  await fs.cp(out, partial, { recursive: true });
  await fs.rm(path.join(partial, "blobs", blob.id));
  await t.rejects(
    restoreBackup({ backup: partial, dataDir: path.join(root, "never") }),
    { code: "BACKUP", message: /blobs\/[0-9a-f]{32} is missing from .*: the backup is partial/ },
    "a missing blob",
  );
  await fs.rm(path.join(partial, "manifest.json"));
  const r = await runCli(["restore", partial, "--data-dir", path.join(root, "never")]);
  oneLineError(t, r, /has no manifest\.json: the backup is partial/, "restore of an interrupted backup");
  t.notOk(await fs.stat(path.join(root, "never")).catch(() => undefined), "nothing written");

  // Step 1: the keys into a new data dir.
  const b = path.join(root, "b");
  const first = await restoreBackup({ backup: out, dataDir: b });
  t.match(first.next, /unibus up --cluster 3 --data-dir .*then run `unibus restore .* again/);
  t.same(
    (await fs.readdir(b, { recursive: true })).sort(),
    ["service-keys.json", "tls", "tls/ca-key.pem", "tls/ca.pem"],
    "only the CA and the service keys",
  );
  t.same(await modes(b), [], "0600 keys in 0700 dirs");

  // Step 2: the state into a cluster started on them.
  const bc = await cluster3(t, b);
  t.equal(bc.caPem, a.caPem, "the restored cluster keeps the CA its clients trust");
  const steps: string[] = [];
  const second = await restoreBackup({ backup: out, dataDir: b, onProgress: (l) => steps.push(l) });
  t.equal(second.next, undefined, "the restore is finished");
  t.ok(steps.some((l) => /^store: importing into the cluster's KV buckets \(R3\)/.test(l)));
  t.same(await bc.nodes[1]!.store.snapshot(), saved, "users, rooms, members, sealed keys, invites as backed up");

  const bobB = await clientOf(t, bc, bob);
  const roomB = await bobB.openRoom(room.id);
  const drops: string[] = [];
  const history: RoomMessage[] = [];
  for await (const m of roomB.history({ onDrop: (d) => drops.push(d.reason) })) history.push(m);
  t.same(drops, [], "every restored message decrypts and verifies");
  t.equal(history.length, roomHistory.messages);
  t.same(
    history.map((m) => [m.seq, m.epoch, text(m), m.sender]),
    original.slice(0, history.length).map((m) => [m.seq, m.epoch, text(m), m.sender]),
    "the same messages, sequence numbers, epochs and senders",
  );
  t.same([...new Set(history.map((m) => m.epoch))].slice(0, 3), [1, 2, 3], "history of every epoch");
  t.same(await readAll((await roomB.getBlob(blob.id)).data), blobBytes, "the blob, byte for byte");
  const aliceB = await clientOf(t, bc, alice);
  const plainB: string[] = [];
  for await (const m of (await aliceB.openRoom(plain.id)).history()) plainB.push(text(m));
  t.same(plainB, ["in the clear"], "the cleartext room's history too");
  await roomB.publish("after restore");
  await waitFor("the new message persisted", async () => {
    const last: string[] = [];
    for await (const m of roomB.history({ fromSeq: history.at(-1)!.seq! + 1 })) last.push(text(m));
    return last.join() === "after restore";
  });

  // A second run converges (it keeps the restored history); a cluster in use is refused.
  const again: string[] = [];
  await restoreBackup({ backup: out, dataDir: b, onProgress: (l) => again.push(l) });
  t.ok(
    again.some((l) => l.endsWith(": already restored")),
    "a restored room's history is kept as it is",
  );
  await bc.nodes[2]!.addUser(createIdentity().signPub, { handle: "newcomer" });
  await t.rejects(restoreBackup({ backup: out, dataDir: b }), {
    code: "BACKUP",
    message: /already holds 1 users not in the backup; restore only into a freshly started cluster/,
  });
  // Progress lines come first on stderr (the backup verified); the error is the last line, alone.
  const cli = await runCli(["restore", out, "--data-dir", b]);
  t.equal(cli.code, 1);
  t.match(cli.stderr, /\nunibus: the cluster on .* already holds 1 users not in the backup[^\n]*\n$/);
  t.equal(cli.stdout, "");

  // Step 2 refuses a bus on another CA, and a SQLite bus, before it connects to either.
  const run = JSON.parse(await fs.readFile(path.join(b, "run.json"), "utf8"));
  const other = path.join(root, "other-ca");
  await fs.mkdir(path.join(other, "tls"), { recursive: true, mode: 0o700 });
  await fs.writeFile(path.join(other, "run.json"), JSON.stringify({ ...run, dataDir: other }), { mode: 0o600 });
  await fs.writeFile(
    path.join(other, "tls", "ca.pem"),
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
  );
  await t.rejects(restoreBackup({ backup: out, dataDir: other }), {
    code: "BACKUP",
    message: /runs on another CA than the backup's; restore into a new data dir first/,
  });
  await fs.writeFile(path.join(other, "run.json"), JSON.stringify({ ...run, dataDir: other, store: "sqlite" }));
  await t.rejects(restoreBackup({ backup: out, dataDir: other }), {
    code: "BACKUP",
    message: /runs a bus on SQLite; a KV cluster's backup restores into a KV cluster/,
  });
});

t.test("a KV data dir whose cluster is not running: one line, nothing written", async (t) => {
  const root = await tempDir(t, "kvbackup-down");
  const dataDir = path.join(root, "node");
  await fs.mkdir(dataDir, { mode: 0o700 });
  await loadOrCreateServiceKeys(dataDir);
  const out = path.join(root, "backup");
  const err = await createBackup({ dataDir, out, unibusVersion: "0" }).catch((e: unknown) => e);
  t.type(err, BackupError);
  t.match((err as Error).message, /no bus runs on .* a KV cluster is backed up through a running node; start it/);
  const r = await runCli(["backup", out, "--data-dir", dataDir]);
  oneLineError(t, r, /a KV cluster is backed up through a running node/, "backup of a stopped KV node");
  t.notOk(await fs.stat(out).catch(() => undefined), "nothing written");
});
