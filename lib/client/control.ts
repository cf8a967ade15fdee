/**
 * The control-plane client: undici over a keep-alive pool that trusts the bus CA,
 * every request signed with the same canonical-request function the server checks.
 * Refusals surface as ControlPlaneError carrying the server's message.
 */
import { Agent, request } from "undici";
import { signRequest } from "../crypto/canonical.ts";
import type { Identity } from "../crypto/identity.ts";
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
    return (text ? JSON.parse(text) : undefined) as T;
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}
