/**
 * Ed25519 and X25519 on node:crypto, with raw 32-byte keys at the edges. KeyObjects
 * are what node:crypto signs with; building one costs more than a signature, so
 * callers keep them (see `SigningKey`).
 */
import crypto, { type KeyObject } from "node:crypto";
import { CryptoError } from "./room-key.ts";

const ED25519_PKCS8 = Buffer.from("302e020100300506032b657004220420", "hex");
const ED25519_SPKI = Buffer.from("302a300506032b6570032100", "hex");
const X25519_PKCS8 = Buffer.from("302e020100300506032b656e04220420", "hex");
const X25519_SPKI = Buffer.from("302a300506032b656e032100", "hex");

export function ed25519PrivateKey(seed: Uint8Array): KeyObject {
  return crypto.createPrivateKey({ key: Buffer.concat([ED25519_PKCS8, seed]), format: "der", type: "pkcs8" });
}

/** Throws on bytes that are not a valid Ed25519 public key. */
export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new CryptoError("invalid-key", "an Ed25519 public key is 32 bytes");
  return crypto.createPublicKey({ key: Buffer.concat([ED25519_SPKI, raw]), format: "der", type: "spki" });
}

// Parsing costs about a sixth of a verification (seen: 34 µs vs 227 µs on a loaded
// 2-core machine) and every signed request and every connect parses one or two keys.
// Parsing is pure — a cached KeyObject says nothing about whether its holder is still
// allowed anything; callers check that on every request — so keep recent ones.
const KEY_CACHE_MAX = 1024;
const keyCache = new Map<string, KeyObject>();

/**
 * `ed25519PublicKey`, remembered for the last ~1,024 keys; undefined (never a throw)
 * for bytes that are not an Ed25519 public key.
 */
export function ed25519PublicKeyCached(raw: Uint8Array): KeyObject | undefined {
  const id = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("hex");
  const hit = keyCache.get(id);
  if (hit) return hit;
  let key: KeyObject;
  try {
    key = ed25519PublicKey(raw);
  } catch {
    return undefined;
  }
  // Dropping everything keeps eviction O(1); the cost is one rebuild per active key.
  if (keyCache.size >= KEY_CACHE_MAX) keyCache.clear();
  keyCache.set(id, key);
  return key;
}

export function x25519PrivateKey(secret: Uint8Array): KeyObject {
  return crypto.createPrivateKey({ key: Buffer.concat([X25519_PKCS8, secret]), format: "der", type: "pkcs8" });
}

export function x25519PublicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new CryptoError("invalid-key", "an X25519 public key is 32 bytes");
  return crypto.createPublicKey({ key: Buffer.concat([X25519_SPKI, raw]), format: "der", type: "spki" });
}

/** The raw 32 bytes of an Ed25519/X25519 public (or private → its public) key. */
export function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === "private" ? crypto.createPublicKey(key) : key;
  return pub.export({ format: "der", type: "spki" }).subarray(-32);
}

/** The raw 32-byte seed of an Ed25519/X25519 private key. */
export function rawPrivateKey(key: KeyObject): Buffer {
  return key.export({ format: "der", type: "pkcs8" }).subarray(-32);
}

export function sign(key: KeyObject, data: Uint8Array): Buffer {
  return crypto.sign(null, data, key);
}

export function verify(key: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  try {
    return crypto.verify(null, data, key, signature);
  } catch {
    return false;
  }
}

/** True when `raw` parses as an Ed25519 public key. */
export function isEd25519PublicKey(raw: Uint8Array): boolean {
  try {
    ed25519PublicKey(raw);
    return true;
  } catch {
    return false;
  }
}
