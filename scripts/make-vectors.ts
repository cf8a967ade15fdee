/**
 * Writes the golden vectors (fixtures/vectors/): frames and sealed room keys
 * (frames.json, seal.json; docs/formats.md), signed control-plane requests and
 * registration proofs (requests.json), identity files and NATS logins
 * (identity.json), and encrypted blobs (blobs.json; those three: docs/protocol.md).
 * Everything comes from fixed seeds, nonces, salts and ephemeral keys, so the output
 * is the same on every run and any other implementation can check itself against it.
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
import { canonicalRequest, EMPTY_SHA256, signRequest } from "../lib/crypto/canonical.ts";
import { encodeFrameWithNonce, FRAME_LABEL, type FrameFailureReason } from "../lib/crypto/frame.ts";
import { Identity } from "../lib/crypto/identity.ts";
import type { CryptoErrorReason } from "../lib/crypto/room-key.ts";
import { SEAL_LABEL, sealRoomKeyWithEphemeral } from "../lib/crypto/seal.ts";

export const VECTORS_DIR = fileURLToPath(new URL("../fixtures/vectors/", import.meta.url));

/** Epochs run from 1 to 2^31: the range the control plane accepts (docs/protocol.md). */
export const EPOCH_MAX = 2 ** 31;

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
    epoch: EPOCH_MAX,
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
    sealCase("bob, non-ASCII room, largest epoch", "bob", "räum-ü", EPOCH_MAX),
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

// ---- signed control-plane requests ----

/** 2025-01-01T00:00:00.000Z in milliseconds: every request vector's timestamp. */
const REQUEST_TIME = 1_735_689_600_000;
const VECTOR_ROOM = "5f1c0e2a9b7d4c3e8a6f0b12";

export interface RequestVector {
  name: string;
  signSeed: string;
  signPub: string;
  method: string;
  uri: string;
  timestamp: string;
  nonce: string;
  /** hex of the body bytes; "" for a request without a body */
  body: string;
  /** the body as text when it is text (for reading only; `body` is what is hashed) */
  bodyText: string | null;
  bodySha256: string;
  /** the exact string that is signed (UTF-8; lines joined by "\n") */
  canonical: string;
  /** base64url, no padding */
  signature: string;
  headers: Record<string, string>;
}

export interface UnsignableRequestVector {
  name: string;
  method: string;
  uri: string;
  timestamp: string;
  nonce: string;
  bodySha256: string;
  /** the field that cannot be signed */
  field: "method" | "uri" | "timestamp" | "nonce" | "bodySha256";
}

export interface RefusedRequestVector {
  name: string;
  method: string;
  uri: string;
  /** SHA-256 of the body actually sent */
  bodySha256: string;
  headers: Record<string, string>;
  /** the server's refusal code */
  code: "AUTH_BAD_SIGNATURE" | "AUTH_BODY_MISMATCH";
}

export interface RegistrationVector {
  name: string;
  signSeed: string;
  signPub: string;
  token: string;
  /** the signed bytes, as text */
  message: string;
  /** base64url, no padding */
  proof: string;
}

interface RequestCase {
  name: string;
  signer: string;
  method: string;
  uri: string;
  body: Buffer;
  text: boolean;
}

function requestCases(): RequestCase[] {
  const alice = identity("alice");
  const sealed = sealRoomKeyWithEphemeral(
    { roomKey: roomKeyFor(VECTOR_ROOM, 1), recipientKexPub: alice.kexPub, roomId: VECTOR_ROOM, epoch: 1 },
    fixed("ephemeral/request"),
  );
  const create = { id: VECTOR_ROOM, encrypt: true, persist: false, signMsgs: true, ownerSealedKey: sealed };
  const none = Buffer.alloc(0);
  return [
    {
      name: "GET with a query, no body",
      signer: "alice",
      method: "GET",
      uri: `/v1/rooms/${VECTOR_ROOM}/keys/${alice.signPub}?epoch=2`,
      body: none,
      text: true,
    },
    {
      name: "POST with a JSON body",
      signer: "alice",
      method: "POST",
      uri: "/v1/rooms",
      body: Buffer.from(JSON.stringify(create), "utf8"),
      text: true,
    },
    {
      name: "PUT of a blob: the body is binary",
      signer: "bob",
      method: "PUT",
      uri: `/v1/rooms/${VECTOR_ROOM}/blobs`,
      body: fixed("request/blob-body", 32),
      text: false,
    },
    {
      name: "DELETE with a percent-encoded path, signed as sent",
      signer: "alice",
      method: "DELETE",
      uri: "/v1/invites/%61bcdef012345",
      body: none,
      text: true,
    },
    {
      name: "POST without a body, an empty query kept",
      signer: "alice",
      method: "POST",
      uri: `/v1/users/${identity("bob").signPub}/revoke?`,
      body: none,
      text: true,
    },
  ];
}

function requestVector(c: RequestCase): RequestVector {
  const id = identity(c.signer);
  const nonce = fixed(`request-nonce/${c.name}`, 16).toString("base64url");
  const bodySha256 = crypto.createHash("sha256").update(c.body).digest("hex");
  const canonical = canonicalRequest({ method: c.method, uri: c.uri, timestamp: REQUEST_TIME, nonce, bodySha256 });
  const signature = id.sign(Buffer.from(canonical, "utf8")).toString("base64url");
  return {
    name: c.name,
    signSeed: hex(fixed(`${c.signer}/sign-seed`)),
    signPub: id.signPub,
    method: c.method,
    uri: c.uri,
    timestamp: String(REQUEST_TIME),
    nonce,
    body: hex(c.body),
    bodyText: c.text ? c.body.toString("utf8") : null,
    bodySha256,
    canonical,
    signature,
    headers: {
      "x-unibus-key": id.signPub,
      "x-unibus-timestamp": String(REQUEST_TIME),
      "x-unibus-nonce": nonce,
      "x-unibus-content-sha256": bodySha256,
      "x-unibus-signature": signature,
    },
  };
}

function unsignableRequests(): UnsignableRequestVector[] {
  const ok = {
    method: "GET",
    uri: "/v1/rooms",
    timestamp: String(REQUEST_TIME),
    nonce: fixed("request-nonce/unsignable", 16).toString("base64url"),
    bodySha256: EMPTY_SHA256,
  };
  return [
    { name: "a space in the URI", ...ok, uri: "/v1/rooms/a b", field: "uri" },
    { name: "a fragment in the URI", ...ok, uri: "/v1/rooms#top", field: "uri" },
    { name: "an absolute-form URI", ...ok, uri: "https://bus.example:8470/v1/rooms", field: "uri" },
    { name: "a non-ASCII URI (not percent-encoded)", ...ok, uri: "/v1/räume", field: "uri" },
    { name: "a method that is not a token", ...ok, method: "GE T", field: "method" },
    { name: "a timestamp with a leading zero", ...ok, timestamp: `0${REQUEST_TIME}`, field: "timestamp" },
    { name: "a timestamp in seconds with a fraction", ...ok, timestamp: "1735689600.5", field: "timestamp" },
    { name: "a nonce of 15 bytes (20 characters)", ...ok, nonce: ok.nonce.slice(0, 20), field: "nonce" },
    { name: "a padded nonce", ...ok, nonce: `${ok.nonce}==`, field: "nonce" },
    { name: "an uppercase body hash", ...ok, bodySha256: EMPTY_SHA256.toUpperCase(), field: "bodySha256" },
  ];
}

function refusedRequests(signed: RequestVector[]): RefusedRequestVector[] {
  const [get, post, , del] = signed as [RequestVector, RequestVector, RequestVector, RequestVector];
  const bob = identity("bob");
  const sha = (text: string) => crypto.createHash("sha256").update(text).digest("hex");
  const req = (v: RequestVector) => ({ method: v.method, uri: v.uri, bodySha256: v.bodySha256, headers: v.headers });
  return [
    { name: "query dropped", ...req(get), uri: get.uri.replace(/\?.*$/, ""), code: "AUTH_BAD_SIGNATURE" },
    { name: "query changed", ...req(get), uri: get.uri.replace("epoch=2", "epoch=3"), code: "AUTH_BAD_SIGNATURE" },
    { name: "another method", ...req(get), method: "DELETE", code: "AUTH_BAD_SIGNATURE" },
    {
      name: "percent-encoding decoded",
      ...req(del),
      uri: "/v1/invites/abcdef012345",
      code: "AUTH_BAD_SIGNATURE",
    },
    {
      name: "timestamp header one millisecond later",
      ...req(get),
      headers: { ...get.headers, "x-unibus-timestamp": String(REQUEST_TIME + 1) },
      code: "AUTH_BAD_SIGNATURE",
    },
    {
      name: "the key header names another identity",
      ...req(get),
      headers: { ...get.headers, "x-unibus-key": bob.signPub },
      code: "AUTH_BAD_SIGNATURE",
    },
    {
      name: "the declared body hash changed with the body",
      ...req(post),
      bodySha256: sha(`${post.bodyText} `),
      headers: { ...post.headers, "x-unibus-content-sha256": sha(`${post.bodyText} `) },
      code: "AUTH_BAD_SIGNATURE",
    },
    { name: "another body, same headers", ...req(post), bodySha256: sha("{}"), code: "AUTH_BODY_MISMATCH" },
  ];
}

function registrationVector(signer: string, n: number): RegistrationVector {
  const id = identity(signer);
  const token = hex(fixed(`invite/${n}`));
  const message = `unibus-register:${crypto.createHash("sha256").update(token, "utf8").digest("hex")}`;
  return {
    name: `${signer} registers with invite ${n}`,
    signSeed: hex(fixed(`${signer}/sign-seed`)),
    signPub: id.signPub,
    token,
    message,
    proof: id.sign(Buffer.from(message, "utf8")).toString("base64url"),
  };
}

function buildRequests() {
  const vectors = requestCases().map(requestVector);
  // The library's own header builder must agree with the vector (its nonce is random).
  const check = signRequest(identity("alice"), { method: "GET", uri: "/v1/rooms", now: REQUEST_TIME });
  if (check["x-unibus-content-sha256"] !== EMPTY_SHA256) throw new Error("signRequest disagrees with the vectors");
  return {
    description:
      "Golden vectors for signed unibus control-plane requests and invite registration proofs (docs/protocol.md). Generated by scripts/make-vectors.ts; do not edit. Seeds, keys, bodies and hashes are lowercase hex; nonces, signatures and proofs are base64url without padding.",
    vectors,
    unsignable: unsignableRequests(),
    refused: refusedRequests(vectors),
    registration: [registrationVector("alice", 1), registrationVector("bob", 2)],
  };
}

// ---- identity files and NATS logins ----

export interface IdentityVector {
  name: string;
  signSeed: string;
  kexSecret: string;
  signPub: string;
  kexPub: string;
  /** the signing key as a NATS user nkey */
  nkey: string;
  /** the signing seed as a NATS user seed (secret) */
  nkeySeed: string;
  /** the identity file exactly as written */
  file: string;
  /** a server nonce (from its INFO) and the login signature over its UTF-8 bytes, base64url */
  login: { nonce: string; sig: string };
}

export interface InvalidIdentityVector {
  name: string;
  file: string;
  /** the corruption, as the loader names it */
  reason: string;
}

function identityVector(name: string, createdAt: string): IdentityVector {
  const id = new Identity(fixed(`${name}/sign-seed`), fixed(`${name}/kex-secret`), createdAt);
  const nonce = fixed(`login-nonce/${name}`, 16).toString("base64url");
  return {
    name,
    signSeed: hex(fixed(`${name}/sign-seed`)),
    kexSecret: hex(fixed(`${name}/kex-secret`)),
    signPub: id.signPub,
    kexPub: id.kexPub,
    nkey: id.nkey,
    nkeySeed: id.nkeySeed(),
    file: `${JSON.stringify(id.toFile(), null, 2)}\n`,
    login: { nonce, sig: id.sign(Buffer.from(nonce, "utf8")).toString("base64url") },
  };
}

function invalidIdentities(alice: IdentityVector, bob: IdentityVector): InvalidIdentityVector[] {
  const base = JSON.parse(alice.file) as Record<string, unknown>;
  const file = (patch: Record<string, unknown>) => `${JSON.stringify({ ...base, ...patch }, null, 2)}\n`;
  const seed = base.signSeed as string;
  return [
    { name: "not JSON", file: alice.file.slice(0, 40), reason: "not JSON" },
    { name: "another file type", file: file({ type: "unibus-service-keys" }), reason: "not a unibus identity" },
    { name: "version 2", file: file({ version: 2 }), reason: "unsupported version 2" },
    { name: "seed in standard base64", file: file({ signSeed: `${seed.slice(0, 42)}+` }), reason: "bad key material" },
    { name: "padded seed", file: file({ signSeed: `${seed}=` }), reason: "bad key material" },
    {
      name: "secret of 31 bytes",
      file: file({ kexSecret: fixed("short", 31).toString("base64url") }),
      reason: "bad key material",
    },
    {
      name: "public key of another identity",
      file: file({ signPub: bob.signPub }),
      reason: "public keys do not match the secrets",
    },
    {
      name: "uppercase public key",
      file: file({ kexPub: alice.kexPub.toUpperCase() }),
      reason: "public keys do not match the secrets",
    },
  ];
}

function buildIdentities() {
  const alice = identityVector("alice", "2025-01-01T00:00:00.000Z");
  const bob = identityVector("bob", "2025-06-30T12:34:56.789Z");
  return {
    description:
      "Golden vectors for unibus identity files and NATS logins (docs/protocol.md). Generated by scripts/make-vectors.ts; do not edit. Seeds and keys are lowercase hex; `file` is the identity file byte for byte; `login.sig` is base64url without padding.",
    vectors: [alice, bob],
    invalid: invalidIdentities(alice, bob),
  };
}

// ---- encrypted blobs ----

export interface BlobVector {
  name: string;
  roomId: string;
  epoch: number;
  roomKey: string;
  salt: string;
  chunkSize: number;
  plaintext: string;
  header: string;
  hkdfInfo: string;
  blobKey: string;
  chunks: Array<{ nonce: string; sealed: string }>;
  /** header || every sealed chunk */
  blob: string;
}

export interface InvalidBlobVector {
  name: string;
  roomId: string;
  /** hex; the key the reader holds for the epoch named in the header */
  roomKey: string;
  blob: string;
  reason: CryptoErrorReason;
}

/** The blob format of docs/protocol.md, straight from node:crypto (the library's salt is always random). */
function sealBlob(c: { roomId: string; epoch: number; salt: Buffer; chunkSize: number; plaintext: Buffer }) {
  const roomKey = roomKeyFor(c.roomId, c.epoch);
  const header = Buffer.alloc(28);
  header.write("UBB1", 0, "ascii");
  header.writeUInt32BE(c.epoch, 4);
  header.writeUInt32BE(c.chunkSize, 8);
  c.salt.copy(header, 12);
  const room = Buffer.from(c.roomId, "utf8");
  const info = Buffer.concat([
    Buffer.from("unibus-blob-v1", "ascii"),
    Buffer.from([room.length]),
    room,
    header.subarray(4, 8),
  ]);
  const key = Buffer.from(crypto.hkdfSync("sha256", roomKey, c.salt, info, 32));
  const count = Math.max(1, Math.ceil(c.plaintext.length / c.chunkSize));
  const chunks: Array<{ nonce: string; sealed: string }> = [];
  for (let i = 0; i < count; i++) {
    const nonce = Buffer.alloc(12);
    nonce.writeUIntBE(i, 5, 6);
    nonce[11] = i === count - 1 ? 1 : 0;
    const cipher = crypto.createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    const part = c.plaintext.subarray(i * c.chunkSize, (i + 1) * c.chunkSize);
    cipher.setAAD(header, { plaintextLength: part.length });
    const sealed = Buffer.concat([cipher.update(part), cipher.final(), cipher.getAuthTag()]);
    chunks.push({ nonce: hex(nonce), sealed: hex(sealed) });
  }
  return { roomKey, header, info, key, chunks };
}

function blobVector(name: string, roomId: string, epoch: number, chunkSize: number, plaintext: Buffer): BlobVector {
  const salt = fixed(`blob-salt/${name}`, 16);
  const b = sealBlob({ roomId, epoch, salt, chunkSize, plaintext });
  return {
    name,
    roomId,
    epoch,
    roomKey: hex(b.roomKey),
    salt: hex(salt),
    chunkSize,
    plaintext: hex(plaintext),
    header: hex(b.header),
    hkdfInfo: hex(b.info),
    blobKey: hex(b.key),
    chunks: b.chunks,
    blob: hex(Buffer.concat([b.header, ...b.chunks.map((ch) => Buffer.from(ch.sealed, "hex"))])),
  };
}

function invalidBlobs(three: BlobVector): InvalidBlobVector[] {
  const header = Buffer.from(three.header, "hex");
  const [c0, c1, c2] = three.chunks.map((ch) => Buffer.from(ch.sealed, "hex")) as [Buffer, Buffer, Buffer];
  const whole = Buffer.from(three.blob, "hex");
  const base = { roomId: three.roomId, roomKey: three.roomKey };
  const withHeader = (patch: (h: Buffer) => void) => {
    const h = Buffer.from(header);
    patch(h);
    return hex(Buffer.concat([h, c0, c1, c2]));
  };
  const flipped = Buffer.from(whole);
  flipped[header.length + 3]! ^= 0x01;
  return [
    { name: "final chunk dropped", ...base, blob: hex(Buffer.concat([header, c0, c1])), reason: "undecryptable" },
    { name: "chunks swapped", ...base, blob: hex(Buffer.concat([header, c1, c0, c2])), reason: "undecryptable" },
    { name: "ciphertext byte flipped", ...base, blob: hex(flipped), reason: "undecryptable" },
    { name: "bytes after the final chunk", ...base, blob: hex(Buffer.concat([whole, c2])), reason: "undecryptable" },
    {
      name: "epoch in the header changed",
      ...base,
      blob: withHeader((h) => h.writeUInt32BE(2, 4)),
      reason: "undecryptable",
    },
    { name: "another room", ...base, roomId: "elsewhere", blob: three.blob, reason: "undecryptable" },
    { name: "unknown magic", ...base, blob: withHeader((h) => h.write("UBB2", 0, "ascii")), reason: "malformed" },
    { name: "chunk size 0", ...base, blob: withHeader((h) => h.writeUInt32BE(0, 8)), reason: "malformed" },
    { name: "shorter than its header", ...base, blob: hex(header.subarray(0, 27)), reason: "malformed" },
  ];
}

function buildBlobs() {
  const forty = Buffer.concat([fixed("blob/a"), fixed("blob/b")]).subarray(0, 40);
  const vectors = [
    blobVector("three chunks, the last one short", "general", 1, 16, forty),
    blobVector("two chunks, an exact multiple of the chunk size", "ops-alerts", 7, 16, fixed("blob/32")),
    blobVector("empty blob", "general", 2, 65_536, Buffer.alloc(0)),
    blobVector(
      "default chunk size, non-ASCII room id, largest epoch",
      "räum-ü",
      EPOCH_MAX,
      65_536,
      Buffer.from("grüße", "utf8"),
    ),
  ];
  return {
    description:
      "Golden vectors for unibus encrypted blobs, format UBB1 (docs/protocol.md). Generated by scripts/make-vectors.ts; do not edit. All byte strings are lowercase hex.",
    vectors,
    invalid: invalidBlobs(vectors[0]!),
  };
}

export type VectorFile = "frames.json" | "seal.json" | "requests.json" | "identity.json" | "blobs.json";

/** Every file's contents, exactly as written. */
export function buildVectors(): Record<VectorFile, string> {
  const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;
  return {
    "frames.json": json(buildFrames()),
    "seal.json": json(buildSeal()),
    "requests.json": json(buildRequests()),
    "identity.json": json(buildIdentities()),
    "blobs.json": json(buildBlobs()),
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
