// `unibus identity` and `unibus user`: host-trusted allowlist edits, and every refusal
// as one clear line with a non-zero exit.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { oneLineError, runCli } from "../helpers/cli.ts";

t.test("identity new writes a 0600 file and prints its public keys; never overwrites", async (t) => {
  const dir = t.testdir();
  const out = path.join(dir, "me.json");
  const r = await runCli(["identity", "new", "--out", out, "--json"]);
  t.equal(r.code, 0, r.stderr);
  const printed = JSON.parse(r.stdout);
  t.match(printed, { file: out, signPub: /^[0-9a-f]{64}$/, kexPub: /^[0-9a-f]{64}$/, nkey: /^U/ });
  t.equal(fs.statSync(out).mode & 0o777, 0o600);
  t.notMatch(r.stdout, JSON.parse(fs.readFileSync(out, "utf8")).signSeed, "no secret printed");
  const before = fs.readFileSync(out, "utf8");
  oneLineError(t, await runCli(["identity", "new", "--out", out]), /already exists/, "second identity new");
  t.equal(fs.readFileSync(out, "utf8"), before, "file untouched");
  const shown = await runCli(["identity", "show", out, "--json"]);
  t.same(JSON.parse(shown.stdout), { signPub: printed.signPub, kexPub: printed.kexPub, nkey: printed.nkey });
  fs.writeFileSync(path.join(dir, "bad.json"), "{", { mode: 0o600 });
  oneLineError(t, await runCli(["identity", "show", path.join(dir, "bad.json")]), /corrupt/, "corrupt identity");
});

t.test("user add/list/revoke/delete edit the data dir's allowlist", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const alice = createIdentity();
  const bob = createIdentity();
  const d = ["--data-dir", dataDir];

  const add = await runCli(["user", "add", alice.signPub, "--handle", "alice", "--role", "admin", ...d]);
  t.equal(add.code, 0, add.stderr);
  t.match(add.stdout, /added alice \(admin, active\)/);
  const addNkey = await runCli(["user", "add", bob.nkey, "--handle", "bob", "--kex-pub", bob.kexPub, ...d]);
  t.equal(addNkey.code, 0, "a U… key is accepted too");

  const list = await runCli(["user", "list", "--json", ...d]);
  const users = JSON.parse(list.stdout) as { handle: string; signPub: string; role: string; status: string }[];
  t.same(
    users.map((u) => [u.handle, u.role, u.status, u.signPub]),
    [
      ["alice", "admin", "active", alice.signPub],
      ["bob", "member", "active", bob.signPub],
    ],
  );
  const text = await runCli(["user", "list", ...d]);
  t.match(text.stdout, /HANDLE\s+ROLE\s+STATUS/);

  const revoke = await runCli(["user", "revoke", alice.signPub.toUpperCase(), ...d]);
  t.equal(revoke.code, 0, revoke.stderr);
  t.match(revoke.stdout, /revoked alice \(admin, revoked\)/);
  oneLineError(t, await runCli(["user", "revoke", alice.signPub, ...d]), /already revoked/, "second revoke");

  const del = await runCli(["user", "delete", bob.signPub, ...d]);
  t.equal(del.code, 0, del.stderr);
  oneLineError(t, await runCli(["user", "delete", bob.signPub, ...d]), /not found/, "delete unknown");
  oneLineError(
    t,
    await runCli(["user", "revoke", createIdentity().signPub, ...d]),
    /not on the allowlist; add it with `unibus user add/,
    "revoke unknown",
  );
});

t.test("every bad input to user add is one clear line and nothing is written", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const d = ["--data-dir", dataDir];
  const alice = createIdentity();
  t.equal((await runCli(["user", "add", alice.signPub, "--handle", "alice", ...d])).code, 0);
  oneLineError(
    t,
    await runCli(["user", "add", alice.signPub, "--handle", "alice2", ...d]),
    /already on the allowlist/,
    "duplicate key",
  );
  oneLineError(
    t,
    await runCli(["user", "add", createIdentity().signPub, "--handle", "alice", ...d]),
    /handle/,
    "duplicate handle",
  );
  oneLineError(t, await runCli(["user", "add", "nothex", "--handle", "x", ...d]), /sign-pub must be/, "invalid key");
  oneLineError(
    t,
    await runCli(["user", "add", "00".repeat(32), "--handle", "x", ...d]),
    /signPub|key/i,
    "small-order key",
  );
  oneLineError(
    t,
    await runCli(["user", "add", createIdentity().signPub, "--handle", "x", "--role", "root", ...d]),
    /role/,
    "bad role",
  );
  oneLineError(
    t,
    await runCli(["user", "add", createIdentity().signPub, "--handle", "bad handle!", ...d]),
    /handle/,
    "bad handle",
  );
  oneLineError(t, await runCli(["user", "add", createIdentity().signPub, ...d]), /handle/, "missing --handle");
  const list = JSON.parse((await runCli(["user", "list", "--json", ...d])).stdout) as unknown[];
  t.equal(list.length, 1, "only the first user was written");
});

t.test("commands on a data dir without a store, unknown commands and options", async (t) => {
  const missing = path.join(t.testdir(), "nothing-here");
  oneLineError(t, await runCli(["user", "list", "--data-dir", missing]), /no bus store/, "list without a store");
  t.notOk(fs.existsSync(missing), "list does not create a data dir");
  oneLineError(t, await runCli(["frobnicate"]), /unknown command/, "unknown command");
  oneLineError(t, await runCli(["user", "list", "--colour"]), /unknown option/, "unknown option");
  for (const args of [
    ["--help"],
    ["up", "--help"],
    ["user", "add", "--help"],
    ["identity", "new", "--help"],
    ["install", "--help"],
  ]) {
    const r = await runCli(args);
    t.equal(r.code, 0, `${args.join(" ")} exits 0`);
    t.match(r.stdout, /Usage: unibus/, `${args.join(" ")} prints usage`);
  }
});

t.test("--config: the data dir comes from the file, a flag still wins, a bad file is one line", async (t) => {
  const dir = t.testdir({ elsewhere: {} });
  const dataDir = path.join(dir, "from-file");
  const config = path.join(dir, "bus.json");
  fs.writeFileSync(config, JSON.stringify({ dataDir }));
  const alice = createIdentity();
  // Run from another directory: nothing but --config can point at the data dir.
  const cwd = path.join(dir, "elsewhere");
  const add = await runCli(["user", "add", alice.signPub, "--handle", "alice", "--config", config], { cwd });
  t.equal(add.code, 0, add.stderr);
  const list = await runCli(["user", "list", "--json", "--config", config], { cwd });
  t.equal(list.code, 0, list.stderr);
  t.same(
    (JSON.parse(list.stdout) as { handle: string }[]).map((u) => u.handle),
    ["alice"],
    "user list reads the data dir named in the file",
  );
  t.ok(fs.existsSync(path.join(dataDir, "store.db")), "the store is in the file's data dir");
  oneLineError(
    t,
    await runCli(["user", "list", "--config", config, "--data-dir", path.join(dir, "none")], { cwd }),
    /no bus store/,
    "--data-dir beats the file",
  );
  const status = await runCli(["status", "--json", "--config", config], { cwd });
  t.equal(JSON.parse(status.stdout).dataDir, dataDir, "status reads the same file");
  const invites = await runCli(["invite", "list", "--json", "--config", config], { cwd });
  t.same(JSON.parse(invites.stdout), [], "invite reads the same file");

  fs.writeFileSync(path.join(dir, "typo.json"), JSON.stringify({ dataDri: dataDir }));
  oneLineError(
    t,
    await runCli(["user", "list", "--config", path.join(dir, "typo.json")], { cwd }),
    /unknown key "dataDri"/,
    "a typo in the file",
  );
  oneLineError(
    t,
    await runCli(["user", "list", "--config", path.join(dir, "missing.json")], { cwd }),
    /cannot read config file/,
    "a missing file",
  );
});

t.test("user set changes role, handle and kex-pub; every refusal is one line and writes nothing", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const alice = createIdentity();
  const bob = createIdentity();
  const d = ["--data-dir", dataDir];
  t.equal((await runCli(["user", "add", alice.signPub, "--handle", "alice", ...d])).code, 0);
  t.equal((await runCli(["user", "add", bob.signPub, "--handle", "bob", ...d])).code, 0);

  const role = await runCli(["user", "set", alice.signPub, "--role", "admin", ...d]);
  t.equal(role.code, 0, role.stderr);
  t.equal(role.stdout, `updated alice (admin, active) ${alice.signPub}\n`);
  const other = createIdentity();
  const both = await runCli([
    "user",
    "set",
    alice.nkey,
    "--handle",
    "Alicia",
    "--kex-pub",
    other.kexPub,
    "--json",
    ...d,
  ]);
  t.equal(both.code, 0, both.stderr);
  t.match(JSON.parse(both.stdout), { handle: "alicia", role: "admin", kexPub: other.kexPub, signPub: alice.signPub });

  const list = async () => (await runCli(["user", "list", "--json", ...d])).stdout;
  const before = await list();
  oneLineError(t, await runCli(["user", "set", alice.signPub, ...d]), /nothing to change: give --role/, "no change");
  oneLineError(
    t,
    await runCli(["user", "set", alice.signPub, "--role", "root", ...d]),
    /--role must be admin or member/,
    "bad role",
  );
  oneLineError(
    t,
    await runCli(["user", "set", alice.signPub, "--handle", "-x", ...d]),
    /handle must start/,
    "bad handle",
  );
  oneLineError(t, await runCli(["user", "set", alice.signPub, "--kex-pub", "abc", ...d]), /kexPub/, "bad kex-pub");
  oneLineError(
    t,
    await runCli(["user", "set", bob.signPub, "--handle", "alicia", ...d]),
    /already taken/,
    "taken handle",
  );
  const unknown = createIdentity().signPub;
  oneLineError(
    t,
    await runCli(["user", "set", unknown, "--role", "admin", ...d]),
    /is not on the allowlist; add it with `unibus user add/,
    "unknown key",
  );
  oneLineError(t, await runCli(["user", "set", "nope", "--role", "admin", ...d]), /sign-pub/, "malformed key");
  t.equal(await list(), before, "no refusal wrote anything");
});
