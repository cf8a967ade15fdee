import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { buffer as collect } from "node:stream/consumers";
import { connect } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { loadOrCreateServiceKeys } from "../../lib/auth/service-keys.ts";
import { busLayout } from "../../lib/bus/layout.ts";
import { migrateToKv } from "../../lib/cli/commands/migrate.ts";
import { ObjectBlobStore, openBlobBucket } from "../../lib/control/blob-objects.ts";
import { BlobStore } from "../../lib/control/blobs.ts";
import { type KvStore, newInviteToken, openKvStore, openStore, type Snapshot } from "../../lib/store/index.ts";
import { runCli } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";
import { startJetStream } from "../helpers/nats.ts";
import { kexPubHex, signPubHex } from "./keys.ts";

const sealed = () => crypto.randomBytes(92).toString("base64url");

/**
 * A representative SQLite store: two rooms (one encrypted and rekeyed to epoch 2, one
 * cleartext), members, a revoked user, and open, spent and cancelled invites.
 */
async function representative(dataDir: string): Promise<{ snap: Snapshot; openToken: string }> {
  const s = await openStore({ backend: "sqlite", file: busLayout(dataDir, "").storeFile });
  const user = (handle: string, role: "admin" | "member" = "member") =>
    s.addUser({ signPub: signPubHex(), kexPub: kexPubHex(), handle, role });
  const alice = await user("alice", "admin");
  const bob = await user("bob");
  const carol = await user("carol");
  await user("dave");
  const secret = await s.createRoom({
    id: "secret",
    subject: "team.secret",
    ownerSignPub: alice.signPub,
    encrypt: true,
    persist: true,
    signMsgs: true,
    ownerSealedKey: sealed(),
  });
  await s.addMember(secret.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
  await s.addMember(secret.id, { signPub: carol.signPub, sealedKey: sealed(), epoch: 1 });
  await s.removeMember(secret.id, carol.signPub);
  await s.rekey(secret.id, {
    fromEpoch: 1,
    sealedKeys: [alice, bob].map((u) => ({ signPub: u.signPub, sealed: sealed() })),
  });
  const lobby = await s.createRoom({
    id: "lobby",
    subject: "team.lobby",
    ownerSignPub: bob.signPub,
    encrypt: false,
    persist: false,
    signMsgs: false,
  });
  await s.addMember(lobby.id, { signPub: alice.signPub });
  await s.addMember(lobby.id, { signPub: carol.signPub });
  await s.revokeUser(carol.signPub);
  const openToken = newInviteToken();
  await s.createInvite({ token: openToken, handle: "erin", role: "member", createdBy: "host" });
  const spent = newInviteToken();
  await s.createInvite({ token: spent, handle: "frank", role: "admin", createdBy: alice.signPub });
  await s.consumeInvite(spent, { signPub: signPubHex(), kexPub: kexPubHex() });
  const cancelled = newInviteToken();
  await s.createInvite({ token: cancelled, handle: "gina", role: "member", createdBy: "host" });
  await s.cancelInvite(cancelled);
  const snap = await s.snapshot();
  await s.close();
  return { snap, openToken };
}

// One JetStream server without auth for the in-process migrations.
const plain = await startJetStream(t, "m1");
const nc = await connect({ servers: plain.url });
t.teardown(() => nc.close());

async function kvFor(tt: Test): Promise<KvStore> {
  const kv = await openKvStore({ nc, bucketPrefix: `m${crypto.randomBytes(5).toString("hex")}_`, storage: "memory" });
  tt.teardown(() => kv.close());
  return kv;
}

t.test("migration: backup, faithful import, parity; a re-run converges", async (t) => {
  const dataDir = await tempDir(t);
  const { snap, openToken } = await representative(dataDir);
  t.equal(snap.rooms.length, 2);
  t.equal(snap.sealedKeys.length, 5, "epoch 1: alice, bob, carol; epoch 2: alice, bob");
  const kv = await kvFor(t);

  const lines: string[] = [];
  const first = await migrateToKv({ dataDir, kv, onProgress: (l) => lines.push(l) });
  t.equal(first.parity, true, "parity");
  t.same(first.differs, []);
  t.same(await kv.snapshot(), snap, "the KV snapshot deep-equals the SQLite snapshot");
  for (const l of ["users 5/5", "rooms 2/2", "sealedKeys 5/5", "invites 3/3"])
    t.ok(lines.includes(l), `progress: ${l}`);
  t.match(first.counts, { users: 5, rooms: 2, members: 5, sealedKeys: 5, invites: 3 });

  // Faithful, not re-created: epochs, statuses and keys behave in the KV store.
  const secret = await kv.getRoom("secret");
  t.equal(secret.epoch, 2, "the real epoch");
  const carol = snap.users.find((u) => u.handle === "carol")!;
  t.equal(await kv.isAuthorized(carol.signPub), false, "the revoked user stays revoked");
  t.equal((await kv.getSealedKey("secret", carol.signPub)).epoch, 1, "a removed member keeps its epoch-1 key");
  t.equal(await kv.isMember("secret", carol.signPub), false);
  t.same(
    (await kv.listRoomsFor(carol.signPub)).map((r) => r.id),
    ["lobby"],
  );
  const erin = await kv.consumeInvite(openToken, { signPub: signPubHex(), kexPub: kexPubHex() });
  t.equal(erin.handle, "erin", "the open invite is still usable");
  await kv.deleteUser(erin.signPub);
  const reopenedInvite = (await kv.listInvites()).find((i) => i.handle === "erin")!;
  t.equal(reopenedInvite.status, "spent");

  // Re-run: the spent erin invite in KV is put back to the SQLite state (open) — it converges.
  const second = await migrateToKv({ dataDir, kv });
  t.equal(second.parity, true, "still parity after a re-run");
  t.same(await kv.snapshot(), snap, "no duplicates, same state");
  t.equal((await kv.listUsers()).length, 5);
  t.not(second.backupFile, first.backupFile, "each run makes its own backup");

  // The backup is a consistent copy that opens as a store.
  t.equal(path.dirname(first.backupFile), path.join(dataDir, "backups"));
  t.equal(fs.statSync(first.backupFile).mode & 0o777, 0o600, "backup is 0600");
  const backup = await openStore({ backend: "sqlite", file: first.backupFile });
  t.teardown(() => backup.close());
  t.same(await backup.snapshot(), snap, "the backup holds the same data");
});

t.test("parity mismatch is reported (extra data in KV)", async (t) => {
  const dataDir = await tempDir(t);
  await representative(dataDir);
  const kv = await kvFor(t);
  await kv.addUser({ signPub: signPubHex(), handle: "intruder", role: "member" });
  const r = await migrateToKv({ dataDir, kv });
  t.equal(r.parity, false);
  t.same(r.differs, ["users"]);
});

t.test("a data dir without a store is a clear error", async (t) => {
  const dataDir = await tempDir(t);
  const kv = await kvFor(t);
  await t.rejects(migrateToKv({ dataDir, kv }), /no bus store/);
});

t.test("CLI: migrate-to-kv with the APP service key, progress on stderr, parity on stdout", async (t) => {
  const dataDir = await tempDir(t);
  const { snap } = await representative(dataDir);
  const keys = await loadOrCreateServiceKeys(dataDir);
  const { url } = await startJetStream(t, "m2", {
    accounts: { APP: { jetstream: true, users: [{ nkey: keys.app.publicKey }] } },
  });
  const args = ["migrate-to-kv", "--data-dir", dataDir, "--nats-url", url];
  const r = await runCli(args);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /^users 5\/5$/m);
  t.match(r.stderr, /^rooms 2\/2$/m);
  t.match(r.stdout, /parity: OK/);
  t.match(r.stdout, /^blobs: 0 copied, 0 already there$/m, "blobs too");
  const again = await runCli(args);
  t.equal(again.code, 0, "idempotent re-run");
  t.match(again.stdout, /parity: OK/);
  t.equal(fs.readdirSync(path.join(dataDir, "backups")).length, 2);

  const { nkeySigner } = await import("../../lib/auth/authenticator.ts");
  const kv = await openKvStore({
    servers: url,
    authenticator: nkeySigner(keys.app.publicKey, (d) => keys.app.sign(d)),
  });
  t.teardown(() => kv.close());
  t.same(await kv.snapshot(), snap, "unibus_* buckets in the APP account hold the data");
});

t.test("CLI: refuses a remote target without --ca, and bad --replicas", async (t) => {
  const dataDir = await tempDir(t);
  await representative(dataDir);
  const [remote, reps] = await Promise.all([
    runCli(["migrate-to-kv", "-d", dataDir, "--nats-url", "nats://10.1.2.3:4222"]),
    runCli(["migrate-to-kv", "-d", dataDir, "--nats-url", "nats://127.0.0.1:1", "--replicas", "7"]),
  ]);
  t.equal(remote.code, 1);
  t.match(remote.stderr, /without --ca/);
  t.equal(reps.code, 1);
  t.match(reps.stderr, /--replicas/);
  t.notOk(fs.existsSync(path.join(dataDir, "backups")), "nothing was done");
});

t.test("migration moves the blob directory into the blob Object Store; a re-run copies nothing twice", async (t) => {
  const dataDir = await tempDir(t);
  await representative(dataDir);
  const kv = await kvFor(t);
  const sqlite = await openStore({ backend: "sqlite", file: busLayout(dataDir, "").storeFile });
  t.teardown(() => sqlite.close());
  const files = await new BlobStore({ dir: path.join(dataDir, "blobs"), store: sqlite }).start();
  t.teardown(() => files.close());
  const put = async (roomId: string, data: Buffer) => {
    const up = await files.beginUpload({ roomId, uploader: "ab".repeat(32), mimetype: "image/png" });
    await up.write(data);
    return up.commit({ size: data.length, sha256: crypto.createHash("sha256").update(data).digest("hex") });
  };
  const big = crypto.randomBytes(300 * 1024 + 1);
  const small = Buffer.from("small");
  const bigMeta = await put("secret", big);
  const smallMeta = await put("lobby", small);
  const bad = await put("lobby", Buffer.from("good bytes"));
  fs.writeFileSync(path.join(dataDir, "blobs", bad.id), "evil bytes"); // same size, other bytes

  const blobs = await openBlobBucket(nc, { replicas: 1, bucketPrefix: `b${crypto.randomBytes(5).toString("hex")}_` });
  const lines: string[] = [];
  const first = await migrateToKv({ dataDir, kv, blobs, onProgress: (l) => lines.push(l) });
  t.same(first.blobs, { copied: 2, present: 0, corrupt: [bad.id] }, "two copied, the tampered one left out");
  t.ok(lines.includes("blobs copied 2, already there 0, corrupt 1"), lines.join("\n"));

  const store = new ObjectBlobStore({ bucket: () => blobs, store: kv });
  t.teardown(() => store.close());
  for (const [meta, data] of [
    [bigMeta, big],
    [smallMeta, small],
  ] as const) {
    const { meta: got, body } = await store.read(meta.id);
    t.same(got, meta, "same id and metadata");
    t.ok((await collect(body)).equals(data), "same bytes");
  }
  await t.rejects(store.stat(bad.id), { code: "NOT_FOUND" });
  t.ok(fs.existsSync(path.join(dataDir, "blobs", `${bigMeta.id}.json`)), "the blob dir stays, as the rollback");

  const second = await migrateToKv({ dataDir, kv, blobs });
  t.same(second.blobs, { copied: 0, present: 2, corrupt: [bad.id] }, "a re-run finds them there");
  t.equal((await store.list()).length, 2);
});

t.test("a data dir without blobs migrates with nothing to copy", async (t) => {
  const dataDir = await tempDir(t);
  await representative(dataDir);
  const blobs = await openBlobBucket(nc, { replicas: 1, bucketPrefix: `b${crypto.randomBytes(5).toString("hex")}_` });
  const r = await migrateToKv({ dataDir, kv: await kvFor(t), blobs });
  t.same(r.blobs, { copied: 0, present: 0, corrupt: [] });
});
