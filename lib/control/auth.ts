/**
 * Authentication of signed control-plane requests.
 *
 * The checks run in this order, and the order is part of the security design:
 *  1. the five `x-unibus-*` headers are present and well-formed;
 *  2. the timestamp is within ±skew of this machine's clock;
 *  3. the signature verifies over the canonical request, and the declared body hash
 *     equals the actual one;
 *  4. the key is on the allowlist (`store.isAuthorized`; a store error is a 503);
 *  5. the key is within its own rate limit (429), so one member's flood is refused
 *     before it reaches the shared nonce store;
 *  6. the nonce is fresh (remembered for 2 × skew, so every request that passes the
 *     skew check can be replayed only into a cache that still holds its nonce).
 * Only a registered key reaches the nonce cache, so an unregistered one can never
 * fill it: it always gets "not authorized", never "replayed".
 */
import type { IncomingHttpHeaders } from "node:http";
import {
  AUTH_HEADERS,
  parseSignedHeaders,
  SIGNATURE_SCHEME,
  type SignedHeaders,
  SignedRequestError,
  verifySignedRequest,
} from "../crypto/index.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import type { Store } from "../store/index.ts";
import { HttpError } from "./http-error.ts";
import type { RateLimiter } from "./limits.ts";
import { type NonceStore, nonceKey } from "./nonce-cache.ts";

export const DEFAULT_SKEW_MS = 30_000;

export interface AuthenticateOptions {
  method: string;
  /** The request-target exactly as received (`req.url`). */
  uri: string;
  headers: IncomingHttpHeaders;
  /**
   * The lowercase hex SHA-256 of the body the server actually read. For a streamed
   * body pass "declared": the signature then covers the declared hash, and the
   * caller MUST check the body against it while streaming (see `streamBody`'s
   * `expectSha256`) and discard it on mismatch.
   */
  bodySha256: string | "declared";
  store: Pick<Store, "isAuthorized">;
  nonces: NonceStore;
  /** Per-identity token bucket, taken once the key is known to be authorized. */
  identityLimit?: Pick<RateLimiter, "take">;
  /** Wall clock in ms; defaults to Date.now. */
  now?: () => number;
  skewMs?: number;
  logger?: Logger;
}

export type AuthResult = { signPub: string };

const UNAUTHENTICATED_HEADERS = { "www-authenticate": SIGNATURE_SCHEME };

function unauthenticated(code: string, message: string): HttpError {
  return new HttpError(401, message, { code, headers: UNAUTHENTICATED_HEADERS });
}

/**
 * Authenticates one request: resolves with the verified signing key or throws
 * HttpError (401, 400 or 503). There is no mode that lets an unsigned request through:
 * every route acts as the identity that signed it, so without one there is nothing to
 * serve (an "off"/"soft" mode was removed for that reason; see CHANGELOG).
 */
export async function authenticateRequest(opts: AuthenticateOptions): Promise<AuthResult> {
  const logger = opts.logger ?? silentLogger;
  let verified: string | undefined;
  try {
    verified = await check(opts, (signPub) => {
      verified = signPub;
    });
    return { signPub: verified };
  } catch (err) {
    if (!(err instanceof HttpError)) throw err;
    const fields = { component: "control-auth", method: opts.method, code: err.code, signPub: verified };
    if (err.status >= 500) logger.error({ ...fields, cause: (err.cause as Error | undefined)?.message }, err.message);
    else logger.info(fields, `refused request: ${err.publicMessage}`);
    throw err;
  }
}

async function check(opts: AuthenticateOptions, onVerified: (signPub: string) => void): Promise<string> {
  const skewMs = opts.skewMs ?? DEFAULT_SKEW_MS;
  const signed = verifiedHeaders(opts, skewMs);
  onVerified(signed.signPub);
  // Authorization before the nonce store: a key that is not on the bus must not be
  // able to fill it.
  await requireAuthorized(opts.store, signed.signPub);
  if (opts.identityLimit && !opts.identityLimit.take(signed.signPub)) {
    throw new HttpError(429, "too many requests signed by this key; slow down and retry shortly", {
      code: "RATE_LIMITED_IDENTITY",
      headers: { "retry-after": "1" },
    });
  }
  await requireFreshNonce(opts.nonces, signed, skewMs);
  return signed.signPub;
}

/** The signed headers, once they parse, are within the skew, verify and cover this body. */
function verifiedHeaders(opts: AuthenticateOptions, skewMs: number): SignedHeaders {
  const now = (opts.now ?? Date.now)();
  let signed: SignedHeaders;
  try {
    signed = parseSignedHeaders(opts.headers);
  } catch (err) {
    if (err instanceof SignedRequestError) {
      throw unauthenticated(err.problem === "missing" ? "AUTH_MISSING_HEADER" : "AUTH_BAD_HEADER", err.message);
    }
    throw err;
  }
  if (Math.abs(now - signed.timestamp) > skewMs) {
    throw unauthenticated(
      "AUTH_CLOCK_SKEW",
      `request timestamp is outside the allowed skew of ${formatSeconds(skewMs)}; check this machine's clock`,
    );
  }
  if (!verifySignedRequest({ method: opts.method, uri: opts.uri, signed })) {
    throw unauthenticated("AUTH_BAD_SIGNATURE", "signature does not verify");
  }
  if (opts.bodySha256 !== "declared" && opts.bodySha256 !== signed.contentSha256) {
    throw unauthenticated(
      "AUTH_BODY_MISMATCH",
      `signature does not verify: the body does not match ${AUTH_HEADERS.contentSha256}`,
    );
  }
  return signed;
}

/** Fails closed: a store that cannot answer is a 503, never an admission. */
async function requireAuthorized(store: AuthenticateOptions["store"], signPub: string): Promise<void> {
  let authorized: boolean;
  try {
    authorized = await store.isAuthorized(signPub);
  } catch (err) {
    throw new HttpError(503, "the control plane cannot check authorization right now; try again shortly", {
      code: "AUTH_UNAVAILABLE",
      cause: err,
      headers: { "retry-after": "5" },
    });
  }
  if (authorized !== true) {
    throw unauthenticated("AUTH_NOT_AUTHORIZED", "key is not authorized on this bus");
  }
}

/** Remembers the nonce for twice the skew, the window in which a replay would pass the clock check. */
async function requireFreshNonce(nonces: NonceStore, signed: SignedHeaders, skewMs: number): Promise<void> {
  let verdict: string;
  try {
    verdict = await nonces.checkAndRemember(nonceKey(signed.signPub, signed.nonce), 2 * skewMs, signed.signPub);
  } catch (err) {
    throw new HttpError(503, "the control plane cannot check for replays right now; try again shortly", {
      code: "AUTH_UNAVAILABLE",
      cause: err,
      headers: { "retry-after": "5" },
    });
  }
  if (verdict === "replayed") throw unauthenticated("AUTH_REPLAYED", "nonce already used (replayed request)");
  if (verdict === "quota") {
    // This key's own share of the replay store is used up; other keys are unaffected.
    throw new HttpError(
      429,
      "this key has sent too many requests within the replay window; slow down and retry shortly",
      {
        code: "AUTH_NONCE_QUOTA",
        headers: { "retry-after": "5" },
      },
    );
  }
  if (verdict !== "fresh") {
    throw new HttpError(503, "the control plane is too busy to accept new requests; try again shortly", {
      code: "AUTH_NONCE_CACHE_FULL",
      headers: { "retry-after": "5" },
    });
  }
}

function formatSeconds(ms: number): string {
  return `${Number.isInteger(ms / 1000) ? ms / 1000 : (ms / 1000).toFixed(1)} s`;
}
