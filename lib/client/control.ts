/**
 * The control-plane client: undici over a keep-alive pool that trusts the bus CA,
 * every request signed with the same canonical-request function the server checks.
 * Refusals surface as ControlPlaneError carrying the server's message.
 */
import crypto from "node:crypto";
import { pipeline, Readable, Transform, type TransformCallback } from "node:stream";
import { Agent, request } from "undici";
import { AUTH_HEADERS, type Identity, signRequest } from "../crypto/index.ts";
import { ControlPlaneError, UnibusError } from "../errors.ts";

export interface ControlClientOptions {
  baseUrl: string;
  ca?: string;
  identity: Identity;
  /** Per-request deadline. */
  timeoutMs?: number;
}

export class ControlClient {
  readonly baseUrl: string;
  readonly #agent: Agent;
  readonly #identity: Identity;
  readonly #timeoutMs: number;

  constructor(opts: ControlClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.#identity = opts.identity;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#agent = new Agent({
      connect: opts.ca ? { ca: opts.ca } : {},
      keepAliveTimeout: 4_000,
      connections: 8,
    });
  }

  /** Sends a signed JSON request; resolves with the parsed JSON answer (undefined for 204). */
  async request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    opts: { signed?: boolean } = {},
  ): Promise<T> {
    const url = new URL(path, `${this.baseUrl}/`);
    const uri = url.pathname + url.search;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = payload ? { "content-type": "application/json" } : {};
    if (opts.signed !== false)
      Object.assign(headers, signRequest(this.#identity, { method, uri, body: payload ?? "" }));
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(url, {
        method: method as "GET",
        headers,
        body: payload,
        dispatcher: this.#agent,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      });
    } catch (err) {
      throw new UnibusError(
        "CONTROL_UNREACHABLE",
        `could not reach the control plane at ${this.baseUrl}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    return (await readAnswer(res)) as T;
  }

  /**
   * Streams a blob up (`PUT /v1/rooms/:id/blobs`). The caller hashes the bytes first:
   * the signature covers that declared SHA-256 and the server refuses (401) a body
   * that does not match it. With `size` the request carries a Content-Length (and a
   * blob over the server's cap is refused before a byte is sent); without it the body
   * is sent chunked. Memory stays bounded whatever the blob's size.
   */
  async putBlob(
    path: string,
    source: AsyncIterable<Uint8Array> | Uint8Array,
    opts: { sha256: string; size?: number; mimetype: string; timeoutMs?: number },
  ): Promise<BlobInfo> {
    const url = new URL(path, `${this.baseUrl}/`);
    const uri = url.pathname + url.search;
    const isBytes = source instanceof Uint8Array;
    const size = isBytes ? source.length : opts.size;
    if (isBytes && opts.size !== undefined && opts.size !== source.length) {
      throw new UnibusError("INVALID_ARGUMENT", `size is ${opts.size} but the blob has ${source.length} bytes`);
    }
    const headers: Record<string, string> = {
      "content-type": opts.mimetype,
      ...signRequest(this.#identity, { method: "PUT", uri, bodySha256: opts.sha256 }),
    };
    if (size !== undefined) headers["content-length"] = String(size);
    const timeout = opts.timeoutMs ?? Math.max(this.#timeoutMs, BLOB_TIMEOUT_MS);
    const res = await this.#send(url, {
      method: "PUT",
      headers,
      body: isBytes ? source : Readable.from(source, { objectMode: false }),
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
    return (await readAnswer(res)) as BlobInfo;
  }

  /**
   * Streams a blob down (`GET /v1/rooms/:id/blobs/:blobId`). The returned stream
   * checks the bytes against the size and SHA-256 the server announced, and fails
   * with a `BLOB_INTEGRITY` error at the end if they differ.
   */
  async getBlob(path: string, opts: { timeoutMs?: number } = {}): Promise<BlobDownload> {
    const url = new URL(path, `${this.baseUrl}/`);
    const uri = url.pathname + url.search;
    const timeout = opts.timeoutMs ?? Math.max(this.#timeoutMs, BLOB_TIMEOUT_MS);
    const res = await this.#send(url, {
      method: "GET",
      headers: signRequest(this.#identity, { method: "GET", uri }),
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
    if (res.statusCode !== 200) {
      await readAnswer(res);
      throw new ControlPlaneError(res.statusCode, `HTTP_${res.statusCode}`, "unexpected answer to a blob download");
    }
    const mimetype = headerOf(res.headers["content-type"]);
    const size = Number(headerOf(res.headers["content-length"]));
    const sha256 = headerOf(res.headers[AUTH_HEADERS.contentSha256]);
    if (!Number.isSafeInteger(size) || !/^[0-9a-f]{64}$/.test(sha256)) {
      res.body.destroy();
      throw new UnibusError("BLOB_INTEGRITY", "the control plane sent a blob without a valid size and SHA-256");
    }
    // pipeline, not pipe: a consumer that stops early releases the connection too.
    const stream = pipeline(res.body, new BlobVerifier(size, sha256), () => {});
    return { stream, mimetype, size, sha256 };
  }

  /**
   * Whether the bus says its storage is full: its health (`GET /healthz`, unsigned)
   * names the `storage` part as down. False when it says otherwise or cannot be asked.
   */
  async storageFull(): Promise<boolean> {
    try {
      const res = await request(`${this.baseUrl}/healthz`, {
        dispatcher: this.#agent,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      });
      const body = (await res.body.json()) as { down?: unknown };
      return Array.isArray(body.down) && body.down.includes("storage");
    } catch {
      return false;
    }
  }

  async #send(url: URL, opts: Omit<Parameters<typeof request>[1] & object, "dispatcher">) {
    try {
      return await request(url, { ...opts, dispatcher: this.#agent });
    } catch (err) {
      throw new UnibusError(
        "CONTROL_UNREACHABLE",
        `could not reach the control plane at ${this.baseUrl}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}

/** Idle deadline for blob transfers: at least this, whatever the client's JSON timeout. */
const BLOB_TIMEOUT_MS = 60_000;

/** What the server answers to a blob upload. */
export interface BlobInfo {
  id: string;
  roomId: string;
  size: number;
  sha256: string;
  mimetype: string;
  createdAt: number;
  expiresAt: number;
}

export interface BlobDownload {
  /** The bytes; errors with code BLOB_INTEGRITY if they do not match `size` and `sha256`. */
  stream: Readable;
  mimetype: string;
  size: number;
  sha256: string;
}

function headerOf(value: string | string[] | undefined): string {
  return (Array.isArray(value) ? value[0] : value) ?? "";
}

/** The parsed JSON answer, or the server's refusal as a ControlPlaneError. */
async function readAnswer(res: Awaited<ReturnType<typeof request>>): Promise<unknown> {
  const text = await res.body.text();
  if (res.statusCode >= 400) {
    let parsed: { error?: string; message?: string } = {};
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: fall through to the generic message
    }
    throw new ControlPlaneError(
      res.statusCode,
      (parsed.error ?? `http_${res.statusCode}`).toUpperCase(),
      parsed.message ?? `the control plane answered ${res.statusCode}`,
    );
  }
  return text ? JSON.parse(text) : undefined;
}

/** Passes bytes through, failing at the end unless they have the announced size and SHA-256. */
class BlobVerifier extends Transform {
  readonly #size: number;
  readonly #sha256: string;
  readonly #hash = crypto.createHash("sha256");
  #seen = 0;

  constructor(size: number, sha256: string) {
    super();
    this.#size = size;
    this.#sha256 = sha256;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#seen += chunk.length;
    if (this.#seen > this.#size) {
      cb(new UnibusError("BLOB_INTEGRITY", `the blob is longer than the announced ${this.#size} bytes`));
      return;
    }
    this.#hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.#seen !== this.#size) {
      cb(new UnibusError("BLOB_INTEGRITY", `the blob ended after ${this.#seen} of ${this.#size} bytes`));
    } else if (this.#hash.digest("hex") !== this.#sha256) {
      cb(new UnibusError("BLOB_INTEGRITY", "the blob does not match its SHA-256; it was corrupted"));
    } else cb();
  }
}
