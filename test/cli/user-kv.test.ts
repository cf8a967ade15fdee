// `unibus user … --store kv`: the admin CLI edits a running bus' replicated KV store as
// the bus itself (its service key), over TLS verified against the bus CA — never without
// it — and reports the buckets' replication after a write.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { runCli, upOn } from "../helpers/cli.ts";

const dataDir = path.join(t.testdir(), "bus");
const { child, ready, exited } = await upOn(t, dataDir, ["--store", "kv"]);
t.teardown(async () => {
  child.kill("SIGTERM");
  await exited;
});
const natsUrl = ready.natsUrls[0]!;

t.test("the bus in the data dir runs on KV: the CLI finds it and writes there", async (t) => {
  t.equal(ready.store, "kv");
  const alice = createIdentity();
  const add = await runCli(["user", "add", alice.signPub, "--handle", "alice", "--role", "admin", "-d", dataDir]);
  t.equal(add.code, 0, add.stderr);
  t.equal(
    add.stdout,
    `added alice (admin, active) ${alice.signPub}\nreplication: 1 bucket at R1, every replica current\n`,
  );
  t.notOk(fs.existsSync(path.join(dataDir, "store.db")), "no SQLite file was created");

  const list = await runCli(["user", "list", "--json", "-d", dataDir]);
  t.equal(list.code, 0, list.stderr);
  t.same(
    JSON.parse(list.stdout).map((u: { handle: string }) => u.handle),
    ["alice"],
  );
  const c = await connect({ natsUrl, caFile: ready.caFile, identity: alice, timeoutMs: 10_000 });
  t.teardown(() => c.close());

  // Revoked through the CLI: the bus kicks the live connection (its sweep reads KV).
  const closed = c.nc.closed();
  const revoke = await runCli(["user", "revoke", alice.signPub, "--store", "kv", "-d", dataDir]);
  t.equal(revoke.code, 0, revoke.stderr);
  t.match(revoke.stdout, /^revoked alice \(admin, revoked\)/);
  t.match(revoke.stdout, /replication: 1 bucket at R1/);
  await closed;
  t.ok(c.nc.isClosed(), "the revoked identity's connection is closed for good");
});

t.test("from another machine: --server and --ca with only the service key copied", async (t) => {
  const remote = path.join(t.testdir(), "admin");
  fs.mkdirSync(remote, { mode: 0o700 });
  fs.copyFileSync(path.join(dataDir, "service-keys.json"), path.join(remote, "service-keys.json"));
  fs.chmodSync(path.join(remote, "service-keys.json"), 0o600);
  const bob = createIdentity();
  const args = ["--store", "kv", "--server", natsUrl, "--ca", ready.caFile, "-d", remote];
  const add = await runCli(["user", "add", bob.signPub, "--handle", "bob", ...args]);
  t.equal(add.code, 0, add.stderr);
  const list = await runCli(["user", "list", ...args]);
  t.match(list.stdout, /bob\s+member\s+active/);
});

t.test("refusals: one line, nothing written, no connection without the CA", async (t) => {
  const empty = t.testdir();
  const bob = createIdentity().signPub;
  const cases: Array<[string, string[], RegExp]> = [
    [
      "a remote target without the CA",
      ["--store", "kv", "--server", "tls://10.255.0.1:4222", "-d", empty],
      /^unibus: refusing to reach tls:\/\/10\.255\.0\.1:4222 without the bus CA .*pass --ca <file>/,
    ],
    ["no running bus and no --server", ["--store", "kv", "-d", empty], /^unibus: no running bus found in .*--server/],
    [
      "no service key in the data dir",
      ["--store", "kv", "--server", natsUrl, "--ca", ready.caFile, "-d", empty],
      /^unibus: no service keys in .*copy service-keys\.json/,
    ],
    [
      "an unknown backend",
      ["--store", "etcd", "-d", empty],
      /^unibus: --store="etcd" must be one of auto, sqlite, kv$/m,
    ],
  ];
  for (const [what, args, message] of cases) {
    const r = await runCli(["user", "add", bob, "--handle", "bob2", ...args]);
    t.not(r.code, 0, what);
    t.match(r.stderr, message, what);
    t.equal(r.stderr.trim().split("\n").length, 1, `${what}: one line`);
    t.equal(r.stdout, "", `${what}: nothing printed as done`);
  }
  t.same(fs.readdirSync(empty), [], "nothing created in the data dir");
  const list = await runCli(["user", "list", "--json", "-d", dataDir]);
  t.notOk(
    JSON.parse(list.stdout).some((u: { handle: string }) => u.handle === "bob2"),
    "nothing written",
  );
});

t.test("user set on KV: the change is in the cluster's store, a taken handle is refused", async (t) => {
  const carol = createIdentity();
  const dave = createIdentity();
  for (const [id, handle] of [
    [carol, "carol"],
    [dave, "dave"],
  ] as const) {
    t.equal((await runCli(["user", "add", id.signPub, "--handle", handle, "-d", dataDir])).code, 0);
  }
  const set = await runCli(["user", "set", carol.signPub, "--role", "admin", "--handle", "caro", "-d", dataDir]);
  t.equal(set.code, 0, set.stderr);
  t.match(set.stdout, /^updated caro \(admin, active\)/);
  t.match(set.stdout, /replication: 1 bucket at R1/, "a write reports replication");
  const taken = await runCli(["user", "set", dave.signPub, "--handle", "caro", "-d", dataDir]);
  t.not(taken.code, 0);
  t.match(taken.stderr, /^unibus: the handle "caro" is already taken/);
  const list = JSON.parse((await runCli(["user", "list", "--json", "-d", dataDir])).stdout) as { handle: string }[];
  t.ok(list.some((u) => u.handle === "caro") && list.some((u) => u.handle === "dave"), "as listed");
  t.notOk(
    list.some((u) => u.handle === "carol"),
    "the old handle is gone",
  );
});
