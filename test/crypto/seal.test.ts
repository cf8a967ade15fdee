import fc from "fast-check";
import t, { type Test } from "tap";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { CryptoError, newRoomKey } from "../../lib/crypto/room-key.ts";
import { openRoomKey, SEALED_LENGTH, sealRoomKey } from "../../lib/crypto/seal.ts";
import { InvalidArgumentError, UnibusError } from "../../lib/errors.ts";

const alice = createIdentity();
const bob = createIdentity();
const roomKey = newRoomKey();
const sealed = sealRoomKey({ roomKey, recipientKexPub: alice.kexPub, roomId: "general", epoch: 3 });

function openFails(t: Test, reason: string, o: Partial<Parameters<typeof openRoomKey>[0]>, what: string) {
  const opts = { sealed, identity: alice, roomId: "general", epoch: 3, ...o };
  try {
    openRoomKey(opts);
    t.fail(`${what}: opened`);
  } catch (err) {
    t.ok(err instanceof CryptoError, `${what}: CryptoError`);
    t.match(err, { code: "CRYPTO", reason }, what);
    const message = (err as Error).message;
    t.notOk(message.includes(Buffer.from(roomKey).toString("hex")), `${what}: no key in the message`);
    if (typeof opts.sealed === "string" && opts.sealed !== "") {
      t.notOk(message.includes(opts.sealed), `${what}: no sealed key in the message`);
    }
  }
}

t.test("seal and open", async (t) => {
  t.equal(sealed.length, SEALED_LENGTH);
  t.equal(SEALED_LENGTH, 108);
  t.match(sealed, /^[A-Za-z0-9_-]{108}$/);
  t.equal(Buffer.from(sealed, "base64url")[0], 1, "version byte");
  const opened = openRoomKey({ sealed, identity: alice, roomId: "general", epoch: 3 });
  t.ok(Buffer.from(opened).equals(Buffer.from(roomKey)));
  const again = sealRoomKey({ roomKey, recipientKexPub: alice.kexPub, roomId: "general", epoch: 3 });
  t.not(again, sealed, "a fresh ephemeral key each time");
  t.ok(Buffer.from(openRoomKey({ sealed: again, identity: alice, roomId: "general", epoch: 3 })).equals(roomKey));
  const upper = sealRoomKey({ roomKey, recipientKexPub: bob.kexPub.toUpperCase(), roomId: "general", epoch: 3 });
  t.ok(openRoomKey({ sealed: upper, identity: bob, roomId: "general", epoch: 3 }), "hex in any case");
});

t.test("newRoomKey", async (t) => {
  const a = newRoomKey();
  t.equal(a.length, 32);
  t.not(Buffer.from(a).toString("hex"), Buffer.from(newRoomKey()).toString("hex"));
});

t.test("a sealed key for another recipient, room or epoch does not open", async (t) => {
  openFails(t, "undecryptable", { identity: bob }, "another recipient");
  openFails(t, "undecryptable", { roomId: "general2" }, "another room");
  openFails(t, "undecryptable", { roomId: "General" }, "room ids are case-sensitive");
  openFails(t, "undecryptable", { epoch: 4 }, "a later epoch");
  openFails(t, "undecryptable", { epoch: 2 }, "an earlier epoch");
});

t.test("tampering with any byte is detected", async (t) => {
  const bytes = Buffer.from(sealed, "base64url");
  t.doesNotThrow(
    () =>
      fc.assert(
        fc.property(fc.nat({ max: bytes.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, mask) => {
          const c = Buffer.from(bytes);
          c[at]! ^= mask;
          try {
            openRoomKey({ sealed: c.toString("base64url"), identity: alice, roomId: "general", epoch: 3 });
            return false;
          } catch (err) {
            return err instanceof CryptoError;
          }
        }),
        { numRuns: 500 },
      ),
    "500 single-byte changes refused",
  );
});

t.test("malformed and unsupported sealed keys", async (t) => {
  const bytes = Buffer.from(sealed, "base64url");
  openFails(t, "malformed", { sealed: sealed.slice(0, 107) }, "one character short");
  openFails(t, "malformed", { sealed: `${sealed}A` }, "one character long");
  openFails(t, "malformed", { sealed: `${sealed.slice(0, 107)}+` }, "not base64url");
  openFails(t, "malformed", { sealed: "" }, "empty");
  openFails(t, "malformed", { sealed: 42 as unknown as string }, "not a string");
  const v2 = Buffer.from(bytes);
  v2[0] = 2;
  openFails(t, "unsupported-version", { sealed: v2.toString("base64url") }, "version 2");
  const zeroEphemeral = Buffer.from(bytes);
  zeroEphemeral.fill(0, 1, 33);
  openFails(t, "invalid-key", { sealed: zeroEphemeral.toString("base64url") }, "low-order ephemeral key");
});

// The X25519 points whose products are all zero (RFC 7748 §6.1 / cr.yp.to/ecdh.html#validate),
// little-endian, including non-canonical encodings of 0, 1 and p-1.
const LOW_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

t.test("low-order and malformed recipient keys are refused", async (t) => {
  for (const recipientKexPub of LOW_ORDER) {
    t.throws(
      () => sealRoomKey({ roomKey, recipientKexPub, roomId: "general", epoch: 1 }),
      { code: "CRYPTO", reason: "invalid-key", message: /low-order/ },
      recipientKexPub.slice(0, 8),
    );
  }
  for (const recipientKexPub of ["", "zz".repeat(32), "00".repeat(31), "00".repeat(33), alice.signPub.slice(2)]) {
    t.throws(
      () => sealRoomKey({ roomKey, recipientKexPub, roomId: "general", epoch: 1 }),
      { code: "CRYPTO", reason: "invalid-key" },
      `"${recipientKexPub.slice(0, 8)}…"`,
    );
  }
});

t.test("bad arguments are InvalidArgumentError", async (t) => {
  const base = { roomKey, recipientKexPub: alice.kexPub, roomId: "general", epoch: 1 };
  for (const [what, patch] of [
    ["short room key", { roomKey: new Uint8Array(16) }],
    ["room key as a string", { roomKey: "k" }],
    ["epoch -1", { epoch: -1 }],
    ["epoch 2^32", { epoch: 2 ** 32 }],
    ["epoch NaN", { epoch: Number.NaN }],
    ["empty room id", { roomId: "" }],
    ["room id too long", { roomId: "x".repeat(256) }],
  ] as const) {
    t.throws(() => sealRoomKey({ ...base, ...patch } as never), InvalidArgumentError, what);
  }
  t.throws(() => openRoomKey({ sealed, identity: alice, roomId: "general", epoch: 1.5 }), InvalidArgumentError);
});

t.test("CryptoError is a UnibusError with code CRYPTO", async (t) => {
  const e = new CryptoError("undecryptable", "x");
  t.ok(e instanceof UnibusError);
  t.equal(e.code, "CRYPTO");
  t.equal(e.name, "CryptoError");
});
