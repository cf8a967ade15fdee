import fs from "node:fs/promises";
import path from "node:path";
import t from "tap";
import { ed25519PublicKey, verify } from "../../lib/crypto/ed25519.ts";
import {
  createIdentity,
  loadIdentity,
  loadOrCreateIdentity,
  parseSignPub,
  saveIdentity,
} from "../../lib/crypto/identity.ts";

t.test("create, save (0600), load: same keys, signatures verify", async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, "me.json");
  const id = createIdentity();
  await saveIdentity(id, file);
  t.equal((await fs.stat(file)).mode & 0o777, 0o600, "file mode 0600");
  const back = await loadIdentity(file);
  t.equal(back.signPub, id.signPub);
  t.equal(back.kexPub, id.kexPub);
  t.equal(back.nkey, id.nkey);
  t.match(id.signPub, /^[0-9a-f]{64}$/);
  t.match(id.nkey, /^U[A-Z2-7]{55}$/);
  const sig = back.sign(Buffer.from("hello"));
  t.ok(verify(ed25519PublicKey(Buffer.from(id.signPub, "hex")), Buffer.from("hello"), sig));
});

t.test("public JSON holds no secret", async (t) => {
  const id = createIdentity();
  const text = JSON.stringify(id);
  const file = id.toFile();
  t.notMatch(text, file.signSeed);
  t.notMatch(text, file.kexSecret);
  t.same(Object.keys(JSON.parse(text)).sort(), ["kexPub", "nkey", "signPub"]);
});

t.test("saveIdentity never overwrites", async (t) => {
  const file = path.join(t.testdir({ "me.json": "keep me" }), "me.json");
  await t.rejects(saveIdentity(createIdentity(), file), { code: "EEXIST" });
  t.equal(await fs.readFile(file, "utf8"), "keep me");
});

t.test("loadOrCreateIdentity creates once, then loads the same identity", async (t) => {
  const file = path.join(t.testdir(), "sub", "bot.json");
  const a = await loadOrCreateIdentity(file);
  const b = await loadOrCreateIdentity(file);
  t.equal(a.signPub, b.signPub);
  const parallel = await Promise.all(
    [1, 2, 3, 4].map(() => loadOrCreateIdentity(path.join(path.dirname(file), "race.json"))),
  );
  t.equal(new Set(parallel.map((p) => p.signPub)).size, 1, "concurrent creators agree on one identity");
});

t.test("corrupt, tampered or loosely-permissioned files are errors and are left alone", async (t) => {
  const good = createIdentity().toFile();
  const other = createIdentity().toFile();
  const cases: Record<string, string> = {
    "not-json.json": "{nope",
    "wrong-type.json": JSON.stringify({ ...good, type: "something" }),
    "wrong-version.json": JSON.stringify({ ...good, version: 2 }),
    "short-seed.json": JSON.stringify({ ...good, signSeed: "abc" }),
    "mismatch.json": JSON.stringify({ ...good, signPub: other.signPub }),
    "swapped-kex.json": JSON.stringify({ ...good, kexSecret: other.kexSecret }),
    "empty.json": "",
  };
  const dir = t.testdir(cases);
  for (const [name, content] of Object.entries(cases)) {
    const file = path.join(dir, name);
    await fs.chmod(file, 0o600);
    await t.rejects(loadIdentity(file), { code: "KEY_FILE", message: /corrupt/ }, name);
    await t.rejects(loadOrCreateIdentity(file), { code: "KEY_FILE" }, `${name}: loadOrCreate does not regenerate`);
    t.equal(await fs.readFile(file, "utf8"), content, `${name} untouched`);
  }
  const loose = path.join(dir, "loose.json");
  await fs.writeFile(loose, JSON.stringify(good), { mode: 0o644 });
  await fs.chmod(loose, 0o644);
  await t.rejects(loadIdentity(loose), { code: "KEY_FILE", message: /chmod 600/ });
  await t.rejects(loadIdentity(path.join(dir, "missing.json")), { code: "KEY_FILE", message: /identity new/ });
});

t.test("parseSignPub accepts hex in any case and U-keys, refuses the rest", async (t) => {
  const id = createIdentity();
  t.equal(parseSignPub(id.signPub.toUpperCase()), id.signPub);
  t.equal(parseSignPub(` ${id.signPub} `), id.signPub);
  t.equal(parseSignPub(id.nkey), id.signPub);
  for (const bad of ["", "zz", id.signPub.slice(1), `${id.signPub}00`, id.nkey.slice(0, -1), "A".repeat(56)]) {
    t.throws(() => parseSignPub(bad), { code: "INVALID_ARGUMENT", field: "signPub" }, JSON.stringify(bad.slice(0, 10)));
  }
});
