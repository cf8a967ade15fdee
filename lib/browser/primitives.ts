/**
 * The primitives of the wire formats, in a browser: WebCrypto where it has them
 * (Ed25519, X25519, HKDF-SHA256, SHA-256) and @noble/ciphers for ChaCha20-Poly1305,
 * which WebCrypto lacks. Same algorithms and parameters as lib/crypto on node:crypto;
 * the golden vectors hold both to the same bytes.
 */
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { CryptoError } from "../errors.ts";
import { concat, own, toHex } from "./bytes.ts";

// The project type-checks against Node's types (no DOM library): name WebCrypto's types
// through them. Type-only, so nothing of node:crypto reaches the bundle.
export type CryptoKey = import("node:crypto").webcrypto.CryptoKey;
export type CryptoKeyPair = import("node:crypto").webcrypto.CryptoKeyPair;

const subtle = () => globalThis.crypto.subtle;
const ED25519 = { name: "Ed25519" } as const;
const X25519 = { name: "X25519" } as const;
// PKCS#8 wrappers of a raw 32-byte Ed25519 seed / X25519 secret (RFC 8410).
const ED25519_PKCS8 = Uint8Array.from([48, 46, 2, 1, 0, 48, 5, 6, 3, 43, 101, 112, 4, 34, 4, 32]);
const X25519_PKCS8 = Uint8Array.from([48, 46, 2, 1, 0, 48, 5, 6, 3, 43, 101, 110, 4, 34, 4, 32]);

export const AEAD_NONCE_BYTES = 12;
export const AEAD_TAG_BYTES = 16;

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest("SHA-256", own(data)));
}

export async function sha256Hex(data: Uint8Array): Promise<string> {
  return toHex(await sha256(data));
}

export async function hkdf32(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array): Promise<Uint8Array> {
  const key = await subtle().importKey("raw", own(ikm), "HKDF", false, ["deriveBits"]);
  const bits = await subtle().deriveBits({ name: "HKDF", hash: "SHA-256", salt: own(salt), info: own(info) }, key, 256);
  return new Uint8Array(bits);
}

/** A non-extractable Ed25519 signing key from its 32-byte seed. */
export function ed25519PrivateKey(seed: Uint8Array): Promise<CryptoKey> {
  return subtle().importKey("pkcs8", concat(ED25519_PKCS8, seed), ED25519, false, ["sign"]);
}

/** Throws CryptoError("invalid-key") for bytes that are not an Ed25519 public key. */
export async function ed25519PublicKey(raw: Uint8Array): Promise<CryptoKey> {
  try {
    return await subtle().importKey("raw", own(raw), ED25519, true, ["verify"]);
  } catch (err) {
    throw new CryptoError("invalid-key", "not an Ed25519 public key", { cause: err });
  }
}

export async function sign(key: CryptoKey, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().sign(ED25519, key, own(data)));
}

export async function verify(key: CryptoKey, data: Uint8Array, signature: Uint8Array): Promise<boolean> {
  if (signature.length !== 64) return false;
  try {
    return await subtle().verify(ED25519, key, own(signature), own(data));
  } catch {
    return false;
  }
}

/** A non-extractable X25519 key from its 32-byte secret. */
export function x25519PrivateKey(secret: Uint8Array, extractable = false): Promise<CryptoKey> {
  return subtle().importKey("pkcs8", concat(X25519_PKCS8, secret), X25519, extractable, ["deriveBits"]);
}

export async function x25519PublicKey(raw: Uint8Array): Promise<CryptoKey> {
  try {
    return await subtle().importKey("raw", own(raw), X25519, true, []);
  } catch (err) {
    throw new CryptoError("invalid-key", "not an X25519 public key", { cause: err });
  }
}

export async function rawPublicKey(key: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await subtle().exportKey("raw", key));
}

/** X25519; undefined for a low-order peer key (an all-zero secret, or the platform refusing it). */
export async function x25519(privateKey: CryptoKey, publicKey: CryptoKey): Promise<Uint8Array | undefined> {
  let shared: Uint8Array;
  try {
    shared = new Uint8Array(await subtle().deriveBits({ name: "X25519", public: publicKey }, privateKey, 256));
  } catch {
    return undefined;
  }
  return shared.some((b) => b !== 0) ? shared : undefined;
}

/** A fresh X25519 key pair whose public half can be exported (ephemeral keys). */
export async function x25519Ephemeral(): Promise<CryptoKeyPair> {
  return (await subtle().generateKey(X25519, true, ["deriveBits"])) as CryptoKeyPair;
}

/** ChaCha20-Poly1305: ciphertext || 16-byte tag. */
export function aeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  return chacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

/** The plaintext, or undefined when the tag does not verify. */
export function aeadOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Uint8Array | undefined {
  if (sealed.length < AEAD_TAG_BYTES) return undefined;
  try {
    return chacha20poly1305(key, nonce, aad).decrypt(sealed);
  } catch {
    return undefined;
  }
}
