/**
 * Cross-origin access for browser clients on pages of other origins (the browser build
 * of the client library). Only origins the operator lists get the CORS headers; any
 * other page's browser refuses to hand it the answer. Requests are authenticated by
 * their Ed25519 signature, never by cookies, so no credentials are ever allowed.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { AUTH_HEADERS } from "../crypto/index.ts";
import { InvalidArgumentError } from "../errors.ts";

const ALLOW_METHODS = "GET, HEAD, POST, PUT, DELETE";
const ALLOW_HEADERS = ["content-type", ...Object.values(AUTH_HEADERS)].join(", ");
// What a client reads besides the body: the request id, a blob's hash and length, retry hints.
const EXPOSE_HEADERS = "x-request-id, x-unibus-content-sha256, content-length, retry-after, www-authenticate";

/** Checks an operator's list: each entry exactly an origin (`https://app.example:8443`), nothing more. */
export function checkCorsOrigins(origins: unknown, field = "corsOrigins"): string[] {
  if (!Array.isArray(origins)) throw new InvalidArgumentError(field, `${field} must be a list of origins`);
  return origins.map((o) => {
    let origin: string | undefined;
    try {
      origin = new URL(String(o)).origin;
    } catch {
      origin = undefined;
    }
    if (origin === undefined || origin === "null" || origin !== o) {
      throw new InvalidArgumentError(
        field,
        `${field}: ${JSON.stringify(o)} is not an origin; write scheme://host[:port] without a path, e.g. https://app.example`,
      );
    }
    return origin;
  });
}

/**
 * Adds the CORS headers for a listed origin; answers a preflight itself (true: done).
 * Requests without an Origin, or from an unlisted one, pass untouched.
 */
export function answerCors(req: IncomingMessage, res: ServerResponse, origins: ReadonlySet<string>): boolean {
  const origin = req.headers.origin;
  if (typeof origin !== "string" || !origins.has(origin)) return false;
  res.setHeader("access-control-allow-origin", origin);
  res.setHeader("vary", "origin");
  if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
    res.writeHead(204, {
      "access-control-allow-methods": ALLOW_METHODS,
      "access-control-allow-headers": ALLOW_HEADERS,
      "access-control-max-age": "600",
    });
    res.end();
    return true;
  }
  res.setHeader("access-control-expose-headers", EXPOSE_HEADERS);
  return false;
}
