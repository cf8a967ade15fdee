// @ts-check
/**
 * The control plane as the console calls it: every `/v1/` request signed in the page
 * (signer.js) by the loaded identity, same origin, no cookies. Refusals become ApiError
 * with the server's status, code and message (docs/protocol.md §4.2).
 */
import { EMPTY_SHA256, sha256Hex, signedHeaders } from "./signer.js";

export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }

  /** The key is unknown to the bus or was revoked (or deleted) since it was loaded. */
  get notAuthorized() {
    return this.status === 401 && this.code === "auth_not_authorized";
  }
}

export class ControlApi {
  /** @param {import("./signer.js").Signer} signer */
  constructor(signer) {
    this.signer = signer;
  }

  /**
   * One signed JSON request. `path` is the request-target as sent, built from ids the
   * server gave us (hex), so it is already origin-form ASCII and is signed unchanged.
   * @template T
   * @param {"GET" | "POST" | "PUT" | "DELETE"} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<T>}
   */
  async request(method, path, body) {
    const bytes = body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(body));
    const bodySha256 = bytes ? await sha256Hex(bytes) : EMPTY_SHA256;
    const headers = await signedHeaders(this.signer, { method, uri: path, bodySha256 });
    if (bytes) headers["content-type"] = "application/json";
    const res = await fetch(path, { method, headers, body: bytes, credentials: "omit", cache: "no-store" });
    return /** @type {Promise<T>} */ (answerOf(res));
  }
}

/** The unsigned health endpoint. */
export async function fetchHealth() {
  return answerOf(await fetch("/healthz", { credentials: "omit", cache: "no-store" }), true);
}

/** @param {Response} res @param {boolean} [anyStatus] a body to read whatever the status (healthz's 503) */
async function answerOf(res, anyStatus = false) {
  if (res.status === 204) return undefined;
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    throw new ApiError(res.status, "bad_answer", `the control plane answered HTTP ${res.status} without JSON`);
  }
  if (res.ok || anyStatus) return json;
  throw new ApiError(res.status, String(json?.error ?? "unknown"), String(json?.message ?? `HTTP ${res.status}`));
}
