// The parsed-key cache: the same KeyObject for the same key, never one for bytes that
// are not a key, and a cached key verifies exactly what the key itself verifies.
import crypto from "node:crypto";
import t from "tap";
import { ed25519PublicKeyCached, rawPublicKey, sign, verify } from "../../lib/crypto/ed25519.ts";
import { verifyNkeySignature } from "../../lib/crypto/nkeypair.ts";
import { encodePublicKey } from "../../lib/crypto/nkeys.ts";

function keyPair() {
  const { privateKey } = crypto.generateKeyPairSync("ed25519");
  return { privateKey, raw: rawPublicKey(privateKey) };
}

t.test("the same key parses once; copies of its bytes find the cached KeyObject", async (t) => {
  const { raw } = keyPair();
  const first = ed25519PublicKeyCached(raw);
  t.ok(first, "parsed");
  t.equal(ed25519PublicKeyCached(Buffer.from(raw)), first, "a copy of the bytes hits the cache");
  const inLargerBuffer = Buffer.concat([Buffer.alloc(7), raw]).subarray(7);
  t.equal(ed25519PublicKeyCached(inLargerBuffer), first, "a view into a larger buffer reads only its own bytes");
  t.not(ed25519PublicKeyCached(keyPair().raw), first, "another key is another KeyObject");
});

t.test("bytes that are not a key give undefined, never a throw, and are not cached as one", async (t) => {
  for (const bytes of [Buffer.alloc(0), Buffer.alloc(31, 1), Buffer.alloc(33, 1)]) {
    t.equal(ed25519PublicKeyCached(bytes), undefined, `${bytes.length} bytes`);
  }
});

t.test("a cached key verifies its own signatures and no one else's", async (t) => {
  const alice = keyPair();
  const mallory = keyPair();
  const data = Buffer.from("GET /v1/rooms");
  const sig = sign(alice.privateKey, data);
  t.ok(verify(ed25519PublicKeyCached(alice.raw)!, data, sig));
  t.ok(verify(ed25519PublicKeyCached(alice.raw)!, data, sig), "and again, from the cache");
  t.notOk(verify(ed25519PublicKeyCached(mallory.raw)!, data, sig), "another key");
  t.notOk(verify(ed25519PublicKeyCached(alice.raw)!, Buffer.from("GET /v1/users"), sig), "other data");
  // the callout's path: an nkey string, decoded then parsed through the same cache
  const nkey = encodePublicKey("user", alice.raw);
  t.ok(verifyNkeySignature("user", nkey, data, sig));
  t.notOk(verifyNkeySignature("user", encodePublicKey("user", mallory.raw), data, sig));
  t.notOk(verifyNkeySignature("account", nkey, data, sig), "the wrong kind of nkey");
  t.notOk(verifyNkeySignature("user", "UNOTAKEY", data, sig), "not an nkey");
});
