/**
 * Sealed room keys in a browser (docs/formats.md): a room key encrypted to one member's
 * X25519 key for one room and epoch. Same bytes as lib/crypto/seal.ts (seal.json).
 */
import { CryptoError } from "../errors.ts";
import { concat, fromBase64url, fromHex, toBase64url, u32be, utf8 } from "./bytes.ts";
import { checkEpoch, checkRoomKey, roomIdBytes } from "./frame.ts";
import type { BrowserIdentity } from "./identity.ts";
import type { CryptoKey } from "./primitives.ts";
import {
  aeadOpen,
  aeadSeal,
  hkdf32,
  rawPublicKey,
  x25519,
  x25519Ephemeral,
  x25519PrivateKey,
  x25519PublicKey,
} from "./primitives.ts";

const SEAL_VERSION = 1;
const SEALED_BYTES = 1 + 32 + 32 + 16;
const SEALED_LENGTH = Math.ceil((SEALED_BYTES * 4) / 3);
const ZERO_NONCE = new Uint8Array(12);
const HEX64 = /^[0-9a-fA-F]{64}$/;

export interface SealRoomKeyOptions {
  roomKey: Uint8Array;
  recipientKexPub: string;
  roomId: string;
  epoch: number;
}

function binding(roomId: string, epoch: number): Uint8Array {
  const room = roomIdBytes(roomId);
  return concat(utf8("unibus-seal-v1"), Uint8Array.of(room.length), room, u32be(epoch));
}

/** An ephemeral X25519 pair: fresh, or (golden vectors only) from a given secret. */
async function ephemeralPair(secret?: Uint8Array): Promise<{ privateKey: CryptoKey; raw: Uint8Array }> {
  if (!secret) {
    const pair = await x25519Ephemeral();
    return { privateKey: pair.privateKey, raw: await rawPublicKey(pair.publicKey) };
  }
  const privateKey = await x25519PrivateKey(secret, true);
  const jwk = await globalThis.crypto.subtle.exportKey("jwk", privateKey);
  return { privateKey, raw: fromBase64url(jwk.x!)! };
}

/** Seals `roomKey` to `recipientKexPub` for (`roomId`, `epoch`). CryptoError("invalid-key") for a bad recipient. */
export async function sealRoomKey(opts: SealRoomKeyOptions, ephemeralSecret?: Uint8Array): Promise<string> {
  const { roomKey, recipientKexPub, roomId, epoch } = opts;
  checkRoomKey(roomKey);
  checkEpoch(epoch);
  const bound = binding(roomId, epoch);
  if (typeof recipientKexPub !== "string" || !HEX64.test(recipientKexPub)) {
    throw new CryptoError("invalid-key", "recipientKexPub must be an X25519 public key: 64 hex characters");
  }
  const recipientRaw = fromHex(recipientKexPub.toLowerCase());
  const recipient = await x25519PublicKey(recipientRaw);
  const eph = await ephemeralPair(ephemeralSecret);
  const shared = await x25519(eph.privateKey, recipient);
  if (!shared) throw new CryptoError("invalid-key", "recipientKexPub is a low-order X25519 point");
  const key = await hkdf32(shared, concat(eph.raw, recipientRaw), bound);
  return toBase64url(concat(Uint8Array.of(SEAL_VERSION), eph.raw, aeadSeal(key, ZERO_NONCE, roomKey, bound)));
}

/** Opens a sealed room key with the identity's key-exchange key; CryptoError on any failure. */
export async function openRoomKey(opts: {
  sealed: string;
  identity: BrowserIdentity;
  roomId: string;
  epoch: number;
}): Promise<Uint8Array> {
  const { sealed, identity, roomId, epoch } = opts;
  checkEpoch(epoch);
  const bound = binding(roomId, epoch);
  const bytes = typeof sealed === "string" && sealed.length === SEALED_LENGTH ? fromBase64url(sealed) : undefined;
  if (!bytes || bytes.length !== SEALED_BYTES) {
    throw new CryptoError("malformed", `not a sealed room key: expected ${SEALED_LENGTH} base64url characters`);
  }
  if (bytes[0] !== SEAL_VERSION) {
    throw new CryptoError("unsupported-version", `sealed room key version ${bytes[0]} is not supported`);
  }
  const ephemeralRaw = bytes.subarray(1, 33);
  const shared = await identity.agree(await x25519PublicKey(ephemeralRaw));
  if (!shared) throw new CryptoError("invalid-key", "the sealed room key carries a low-order ephemeral key");
  const key = await hkdf32(shared, concat(ephemeralRaw, fromHex(identity.kexPub)), bound);
  const roomKey = aeadOpen(key, ZERO_NONCE, bytes.subarray(33), bound);
  if (!roomKey) {
    throw new CryptoError(
      "undecryptable",
      `the sealed room key does not open for this identity, room and epoch ${epoch}`,
    );
  }
  return roomKey;
}

/** A fresh random room key. */
export function newRoomKey(): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(32));
}
