import crypto from "node:crypto";
import fc from "fast-check";
import t from "tap";
import { InvalidArgumentError } from "../../lib/errors.ts";
import {
  hashInviteToken,
  inviteIdOf,
  isCanonicalEd25519Point,
  isKeyShape,
  isRoomIdShape,
  newInviteToken,
  normalizeKey,
  parseInviteRef,
  validateEpoch,
  validateHandle,
  validateKexPub,
  validateRole,
  validateRoomId,
  validateSealed,
  validateSignPub,
  validateSubject,
} from "../../lib/store/validate.ts";
import { kexPubHex, signPubHex } from "./keys.ts";

const P = 2n ** 255n - 19n;
const pow = (b: bigint, e: bigint): bigint => {
  let r = 1n;
  let x = ((b % P) + P) % P;
  for (let k = e; k > 0n; k >>= 1n) {
    if (k & 1n) r = (r * x) % P;
    x = (x * x) % P;
  }
  return r;
};
const D = (((-121665n * pow(121666n, P - 2n)) % P) + P) % P;
const le = (n: bigint): Buffer => {
  const b = Buffer.alloc(32);
  for (let i = 0; i < 32; i++) b[i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return b;
};

function field(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err instanceof InvalidArgumentError ? err.field : `not InvalidArgumentError: ${String(err)}`;
  }
}

t.test("every Ed25519 key node:crypto makes is accepted, in any case", async (t) => {
  for (let i = 0; i < 100; i++) {
    const key = signPubHex();
    t.equal(validateSignPub(key.toUpperCase()), key);
  }
});

t.test("Ed25519 point decoding agrees with an independent square-root test", async (t) => {
  // y decodes to a point exactly when (y²-1)/(d·y²+1) is a square mod p (Euler's criterion).
  let onCurve = 0;
  let offCurve = 0;
  for (let y = 2n; y < 60n; y++) {
    const u = (y * y - 1n) % P;
    const v = (D * y * y + 1n) % P;
    const ratio = (u * pow(v, P - 2n)) % P;
    const square = ratio === 0n || pow(ratio, (P - 1n) / 2n) === 1n;
    t.equal(isCanonicalEd25519Point(le(y)), square, `y=${y}`);
    if (square) onCurve++;
    else offCurve++;
  }
  t.ok(onCurve > 0 && offCurve > 0, "both kinds were exercised");
});

t.test("small-order, non-canonical and sign-bit-on-zero Ed25519 encodings are refused", async (t) => {
  const refused = [
    `01${"00".repeat(31)}`, // identity
    `ec${"ff".repeat(30)}7f`, // (0, -1), order 2
    "00".repeat(32), // order 4
    `${"00".repeat(31)}80`, // order 4, other sign
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    `01${"00".repeat(30)}80`, // x = 0 with the sign bit set
    le(P + 1n).toString("hex"), // y >= p: non-canonical encoding of y = 1
    `${"ff".repeat(31)}7f`,
  ];
  for (const hex of refused)
    t.equal(
      field(() => validateSignPub(hex)),
      "signPub",
      hex,
    );
  // RFC 8032 test vector 1's public key.
  const rfc = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
  t.equal(validateSignPub(rfc), rfc);
});

t.test("X25519 keys: node's are accepted, low-order and non-canonical ones refused", async (t) => {
  for (let i = 0; i < 50; i++) {
    const key = kexPubHex();
    t.equal(validateKexPub(key.toUpperCase()), key);
  }
  t.equal(validateKexPub(undefined), null);
  t.equal(validateKexPub(null), null);
  const refused = [
    "00".repeat(32), // 0
    `01${"00".repeat(31)}`, // 1
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
    le(P - 1n).toString("hex"), // order 2
    le(P).toString("hex"), // non-canonical 0
    le(P + 1n).toString("hex"), // non-canonical 1
    "ff".repeat(32), // top bit set
    crypto.randomBytes(31).toString("hex"),
  ];
  for (const hex of refused)
    t.equal(
      field(() => validateKexPub(hex)),
      "kexPub",
      hex,
    );
});

t.test("key shape and normalisation", async (t) => {
  const key = signPubHex();
  t.equal(normalizeKey(key.toUpperCase()), key);
  t.equal(isKeyShape(key.toUpperCase()), true);
  for (const bad of ["", key.slice(1), `${key}0`, `${key.slice(0, 63)}g`, ` ${key.slice(1)}`, 5, null, undefined]) {
    t.equal(isKeyShape(bad), false, JSON.stringify(bad));
  }
});

t.test("handles: every well-formed handle is accepted and lowercased; the rest refused", async (t) => {
  const ok = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
  fc.assert(fc.property(ok, (h) => validateHandle(h) === h.toLowerCase()));
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (h) => {
      const valid = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(h);
      return valid ? validateHandle(h) === h.toLowerCase() : field(() => validateHandle(h)) === "handle";
    }),
  );
  t.equal(
    field(() => validateHandle("a".repeat(65))),
    "handle",
  );
  t.equal(
    field(() => validateHandle(42)),
    "handle",
  );
});

t.test("roles", async (t) => {
  t.equal(validateRole("admin"), "admin");
  t.equal(validateRole("member"), "member");
  for (const bad of ["", "ADMIN", "owner", undefined, 1])
    t.equal(
      field(() => validateRole(bad)),
      "role",
      String(bad),
    );
});

t.test("subjects: never a wildcard, whitespace, empty token or reserved root", async (t) => {
  const token = fc.stringMatching(/^[A-Za-z0-9_-]{1,8}$/);
  const valid = fc
    .array(token, { minLength: 1, maxLength: 16 })
    .map((ts) => ts.join("."))
    .filter((s) => s.length <= 128 && !s.startsWith("_"));
  fc.assert(fc.property(valid, (s) => validateSubject(s) === s));
  fc.assert(
    fc.property(fc.string({ maxLength: 140 }), (s) => {
      const f = field(() => validateSubject(s));
      if (f === undefined) {
        return (
          !/[*>\s$]/.test(s) && !s.split(".").includes("") && !s.startsWith("_") && s.length <= 128 && s.length > 0
        );
      }
      return f === "subject";
    }),
  );
  for (const bad of ["*", ">", "a.*", "a.>", "a.b*", "a >", "$SYS.x", "_INBOX.x", "a..b", ".a", "a.", "", "a\u0000b"]) {
    t.equal(
      field(() => validateSubject(bad)),
      "subject",
      JSON.stringify(bad),
    );
  }
});

t.test("room ids, sealed keys and epochs", async (t) => {
  t.equal(validateRoomId("Ab_-9"), "Ab_-9");
  t.equal(isRoomIdShape("a".repeat(64)), true);
  for (const bad of ["", "a".repeat(65), "a.b", "a b", "a/b", 1, null]) t.equal(isRoomIdShape(bad), false);
  t.equal(
    field(() => validateRoomId("a.b", "id")),
    "id",
  );
  const b64 = fc.uint8Array({ minLength: 1, maxLength: 3000 }).map((b) => Buffer.from(b).toString("base64url"));
  fc.assert(fc.property(b64, (s) => validateSealed(s, "k") === s));
  for (const bad of ["", "a", "abcde", "ab==", "a+b/", "a b", "A".repeat(4097), 5, null]) {
    t.equal(
      field(() => validateSealed(bad, "k")),
      "k",
      JSON.stringify(bad),
    );
  }
  t.equal(validateEpoch(1), 1);
  t.equal(validateEpoch(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER);
  for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, "1", null]) {
    t.equal(
      field(() => validateEpoch(bad)),
      "epoch",
      String(bad),
    );
  }
});

t.test("invite tokens, ids and hashes", async (t) => {
  const token = newInviteToken();
  t.match(token, /^[0-9a-f]{64}$/);
  t.not(newInviteToken(), token, "fresh randomness each time");
  t.equal(hashInviteToken(token.toUpperCase()), hashInviteToken(token), "the hash ignores the token's case");
  t.equal(hashInviteToken(token), crypto.createHash("sha256").update(token).digest("hex"));
  t.equal(inviteIdOf(hashInviteToken(token)), hashInviteToken(token).slice(0, 12));
  t.same(parseInviteRef("ABCDEF012345"), { by: "id", id: "abcdef012345" });
  t.same(parseInviteRef(token.toUpperCase()), { by: "tokenHash", tokenHash: hashInviteToken(token) });
  for (const bad of ["", "abc", "abcdef01234", "abcdef0123456", token.slice(1), "g".repeat(12), undefined]) {
    t.equal(
      field(() => parseInviteRef(bad)),
      "invite",
      JSON.stringify(bad),
    );
  }
});
