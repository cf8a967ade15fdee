/**
 * Signed control-plane requests: the canonical form both sides sign and verify,
 * the client's header builder and the server's header parser and verifier.
 *
 * The canonical request is six lines joined by "\n" (no trailing newline):
 *
 *     UNIBUS-ED25519-V1
 *     <METHOD>          HTTP method token, uppercased
 *     <request URI>     the request-target exactly as sent on the request line
 *     <timestamp>       integer milliseconds since the Unix epoch, plain decimal
 *     <nonce>           base64url (no padding) of 16–48 random bytes: 22–64 chars
 *     <body sha256>     lowercase hex SHA-256 of the body (of "" when there is none)
 *
 * The request URI is origin-form (path + optional query), 1–8192 characters of
 * printable ASCII without "#". It is never decoded or normalised: `/a/./b`, `/a%2Fb`,
 * `/rooms?` and `/rooms` are all different URIs and must be signed as sent. Every
 * field is validated so that no field can contain the separator; a value outside
 * these rules cannot be signed (InvalidArgumentError), which is what makes the
 * encoding unambiguous.
 *
 * The signature covers the DECLARED body hash (`x-unibus-content-sha256`), so a
 * streamed upload can be authenticated before its body is read; the server then
 * checks the body against the declared hash as it streams (`ContentHashVerifier`).
 */
import crypto from "node:crypto";
import { InvalidArgumentError, StateError, UnibusError } from "../errors.ts";
import {
  AUTH_HEADERS,
  type AuthHeaderName,
  authHeaders,
  canonicalRequest,
  declaredBodySha256,
  KEY_HEX,
  NONCE,
  SHA256_HEX,
  SIGNATURE_B64URL,
  TIMESTAMP,
} from "./canonical-text.ts";
import { ed25519PublicKeyCached, verify } from "./ed25519.ts";

export {
  AUTH_HEADERS,
  type AuthHeaderName,
  type CanonicalRequestParts,
  canonicalRequest,
  EMPTY_SHA256,
  requestUriOf,
  SIGNATURE_SCHEME,
  URI_MAX,
} from "./canonical-text.ts";

export function sha256Hex(data: Uint8Array | string): string {
  // One-shot: a third of the CPU of createHash().update().digest() for request-sized inputs.
  return crypto.hash("sha256", data, "hex");
}

/** A fresh nonce: base64url of 16 random bytes. */
export function newNonce(): string {
  return crypto.randomBytes(16).toString("base64url");
}

/** What `signRequest` needs of an identity: its public key and a signing function. */
export interface RequestSigner {
  readonly signPub: string;
  sign(data: Uint8Array): Uint8Array;
}

export interface SignRequestOptions {
  method: string;
  uri: string;
  /** The body to send; its hash is computed here. Omit for a request without a body. */
  body?: Uint8Array | string;
  /** For streamed uploads: the body's SHA-256, computed beforehand. Must match `body` if both are given. */
  bodySha256?: string;
  /** Milliseconds since the Unix epoch; defaults to `Date.now()`. */
  now?: number;
}

/** The five `x-unibus-*` headers that authenticate one request. Each call uses a new nonce. */
export function signRequest(identity: RequestSigner, opts: SignRequestOptions): Record<AuthHeaderName, string> {
  const bodySha256 = declaredBodySha256(opts.body === undefined ? undefined : sha256Hex(opts.body), opts.bodySha256);
  const timestamp = opts.now ?? Date.now();
  const nonce = newNonce();
  const canonical = canonicalRequest({ method: opts.method, uri: opts.uri, timestamp, nonce, bodySha256 });
  const signature = Buffer.from(identity.sign(Buffer.from(canonical, "utf8"))).toString("base64url");
  return authHeaders({ signPub: identity.signPub, timestamp, nonce, bodySha256, signature });
}

/** A required auth header is absent or not in its expected form. `header` names it. */
export class SignedRequestError extends UnibusError {
  readonly header: AuthHeaderName;
  readonly problem: "missing" | "malformed";
  constructor(header: AuthHeaderName, problem: "missing" | "malformed", message: string) {
    super("SIGNED_REQUEST", message);
    this.header = header;
    this.problem = problem;
  }
}

/** The auth headers of one request, checked for form (not yet for truth). */
export interface SignedHeaders {
  /** Ed25519 public key, lowercase hex. */
  signPub: string;
  /** Milliseconds since the Unix epoch. */
  timestamp: number;
  nonce: string;
  /** The declared lowercase hex SHA-256 of the body. */
  contentSha256: string;
  /** The signature as sent (base64url). */
  signature: string;
}

const EXPECTED: Record<keyof SignedHeaders, { header: AuthHeaderName; form: RegExp; what: string }> = {
  signPub: { header: AUTH_HEADERS.key, form: KEY_HEX, what: "64 hex characters (an Ed25519 public key)" },
  timestamp: {
    header: AUTH_HEADERS.timestamp,
    form: TIMESTAMP,
    what: "integer milliseconds since the Unix epoch",
  },
  nonce: { header: AUTH_HEADERS.nonce, form: NONCE, what: "22-64 base64url characters (16 or more random bytes)" },
  contentSha256: {
    header: AUTH_HEADERS.contentSha256,
    form: SHA256_HEX,
    what: "64 lowercase hex characters (the SHA-256 of the body)",
  },
  signature: {
    header: AUTH_HEADERS.signature,
    form: SIGNATURE_B64URL,
    what: "86 base64url characters (an Ed25519 signature)",
  },
};

type HeaderBag = Record<string, string | string[] | number | undefined>;

/**
 * Reads the five auth headers from node:http's lowercase header object. Throws
 * SignedRequestError naming the first header that is missing or malformed (values
 * are never echoed: they may be huge or hostile). Repeated headers are malformed.
 */
export function parseSignedHeaders(headers: HeaderBag): SignedHeaders {
  const out: Partial<Record<keyof SignedHeaders, string>> = {};
  for (const field of Object.keys(EXPECTED) as (keyof SignedHeaders)[]) {
    const { header, form, what } = EXPECTED[field];
    const raw = headers?.[header];
    if (raw === undefined || raw === "" || (Array.isArray(raw) && raw.length === 0)) {
      throw new SignedRequestError(header, "missing", `missing ${header} header`);
    }
    // Bounded before the regex so a 16 KiB value costs nothing.
    if (typeof raw !== "string" || raw.length > 128 || !form.test(raw)) {
      throw new SignedRequestError(header, "malformed", `${header} header is malformed: expected ${what}`);
    }
    out[field] = raw;
  }
  const timestamp = Number(out.timestamp);
  if (!Number.isSafeInteger(timestamp)) {
    throw new SignedRequestError(
      AUTH_HEADERS.timestamp,
      "malformed",
      `${AUTH_HEADERS.timestamp} header is malformed: expected ${EXPECTED.timestamp.what}`,
    );
  }
  return {
    signPub: out.signPub!.toLowerCase(),
    timestamp,
    nonce: out.nonce!,
    contentSha256: out.contentSha256!,
    signature: out.signature!,
  };
}

/**
 * True when `signed.signature` is `signed.signPub`'s signature over the canonical
 * request for `method`, `uri` and the signed headers. Never throws: anything that
 * cannot be a valid signed request is simply false. It does NOT compare the declared
 * body hash with the actual body, check the clock, the allowlist or the nonce.
 */
export function verifySignedRequest(req: { method: string; uri: string; signed: SignedHeaders }): boolean {
  const { signed } = req;
  let canonical: string;
  try {
    canonical = canonicalRequest({
      method: req.method,
      uri: req.uri,
      timestamp: signed.timestamp,
      nonce: signed.nonce,
      bodySha256: signed.contentSha256,
    });
  } catch {
    return false;
  }
  if (typeof signed.signPub !== "string" || !KEY_HEX.test(signed.signPub)) return false;
  if (typeof signed.signature !== "string" || !SIGNATURE_B64URL.test(signed.signature)) return false;
  const key = ed25519PublicKeyCached(Buffer.from(signed.signPub, "hex"));
  if (!key) return false;
  return verify(key, Buffer.from(canonical, "utf8"), Buffer.from(signed.signature, "base64url"));
}

/**
 * Hashes a body as it streams and, at the end, says whether it matches the declared
 * SHA-256. Call `update` per chunk, then `matches()` once.
 */
export class ContentHashVerifier {
  readonly expected: string;
  readonly #hash = crypto.createHash("sha256");
  #digest: string | undefined;

  constructor(expectedSha256Hex: string) {
    if (typeof expectedSha256Hex !== "string" || !SHA256_HEX.test(expectedSha256Hex)) {
      throw new InvalidArgumentError("expectedSha256", "the expected body hash must be 64 lowercase hex characters");
    }
    this.expected = expectedSha256Hex;
  }

  update(chunk: Uint8Array): void {
    if (this.#digest !== undefined) throw new StateError(["hashing"], "finished", "ContentHashVerifier.update()");
    this.#hash.update(chunk);
  }

  /** The body's actual hash; finalises the verifier. */
  digestHex(): string {
    this.#digest ??= this.#hash.digest("hex");
    return this.#digest;
  }

  matches(): boolean {
    return this.digestHex() === this.expected;
  }
}
