// @ts-check
/**
 * Signed control-plane requests in a browser: the canonical request of
 * docs/protocol.md §5, byte for byte, signed with a WebCrypto Ed25519 key. It has no
 * other dependency so the browser client can share it (the same rules as
 * lib/crypto/canonical.ts, checked against fixtures/vectors/requests.json).
 */

export const SCHEME = "UNIBUS-ED25519-V1";
/** SHA-256 of the empty body. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/;
// Printable ASCII but "#", starting with "/": the request-target exactly as sent.
const URI = /^\/[\x21\x22\x24-\x7e]{0,8191}$/;
const TIMESTAMP = /^(0|[1-9][0-9]{0,15})$/;
const NONCE = /^[A-Za-z0-9_-]{22,64}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** A request one of whose values breaks a rule of §5.2: it cannot be signed. */
export class UnsignableRequestError extends Error {
  /** @param {string} field @param {string} message */
  constructor(field, message) {
    super(message);
    this.name = "UnsignableRequestError";
    this.field = field;
  }
}

/**
 * @typedef {{ method: string, uri: string, timestamp: string, nonce: string, bodySha256: string }} CanonicalInput
 * @typedef {{ signPub: string, key: CryptoKey }} Signer  signPub: lowercase hex; key: the Ed25519 private key (may be non-extractable)
 */

/** The six lines of §5.2, or UnsignableRequestError naming the first field at fault. @param {CanonicalInput} r */
export function canonicalRequest(r) {
  if (!METHOD.test(r.method)) throw new UnsignableRequestError("method", "the method is not an HTTP token");
  if (!URI.test(r.uri)) {
    throw new UnsignableRequestError(
      "uri",
      "the URI must be origin-form printable ASCII without '#'; percent-encode it",
    );
  }
  if (!TIMESTAMP.test(r.timestamp)) {
    throw new UnsignableRequestError("timestamp", "the timestamp must be integer milliseconds without leading zeros");
  }
  if (!NONCE.test(r.nonce)) throw new UnsignableRequestError("nonce", "the nonce must be 22-64 base64url characters");
  if (!SHA256_HEX.test(r.bodySha256)) {
    throw new UnsignableRequestError("bodySha256", "the body hash must be 64 lowercase hex characters");
  }
  return [SCHEME, r.method.toUpperCase(), r.uri, r.timestamp, r.nonce, r.bodySha256].join("\n");
}

/** @param {Uint8Array} bytes */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {string} hex */
export function fromHex(hex) {
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new TypeError("not hex");
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => Number.parseInt(h, 16));
}

/** RFC 4648 §5 without padding. @param {Uint8Array} bytes */
export function toBase64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Strict: only the base64url alphabet, no padding; undefined otherwise. @param {string} text */
export function fromBase64url(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return undefined;
  const bin = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Lowercase hex SHA-256. @param {BufferSource} bytes */
export async function sha256Hex(bytes) {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
}

/** 16 fresh random bytes, as the reference client sends. */
export function newNonce() {
  return toBase64url(crypto.getRandomValues(new Uint8Array(16)));
}

/**
 * The five `x-unibus-*` headers for one request. `timestamp` and `nonce` are for
 * vectors and tests; a real request takes the clock and a fresh nonce.
 * @param {Signer} signer
 * @param {{ method: string, uri: string, bodySha256?: string, timestamp?: string, nonce?: string }} req
 * @returns {Promise<Record<string, string>>}
 */
export async function signedHeaders(signer, req) {
  const input = {
    method: req.method,
    uri: req.uri,
    timestamp: req.timestamp ?? String(Date.now()),
    nonce: req.nonce ?? newNonce(),
    bodySha256: req.bodySha256 ?? EMPTY_SHA256,
  };
  const canonical = new TextEncoder().encode(canonicalRequest(input));
  const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, signer.key, canonical));
  return {
    "x-unibus-key": signer.signPub,
    "x-unibus-timestamp": input.timestamp,
    "x-unibus-nonce": input.nonce,
    "x-unibus-content-sha256": input.bodySha256,
    "x-unibus-signature": toBase64url(signature),
  };
}
