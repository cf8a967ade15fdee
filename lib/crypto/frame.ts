/**
 * Room message frames. Byte layout, associated data and signature input are in
 * docs/formats.md; in short:
 *
 *     version(1)=0x01 | flags(1) | epoch(u32be) | sender(32, Ed25519 public key)
 *     | nonce(12, encrypted only) | body | signature(64, signed only)
 *
 * body is ChaCha20-Poly1305 ciphertext||tag of the payload (encrypted frames) or the
 * payload itself (cleartext frames). The room id is not in the frame: it is context
 * that the AEAD associated data and the signature input both start with, so a frame
 * never opens in another room.
 *
 * Receiving never throws on what the network sent: every failure is a value with a
 * reason that the caller counts and drops. Only the caller's own mistakes (a bad
 * room id, a room key of the wrong size) throw InvalidArgumentError.
 */
import crypto, { type KeyObject } from "node:crypto";
import { InvalidArgumentError } from "../errors.ts";
import { ed25519PublicKey } from "./ed25519.ts";
import {
  AEAD_ALGORITHM,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  checkEpoch,
  checkRoomKey,
  roomIdBytes,
  roomKeyObject,
} from "./room-key.ts";

export const FRAME_VERSION = 1;
export const FLAG_ENCRYPTED = 0x01;
export const FLAG_SIGNED = 0x02;
/** The bytes every frame starts with: version, flags, epoch, sender. */
export const FRAME_HEADER_BYTES = 1 + 1 + 4 + 32;
export const SIGNATURE_BYTES = 64;
/**
 * Starts the context (and so the AEAD associated data and the signature input).
 * The 0xff byte never occurs in UTF-8, so no text this identity signs elsewhere
 * (control-plane requests, NATS login nonces) can be mistaken for a frame.
 */
export const FRAME_LABEL = Buffer.concat([Buffer.from([0xff]), Buffer.from("unibus-frame-v1", "ascii")]);

const KNOWN_FLAGS = FLAG_ENCRYPTED | FLAG_SIGNED;
const HEX64 = /^[0-9a-fA-F]{64}$/;

/** Who sends: an Ed25519 public key and its signing function. `Identity` fits. */
export interface FrameSender {
  readonly signPub: string;
  sign(data: Uint8Array): Uint8Array;
}

export interface EncodeFrameOptions {
  roomId: string;
  /** The room's current epoch (uint32); the receiver picks the key by it. */
  epoch: number;
  sender: FrameSender;
  /** Bytes, or a string sent as UTF-8. */
  plaintext: Uint8Array | string;
  /** The 32-byte key of `epoch`. Absent: a cleartext frame. Treat as immutable once used (it is cached). */
  roomKey?: Uint8Array;
  /** Append an Ed25519 signature by `sender` (required by `signMsgs` rooms). */
  sign: boolean;
}

/** Frame bytes beyond the payload for the given kind of frame. */
export function frameOverhead(encrypted: boolean, signed: boolean): number {
  return FRAME_HEADER_BYTES + (encrypted ? AEAD_NONCE_BYTES + AEAD_TAG_BYTES : 0) + (signed ? SIGNATURE_BYTES : 0);
}

/** Builds a frame. Throws InvalidArgumentError for bad options; a fresh random nonce per encrypted frame. */
export function encodeFrame(opts: EncodeFrameOptions): Uint8Array {
  return encode(opts, undefined);
}

/**
 * `encodeFrame` with a chosen nonce. For golden vectors and tests only: a repeated
 * nonce under one room key breaks confidentiality and integrity.
 * @internal
 */
export function encodeFrameWithNonce(opts: EncodeFrameOptions, nonce: Uint8Array): Uint8Array {
  if (!(nonce instanceof Uint8Array) || nonce.length !== AEAD_NONCE_BYTES) {
    throw new InvalidArgumentError("nonce", `nonce must be ${AEAD_NONCE_BYTES} bytes`);
  }
  return encode(opts, nonce);
}

function encode(opts: EncodeFrameOptions, fixedNonce: Uint8Array | undefined): Uint8Array {
  const { roomId, epoch, sender, roomKey, sign } = opts ?? ({} as EncodeFrameOptions);
  checkEpoch(epoch);
  if (typeof sign !== "boolean") throw new InvalidArgumentError("sign", "sign must be true or false");
  if (roomKey !== undefined) checkRoomKey(roomKey);
  const senderRaw = senderBytes(sender);
  const payload = typeof opts.plaintext === "string" ? Buffer.from(opts.plaintext, "utf8") : opts.plaintext;
  if (!(payload instanceof Uint8Array)) {
    throw new InvalidArgumentError("plaintext", "plaintext must be a Uint8Array or a string");
  }
  const encrypted = roomKey !== undefined;
  const room = roomIdBytes(roomId);
  // Nothing covers a cleartext unsigned frame (no AEAD, no signature): no context to build.
  const ctxLen = encrypted || sign ? FRAME_LABEL.length + 1 + room.length : 0;
  const bodyStart = FRAME_HEADER_BYTES + (encrypted ? AEAD_NONCE_BYTES : 0);
  const bodyEnd = bodyStart + payload.length + (encrypted ? AEAD_TAG_BYTES : 0);
  const frameLen = bodyEnd + (sign ? SIGNATURE_BYTES : 0);
  // One buffer holds the context and then the frame, so the associated data and the
  // signature input are views, not copies; the caller gets the frame part.
  const buf = Buffer.allocUnsafe(ctxLen + frameLen);
  if (ctxLen > 0) writeContext(buf, room);
  const f = ctxLen;
  buf[f] = FRAME_VERSION;
  buf[f + 1] = (encrypted ? FLAG_ENCRYPTED : 0) | (sign ? FLAG_SIGNED : 0);
  buf.writeUInt32BE(epoch, f + 2);
  senderRaw.copy(buf, f + 6);
  if (encrypted) {
    if (fixedNonce) buf.set(fixedNonce, f + FRAME_HEADER_BYTES);
    else takeNonce(buf, f + FRAME_HEADER_BYTES);
    const nonce = buf.subarray(f + FRAME_HEADER_BYTES, f + bodyStart);
    const cipher = crypto.createCipheriv(AEAD_ALGORITHM, roomKeyObject(roomKey), nonce, {
      authTagLength: AEAD_TAG_BYTES,
    });
    cipher.setAAD(buf.subarray(0, f + bodyStart), { plaintextLength: payload.length });
    cipher.update(payload).copy(buf, f + bodyStart);
    cipher.final();
    cipher.getAuthTag().copy(buf, f + bodyEnd - AEAD_TAG_BYTES);
  } else {
    buf.set(payload, f + bodyStart);
  }
  if (sign) {
    const signature = sender.sign(buf.subarray(0, f + bodyEnd));
    if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_BYTES) {
      throw new InvalidArgumentError("sender", "sender.sign must return a 64-byte Ed25519 signature");
    }
    buf.set(signature, f + bodyEnd);
  }
  return buf.subarray(f);
}

// Random nonces come from a pool refilled in one call: a 12-byte randomBytes per
// frame costs more than the AEAD on a small payload. Each slot is used once.
const NONCE_POOL = Buffer.alloc(AEAD_NONCE_BYTES * 256);
let noncePos = NONCE_POOL.length;
function takeNonce(into: Buffer, at: number): void {
  if (noncePos === NONCE_POOL.length) {
    crypto.randomFillSync(NONCE_POOL);
    noncePos = 0;
  }
  NONCE_POOL.copy(into, at, noncePos, noncePos + AEAD_NONCE_BYTES);
  noncePos += AEAD_NONCE_BYTES;
}

const senderCache = new WeakMap<object, Buffer>();
function senderBytes(sender: FrameSender): Buffer {
  if (typeof sender !== "object" || sender === null || typeof sender.sign !== "function") {
    throw new InvalidArgumentError("sender", "sender must be an identity (signPub and sign)");
  }
  let raw = senderCache.get(sender);
  if (raw === undefined) {
    if (typeof sender.signPub !== "string" || !HEX64.test(sender.signPub)) {
      throw new InvalidArgumentError("sender", "sender.signPub must be an Ed25519 public key: 64 hex characters");
    }
    raw = Buffer.from(sender.signPub, "hex");
    senderCache.set(sender, raw);
  }
  return raw;
}

/** A frame's structure, read without any key. Views into the bytes given. */
export interface ParsedFrame {
  ok: true;
  version: number;
  encrypted: boolean;
  signed: boolean;
  epoch: number;
  /** Claimed sender: Ed25519 public key, lowercase hex. Proven only by a verified signature. */
  sender: string;
  /** The AEAD nonce; undefined for cleartext frames. */
  nonce: Uint8Array | undefined;
  /** Ciphertext with its 16-byte tag (encrypted), or the payload (cleartext). */
  body: Uint8Array;
  signature: Uint8Array | undefined;
  /** The whole frame. */
  bytes: Uint8Array;
}

export type FrameFailureReason =
  /** Not a frame: too short, unknown flags, wrong sizes. */
  | "malformed"
  /** A frame version this build does not read (a newer peer). */
  | "unsupported-version"
  /** A cleartext frame in an encrypted room, or an encrypted frame in a cleartext room. */
  | "wrong-mode"
  /** The room requires signatures and the frame has none. */
  | "unsigned"
  /** The signature does not verify for the claimed sender in this room (forged, altered, or another room's frame). */
  | "bad-signature"
  /** No key is known for the frame's epoch. */
  | "unknown-epoch"
  /** The AEAD check failed: another epoch's or room's key, or altered bytes. */
  | "undecryptable";

export interface FrameFailure {
  ok: false;
  reason: FrameFailureReason;
  /** For logs and counters; never contains key material or payload. */
  detail: string;
  /** Known once the header parsed. */
  epoch?: number;
  /** Claimed sender (unverified), known once the header parsed. */
  sender?: string;
}

export type ParseFrameResult = ParsedFrame | FrameFailure;

/** Reads a frame's structure. Never throws; garbage gives `{ ok: false, reason: "malformed" }`. */
export function parseFrame(bytes: Uint8Array): ParseFrameResult {
  if (!(bytes instanceof Uint8Array)) return fail("malformed", "not a byte array");
  if (bytes.length < 1) return fail("malformed", "empty frame");
  if (bytes[0] !== FRAME_VERSION) {
    return fail("unsupported-version", `frame version ${bytes[0]} (this build reads version ${FRAME_VERSION})`);
  }
  if (bytes.length < FRAME_HEADER_BYTES)
    return fail("malformed", `frame shorter than its ${FRAME_HEADER_BYTES}-byte header`);
  const flags = bytes[1]!;
  if ((flags & ~KNOWN_FLAGS) !== 0) return fail("malformed", `unknown frame flags 0x${flags.toString(16)}`);
  const encrypted = (flags & FLAG_ENCRYPTED) !== 0;
  const signed = (flags & FLAG_SIGNED) !== 0;
  const epoch = ((bytes[2]! << 24) | (bytes[3]! << 16) | (bytes[4]! << 8) | bytes[5]!) >>> 0;
  const sender = senderHex(bytes);
  const min = frameOverhead(encrypted, signed);
  if (bytes.length < min) {
    return {
      ok: false,
      reason: "malformed",
      detail: `frame of ${bytes.length} bytes is shorter than ${min}`,
      epoch,
      sender,
    };
  }
  const bodyStart = FRAME_HEADER_BYTES + (encrypted ? AEAD_NONCE_BYTES : 0);
  const bodyEnd = bytes.length - (signed ? SIGNATURE_BYTES : 0);
  return {
    ok: true,
    version: FRAME_VERSION,
    encrypted,
    signed,
    epoch,
    sender,
    nonce: encrypted ? bytes.subarray(FRAME_HEADER_BYTES, bodyStart) : undefined,
    body: bytes.subarray(bodyStart, bodyEnd),
    signature: signed ? bytes.subarray(bodyEnd) : undefined,
    bytes,
  };
}

/** The epoch of a frame, for routing to the right key before opening; undefined if it is not a v1 frame. */
export function frameEpoch(bytes: Uint8Array): number | undefined {
  if (!(bytes instanceof Uint8Array) || bytes.length < FRAME_HEADER_BYTES || bytes[0] !== FRAME_VERSION) {
    return undefined;
  }
  return ((bytes[2]! << 24) | (bytes[3]! << 16) | (bytes[4]! << 8) | bytes[5]!) >>> 0;
}

/**
 * The 38-byte header of a cleartext unsigned frame at `epoch` by `sender`: what
 * `writeClearFrame` puts before each payload. Throws InvalidArgumentError as
 * `encodeFrame` does for a bad epoch or sender.
 */
export function clearFrameHeader(epoch: number, sender: FrameSender): Buffer {
  checkEpoch(epoch);
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header[0] = FRAME_VERSION;
  header[1] = 0;
  header.writeUInt32BE(epoch, 2);
  senderBytes(sender).copy(header, 6);
  return header;
}

/** Bytes of the payload as a frame carries it: its length, or the length of a string's UTF-8. */
export function payloadBytes(payload: Uint8Array | string): number {
  return typeof payload === "string" ? Buffer.byteLength(payload, "utf8") : payload.length;
}

/**
 * Writes a cleartext unsigned frame — `header` (from `clearFrameHeader`) then the payload
 * of `size` bytes (`payloadBytes`) — at `at` in `buf`: the bytes `encodeFrame` returns for
 * it, without a buffer of its own. For a publisher that writes frames into a larger buffer.
 */
export function writeClearFrame(
  buf: Buffer,
  at: number,
  header: Buffer,
  payload: Uint8Array | string,
  size: number,
): void {
  buf.set(header, at);
  if (typeof payload === "string") buf.write(payload, at + FRAME_HEADER_BYTES, size, "utf8");
  else buf.set(payload, at + FRAME_HEADER_BYTES);
}

/**
 * `openFrame` for the common case of a cleartext room that does not require signatures,
 * without building the parsed frame: the opened message of a cleartext unsigned frame,
 * or undefined for every other frame (and in any other room), which the caller then
 * gives to `openFrame` for the full checks. Never throws.
 */
export function openClearFrame(bytes: Uint8Array, opts: OpenFrameOptions): OpenedFrame | undefined {
  if (opts.encrypted || opts.requireSignature) return undefined;
  if (bytes.length < FRAME_HEADER_BYTES || bytes[0] !== FRAME_VERSION || bytes[1] !== 0) return undefined;
  return {
    ok: true,
    plaintext: Buffer.from(bytes.subarray(FRAME_HEADER_BYTES)),
    sender: senderHex(bytes),
    epoch: ((bytes[2]! << 24) | (bytes[3]! << 16) | (bytes[4]! << 8) | bytes[5]!) >>> 0,
    encrypted: false,
    verified: false,
  };
}

// A room's frames come from few senders, mostly one after another: the hex of the last
// sender seen is reused while the next frame's 32 sender bytes are the same.
let lastSender = Buffer.alloc(32);
let lastSenderHex = lastSender.toString("hex");
function senderHex(frame: Uint8Array): string {
  for (let i = 0; i < 32; i++) {
    if (frame[6 + i] !== lastSender[i]) {
      lastSender = Buffer.from(frame.subarray(6, 38));
      lastSenderHex = lastSender.toString("hex");
      return lastSenderHex;
    }
  }
  return lastSenderHex;
}

export interface OpenFrameOptions {
  roomId: string;
  /**
   * Whether the room is encrypted. Stated, not inferred from `roomKey`, so a missing
   * key can never turn an encrypted room into one that accepts cleartext frames.
   */
  encrypted: boolean;
  /** The key of the frame's epoch, or a lookup by epoch (undefined: unknown epoch). Ignored for cleartext rooms. */
  roomKey?: Uint8Array | ((epoch: number) => Uint8Array | undefined);
  /** `signMsgs` rooms: refuse frames without a valid signature. */
  requireSignature: boolean;
}

export interface OpenedFrame {
  ok: true;
  plaintext: Uint8Array;
  /** Ed25519 public key, lowercase hex. Proven when `verified`; otherwise only a claim by a room-key holder. */
  sender: string;
  epoch: number;
  encrypted: boolean;
  /** The frame carried a signature by `sender` and it verified. */
  verified: boolean;
}

export type OpenFrameResult = OpenedFrame | FrameFailure;

/**
 * Checks and opens a frame (bytes, or what `parseFrame` returned). The signature,
 * when present, is checked before decrypting; a present but bad signature always
 * fails, whatever `requireSignature` says. Never throws for anything in the frame.
 */
export function openFrame(frame: Uint8Array | ParseFrameResult, opts: OpenFrameOptions): OpenFrameResult {
  const parsed = frame instanceof Uint8Array ? parseFrame(frame) : frame;
  if (parsed === null || typeof parsed !== "object" || !("ok" in parsed)) return fail("malformed", "not a frame");
  if (!parsed.ok) return parsed;
  const room = roomIdBytes(opts.roomId);
  const refusal = roomRuleRefusal(parsed, opts);
  if (refusal) return refusal;
  const { epoch, sender } = parsed;
  if (!parsed.signed && !parsed.encrypted) {
    // Nothing to verify or decrypt: the common case of a cleartext room, kept free of the layout's copy.
    return { ok: true, plaintext: Buffer.from(parsed.body), sender, epoch, encrypted: false, verified: false };
  }
  const layout = frameLayout(parsed, room);
  let verified = false;
  if (parsed.signed) {
    const key = senderKey(sender, parsed.bytes);
    if (key === undefined || !verifySignature(key, layout.input, parsed.signature!)) {
      return { ok: false, reason: "bad-signature", detail: "the signature does not verify", epoch, sender };
    }
    verified = true;
  }
  if (!parsed.encrypted) {
    return {
      ok: true,
      plaintext: Buffer.from(parsed.bytes.subarray(layout.bodyStart, layout.bodyEnd)),
      sender,
      epoch,
      encrypted: false,
      verified,
    };
  }
  return decryptFrame(parsed, opts, layout, verified);
}

/** The room's rules a frame breaks before any crypto: its mode, or a missing signature. */
function roomRuleRefusal(parsed: ParsedFrame, opts: OpenFrameOptions): FrameFailure | undefined {
  const { epoch, sender } = parsed;
  if (parsed.encrypted !== opts.encrypted) {
    return {
      ok: false,
      reason: "wrong-mode",
      detail: parsed.encrypted ? "encrypted frame in a cleartext room" : "cleartext frame in an encrypted room",
      epoch,
      sender,
    };
  }
  if (opts.requireSignature && !parsed.signed) {
    return { ok: false, reason: "unsigned", detail: "the room requires signed frames", epoch, sender };
  }
  return undefined;
}

/** Where the body lies in the frame, and the bytes the signature and the AEAD cover. */
interface FrameLayout {
  bodyStart: number;
  bodyEnd: number;
  /** Length of the context (label and room) at the start of `input`. */
  ctxLen: number;
  /** Context then frame: up to the signature for a signed frame, up to the body otherwise. */
  input: Buffer;
}

/** The label and the room id (length-prefixed) at the start of `buf`: the context of docs/formats.md. */
function writeContext(buf: Buffer, room: Buffer): void {
  FRAME_LABEL.copy(buf, 0);
  buf[FRAME_LABEL.length] = room.length;
  room.copy(buf, FRAME_LABEL.length + 1);
}

function frameLayout(parsed: ParsedFrame, room: Buffer): FrameLayout {
  const bytes = parsed.bytes;
  const bodyEnd = bytes.length - (parsed.signed ? SIGNATURE_BYTES : 0);
  const bodyStart = bodyEnd - parsed.body.length;
  // Context then frame, in one buffer: the signature input (up to the signature) and
  // the associated data (up to the body), so only a signed frame's body is copied.
  const ctxLen = FRAME_LABEL.length + 1 + room.length;
  const covered = parsed.signed ? bodyEnd : bodyStart;
  const input = Buffer.allocUnsafe(ctxLen + covered);
  writeContext(input, room);
  input.set(bytes.subarray(0, covered), ctxLen);
  return { bodyStart, bodyEnd, ctxLen, input };
}

function decryptFrame(
  parsed: ParsedFrame,
  opts: OpenFrameOptions,
  layout: FrameLayout,
  verified: boolean,
): OpenFrameResult {
  const { epoch, sender, bytes } = parsed;
  const { bodyStart, bodyEnd, ctxLen, input } = layout;
  const key = typeof opts.roomKey === "function" ? opts.roomKey(epoch) : opts.roomKey;
  if (key === undefined) {
    return { ok: false, reason: "unknown-epoch", detail: `no room key for epoch ${epoch}`, epoch, sender };
  }
  checkRoomKey(key);
  const tagStart = bodyEnd - AEAD_TAG_BYTES;
  const plaintext = decryptBody(
    key,
    parsed.nonce!,
    input.subarray(0, ctxLen + bodyStart),
    bytes.subarray(bodyStart, tagStart),
    bytes.subarray(tagStart, bodyEnd),
  );
  if (plaintext === undefined) {
    return {
      ok: false,
      reason: "undecryptable",
      detail: `the frame does not decrypt with the key of epoch ${epoch} in this room`,
      epoch,
      sender,
    };
  }
  return { ok: true, plaintext, sender, epoch, encrypted: true, verified };
}

/** The plaintext, or undefined when the body does not decrypt (wrong key, tampered bytes). */
function decryptBody(
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  ciphertext: Uint8Array,
  tag: Uint8Array,
): Buffer | undefined {
  try {
    const decipher = crypto.createDecipheriv(AEAD_ALGORITHM, roomKeyObject(key), nonce, {
      authTagLength: AEAD_TAG_BYTES,
    });
    decipher.setAAD(aad, { plaintextLength: ciphertext.length });
    decipher.setAuthTag(tag);
    const plaintext = decipher.update(ciphertext);
    try {
      decipher.final();
    } catch {
      // The tag did not verify: wipe what was decrypted rather than leave it in memory.
      plaintext.fill(0);
      return undefined;
    }
    return plaintext;
  } catch {
    return undefined;
  }
}

function fail(reason: FrameFailureReason, detail: string): FrameFailure {
  return { ok: false, reason, detail };
}

function verifySignature(key: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    return crypto.verify(null, data, key, signature);
  } catch {
    return false;
  }
}

// Building an Ed25519 KeyObject costs about as much as a verification, and a room
// has few senders: keep recent ones. Bounded so a flood of made-up senders cannot
// grow memory; oldest out first.
const SENDER_KEYS_MAX = 1024;
const senderKeys = new Map<string, KeyObject>();
function senderKey(hex: string, frame: Uint8Array): KeyObject | undefined {
  let key = senderKeys.get(hex);
  if (key !== undefined) return key;
  try {
    key = ed25519PublicKey(frame.subarray(6, 38));
  } catch {
    return undefined;
  }
  if (senderKeys.size >= SENDER_KEYS_MAX) senderKeys.delete(senderKeys.keys().next().value!);
  senderKeys.set(hex, key);
  return key;
}
