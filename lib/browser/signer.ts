/**
 * Signed control-plane requests from a browser page (docs/protocol.md §5): the five
 * `x-unibus-*` headers for one request, signed by a WebCrypto key. The canonical text is
 * crypto/canonical-text.ts, the one the server verifies against. Meant to be shared by
 * every page that talks to the control plane (this library, the admin console).
 */
import { type AuthHeaderName, authHeaders, canonicalRequest, declaredBodySha256 } from "../crypto/canonical-text.ts";
import { randomBytes, toBase64url, utf8 } from "./bytes.ts";
import { sha256Hex } from "./primitives.ts";

/** Anything with a public key and an asynchronous Ed25519 signature: `BrowserIdentity` fits. */
export interface AsyncRequestSigner {
  readonly signPub: string;
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export interface BrowserSignOptions {
  method: string;
  /** The request-target exactly as it goes on the request line (path and query). */
  uri: string;
  body?: Uint8Array | string;
  /** The body's SHA-256 when it was computed beforehand (must match `body` if both are given). */
  bodySha256?: string;
  now?: number;
  /** Golden vectors only: a chosen nonce. */
  nonce?: string;
}

export async function signRequest(
  signer: AsyncRequestSigner,
  opts: BrowserSignOptions,
): Promise<Record<AuthHeaderName, string>> {
  const body = typeof opts.body === "string" ? utf8(opts.body) : opts.body;
  const bodySha256 = declaredBodySha256(body === undefined ? undefined : await sha256Hex(body), opts.bodySha256);
  const timestamp = opts.now ?? Date.now();
  const nonce = opts.nonce ?? toBase64url(randomBytes(16));
  const canonical = canonicalRequest({ method: opts.method, uri: opts.uri, timestamp, nonce, bodySha256 });
  const signature = toBase64url(await signer.sign(utf8(canonical)));
  return authHeaders({ signPub: signer.signPub, timestamp, nonce, bodySha256, signature });
}
