/**
 * Room keys and what frames and sealed keys share: the AEAD (ChaCha20-Poly1305,
 * see docs/formats.md for why), the error type, and the room-id encoding used in
 * every binding.
 */
import crypto, { type KeyObject } from "node:crypto";
import { InvalidArgumentError } from "../errors.ts";

export const ROOM_KEY_BYTES = 32;
export const AEAD_ALGORITHM = "chacha20-poly1305";
export const AEAD_NONCE_BYTES = 12;
export const AEAD_TAG_BYTES = 16;
/** Room ids are encoded as one length byte and their UTF-8 bytes. */
export const ROOM_ID_MAX_BYTES = 255;

export { CryptoError, type CryptoErrorReason } from "../errors.ts";

/** A fresh random 32-byte room key. A secret: never log it. */
export function newRoomKey(): Uint8Array {
  return crypto.randomBytes(ROOM_KEY_BYTES);
}

export function checkRoomKey(key: unknown, field = "roomKey"): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== ROOM_KEY_BYTES) {
    throw new InvalidArgumentError(field, `${field} must be a ${ROOM_KEY_BYTES}-byte Uint8Array`);
  }
}

// node:crypto turns a Buffer key into a fresh native key handle on every
// createCipheriv call, which costs more than sealing a small message; a secret
// KeyObject made once per room key avoids that. Keyed by the array's identity, so
// room keys must be treated as immutable once used.
const keyObjects = new WeakMap<Uint8Array, KeyObject>();

/** The cached secret KeyObject of a (checked) room key. */
export function roomKeyObject(key: Uint8Array): KeyObject {
  let ko = keyObjects.get(key);
  if (ko === undefined) {
    ko = crypto.createSecretKey(key);
    keyObjects.set(key, ko);
  }
  return ko;
}

// Every frame of a room encodes the same id: the last one's bytes are kept (read-only
// by every caller) rather than encoded again per frame.
let lastRoomId = "";
let lastRoomBytes: Buffer = Buffer.alloc(0);

/** UTF-8 bytes of a room id, 1–255 of them; InvalidArgumentError otherwise. Never write into the result. */
export function roomIdBytes(roomId: unknown): Buffer {
  if (roomId === lastRoomId) return lastRoomBytes;
  if (typeof roomId !== "string" || roomId.length === 0) {
    throw new InvalidArgumentError("roomId", "roomId must be a non-empty string");
  }
  const bytes = Buffer.from(roomId, "utf8");
  if (bytes.length > ROOM_ID_MAX_BYTES) {
    throw new InvalidArgumentError("roomId", `roomId must be at most ${ROOM_ID_MAX_BYTES} bytes of UTF-8`);
  }
  lastRoomId = roomId;
  lastRoomBytes = bytes;
  return bytes;
}

export function checkEpoch(epoch: unknown, field = "epoch"): asserts epoch is number {
  if (typeof epoch !== "number" || !Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) {
    throw new InvalidArgumentError(field, `${field} must be an integer from 0 to 4294967295 (a uint32)`);
  }
}
