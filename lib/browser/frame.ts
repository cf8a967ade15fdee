/**
 * Room message frames in a browser: the byte layout of docs/formats.md, as
 * lib/crypto/frame.ts writes and reads it on node:crypto, here on WebCrypto (Ed25519)
 * and @noble/ciphers (ChaCha20-Poly1305) — asynchronous, because WebCrypto is, and
 * because a non-extractable key can only sign through it. The golden vectors
 * (fixtures/vectors/frames.json) hold both to the same bytes and the same verdicts.
 */
import type { FrameFailure, FrameFailureReason, OpenedFrame, OpenFrameResult } from "../crypto/frame.ts";
import { InvalidArgumentError } from "../errors.ts";
import { concat, fromHex, randomBytes, readU32be, toHex, u32be, utf8 } from "./bytes.ts";
import type { CryptoKey } from "./primitives.ts";
import { AEAD_NONCE_BYTES, AEAD_TAG_BYTES, aeadOpen, aeadSeal, ed25519PublicKey, verify } from "./primitives.ts";

export type { FrameFailure, FrameFailureReason, OpenedFrame, OpenFrameResult };

const VERSION = 1;
const FLAG_ENCRYPTED = 0x01;
const FLAG_SIGNED = 0x02;
const HEADER_BYTES = 38;
const SIGNATURE_BYTES = 64;
const LABEL = concat(Uint8Array.of(0xff), utf8("unibus-frame-v1"));
const HEX64 = /^[0-9a-fA-F]{64}$/;

/** Who sends: a public key and an (asynchronous) signing function. `BrowserIdentity` fits. */
export interface AsyncFrameSender {
  readonly signPub: string;
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export interface EncodeFrameOptions {
  roomId: string;
  epoch: number;
  sender: AsyncFrameSender;
  plaintext: Uint8Array | string;
  /** The 32-byte key of `epoch`; absent: a cleartext frame. */
  roomKey?: Uint8Array;
  sign: boolean;
  /** Golden vectors only: a repeated nonce under one key breaks the AEAD. */
  nonce?: Uint8Array;
}

/** The room id's length byte and UTF-8 bytes, checked (1-255 bytes). */
export function roomIdBytes(roomId: unknown): Uint8Array {
  if (typeof roomId !== "string" || roomId.length === 0) {
    throw new InvalidArgumentError("roomId", "roomId must be a non-empty string");
  }
  const bytes = utf8(roomId);
  if (bytes.length > 255) throw new InvalidArgumentError("roomId", "roomId must be at most 255 bytes of UTF-8");
  return bytes;
}

function context(roomId: string): Uint8Array {
  const room = roomIdBytes(roomId);
  return concat(LABEL, Uint8Array.of(room.length), room);
}

export function checkEpoch(epoch: unknown): asserts epoch is number {
  if (typeof epoch !== "number" || !Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) {
    throw new InvalidArgumentError("epoch", "epoch must be an integer from 0 to 4294967295 (a uint32)");
  }
}

export function checkRoomKey(key: unknown): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== 32) {
    throw new InvalidArgumentError("roomKey", "roomKey must be a 32-byte Uint8Array");
  }
}

/** Builds a frame; InvalidArgumentError for bad options. */
export async function encodeFrame(opts: EncodeFrameOptions): Promise<Uint8Array> {
  const { roomId, epoch, sender, roomKey, sign } = opts;
  checkEpoch(epoch);
  if (typeof sign !== "boolean") throw new InvalidArgumentError("sign", "sign must be true or false");
  if (roomKey !== undefined) checkRoomKey(roomKey);
  if (typeof sender?.sign !== "function" || !HEX64.test(String(sender.signPub))) {
    throw new InvalidArgumentError("sender", "sender must be an identity (signPub and sign)");
  }
  const payload = typeof opts.plaintext === "string" ? utf8(opts.plaintext) : opts.plaintext;
  if (!(payload instanceof Uint8Array))
    throw new InvalidArgumentError("plaintext", "plaintext must be bytes or a string");
  const encrypted = roomKey !== undefined;
  const ctx = context(roomId);
  const flags = (encrypted ? FLAG_ENCRYPTED : 0) | (sign ? FLAG_SIGNED : 0);
  const header = concat(Uint8Array.of(VERSION, flags), u32be(epoch), fromHex(sender.signPub));
  const nonce = encrypted ? (opts.nonce ?? randomBytes(AEAD_NONCE_BYTES)) : new Uint8Array(0);
  const body = encrypted ? aeadSeal(roomKey, nonce, payload, concat(ctx, header, nonce)) : payload;
  const frame = concat(header, nonce, body);
  if (!sign) return frame;
  const signature = await sender.sign(concat(ctx, frame));
  return concat(frame, signature);
}

/** A frame's structure, read without any key. */
export interface ParsedFrame {
  ok: true;
  encrypted: boolean;
  signed: boolean;
  epoch: number;
  sender: string;
  bytes: Uint8Array;
}

function fail(reason: FrameFailureReason, detail: string, epoch?: number, sender?: string): FrameFailure {
  return { ok: false, reason, detail, ...(epoch !== undefined ? { epoch, sender } : {}) } as FrameFailure;
}

/** Never throws; garbage is `malformed`. */
export function parseFrame(bytes: Uint8Array): ParsedFrame | FrameFailure {
  if (!(bytes instanceof Uint8Array) || bytes.length < 1) return fail("malformed", "empty frame");
  if (bytes[0] !== VERSION) return fail("unsupported-version", `frame version ${bytes[0]}`);
  if (bytes.length < HEADER_BYTES) return fail("malformed", `frame shorter than its ${HEADER_BYTES}-byte header`);
  const flags = bytes[1]!;
  if ((flags & ~(FLAG_ENCRYPTED | FLAG_SIGNED)) !== 0) return fail("malformed", "unknown frame flags");
  const encrypted = (flags & FLAG_ENCRYPTED) !== 0;
  const signed = (flags & FLAG_SIGNED) !== 0;
  const epoch = readU32be(bytes, 2);
  const sender = toHex(bytes.subarray(6, 38));
  const min = HEADER_BYTES + (encrypted ? AEAD_NONCE_BYTES + AEAD_TAG_BYTES : 0) + (signed ? SIGNATURE_BYTES : 0);
  if (bytes.length < min)
    return fail("malformed", `frame of ${bytes.length} bytes is shorter than ${min}`, epoch, sender);
  return { ok: true, encrypted, signed, epoch, sender, bytes };
}

export interface OpenFrameOptions {
  roomId: string;
  encrypted: boolean;
  /** The key of the frame's epoch, or a lookup by epoch (undefined: unknown epoch). */
  roomKey?: Uint8Array | ((epoch: number) => Uint8Array | undefined | Promise<Uint8Array | undefined>);
  requireSignature: boolean;
}

/**
 * Checks and opens a frame in the order of docs/protocol.md §7.1 (mode, required
 * signature, signature, key, AEAD). Never throws for anything in the frame.
 */
export async function openFrame(frame: Uint8Array | ParsedFrame, opts: OpenFrameOptions): Promise<OpenFrameResult> {
  const parsed = frame instanceof Uint8Array ? parseFrame(frame) : frame;
  if (!parsed.ok) return parsed;
  const { epoch, sender, bytes } = parsed;
  if (parsed.encrypted !== opts.encrypted)
    return fail("wrong-mode", "the frame's mode is not the room's", epoch, sender);
  if (opts.requireSignature && !parsed.signed)
    return fail("unsigned", "the room requires signed frames", epoch, sender);
  const ctx = context(opts.roomId);
  const end = bytes.length - (parsed.signed ? SIGNATURE_BYTES : 0);
  const verified = parsed.signed && (await signatureHolds(ctx, bytes, end, sender));
  if (parsed.signed && !verified) return fail("bad-signature", "the signature does not verify", epoch, sender);
  const bodyStart = HEADER_BYTES + (parsed.encrypted ? AEAD_NONCE_BYTES : 0);
  if (!parsed.encrypted) return opened(bytes.slice(bodyStart, end), parsed, verified);
  const key = typeof opts.roomKey === "function" ? await opts.roomKey(epoch) : opts.roomKey;
  if (key === undefined) return fail("unknown-epoch", `no room key for epoch ${epoch}`, epoch, sender);
  checkRoomKey(key);
  const nonce = bytes.subarray(HEADER_BYTES, bodyStart);
  const plaintext = aeadOpen(key, nonce, bytes.subarray(bodyStart, end), concat(ctx, bytes.subarray(0, bodyStart)));
  if (!plaintext)
    return fail("undecryptable", `the frame does not decrypt with the key of epoch ${epoch}`, epoch, sender);
  return opened(plaintext, parsed, verified);
}

function opened(plaintext: Uint8Array, parsed: ParsedFrame, verified: boolean): OpenedFrame {
  return { ok: true, plaintext, sender: parsed.sender, epoch: parsed.epoch, encrypted: parsed.encrypted, verified };
}

// Importing a public key costs about as much as a verification; a room has few senders.
const SENDER_KEYS_MAX = 1024;
const senderKeys = new Map<string, Promise<CryptoKey | undefined>>();

async function signatureHolds(ctx: Uint8Array, bytes: Uint8Array, end: number, sender: string): Promise<boolean> {
  let key = senderKeys.get(sender);
  if (!key) {
    key = ed25519PublicKey(bytes.subarray(6, 38)).catch(() => undefined);
    if (senderKeys.size >= SENDER_KEYS_MAX) senderKeys.delete(senderKeys.keys().next().value!);
    senderKeys.set(sender, key);
  }
  const k = await key;
  return k !== undefined && verify(k, concat(ctx, bytes.subarray(0, end)), bytes.subarray(end));
}
