/**
 * The golden vectors, checked two ways: decoded from raw node:crypto by following
 * docs/formats.md and docs/protocol.md alone (what another implementation would do),
 * and reproduced byte for byte (or opened) by the library.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { registrationProofMessage } from "../../lib/control/protocol.ts";
import { decryptBlob, encryptBlob } from "../../lib/crypto/blob.ts";
import { canonicalRequest, parseSignedHeaders, verifySignedRequest } from "../../lib/crypto/canonical.ts";
import { encodeFrameWithNonce, openFrame } from "../../lib/crypto/frame.ts";
import { Identity, loadIdentity } from "../../lib/crypto/identity.ts";
import { CryptoError } from "../../lib/crypto/room-key.ts";
import { openRoomKey, sealRoomKeyWithEphemeral } from "../../lib/crypto/seal.ts";
import {
  type BlobVector,
  buildVectors,
  EPOCH_MAX,
  type FrameVector,
  type IdentityVector,
  type InvalidBlobVector,
  type InvalidFrameVector,
  type InvalidIdentityVector,
  type InvalidSealVector,
  type RefusedRequestVector,
  type RegistrationVector,
  type RequestVector,
  type SealVector,
  type UnsignableRequestVector,
  VECTORS_DIR,
  type VectorFile,
} from "../../scripts/make-vectors.ts";

const read = (name: VectorFile) => fs.readFileSync(path.join(VECTORS_DIR, name), "utf8");
const frames = JSON.parse(read("frames.json")) as { vectors: FrameVector[]; invalid: InvalidFrameVector[] };
const seal = JSON.parse(read("seal.json")) as { vectors: SealVector[]; invalid: InvalidSealVector[] };
const requests = JSON.parse(read("requests.json")) as {
  vectors: RequestVector[];
  unsignable: UnsignableRequestVector[];
  refused: RefusedRequestVector[];
  registration: RegistrationVector[];
};
const identities = JSON.parse(read("identity.json")) as {
  vectors: IdentityVector[];
  invalid: InvalidIdentityVector[];
};
const blobs = JSON.parse(read("blobs.json")) as { vectors: BlobVector[]; invalid: InvalidBlobVector[] };
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
const ed25519Priv = (seed: Buffer) =>
  crypto.createPrivateKey({
    key: Buffer.concat([hex("302e020100300506032b657004220420"), seed]),
    format: "der",
    type: "pkcs8",
  });
const rawPub = (key: crypto.KeyObject) =>
  crypto.createPublicKey(key).export({ format: "der", type: "spki" }).subarray(-32);
const sha256 = (data: Uint8Array | string) => crypto.createHash("sha256").update(data).digest("hex");

t.test("the committed files are what scripts/make-vectors.ts produces", async (t) => {
  const built = buildVectors();
  for (const [name, text] of Object.entries(built)) t.equal(read(name as VectorFile), text, `${name} is current`);
  t.ok(
    frames.vectors.length >= 6 && frames.invalid.length >= 10 && seal.vectors.length >= 3 && seal.invalid.length >= 5,
  );
  t.ok(requests.vectors.length >= 4 && requests.unsignable.length >= 8 && requests.refused.length >= 6);
  t.ok(identities.vectors.length >= 2 && identities.invalid.length >= 6);
  t.ok(blobs.vectors.length >= 4 && blobs.invalid.length >= 8);
});

t.test("every epoch in the vectors is within 1..2^31, the range the control plane accepts", async (t) => {
  const epochs = [...frames.vectors, ...seal.vectors, ...blobs.vectors].map((v) => v.epoch);
  t.ok(epochs.every((e) => Number.isInteger(e) && e >= 1 && e <= 2 ** 31));
  t.ok(epochs.includes(EPOCH_MAX), "the largest epoch is covered");
  t.equal(EPOCH_MAX, 2 ** 31);
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

// ---- signed control-plane requests (docs/protocol.md, "Signed requests") ----

// The field rules of the canonical request, as the protocol document states them.
const REQUEST_RULES = {
  method: /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/,
  uri: /^\/[\x21\x22\x24-\x7e]{0,8191}$/,
  timestamp: /^(0|[1-9][0-9]{0,15})$/,
  nonce: /^[A-Za-z0-9_-]{22,64}$/,
  bodySha256: /^[0-9a-f]{64}$/,
} as const;

const canonicalOf = (r: { method: string; uri: string; timestamp: string; nonce: string; bodySha256: string }) =>
  ["UNIBUS-ED25519-V1", r.method.toUpperCase(), r.uri, r.timestamp, r.nonce, r.bodySha256].join("\n");

t.test("request vectors sign and verify by the spec alone", async (t) => {
  for (const v of requests.vectors) {
    const key = ed25519Priv(hex(v.signSeed));
    t.equal(rawPub(key).toString("hex"), v.signPub, `${v.name}: seed → public key`);
    t.equal(sha256(hex(v.body)), v.bodySha256, `${v.name}: body hash`);
    for (const [field, rule] of Object.entries(REQUEST_RULES)) {
      t.match(v[field as keyof typeof REQUEST_RULES], rule, `${v.name}: ${field} follows its rule`);
    }
    t.equal(Buffer.from(v.nonce, "base64url").length, 16, `${v.name}: 16 random bytes of nonce`);
    const canonical = canonicalOf(v);
    t.equal(canonical, v.canonical, `${v.name}: canonical request`);
    const signature = crypto.sign(null, Buffer.from(canonical, "utf8"), key);
    t.equal(signature.toString("base64url"), v.signature, `${v.name}: Ed25519 is deterministic`);
    t.ok(crypto.verify(null, Buffer.from(canonical, "utf8"), ed25519Pub(hex(v.signPub)), signature));
    t.same(
      v.headers,
      {
        "x-unibus-key": v.signPub,
        "x-unibus-timestamp": v.timestamp,
        "x-unibus-nonce": v.nonce,
        "x-unibus-content-sha256": v.bodySha256,
        "x-unibus-signature": v.signature,
      },
      `${v.name}: headers`,
    );
  }
});

t.test("request vectors: the library builds the same string and accepts the headers", async (t) => {
  for (const v of requests.vectors) {
    t.equal(canonicalRequest(v), v.canonical, `${v.name}: canonical request`);
    const signed = parseSignedHeaders(v.headers);
    t.ok(verifySignedRequest({ method: v.method, uri: v.uri, signed }), `${v.name}: verifies`);
  }
});

t.test("unsignable requests break a rule of the spec, and the library refuses them", async (t) => {
  for (const v of requests.unsignable) {
    const failing = Object.entries(REQUEST_RULES)
      .filter(([field, rule]) => !rule.test(v[field as keyof typeof REQUEST_RULES]))
      .map(([field]) => field);
    t.same(failing, [v.field], `${v.name}: only ${v.field} breaks its rule`);
    t.throws(() => canonicalRequest(v), { code: "INVALID_ARGUMENT", field: v.field }, v.name);
  }
});

t.test("refused requests fail where the vector says, by the spec and by the library", async (t) => {
  for (const v of requests.refused) {
    const h = v.headers;
    const canonical = canonicalOf({
      method: v.method,
      uri: v.uri,
      timestamp: h["x-unibus-timestamp"]!,
      nonce: h["x-unibus-nonce"]!,
      bodySha256: h["x-unibus-content-sha256"]!,
    });
    const key = ed25519Pub(hex(h["x-unibus-key"]!));
    const sigOk = crypto.verify(
      null,
      Buffer.from(canonical, "utf8"),
      key,
      Buffer.from(h["x-unibus-signature"]!, "base64url"),
    );
    const bodyOk = v.bodySha256 === h["x-unibus-content-sha256"];
    const libOk = verifySignedRequest({ method: v.method, uri: v.uri, signed: parseSignedHeaders(h) });
    if (v.code === "AUTH_BAD_SIGNATURE") {
      t.notOk(sigOk, `${v.name}: the signature does not verify`);
      t.notOk(libOk, `${v.name}: nor for the library`);
    } else {
      t.ok(sigOk && libOk, `${v.name}: the signature verifies`);
      t.notOk(bodyOk, `${v.name}: but the body is not the declared one`);
    }
  }
});

t.test("registration proofs verify by the spec alone and match the library's message", async (t) => {
  for (const v of requests.registration) {
    t.match(v.token, /^[0-9a-f]{64}$/);
    const message = `unibus-register:${sha256(Buffer.from(v.token, "utf8"))}`;
    t.equal(message, v.message, `${v.name}: message`);
    t.equal(registrationProofMessage(v.token).toString("utf8"), v.message, `${v.name}: the library's message`);
    const key = ed25519Priv(hex(v.signSeed));
    t.equal(rawPub(key).toString("hex"), v.signPub);
    t.equal(crypto.sign(null, Buffer.from(message, "utf8"), key).toString("base64url"), v.proof, `${v.name}: proof`);
  }
});

// ---- identity files and NATS logins (docs/protocol.md, "Identity") ----

const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32(bytes: Uint8Array): string {
  let bits = "";
  for (const b of bytes) bits += b.toString(2).padStart(8, "0");
  bits = bits.padEnd(Math.ceil(bits.length / 5) * 5, "0");
  let out = "";
  for (let i = 0; i < bits.length; i += 5) out += B32[Number.parseInt(bits.slice(i, i + 5), 2)];
  return out;
}

function crc16xmodem(bytes: Uint8Array): number {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** prefix bytes || raw || CRC-16/XMODEM (little-endian), in base32 without padding. */
function nkeyText(prefix: number[], raw: Buffer): string {
  const body = Buffer.concat([Buffer.from(prefix), raw]);
  const crc = crc16xmodem(body);
  return base32(Buffer.concat([body, Buffer.from([crc & 0xff, crc >> 8])]));
}

t.test("identity vectors derive by the spec alone", async (t) => {
  for (const v of identities.vectors) {
    const file = JSON.parse(v.file) as Record<string, unknown>;
    t.same(Object.keys(file), ["type", "version", "signPub", "kexPub", "signSeed", "kexSecret", "createdAt"]);
    t.match(file, { type: "unibus-identity", version: 1, signPub: v.signPub, kexPub: v.kexPub });
    t.equal(v.file, `${JSON.stringify(file, null, 2)}\n`, `${v.name}: two-space JSON and a newline`);
    t.equal(Buffer.from(file.signSeed as string, "base64url").toString("hex"), v.signSeed);
    t.equal(Buffer.from(file.kexSecret as string, "base64url").toString("hex"), v.kexSecret);
    t.match(file.signSeed, /^[A-Za-z0-9_-]{43}$/);
    const signKey = ed25519Priv(hex(v.signSeed));
    t.equal(rawPub(signKey).toString("hex"), v.signPub, `${v.name}: Ed25519 public key`);
    t.equal(rawPub(x25519Priv(hex(v.kexSecret))).toString("hex"), v.kexPub, `${v.name}: X25519 public key`);
    t.equal(nkeyText([20 << 3], hex(v.signPub)), v.nkey, `${v.name}: user nkey`);
    t.equal(nkeyText([(18 << 3) | (160 >> 5), (160 & 31) << 3], hex(v.signSeed)), v.nkeySeed, `${v.name}: seed`);
    t.match(v.nkey, /^U[A-Z2-7]{55}$/);
    t.match(v.nkeySeed, /^SU[A-Z2-7]{56}$/);
    const sig = crypto.sign(null, Buffer.from(v.login.nonce, "utf8"), signKey);
    t.equal(sig.toString("base64url"), v.login.sig, `${v.name}: login signature over the server nonce`);
  }
});

t.test("identity vectors: the library loads the files and refuses the corrupt ones", async (t) => {
  const dir = t.testdir();
  for (const v of identities.vectors) {
    const file = path.join(dir, `${v.name}.json`);
    fs.writeFileSync(file, v.file, { mode: 0o600 });
    const id = await loadIdentity(file);
    t.match(id, { signPub: v.signPub, kexPub: v.kexPub, nkey: v.nkey }, `${v.name}: loads`);
    t.equal(id.nkeySeed(), v.nkeySeed);
    t.equal(`${JSON.stringify(id.toFile(), null, 2)}\n`, v.file, `${v.name}: written back byte for byte`);
    t.equal(id.sign(Buffer.from(v.login.nonce, "utf8")).toString("base64url"), v.login.sig);
  }
  for (const v of identities.invalid) {
    const file = path.join(dir, `invalid-${v.name}.json`);
    fs.writeFileSync(file, v.file, { mode: 0o600 });
    await t.rejects(loadIdentity(file), { code: "KEY_FILE", message: `corrupt (${v.reason})` }, v.name);
  }
});

// ---- encrypted blobs (docs/protocol.md, "Blobs") ----

interface RawBlob {
  epoch: number;
  chunkSize: number;
  info: Buffer;
  key: Buffer;
  nonces: Buffer[];
  plaintext: Buffer;
}

/** Decodes a blob with node:crypto by the spec; throws an Error named by the refusal's reason. */
function rawOpenBlob(blob: Buffer, roomId: string, roomKey: Buffer): RawBlob {
  if (blob.length < 28 || blob.subarray(0, 4).toString("latin1") !== "UBB1") throw new Error("malformed");
  const header = blob.subarray(0, 28);
  const epoch = header.readUInt32BE(4);
  const chunkSize = header.readUInt32BE(8);
  if (chunkSize < 1 || chunkSize > 16 * 1024 * 1024) throw new Error("malformed");
  const room = Buffer.from(roomId, "utf8");
  const info = Buffer.concat([
    Buffer.from("unibus-blob-v1", "ascii"),
    Buffer.from([room.length]),
    room,
    header.subarray(4, 8),
  ]);
  const key = Buffer.from(crypto.hkdfSync("sha256", roomKey, header.subarray(12, 28), info, 32));
  const body = blob.subarray(28);
  const count = Math.max(1, Math.ceil(body.length / (chunkSize + 16)));
  const nonces: Buffer[] = [];
  const parts: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const sealed = body.subarray(i * (chunkSize + 16), (i + 1) * (chunkSize + 16));
    if (sealed.length < 16) throw new Error("undecryptable");
    const nonce = Buffer.alloc(12);
    nonce.writeUIntBE(i, 5, 6);
    nonce[11] = i === count - 1 ? 1 : 0;
    const d = crypto.createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    d.setAAD(header, { plaintextLength: sealed.length - 16 });
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    try {
      parts.push(Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]));
    } catch {
      throw new Error("undecryptable");
    }
    nonces.push(nonce);
  }
  return { epoch, chunkSize, info, key, nonces, plaintext: Buffer.concat(parts) };
}

/** The bytes in uneven pieces, as a network would deliver them. */
async function* pieces(bytes: Buffer): AsyncGenerator<Buffer> {
  for (let at = 0, n = 1; at < bytes.length; at += n, n = (n * 3 + 1) % 23 || 1) yield bytes.subarray(at, at + n);
}

async function libOpenBlob(blob: Buffer, roomId: string, roomKey: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const chunk of decryptBlob(pieces(blob), { roomId, keyFor: async () => roomKey })) out.push(chunk);
  return Buffer.concat(out);
}

t.test("blob vectors decode by the spec alone", async (t) => {
  for (const v of blobs.vectors) {
    const blob = hex(v.blob);
    t.equal(blob.subarray(0, 28).toString("hex"), v.header, `${v.name}: header`);
    t.equal(blob.subarray(12, 28).toString("hex"), v.salt, `${v.name}: salt`);
    const opened = rawOpenBlob(blob, v.roomId, hex(v.roomKey));
    t.match(opened, { epoch: v.epoch, chunkSize: v.chunkSize }, v.name);
    t.equal(opened.info.toString("hex"), v.hkdfInfo, `${v.name}: HKDF info`);
    t.equal(opened.key.toString("hex"), v.blobKey, `${v.name}: blob key`);
    t.same(
      opened.nonces.map((n) => n.toString("hex")),
      v.chunks.map((c) => c.nonce),
      `${v.name}: one nonce per chunk, the last one flagged final`,
    );
    t.equal(opened.plaintext.toString("hex"), v.plaintext, `${v.name}: plaintext`);
  }
});

t.test("blob vectors: the library opens them, and what it writes decodes by the spec", async (t) => {
  for (const v of blobs.vectors) {
    const roomKey = hex(v.roomKey);
    t.equal((await libOpenBlob(hex(v.blob), v.roomId, roomKey)).toString("hex"), v.plaintext, `${v.name}: opens`);
    const parts: Buffer[] = [];
    const source = [hex(v.plaintext)];
    for await (const p of encryptBlob(source, { roomKey, roomId: v.roomId, epoch: v.epoch, chunkBytes: v.chunkSize }))
      parts.push(p);
    const written = Buffer.concat(parts);
    t.equal(written.length, hex(v.blob).length, `${v.name}: same length (only the salt differs)`);
    t.equal(rawOpenBlob(written, v.roomId, roomKey).plaintext.toString("hex"), v.plaintext, `${v.name}: round trip`);
  }
});

t.test("invalid blob vectors are refused by the spec and by the library, with the listed reason", async (t) => {
  for (const v of blobs.invalid) {
    t.throws(
      () => rawOpenBlob(hex(v.blob), v.roomId, hex(v.roomKey)),
      { message: v.reason },
      `${v.name}: spec decoder refuses`,
    );
    await t.rejects(libOpenBlob(hex(v.blob), v.roomId, hex(v.roomKey)), { code: "CRYPTO", reason: v.reason }, v.name);
  }
});
