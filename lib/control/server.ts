/**
 * The control plane's HTTPS server. Limits that protect it from unauthenticated
 * peers (header size, header/request timeouts) are set on the socket server itself,
 * before any route runs. Routes are added by the control-plane issue; for now it
 * answers `/healthz`.
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import type { Logger } from "../log/index.ts";
import { silentLogger } from "../log/index.ts";

export interface ControlServerOptions {
  host: string;
  /** 0 = random. */
  port: number;
  certPem: string;
  keyPem: string;
  logger?: Logger;
  /** Served at /metrics to loopback clients. */
  metrics?: { render(): Promise<{ contentType: string; body: string }> };
  /** Called before each scrape (e.g. to read live gauges from nats-server). */
  beforeScrape?: () => Promise<void>;
  /** Reports whether the bus behind this control plane is healthy. */
  health?: () => Promise<{ ok: boolean; detail?: Record<string, unknown> }>;
}

export class ControlServer {
  readonly #server: https.Server;
  readonly #opts: ControlServerOptions;
  readonly #logger: Logger;

  constructor(opts: ControlServerOptions) {
    this.#opts = opts;
    this.#logger = opts.logger ?? silentLogger;
    this.#server = https.createServer(
      {
        cert: opts.certPem,
        key: opts.keyPem,
        maxHeaderSize: 16 * 1024,
        headersTimeout: 10_000,
        requestTimeout: 30_000,
        keepAliveTimeout: 5_000,
      },
      (req, res) => void this.#route(req, res),
    );
    this.#server.maxHeadersCount = 64;
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(this.#opts.port, this.#opts.host, () => {
        this.#server.off("error", reject);
        resolve();
      });
    });
    return (this.#server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    if (!this.#server.listening) return;
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? "/", "https://control.invalid");
      if (url.pathname === "/healthz" && (req.method === "GET" || req.method === "HEAD")) {
        const health = this.#opts.health ? await this.#opts.health() : { ok: true };
        return send(res, health.ok ? 200 : 503, { status: health.ok ? "ok" : "unavailable", ...health.detail });
      }
      if (url.pathname === "/metrics" && req.method === "GET" && this.#opts.metrics) {
        // Loopback only: metrics show who connects how often, which is nobody else's business.
        if (!isLoopback(req.socket.remoteAddress)) {
          return send(res, 403, { error: "forbidden", message: "metrics are served to loopback clients only" });
        }
        await this.#opts.beforeScrape?.().catch((err: Error) => {
          this.#logger.warn({ component: "control", err: err.message }, "could not refresh live metrics");
        });
        const { contentType, body } = await this.#opts.metrics.render();
        res.writeHead(200, { "content-type": contentType, "content-length": Buffer.byteLength(body) });
        return void res.end(body);
      }
      send(res, 404, { error: "not_found", message: `no route for ${req.method} ${url.pathname}` });
    } catch (err) {
      this.#logger.error({ component: "control", err: (err as Error).message }, "request failed");
      send(res, 500, { error: "internal", message: "internal error" });
    }
  }
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.startsWith("::ffff:") ? address.slice(7) : address;
  return a === "::1" || /^127\./.test(a);
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(res.req.method === "HEAD" ? undefined : text);
}
