import { encodeUser, decode as jwtDecode } from "@nats-io/jwt";
import { createAccount, createUser, fromPublic, fromSeed } from "@nats-io/nkeys";
import fc from "fast-check";
import t from "tap";
import { decodeJwt, encodeJwt } from "../../lib/crypto/jwt.ts";
import { NKeyPair, verifyNkeySignature } from "../../lib/crypto/nkeypair.ts";
import { base32Decode, base32Encode, decodePublicKey, decodeSeed } from "../../lib/crypto/nkeys.ts";

t.test("our nkey codec agrees with @nats-io/nkeys both ways", async (t) => {
  for (const [kind, make] of [
    ["user", createUser],
    ["account", createAccount],
  ] as const) {
    const theirs = make();
    const seedText = new TextDecoder().decode(theirs.getSeed());
    const ours = NKeyPair.fromSeedText(kind, seedText);
    t.equal(ours.publicKey, theirs.getPublicKey(), `${kind} public key`);
    t.equal(ours.seedText(), seedText, `${kind} seed text`);
    const data = Buffer.from("nonce-123");
    t.ok(theirs.verify(data, ours.sign(data)), `${kind}: their verify accepts our signature`);
    t.ok(
      verifyNkeySignature(kind, theirs.getPublicKey(), data, theirs.sign(data)),
      `${kind}: our verify accepts theirs`,
    );
  }
  const mine = NKeyPair.random("user");
  t.equal(fromPublic(mine.publicKey).getPublicKey(), mine.publicKey, "their parser accepts our public key");
  t.equal(
    fromSeed(new TextEncoder().encode(mine.seedText())).getPublicKey(),
    mine.publicKey,
    "their parser accepts our seed",
  );
});

t.test("decoders refuse wrong kinds, bad checksums and junk", async (t) => {
  const user = NKeyPair.random("user");
  t.equal(decodePublicKey("account", user.publicKey), undefined, "a U key is not an A key");
  const flipped = user.publicKey.slice(0, 10) + (user.publicKey[10] === "A" ? "B" : "A") + user.publicKey.slice(11);
  t.equal(decodePublicKey("user", flipped), undefined, "one changed character fails the CRC");
  t.equal(decodePublicKey("user", user.publicKey.toLowerCase()), undefined, "lowercase is not base32");
  t.equal(decodePublicKey("user", ""), undefined);
  t.equal(decodeSeed("account", user.seedText()), undefined, "a user seed is not an account seed");
  t.throws(() => NKeyPair.fromSeedText("user", "SUjunk"), { code: "INVALID_ARGUMENT" });
  t.notOk(verifyNkeySignature("user", user.publicKey, Buffer.from("x"), Buffer.alloc(64)), "zero signature");
  t.notOk(verifyNkeySignature("user", user.publicKey, Buffer.from("x"), Buffer.alloc(3)), "short signature");
});

t.test("base32 round-trips any bytes; decoders never throw on random text", async () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
      const back = base32Decode(base32Encode(bytes));
      return back !== undefined && Buffer.from(back).equals(Buffer.from(bytes));
    }),
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 70 }), (s) => {
      decodePublicKey("user", s);
      decodeSeed("user", s);
      return true;
    }),
  );
});

t.test("our JWT verifies with @nats-io/jwt and theirs with ours", async (t) => {
  const issuer = NKeyPair.random("account");
  const user = NKeyPair.random("user");
  const token = encodeJwt({ sub: user.publicKey, aud: "APP", nats: { type: "user", pub: { allow: ["a"] } } }, issuer);
  const claims = jwtDecode(token) as unknown as Record<string, unknown> & { nats: Record<string, unknown> };
  t.equal(claims.iss, issuer.publicKey);
  t.equal(claims.sub, user.publicKey);
  t.equal(claims.aud, "APP");
  t.equal(claims.nats.version, 2);
  t.type(claims.jti, "string");

  const theirIssuer = createAccount();
  const theirs = await encodeUser("bob", createUser(), theirIssuer, {}, { aud: "APP" } as never);
  const decoded = decodeJwt(theirs, "account");
  t.equal(decoded.iss, theirIssuer.getPublicKey());
  t.equal(decoded.name, "bob");
});

t.test("decodeJwt refuses tampering, a wrong issuer kind and junk", async (t) => {
  const issuer = NKeyPair.random("account");
  const token = encodeJwt({ sub: "x", nats: { type: "user" } }, issuer);
  const [h, b, s] = token.split(".") as [string, string, string];
  const claims = JSON.parse(Buffer.from(b, "base64url").toString());
  claims.sub = "y";
  const tampered = `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`;
  t.throws(() => decodeJwt(tampered, "account"), { code: "JWT" }, "changed claims");
  t.throws(() => decodeJwt(token, "server"), { code: "JWT" }, "issuer of the wrong kind");
  for (const junk of ["", "a.b", "a.b.c", `${h}.${b}`, `x.${b}.${s}`]) {
    t.throws(() => decodeJwt(junk, "account"), { code: "JWT" }, `junk ${JSON.stringify(junk.slice(0, 12))}`);
  }
});
