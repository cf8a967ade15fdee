// @ts-check
/**
 * Reads a unibus identity file (docs/protocol.md §2.1) in the page. The signing seed
 * is imported into WebCrypto as a non-extractable Ed25519 key and the text is dropped:
 * nothing of the file leaves the page, and script can sign with the key but never read
 * it back. The key-exchange secret is only checked against its public key, never kept.
 */
import { fromBase64url, fromHex, toHex } from "./signer.js";

/** Why a file is refused, in the words of §2.1 (the `reason` of fixtures/vectors/identity.json). */
export class IdentityFileError extends Error {
  /** @param {string} reason */
  constructor(reason) {
    super(`this is not a usable unibus identity file: ${reason}`);
    this.name = "IdentityFileError";
    this.reason = reason;
  }
}

/** @typedef {{ signPub: string, kexPub: string, key: CryptoKey }} LoadedIdentity */

// PKCS #8 wrappers of a raw 32-byte Ed25519 seed and X25519 secret (RFC 8410).
const ED25519_PKCS8 = fromHex("302e020100300506032b657004220420");
const X25519_PKCS8 = fromHex("302e020100300506032b656e04220420");
/** The X25519 base point: deriving with it yields a secret's public key without exporting the secret. */
const X25519_BASE = Uint8Array.of(9, ...new Uint8Array(31));

/** @param {Uint8Array} prefix @param {Uint8Array} secret */
function pkcs8(prefix, secret) {
  const out = new Uint8Array(prefix.length + secret.length);
  out.set(prefix);
  out.set(secret, prefix.length);
  return out;
}

/** An Ed25519 signing key from its 32-byte seed: it can sign, and nothing can export it. @param {Uint8Array} seed */
export function importSigningKey(seed) {
  return crypto.subtle.importKey("pkcs8", pkcs8(ED25519_PKCS8, seed), { name: "Ed25519" }, false, ["sign"]);
}

/** @param {string} text */
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    throw new IdentityFileError("not JSON");
  }
}

/** A 32-byte secret written as exactly 43 base64url characters. @param {unknown} value */
function secretOf(value) {
  const bytes = typeof value === "string" && value.length === 43 ? fromBase64url(value) : undefined;
  if (bytes?.length !== 32) throw new IdentityFileError("bad key material");
  return /** @type {Uint8Array} */ (bytes);
}

/** True when `key` signs for `signPub` (the exact lowercase hex of its public key). @param {CryptoKey} key @param {unknown} signPub */
async function signsFor(key, signPub) {
  if (typeof signPub !== "string" || !/^[0-9a-f]{64}$/.test(signPub)) return false;
  const probe = crypto.getRandomValues(new Uint8Array(32));
  const sig = await crypto.subtle.sign({ name: "Ed25519" }, key, probe);
  const pub = await crypto.subtle.importKey("raw", fromHex(signPub), { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, pub, sig, probe);
}

/** The X25519 public key of a secret, as lowercase hex. @param {Uint8Array} secret */
async function kexPublicOf(secret) {
  const s = await crypto.subtle.importKey("pkcs8", pkcs8(X25519_PKCS8, secret), { name: "X25519" }, false, [
    "deriveBits",
  ]);
  const base = await crypto.subtle.importKey("raw", X25519_BASE, { name: "X25519" }, false, []);
  return toHex(new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: base }, s, 256)));
}

/**
 * The identity in `text`, checked as §2.1 requires (the file mode cannot be checked in a
 * browser), or IdentityFileError with the reason.
 * @param {string} text
 * @returns {Promise<LoadedIdentity>}
 */
export async function readIdentityFile(text) {
  const file = parseJson(text);
  if (!file || typeof file !== "object" || file.type !== "unibus-identity") {
    throw new IdentityFileError("not a unibus identity");
  }
  if (file.version !== 1) throw new IdentityFileError(`unsupported version ${file.version}`);
  const seed = secretOf(file.signSeed);
  const kexSecret = secretOf(file.kexSecret);
  const key = await importSigningKey(seed);
  seed.fill(0);
  const kexMatches = typeof file.kexPub === "string" && (await kexPublicOf(kexSecret)) === file.kexPub;
  kexSecret.fill(0);
  if (!(await signsFor(key, file.signPub)) || !kexMatches) {
    throw new IdentityFileError("public keys do not match the secrets");
  }
  return { signPub: file.signPub, kexPub: file.kexPub, key };
}
