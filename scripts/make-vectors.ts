/**
 * Writes the golden vectors for frames and sealed room keys
 * (fixtures/vectors/frames.json, seal.json) from fixed seeds, fixed nonces and fixed
 * ephemeral keys, so the output is the same on every run and any other
 * implementation can check itself against them. The formats: docs/formats.md.
 *
 *     npx node scripts/make-vectors.ts           # rewrite the files
 *     npx node scripts/make-vectors.ts --check   # exit 1 if the files are stale
 *
 * test/crypto/vectors.test.ts decodes every vector independently of the library and
 * checks that `buildVectors()` still reproduces the committed files.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { encodeFrameWithNonce, FRAME_LABEL, type FrameFailureReason } from "../lib/crypto/frame.ts";
import { Identity } from "../lib/crypto/identity.ts";
import type { CryptoErrorReason } from "../lib/crypto/room-key.ts";
import { SEAL_LABEL, sealRoomKeyWithEphemeral } from "../lib/crypto/seal.ts";

export const VECTORS_DIR = fileURLToPath(new URL("../fixtures/vectors/", import.meta.url));

/** 32 bytes that anyone can recompute: SHA-256 of a label. */
function fixed(label: string, length = 32): Buffer {
  return crypto.createHash("sha256").update(`unibus-vectors/${label}`).digest().subarray(0, length);
}

function identity(name: string): Identity {
  return new Identity(fixed(`${name}/sign-seed`), fixed(`${name}/kex-secret`), "2025-01-01T00:00:00.000Z");
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

function frameContext(roomId: string): Buffer {
  const room = Buffer.from(roomId, "utf8");
  return Buffer.concat([FRAME_LABEL, Buffer.from([room.length]), room]);
}

interface FrameCase {
  name: string;
  roomId: string;
  epoch: number;
  sender: string;
  encrypted: boolean;
  sign: boolean;
  plaintext: Buffer;
}

const FRAME_CASES: FrameCase[] = [
  {
    name: "encrypted, signed, UTF-8 text",
    roomId: "general",
    epoch: 1,
    sender: "alice",
    encrypted: true,
    sign: true,
    plaintext: Buffer.from("hello, room", "utf8"),
  },
  {
    name: "encrypted, unsigned, binary payload",
    roomId: "ops-alerts",
    epoch: 7,
    sender: "bob",
    encrypted: true,
    sign: false,
    plaintext: fixed("payload/binary", 32),
  },
  {
    name: "encrypted, signed, empty payload",
    roomId: "general",
    epoch: 2,
    sender: "alice",
    encrypted: true,
    sign: true,
    plaintext: Buffer.alloc(0),
  },
  {
    name: "encrypted, unsigned, largest epoch, non-ASCII room id",
    roomId: "räum-ü",
    epoch: 0xffffffff,
    sender: "bob",
    encrypted: true,
    sign: false,
    plaintext: Buffer.from("grüße", "utf8"),
  },
  {
    name: "cleartext, signed",
    roomId: "lobby",
    epoch: 1,
    sender: "alice",
    encrypted: false,
    sign: true,
    plaintext: Buffer.from("a signed cleartext message", "utf8"),
  },
  {
    name: "cleartext, unsigned",
    roomId: "lobby",
    epoch: 1,
    sender: "bob",
    encrypted: false,
    sign: false,
    plaintext: Buffer.from("plain", "utf8"),
  },
];

export interface FrameVector {
  name: string;
  roomId: string;
  epoch: number;
  senderSignSeed: string;
  senderSignPub: string;
  /** hex; null for cleartext frames */
  roomKey: string | null;
  /** hex; null for cleartext frames */
  nonce: string | null;
  signed: boolean;
  plaintext: string;
  context: string;
  /** hex; null for cleartext frames */
  associatedData: string | null;
  /** hex; null for unsigned frames */
  signatureInput: string | null;
  frame: string;
}

export interface InvalidFrameVector {
  name: string;
  roomId: string;
  encrypted: boolean;
  /** hex; the key the receiver tries, null when it has none */
  roomKey: string | null;
  requireSignature: boolean;
  frame: string;
  reason: FrameFailureReason;
}

export interface SealVector {
  name: string;
  recipientKexSecret: string;
  recipientKexPub: string;
  ephemeralSecret: string;
  ephemeralPub: string;
  roomId: string;
  epoch: number;
  roomKey: string;
  sharedSecret: string;
  hkdfSalt: string;
  hkdfInfo: string;
  aeadKey: string;
  aeadNonce: string;
  associatedData: string;
  sealed: string;
}

export interface InvalidSealVector {
  name: string;
  recipientKexSecret: string;
  roomId: string;
  epoch: number;
  sealed: string;
  reason: CryptoErrorReason;
}

function roomKeyFor(roomId: string, epoch: number): Buffer {
  return fixed(`room-key/${roomId}/${epoch}`);
}

function buildFrames() {
  const vectors: FrameVector[] = [];
  for (const c of FRAME_CASES) {
    const id = identity(c.sender);
    const roomKey = c.encrypted ? roomKeyFor(c.roomId, c.epoch) : undefined;
    const nonce = fixed(`nonce/${c.name}`, 12);
    const frame = Buffer.from(
      encodeFrameWithNonce(
        { roomId: c.roomId, epoch: c.epoch, sender: id, plaintext: c.plaintext, roomKey, sign: c.sign },
        nonce,
      ),
    );
    const context = frameContext(c.roomId);
    const bodyStart = 38 + (c.encrypted ? 12 : 0);
    const bodyEnd = frame.length - (c.sign ? 64 : 0);
    vectors.push({
      name: c.name,
      roomId: c.roomId,
      epoch: c.epoch,
      senderSignSeed: hex(fixed(`${c.sender}/sign-seed`)),
      senderSignPub: id.signPub,
      roomKey: roomKey ? hex(roomKey) : null,
      nonce: c.encrypted ? hex(nonce) : null,
      signed: c.sign,
      plaintext: hex(c.plaintext),
      context: hex(context),
      associatedData: c.encrypted ? hex(Buffer.concat([context, frame.subarray(0, bodyStart)])) : null,
      signatureInput: c.sign ? hex(Buffer.concat([context, frame.subarray(0, bodyEnd)])) : null,
      frame: hex(frame),
    });
  }

  const byName = (name: string) => Buffer.from(vectors.find((v) => v.name === name)!.frame, "hex");
  const encSigned = byName("encrypted, signed, UTF-8 text");
  const encUnsigned = byName("encrypted, unsigned, binary payload");
  const clearSigned = byName("cleartext, signed");
  const clearUnsigned = byName("cleartext, unsigned");
  const flip = (b: Buffer, at: number) => {
    const c = Buffer.from(b);
    c[at < 0 ? c.length + at : at]! ^= 0x01;
    return c;
  };
  const generalKey = hex(roomKeyFor("general", 1));
  const opsKey = hex(roomKeyFor("ops-alerts", 7));
  // Signed by bob, but the header claims alice.
  const alice = identity("alice");
  const bob = identity("bob");
  const impostor = { signPub: alice.signPub, sign: (d: Uint8Array) => bob.sign(d) };
  const forged = Buffer.from(
    encodeFrameWithNonce(
      { roomId: "lobby", epoch: 1, sender: impostor, plaintext: "from alice, honest", sign: true },
      fixed("nonce/forged", 12),
    ),
  );
  const versionTwo = Buffer.from(clearUnsigned);
  versionTwo[0] = 2;
  const unknownFlag = Buffer.from(clearUnsigned);
  unknownFlag[1] = 0x04;

  const invalid: InvalidFrameVector[] = [
    {
      name: "ciphertext byte flipped (signed frame)",
      roomId: "general",
      encrypted: true,
      roomKey: generalKey,
      requireSignature: false,
      frame: hex(flip(encSigned, 55)),
      reason: "bad-signature",
    },
    {
      name: "ciphertext byte flipped (unsigned frame)",
      roomId: "ops-alerts",
      encrypted: true,
      roomKey: opsKey,
      requireSignature: false,
      frame: hex(flip(encUnsigned, 55)),
      reason: "undecryptable",
    },
    {
      name: "tag byte flipped (unsigned frame)",
      roomId: "ops-alerts",
      encrypted: true,
      roomKey: opsKey,
      requireSignature: false,
      frame: hex(flip(encUnsigned, -1)),
      reason: "undecryptable",
    },
    {
      name: "epoch changed (unsigned frame)",
      roomId: "ops-alerts",
      encrypted: true,
      roomKey: opsKey,
      requireSignature: false,
      frame: hex(flip(encUnsigned, 5)),
      reason: "undecryptable",
    },
    {
      name: "signature byte flipped",
      roomId: "lobby",
      encrypted: false,
      roomKey: null,
      requireSignature: false,
      frame: hex(flip(clearSigned, -10)),
      reason: "bad-signature",
    },
    {
      name: "signed frame opened in another room",
      roomId: "elsewhere",
      encrypted: true,
      roomKey: generalKey,
      requireSignature: false,
      frame: hex(encSigned),
      reason: "bad-signature",
    },
    {
      name: "unsigned encrypted frame opened in another room (same key)",
      roomId: "elsewhere",
      encrypted: true,
      roomKey: opsKey,
      requireSignature: false,
      frame: hex(encUnsigned),
      reason: "undecryptable",
    },
    {
      name: "another epoch's key",
      roomId: "ops-alerts",
      encrypted: true,
      roomKey: hex(roomKeyFor("ops-alerts", 6)),
      requireSignature: false,
      frame: hex(encUnsigned),
      reason: "undecryptable",
    },
    {
      name: "no key for the epoch",
      roomId: "ops-alerts",
      encrypted: true,
      roomKey: null,
      requireSignature: false,
      frame: hex(encUnsigned),
      reason: "unknown-epoch",
    },
    {
      name: "unsigned frame in a room that requires signatures",
      roomId: "ops-alerts",
      encrypted: true,
      roomKey: opsKey,
      requireSignature: true,
      frame: hex(encUnsigned),
      reason: "unsigned",
    },
    {
      name: "signed by bob, claims alice",
      roomId: "lobby",
      encrypted: false,
      roomKey: null,
      requireSignature: false,
      frame: hex(forged),
      reason: "bad-signature",
    },
    {
      name: "cleartext frame in an encrypted room",
      roomId: "lobby",
      encrypted: true,
      roomKey: generalKey,
      requireSignature: false,
      frame: hex(clearSigned),
      reason: "wrong-mode",
    },
    {
      name: "encrypted frame in a cleartext room",
      roomId: "general",
      encrypted: false,
      roomKey: null,
      requireSignature: false,
      frame: hex(encSigned),
      reason: "wrong-mode",
    },
    {
      name: "version 2",
      roomId: "lobby",
      encrypted: false,
      roomKey: null,
      requireSignature: false,
      frame: hex(versionTwo),
      reason: "unsupported-version",
    },
    {
      name: "unknown flag bit",
      roomId: "lobby",
      encrypted: false,
      roomKey: null,
      requireSignature: false,
      frame: hex(unknownFlag),
      reason: "malformed",
    },
    {
      name: "truncated header",
      roomId: "lobby",
      encrypted: false,
      roomKey: null,
      requireSignature: false,
      frame: hex(clearUnsigned.subarray(0, 37)),
      reason: "malformed",
    },
    {
      name: "encrypted frame shorter than nonce and tag",
      roomId: "ops-alerts",
      encrypted: true,
      roomKey: opsKey,
      requireSignature: false,
      frame: hex(encUnsigned.subarray(0, 38 + 12 + 15)),
      reason: "malformed",
    },
  ];
  return {
    description:
      "Golden vectors for unibus message frames, format version 1 (docs/formats.md). Generated by scripts/make-vectors.ts; do not edit. All byte strings are lowercase hex.",
    vectors,
    invalid,
  };
}

function sealCase(name: string, recipient: string, roomId: string, epoch: number): SealVector {
  const id = identity(recipient);
  const ephemeralSecret = fixed(`ephemeral/${name}`);
  const roomKey = roomKeyFor(roomId, epoch);
  const sealed = sealRoomKeyWithEphemeral({ roomKey, recipientKexPub: id.kexPub, roomId, epoch }, ephemeralSecret);
  // Intermediates, computed here from the spec rather than taken from the library.
  const ephemeralPriv = crypto.createPrivateKey({
    key: Buffer.concat([Buffer.from("302e020100300506032b656e04220420", "hex"), ephemeralSecret]),
    format: "der",
    type: "pkcs8",
  });
  const ephemeralPub = crypto.createPublicKey(ephemeralPriv).export({ format: "der", type: "spki" }).subarray(-32);
  const shared = crypto.diffieHellman({
    privateKey: ephemeralPriv,
    publicKey: crypto.createPublicKey(id.kexPrivateKey()),
  });
  const room = Buffer.from(roomId, "utf8");
  const epochBytes = Buffer.alloc(4);
  epochBytes.writeUInt32BE(epoch);
  const info = Buffer.concat([Buffer.from(SEAL_LABEL, "ascii"), Buffer.from([room.length]), room, epochBytes]);
  const salt = Buffer.concat([ephemeralPub, Buffer.from(id.kexPub, "hex")]);
  const aeadKey = Buffer.from(crypto.hkdfSync("sha256", shared, salt, info, 32));
  return {
    name,
    recipientKexSecret: hex(fixed(`${recipient}/kex-secret`)),
    recipientKexPub: id.kexPub,
    ephemeralSecret: hex(ephemeralSecret),
    ephemeralPub: hex(ephemeralPub),
    roomId,
    epoch,
    roomKey: hex(roomKey),
    sharedSecret: hex(shared),
    hkdfSalt: hex(salt),
    hkdfInfo: hex(info),
    aeadKey: hex(aeadKey),
    aeadNonce: hex(Buffer.alloc(12)),
    associatedData: hex(info),
    sealed,
  };
}

function buildSeal() {
  const vectors = [
    sealCase("alice, general, epoch 1", "alice", "general", 1),
    sealCase("bob, general, epoch 2", "bob", "general", 2),
    sealCase("bob, non-ASCII room, largest epoch", "bob", "räum-ü", 0xffffffff),
  ];
  const first = vectors[0]!;
  const bytes = Buffer.from(first.sealed, "base64url");
  const tampered = Buffer.from(bytes);
  tampered[40]! ^= 0x01;
  const versionTwo = Buffer.from(bytes);
  versionTwo[0] = 2;
  const lowOrder = Buffer.from(bytes);
  lowOrder.fill(0, 1, 33);
  const base = { recipientKexSecret: first.recipientKexSecret, roomId: first.roomId, epoch: first.epoch };
  const invalid: InvalidSealVector[] = [
    { name: "another room", ...base, roomId: "ops-alerts", sealed: first.sealed, reason: "undecryptable" },
    { name: "another epoch", ...base, epoch: 2, sealed: first.sealed, reason: "undecryptable" },
    {
      name: "another recipient",
      ...base,
      recipientKexSecret: hex(fixed("bob/kex-secret")),
      sealed: first.sealed,
      reason: "undecryptable",
    },
    { name: "ciphertext byte flipped", ...base, sealed: tampered.toString("base64url"), reason: "undecryptable" },
    { name: "version 2", ...base, sealed: versionTwo.toString("base64url"), reason: "unsupported-version" },
    { name: "low-order ephemeral key", ...base, sealed: lowOrder.toString("base64url"), reason: "invalid-key" },
    { name: "truncated", ...base, sealed: first.sealed.slice(0, 104), reason: "malformed" },
    { name: "not base64url", ...base, sealed: `${first.sealed.slice(0, 107)}=`, reason: "malformed" },
  ];
  return {
    description:
      "Golden vectors for unibus sealed room keys, format version 1 (docs/formats.md). Generated by scripts/make-vectors.ts; do not edit. Byte strings are lowercase hex; `sealed` is base64url without padding.",
    vectors,
    invalid,
  };
}

/** The two files' contents, exactly as written. */
export function buildVectors(): { "frames.json": string; "seal.json": string } {
  return {
    "frames.json": `${JSON.stringify(buildFrames(), null, 2)}\n`,
    "seal.json": `${JSON.stringify(buildSeal(), null, 2)}\n`,
  };
}

function main(): void {
  const check = process.argv.includes("--check");
  const files = buildVectors();
  let stale = false;
  fs.mkdirSync(VECTORS_DIR, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    const file = path.join(VECTORS_DIR, name);
    const current = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : undefined;
    if (current === text) continue;
    stale = true;
    if (check) console.error(`${file} is out of date; run: npx node scripts/make-vectors.ts`);
    else {
      fs.writeFileSync(file, text);
      console.log(`wrote ${file}`);
    }
  }
  if (check && stale) process.exitCode = 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
