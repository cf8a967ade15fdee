/**
 * Sealed room keys: a room key encrypted to one member's X25519 key, bound to one
 * room and one epoch, so the control plane can hold it without being able to read
 * it and cannot hand it out for another room, epoch or member. Byte layout, KDF
 * strings and associated data: docs/formats.md.
 *
 *     sealed = 0x01 || ephemeralPub(32) || ChaCha20-Poly1305(roomKey)(32) || tag(16)
 *
 * encoded as base64url without padding (108 characters).
 */
import crypto, { type KeyObject } from "node:crypto";
import { rawPublicKey, x25519PrivateKey, x25519PublicKey } from "./ed25519.ts";
import {
  AEAD_ALGORITHM,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  CryptoError,
  checkEpoch,
  checkRoomKey,
  ROOM_KEY_BYTES,
  roomIdBytes,
} from "./room-key.ts";

export const SEAL_VERSION = 1;
/** ASCII label that starts the HKDF info and the associated data. */
export const SEAL_LABEL = "unibus-seal-v1";
export const SEALED_BYTES = 1 + 32 + ROOM_KEY_BYTES + AEAD_TAG_BYTES;
export const SEALED_LENGTH = Math.ceil((SEALED_BYTES * 4) / 3);

// Each seal uses a fresh ephemeral key, so every derived AEAD key encrypts exactly
// one message and a constant nonce is safe.
const SEAL_NONCE = Buffer.alloc(AEAD_NONCE_BYTES);
const HEX64 = /^[0-9a-fA-F]{64}$/;
const B64URL = /^[A-Za-z0-9_-]+$/;

export interface SealRoomKeyOptions {
  /** The 32-byte room key of `epoch`. */
  roomKey: Uint8Array;
  /** The recipient's X25519 public key, 64 hex characters (`Identity.kexPub`). */
  recipientKexPub: string;
  roomId: string;
  epoch: number;
}

/** What opening needs of an identity: its X25519 key pair. `Identity` fits. */
export interface KexKeyHolder {
  readonly kexPub: string;
  kexPrivateKey(): KeyObject;
}

export interface OpenRoomKeyOptions {
  sealed: string;
  identity: KexKeyHolder;
  roomId: string;
  epoch: number;
}

/**
 * Seals `roomKey` to the holder of `recipientKexPub` for (`roomId`, `epoch`).
 * Throws CryptoError("invalid-key") for a recipient key that is not a usable X25519
 * public key (wrong shape, or a low-order point that would make the shared secret
 * zero), InvalidArgumentError for a bad room key, room id or epoch.
 */
export function sealRoomKey(opts: SealRoomKeyOptions): string {
  return sealRoomKeyWithEphemeral(opts, crypto.randomBytes(32));
}

/**
 * `sealRoomKey` with a chosen ephemeral X25519 secret. For golden vectors and
 * tests only: reusing an ephemeral secret across seals gives away room keys.
 * @internal
 */
export function sealRoomKeyWithEphemeral(opts: SealRoomKeyOptions, ephemeralSecret: Uint8Array): string {
  const { roomKey, recipientKexPub, roomId, epoch } = opts ?? ({} as SealRoomKeyOptions);
  checkRoomKey(roomKey);
  checkEpoch(epoch);
  const room = roomIdBytes(roomId);
  if (typeof recipientKexPub !== "string" || !HEX64.test(recipientKexPub)) {
    throw new CryptoError("invalid-key", "recipientKexPub must be an X25519 public key: 64 hex characters");
  }
  const recipientRaw = Buffer.from(recipientKexPub, "hex");
  let recipient: KeyObject;
  try {
    recipient = x25519PublicKey(recipientRaw);
  } catch (err) {
    throw new CryptoError("invalid-key", "recipientKexPub is not a valid X25519 public key", { cause: err });
  }
  const ephemeral = x25519PrivateKey(ephemeralSecret);
  const ephemeralRaw = rawPublicKey(ephemeral);
  const shared = sharedSecret(ephemeral, recipient);
  if (shared === undefined) {
    throw new CryptoError(
      "invalid-key",
      "recipientKexPub is a low-order X25519 point (it would make the shared secret zero); the member must register a real key-exchange key",
    );
  }
  const binding = sealBinding(room, epoch);
  const key = sealKey(shared, ephemeralRaw, recipientRaw, binding);
  const cipher = crypto.createCipheriv(AEAD_ALGORITHM, key, SEAL_NONCE, { authTagLength: AEAD_TAG_BYTES });
  cipher.setAAD(binding, { plaintextLength: ROOM_KEY_BYTES });
  const out = Buffer.allocUnsafe(SEALED_BYTES);
  out[0] = SEAL_VERSION;
  ephemeralRaw.copy(out, 1);
  cipher.update(roomKey).copy(out, 33);
  cipher.final();
  cipher.getAuthTag().copy(out, 33 + ROOM_KEY_BYTES);
  return out.toString("base64url");
}

/**
 * Opens a sealed room key with `identity`'s X25519 key. Throws CryptoError:
 * "malformed" (not a sealed key), "unsupported-version", "invalid-key" (a hostile
 * ephemeral key) or "undecryptable" (sealed to someone else, for another room or
 * epoch, or altered). InvalidArgumentError for a bad room id or epoch.
 */
export function openRoomKey(opts: OpenRoomKeyOptions): Uint8Array {
  const { sealed, identity, roomId, epoch } = opts ?? ({} as OpenRoomKeyOptions);
  checkEpoch(epoch);
  const room = roomIdBytes(roomId);
  if (typeof sealed !== "string" || sealed.length !== SEALED_LENGTH || !B64URL.test(sealed)) {
    throw new CryptoError(
      "malformed",
      `not a sealed room key: expected ${SEALED_LENGTH} base64url characters (${SEALED_BYTES} bytes)`,
    );
  }
  const bytes = Buffer.from(sealed, "base64url");
  if (bytes[0] !== SEAL_VERSION) {
    throw new CryptoError(
      "unsupported-version",
      `sealed room key version ${bytes[0]} is not supported (this build reads version ${SEAL_VERSION}); upgrade unibus`,
    );
  }
  const ephemeralRaw = bytes.subarray(1, 33);
  let ephemeral: KeyObject;
  try {
    ephemeral = x25519PublicKey(ephemeralRaw);
  } catch (err) {
    throw new CryptoError("invalid-key", "the sealed room key carries an invalid ephemeral key", { cause: err });
  }
  const shared = sharedSecret(identity.kexPrivateKey(), ephemeral);
  if (shared === undefined) {
    throw new CryptoError("invalid-key", "the sealed room key carries a low-order ephemeral key; it was forged");
  }
  const binding = sealBinding(room, epoch);
  const key = sealKey(shared, ephemeralRaw, Buffer.from(identity.kexPub, "hex"), binding);
  const decipher = crypto.createDecipheriv(AEAD_ALGORITHM, key, SEAL_NONCE, { authTagLength: AEAD_TAG_BYTES });
  decipher.setAAD(binding, { plaintextLength: ROOM_KEY_BYTES });
  decipher.setAuthTag(bytes.subarray(33 + ROOM_KEY_BYTES));
  const roomKey = decipher.update(bytes.subarray(33, 33 + ROOM_KEY_BYTES));
  try {
    decipher.final();
  } catch {
    roomKey.fill(0);
    throw new CryptoError(
      "undecryptable",
      `the sealed room key does not open for this identity, room and epoch ${epoch}: it was sealed for another member, room or epoch, or it was altered`,
    );
  }
  return roomKey;
}

/** X25519; undefined when the peer key is low-order (OpenSSL refuses an all-zero result). */
function sharedSecret(privateKey: KeyObject, publicKey: KeyObject): Buffer | undefined {
  let shared: Buffer;
  try {
    shared = crypto.diffieHellman({ privateKey, publicKey });
  } catch {
    return undefined;
  }
  let acc = 0;
  for (const b of shared) acc |= b;
  return acc === 0 ? undefined : shared;
}

/** SEAL_LABEL || u8 len(roomId) || roomId || u32be epoch: the HKDF info and the AEAD associated data. */
export function sealBinding(room: Buffer, epoch: number): Buffer {
  const label = SEAL_LABEL.length;
  const out = Buffer.allocUnsafe(label + 1 + room.length + 4);
  out.write(SEAL_LABEL, 0, "ascii");
  out[label] = room.length;
  room.copy(out, label + 1);
  out.writeUInt32BE(epoch, label + 1 + room.length);
  return out;
}

/** HKDF-SHA256(ikm = shared secret, salt = ephemeralPub || recipientPub, info = binding), 32 bytes. */
function sealKey(shared: Buffer, ephemeralPub: Uint8Array, recipientPub: Uint8Array, binding: Buffer): Buffer {
  const salt = Buffer.concat([ephemeralPub, recipientPub]);
  return Buffer.from(crypto.hkdfSync("sha256", shared, salt, binding, 32));
}
