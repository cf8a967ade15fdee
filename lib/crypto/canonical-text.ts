/**
 * The canonical request of the signed control-plane protocol (docs/protocol.md §5.2):
 * the header names and the exact text both sides sign. Pure text, no node:crypto, so
 * the browser build and any page that signs requests (the admin console) share it.
 */
import { InvalidArgumentError } from "../errors.ts";

export const SIGNATURE_SCHEME = "UNIBUS-ED25519-V1";

/** Header names (lowercase, as node:http exposes them). */
export const AUTH_HEADERS = {
  key: "x-unibus-key",
  timestamp: "x-unibus-timestamp",
  nonce: "x-unibus-nonce",
  contentSha256: "x-unibus-content-sha256",
  signature: "x-unibus-signature",
} as const;

export type AuthHeaderName = (typeof AUTH_HEADERS)[keyof typeof AUTH_HEADERS];

/** SHA-256 of the empty string: the body hash of a request without a body. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

export const URI_MAX = 8192;
const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/;
// Printable ASCII minus "#" (a fragment is never sent). No space, no control character.
const URI = /^\/[\x21\x22\x24-\x7e]*$/;
export const TIMESTAMP = /^(0|[1-9][0-9]{0,15})$/;
export const NONCE = /^[A-Za-z0-9_-]{22,64}$/;
export const SHA256_HEX = /^[0-9a-f]{64}$/;
export const KEY_HEX = /^[0-9a-fA-F]{64}$/;
export const SIGNATURE_B64URL = /^[A-Za-z0-9_-]{86}$/;

export interface CanonicalRequestParts {
  method: string;
  /** The request-target as sent: path and optional query, e.g. `/rooms/abc?epoch=2`. */
  uri: string;
  /** Integer milliseconds since the Unix epoch (a number, or its plain decimal form). */
  timestamp: number | string;
  nonce: string;
  /** Lowercase hex SHA-256 of the body. */
  bodySha256: string;
}

/** The exact string that is signed. Throws InvalidArgumentError for a field that cannot be signed. */
export function canonicalRequest(parts: CanonicalRequestParts): string {
  const { method, uri, timestamp, nonce, bodySha256 } = parts ?? ({} as CanonicalRequestParts);
  if (typeof method !== "string" || !METHOD.test(method)) {
    throw new InvalidArgumentError("method", "the HTTP method must be a token of 1-32 letters (e.g. GET)");
  }
  checkUri(uri);
  const ts = timestampText(timestamp);
  if (typeof nonce !== "string" || !NONCE.test(nonce)) {
    throw new InvalidArgumentError("nonce", "the nonce must be 22-64 base64url characters (16 or more random bytes)");
  }
  if (typeof bodySha256 !== "string" || !SHA256_HEX.test(bodySha256)) {
    throw new InvalidArgumentError("bodySha256", "the body hash must be 64 lowercase hex characters (SHA-256)");
  }
  return `${SIGNATURE_SCHEME}\n${method.toUpperCase()}\n${uri}\n${ts}\n${nonce}\n${bodySha256}`;
}

function checkUri(uri: unknown): asserts uri is string {
  if (typeof uri !== "string" || uri.length > URI_MAX || !URI.test(uri)) {
    throw new InvalidArgumentError(
      "uri",
      `the request URI must be a path starting with "/" (optionally with a query), at most ${URI_MAX} characters of printable ASCII without spaces or "#"; percent-encode anything else`,
    );
  }
}

function timestampText(timestamp: unknown): string {
  const text = typeof timestamp === "number" ? String(timestamp) : timestamp;
  if (
    typeof text !== "string" ||
    !TIMESTAMP.test(text) ||
    (typeof timestamp === "number" && !Number.isSafeInteger(timestamp)) ||
    Number(text) > Number.MAX_SAFE_INTEGER
  ) {
    throw new InvalidArgumentError("timestamp", "the timestamp must be integer milliseconds since the Unix epoch");
  }
  return text;
}

/**
 * The request URI a client sends for `url`: what node:https and undici put on the
 * request line for a URL object. Sign this string and send this string.
 */
export function requestUriOf(url: URL | string): string {
  const u = typeof url === "string" ? new URL(url) : url;
  return u.pathname + u.search;
}

/**
 * The body hash a request declares: the body's own (`ofBody`), or the one the caller gives
 * for a body sent later (`given`, which must agree with the body when both are there), else
 * the empty body's. Shared by the Node and the browser signers, which hash differently.
 */
export function declaredBodySha256(ofBody: string | undefined, given: string | undefined): string {
  if (given !== undefined && ofBody !== undefined && ofBody !== given) {
    throw new InvalidArgumentError("bodySha256", "bodySha256 does not match the SHA-256 of body");
  }
  return given ?? ofBody ?? EMPTY_SHA256;
}

/** The five `x-unibus-*` headers of a signed request, from its parts. */
export function authHeaders(p: {
  signPub: string;
  timestamp: number;
  nonce: string;
  bodySha256: string;
  signature: string;
}): Record<AuthHeaderName, string> {
  return {
    [AUTH_HEADERS.key]: p.signPub,
    [AUTH_HEADERS.timestamp]: String(p.timestamp),
    [AUTH_HEADERS.nonce]: p.nonce,
    [AUTH_HEADERS.contentSha256]: p.bodySha256,
    [AUTH_HEADERS.signature]: p.signature,
  } as Record<AuthHeaderName, string>;
}
