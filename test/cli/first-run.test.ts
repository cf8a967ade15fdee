// The first run as a user meets it: `identity new` says what to run next, `user add`
// takes an identity file's public half (never its secrets) or both keys by hand.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { oneLineError, runCli } from "../helpers/cli.ts";

t.test("identity new prints the exact next command, both keys in it, and nothing secret", async (t) => {
  const dir = t.testdir();
  const out = path.join(dir, "me.json");
  const r = await runCli(["identity", "new", "--out", out]);
  t.equal(r.code, 0, r.stderr);
  const file = JSON.parse(fs.readFileSync(out, "utf8"));
  t.match(r.stdout, `npx unibus user add ${file.signPub} --kex-pub ${file.kexPub} --handle you --role admin`);
  for (const secret of [file.signSeed, file.kexSecret]) t.notMatch(r.stdout + r.stderr, secret, "no secret printed");
});

t.test("user add --identity takes both public keys from an identity file, never its secrets", async (t) => {
  const dir = t.testdir();
  const out = path.join(dir, "me.json");
  t.equal((await runCli(["identity", "new", "--out", out])).code, 0);
  const file = JSON.parse(fs.readFileSync(out, "utf8"));
  const d = ["--data-dir", path.join(dir, "bus")];
  const add = await runCli(["user", "add", "--identity", out, "--handle", "you", "--role", "admin", "--json", ...d]);
  t.equal(add.code, 0, add.stderr);
  t.match(JSON.parse(add.stdout), { signPub: file.signPub, kexPub: file.kexPub, role: "admin" });
  for (const secret of [file.signSeed, file.kexSecret])
    t.notMatch(add.stdout + add.stderr, secret, "no secret printed");
  const stored = JSON.stringify(JSON.parse((await runCli(["user", "list", "--json", ...d])).stdout));
  for (const secret of [file.signSeed, file.kexSecret]) t.notMatch(stored, secret, "no secret stored");

  // A world-readable copy is still only read for its public half: no 0600 demand, no seeds decoded.
  const copy = path.join(dir, "copy.json");
  const other = createIdentity();
  fs.writeFileSync(copy, JSON.stringify({ type: "unibus-identity", signPub: other.signPub, kexPub: other.kexPub }));
  const pub = await runCli(["user", "add", "--identity", copy, "--handle", "bob", ...d]);
  t.equal(pub.code, 0, pub.stderr);
});

t.test("user add --kex-pub, and what --identity refuses", async (t) => {
  const dir = t.testdir();
  const d = ["--data-dir", path.join(dir, "bus")];
  const alice = createIdentity();
  const add = await runCli([
    "user",
    "add",
    alice.signPub,
    "--kex-pub",
    alice.kexPub,
    "--handle",
    "alice",
    "--json",
    ...d,
  ]);
  t.equal(add.code, 0, add.stderr);
  t.equal(JSON.parse(add.stdout).kexPub, alice.kexPub);
  oneLineError(t, await runCli(["user", "add", "--handle", "x", ...d]), /signing key, or --identity/, "no key at all");
  const out = path.join(dir, "bob.json");
  await runCli(["identity", "new", "--out", out]);
  oneLineError(
    t,
    await runCli(["user", "add", alice.signPub, "--identity", out, "--handle", "bob", ...d]),
    /differs from/,
    "a key that is not the file's",
  );
  oneLineError(
    t,
    await runCli(["user", "add", "--identity", out, "--kex-pub", alice.kexPub, "--handle", "bob", ...d]),
    /--kex-pub differs/,
    "a kexPub that is not the file's",
  );
  fs.writeFileSync(path.join(dir, "junk.json"), "{");
  oneLineError(
    t,
    await runCli(["user", "add", "--identity", path.join(dir, "junk.json"), "--handle", "b", ...d]),
    /not JSON/,
    "junk",
  );
  oneLineError(
    t,
    await runCli(["user", "add", "--identity", path.join(dir, "none.json"), "--handle", "b", ...d]),
    /cannot be read/,
    "missing",
  );
  t.equal(JSON.parse((await runCli(["user", "list", "--json", ...d])).stdout).length, 1, "only alice was added");
});
