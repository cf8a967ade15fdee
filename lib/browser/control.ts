/**
 * The control plane from a browser page: fetch(), every request signed in the page
 * (signer.ts). The page's origin must be one the bus lists (`--cors-origin`), and the
 * browser must trust the bus CA — a page cannot be told to trust a CA by script.
 */
import type { BlobInfo } from "../client/control.ts";
import { ControlPlaneError, UnibusError } from "../errors.ts";
import { own, utf8 } from "./bytes.ts";
import type { BrowserIdentity } from "./identity.ts";
import { sha256Hex } from "./primitives.ts";
import { signRequest } from "./signer.ts";

export type { BlobInfo };

export class BrowserControl {
  readonly baseUrl: string;
  readonly #identity: BrowserIdentity;

  constructor(baseUrl: string, identity: BrowserIdentity) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#identity = identity;
  }

  /** A signed JSON request; the answer's JSON, or ControlPlaneError with the server's code. */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : utf8(JSON.stringify(body));
    const headers: Record<string, string> = payload ? { "content-type": "application/json" } : {};
    const res = await this.#send(method, path, headers, payload ?? new Uint8Array(0), payload);
    const text = await res.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** Uploads blob bytes (already encrypted for an encrypted room). */
  async putBlob(path: string, bytes: Uint8Array, mimetype: string): Promise<BlobInfo> {
    const res = await this.#send("PUT", path, { "content-type": mimetype }, bytes, bytes);
    return (await res.json()) as BlobInfo;
  }

  /** Downloads blob bytes, checked against the length and SHA-256 the server declares. */
  async getBlob(path: string): Promise<{ mimetype: string; bytes: Uint8Array }> {
    const res = await this.#send("GET", path, {}, new Uint8Array(0), undefined);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const declared = res.headers.get("x-unibus-content-sha256");
    if (Number(res.headers.get("content-length")) !== bytes.length || declared !== (await sha256Hex(bytes))) {
      throw new UnibusError(
        "BLOB_INTEGRITY",
        "the blob does not match the size and SHA-256 the control plane declared",
      );
    }
    return { mimetype: res.headers.get("content-type") ?? "application/octet-stream", bytes };
  }

  async #send(
    method: string,
    path: string,
    headers: Record<string, string>,
    signed: Uint8Array,
    body: Uint8Array | undefined,
  ): Promise<Response> {
    const url = new URL(path, `${this.baseUrl}/`);
    const uri = url.pathname + url.search;
    Object.assign(headers, await signRequest(this.#identity, { method, uri, body: signed }));
    let res: Response;
    try {
      res = await fetch(url, { method, headers, ...(body ? { body: own(body) } : {}) });
    } catch (err) {
      // CORS refusals and untrusted certificates look the same to a page: a TypeError.
      throw new UnibusError(
        "CONTROL_UNREACHABLE",
        `could not reach the control plane at ${this.baseUrl} (is this page's origin allowed with --cors-origin, and does the browser trust the bus CA?): ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (res.status >= 400) throw await refusal(res);
    return res;
  }
}

async function refusal(res: Response): Promise<ControlPlaneError> {
  let parsed: { error?: string; message?: string } = {};
  try {
    parsed = JSON.parse(await res.text());
  } catch {
    // not JSON: the generic message below
  }
  return new ControlPlaneError(
    res.status,
    (parsed.error ?? `http_${res.status}`).toUpperCase(),
    parsed.message ?? `the control plane answered ${res.status}`,
  );
}
