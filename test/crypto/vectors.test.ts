/**
 * The golden vectors, checked two ways: decoded from raw node:crypto by following
 * docs/formats.md alone (what another implementation would do), and reproduced byte
 * for byte by the library given the same randomness.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { encodeFrameWithNonce, openFrame } from "../../lib/crypto/frame.ts";
import { Identity } from "../../lib/crypto/identity.ts";
import { CryptoError } from "../../lib/crypto/room-key.ts";
import { openRoomKey, sealRoomKeyWithEphemeral } from "../../lib/crypto/seal.ts";
import {
  buildVectors,
  type FrameVector,
  type InvalidFrameVector,
  type InvalidSealVector,
  type SealVector,
  VECTORS_DIR,
} from "../../scripts/make-vectors.ts";

const read = (name: string) => fs.readFileSync(path.join(VECTORS_DIR, name), "utf8");
const framesText = read("frames.json");
const sealText = read("seal.json");
const frames = JSON.parse(framesText) as { vectors: FrameVector[]; invalid: InvalidFrameVector[] };
const seal = JSON.parse(sealText) as { vectors: SealVector[]; invalid: InvalidSealVector[] };
const hex = (s: string) => Buffer.from(s, "hex");

// Raw key material into node:crypto, straight from RFC 8410 DER prefixes.
const ed25519Pub = (raw: Buffer) =>
  crypto.createPublicKey({ key: Buffer.concat([hex("302a300506032b6570032100"), raw]), format: "der", type: "spki" });
const x25519Priv = (raw: Buffer) =>
  crypto.createPrivateKey({
    key: Buffer.concat([hex("302e020100300506032b656e04220420"), raw]),
    format: "der",
    type: "pkcs8",
  });
const x25519Pub = (raw: Buffer) =>
  crypto.createPublicKey({ key: Buffer.concat([hex("302a300506032b656e032100"), raw]), format: "der", type: "spki" });

t.test("the committed files are what scripts/make-vectors.ts produces", async (t) => {
  const built = buildVectors();
  t.equal(framesText, built["frames.json"], "frames.json is current");
  t.equal(sealText, built["seal.json"], "seal.json is current");
  t.ok(
    frames.vectors.length >= 6 && frames.invalid.length >= 10 && seal.vectors.length >= 3 && seal.invalid.length >= 5,
  );
});

t.test("frame vectors decode by the spec alone", async (t) => {
  for (const v of frames.vectors) {
    const frame = hex(v.frame);
    const room = Buffer.from(v.roomId, "utf8");
    const context = Buffer.concat([
      Buffer.from([0xff]),
      Buffer.from("unibus-frame-v1", "ascii"),
      Buffer.from([room.length]),
      room,
    ]);
    t.equal(context.toString("hex"), v.context, `${v.name}: context`);
    t.equal(frame[0], 1, `${v.name}: version`);
    const encrypted = (frame[1]! & 1) === 1;
    const signed = (frame[1]! & 2) === 2;
    t.equal(frame[1]! & 0xfc, 0, `${v.name}: no unknown flags`);
    t.equal(encrypted, v.roomKey !== null, `${v.name}: encrypted flag`);
    t.equal(signed, v.signed, `${v.name}: signed flag`);
    t.equal(frame.readUInt32BE(2), v.epoch, `${v.name}: epoch`);
    t.equal(frame.subarray(6, 38).toString("hex"), v.senderSignPub, `${v.name}: sender`);
    const bodyStart = encrypted ? 50 : 38;
    const bodyEnd = frame.length - (signed ? 64 : 0);
    if (signed) {
      const input = Buffer.concat([context, frame.subarray(0, bodyEnd)]);
      t.equal(input.toString("hex"), v.signatureInput, `${v.name}: signature input`);
      t.ok(
        crypto.verify(null, input, ed25519Pub(frame.subarray(6, 38)), frame.subarray(bodyEnd)),
        `${v.name}: signature`,
      );
    } else {
      t.equal(v.signatureInput, null);
    }
    let plaintext: Buffer;
    if (encrypted) {
      t.equal(frame.subarray(38, 50).toString("hex"), v.nonce, `${v.name}: nonce`);
      const ad = Buffer.concat([context, frame.subarray(0, 50)]);
      t.equal(ad.toString("hex"), v.associatedData, `${v.name}: associated data`);
      const d = crypto.createDecipheriv("chacha20-poly1305", hex(v.roomKey!), frame.subarray(38, 50), {
        authTagLength: 16,
      });
      d.setAAD(ad, { plaintextLength: bodyEnd - 16 - bodyStart });
      d.setAuthTag(frame.subarray(bodyEnd - 16, bodyEnd));
      plaintext = Buffer.concat([d.update(frame.subarray(bodyStart, bodyEnd - 16)), d.final()]);
    } else {
      plaintext = frame.subarray(bodyStart, bodyEnd);
    }
    t.equal(plaintext.toString("hex"), v.plaintext, `${v.name}: plaintext`);
  }
});

t.test("frame vectors: the library reproduces and opens them", async (t) => {
  for (const v of frames.vectors) {
    const sender = new Identity(hex(v.senderSignSeed), crypto.randomBytes(32));
    t.equal(sender.signPub, v.senderSignPub, `${v.name}: seed → public key`);
    const roomKey = v.roomKey === null ? undefined : hex(v.roomKey);
    const frame = encodeFrameWithNonce(
      { roomId: v.roomId, epoch: v.epoch, sender, plaintext: hex(v.plaintext), roomKey, sign: v.signed },
      v.nonce === null ? Buffer.alloc(12) : hex(v.nonce),
    );
    t.equal(Buffer.from(frame).toString("hex"), v.frame, `${v.name}: encoded byte for byte`);
    const r = openFrame(hex(v.frame), {
      roomId: v.roomId,
      encrypted: roomKey !== undefined,
      roomKey,
      requireSignature: v.signed,
    });
    t.match(r, { ok: true, sender: v.senderSignPub, epoch: v.epoch, verified: v.signed }, `${v.name}: opens`);
    if (r.ok) t.equal(Buffer.from(r.plaintext).toString("hex"), v.plaintext);
  }
});

t.test("invalid frame vectors are refused with the listed reason", async (t) => {
  for (const v of frames.invalid) {
    const r = openFrame(hex(v.frame), {
      roomId: v.roomId,
      encrypted: v.encrypted,
      roomKey: v.roomKey === null ? undefined : hex(v.roomKey),
      requireSignature: v.requireSignature,
    });
    t.match(r, { ok: false, reason: v.reason }, v.name);
  }
});

t.test("seal vectors decode by the spec alone", async (t) => {
  for (const v of seal.vectors) {
    const sealed = Buffer.from(v.sealed, "base64url");
    t.equal(sealed.length, 81, `${v.name}: 81 bytes`);
    t.equal(sealed.toString("base64url"), v.sealed, `${v.name}: canonical base64url`);
    t.equal(sealed[0], 1, `${v.name}: version`);
    const ephemeralPub = sealed.subarray(1, 33);
    t.equal(ephemeralPub.toString("hex"), v.ephemeralPub);
    const recipient = x25519Priv(hex(v.recipientKexSecret));
    const recipientPub = crypto.createPublicKey(recipient).export({ format: "der", type: "spki" }).subarray(-32);
    t.equal(recipientPub.toString("hex"), v.recipientKexPub, `${v.name}: recipient public key`);
    const shared = crypto.diffieHellman({ privateKey: recipient, publicKey: x25519Pub(ephemeralPub) });
    t.equal(shared.toString("hex"), v.sharedSecret, `${v.name}: shared secret`);
    const room = Buffer.from(v.roomId, "utf8");
    const epoch = Buffer.alloc(4);
    epoch.writeUInt32BE(v.epoch);
    const info = Buffer.concat([Buffer.from("unibus-seal-v1", "ascii"), Buffer.from([room.length]), room, epoch]);
    t.equal(info.toString("hex"), v.hkdfInfo, `${v.name}: HKDF info`);
    t.equal(info.toString("hex"), v.associatedData, `${v.name}: associated data`);
    const salt = Buffer.concat([ephemeralPub, recipientPub]);
    t.equal(salt.toString("hex"), v.hkdfSalt, `${v.name}: HKDF salt`);
    const key = Buffer.from(crypto.hkdfSync("sha256", shared, salt, info, 32));
    t.equal(key.toString("hex"), v.aeadKey, `${v.name}: AEAD key`);
    const d = crypto.createDecipheriv("chacha20-poly1305", key, Buffer.alloc(12), { authTagLength: 16 });
    d.setAAD(info, { plaintextLength: 32 });
    d.setAuthTag(sealed.subarray(65));
    const roomKey = Buffer.concat([d.update(sealed.subarray(33, 65)), d.final()]);
    t.equal(roomKey.toString("hex"), v.roomKey, `${v.name}: room key`);
    // The ephemeral secret in the vector is the one that was used.
    const eph = crypto.createPublicKey(x25519Priv(hex(v.ephemeralSecret))).export({ format: "der", type: "spki" });
    t.equal(eph.subarray(-32).toString("hex"), v.ephemeralPub);
  }
});

t.test("seal vectors: the library reproduces and opens them", async (t) => {
  for (const v of seal.vectors) {
    const recipient = new Identity(crypto.randomBytes(32), hex(v.recipientKexSecret));
    t.equal(recipient.kexPub, v.recipientKexPub);
    const sealed = sealRoomKeyWithEphemeral(
      { roomKey: hex(v.roomKey), recipientKexPub: v.recipientKexPub, roomId: v.roomId, epoch: v.epoch },
      hex(v.ephemeralSecret),
    );
    t.equal(sealed, v.sealed, `${v.name}: sealed byte for byte`);
    const opened = openRoomKey({ sealed: v.sealed, identity: recipient, roomId: v.roomId, epoch: v.epoch });
    t.equal(Buffer.from(opened).toString("hex"), v.roomKey, `${v.name}: opens`);
  }
});

t.test("invalid seal vectors are refused with the listed reason", async (t) => {
  for (const v of seal.invalid) {
    const identity = new Identity(crypto.randomBytes(32), hex(v.recipientKexSecret));
    t.throws(
      () => openRoomKey({ sealed: v.sealed, identity, roomId: v.roomId, epoch: v.epoch }),
      { code: "CRYPTO", reason: v.reason },
      v.name,
    );
    try {
      openRoomKey({ sealed: v.sealed, identity, roomId: v.roomId, epoch: v.epoch });
    } catch (err) {
      t.ok(err instanceof CryptoError);
    }
  }
});
