/**
 * The control plane's HTTPS server. Every request goes through the same pipeline, in
 * an order that keeps unauthenticated peers cheap to refuse:
 *
 *   connection: per-IP connection cap → TLS handshake deadline → header deadline;
 *   request: per-IP token bucket → route match → body ceiling, in-flight bytes taken
 *   as they arrive (global and per-IP) and a minimum transfer rate → signature, skew,
 *   allowlist, per-identity token bucket, then nonce (per-key share) → schema → handler.
 *
 * Header size, handshake, header and request timeouts are set on the socket server itself.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { EMPTY_SHA256, sha256Hex } from "../crypto/index.ts";
import type { Logger } from "../log/index.ts";
import { silentLogger } from "../log/index.ts";
import type { BusMetrics } from "../metrics/index.ts";
import { type AuthResult, authenticateRequest } from "./auth.ts";
import { type BlobRouteMatch, handleBlobRoute, matchBlobRoute, uploadOutlivesRequestTimeout } from "./blob-routes.ts";
import type { Blobs } from "./blobs.ts";
import { loadConsoleAssets, serveConsole } from "./console.ts";
import { answerCors, checkCorsOrigins } from "./cors.ts";
import { HttpError, sendHttpError } from "./http-error.ts";
import {
  ConnectionsPerIp,
  type ControlTimeouts,
  DEFAULT_IDENTITY_RATE_LIMIT,
  InflightBytes,
  JSON_BODY_LIMIT,
  MAX_HEADERS_COUNT,
  type MinBodyRate,
  RateLimiter,
  type RateLimiterOptions,
  rateLimited,
  rateLimitKey,
  readBody,
  resolveTimeouts,
  serverLimits,
} from "./limits.ts";
import { NonceCache, type NonceStore } from "./nonce-cache.ts";
import { type RouteMatch, Router } from "./router.ts";
import { type ControlDeps, ROUTES, type Route, toHttpError, validateBody } from "./routes.ts";

export interface ControlServerOptions {
  host: string;
  /** 0 = random. */
  port: number;
  certPem: string;
  keyPem: string;
  logger?: Logger;
  /** The API's state and hooks; without it only the health probes and /metrics answer. */
  deps?: Omit<ControlDeps, "logger">;
  /** Per client address (IPv6: per /64), before anything is parsed. Default 200/s, burst 400. */
  rateLimit?: RateLimiterOptions;
  /** Per signing key, once the signature verifies and the key is authorized. Default 50/s, burst 100. */
  identityRateLimit?: RateLimiterOptions;
  /** Handshake, header, request and body-rate deadlines, and the per-IP connection cap (see `ControlTimeouts`). */
  timeouts?: ControlTimeouts;
  /** Global cap on request-body bytes being received at once. Default 64 MiB. */
  maxInflightBytes?: number;
  /** The share of that cap one client address may hold. Default an eighth of it (8 MiB), at least 1 MiB. */
  maxInflightBytesPerIp?: number;
  nonces?: NonceStore;
  metrics?: BusMetrics;
  /** Called before each scrape (e.g. to read live gauges from nats-server). */
  beforeScrape?: () => Promise<void>;
  /** Reports whether the bus behind this control plane is healthy (`/healthz` and `/readyz`). */
  health?: () => Promise<{ ok: boolean; detail?: Record<string, unknown> }>;
  /** Reports whether the bus is alive — running or healing, not failed (`/livez`). Default: alive. */
  live?: () => { ok: boolean; detail?: Record<string, unknown> };
  /** Serves the blob routes (`/v1/rooms/:id/blobs…`) from this store; without it they are 404. */
  blobs?: Blobs;
  /** Origins whose pages may call this API from a browser (CORS); none by default. */
  corsOrigins?: string[];
}

const router = new Router<Route>(ROUTES);

/** The probe endpoints, by path; the value is the route label in metrics and logs. */
const HEALTH_PATHS = new Map<string, "healthz" | "readyz" | "livez">([
  ["/healthz", "healthz"],
  ["/readyz", "readyz"],
  ["/livez", "livez"],
]);

export class ControlServer {
  readonly #server: https.Server;
  readonly #opts: ControlServerOptions;
  readonly #logger: Logger;
  readonly #limiter: RateLimiter;
  readonly #identityLimiter: RateLimiter;
  readonly #inflight: InflightBytes;
  readonly #nonces: NonceStore;
  readonly #minBodyRate: MinBodyRate;
  readonly #connections: ConnectionsPerIp;
  readonly #corsOrigins: ReadonlySet<string>;
  readonly #console: ReturnType<typeof loadConsoleAssets> | undefined;
  /** What every handler gets: the deps with this server's logger, built once rather than per request. */
  readonly #routeDeps: ControlDeps | undefined;

  constructor(opts: ControlServerOptions) {
    this.#opts = opts;
    // The admin console (static files, lib/control/console.ts) comes with the API it drives.
    this.#console = opts.deps ? loadConsoleAssets() : undefined;
    this.#logger = opts.logger ?? silentLogger;
    this.#routeDeps = opts.deps ? { ...opts.deps, logger: this.#logger } : undefined;
    this.#corsOrigins = new Set(checkCorsOrigins(opts.corsOrigins ?? []));
    const timeouts = resolveTimeouts(opts.timeouts);
    this.#limiter = new RateLimiter(opts.rateLimit);
    this.#identityLimiter = new RateLimiter({ ...DEFAULT_IDENTITY_RATE_LIMIT, ...opts.identityRateLimit });
    this.#inflight = new InflightBytes({
      max: opts.maxInflightBytes ?? 64 * 1024 * 1024,
      ...(opts.maxInflightBytesPerIp !== undefined ? { perOwnerMax: opts.maxInflightBytesPerIp } : {}),
    });
    this.#minBodyRate = { bytesPerSec: timeouts.minBodyBytesPerSec, graceMs: timeouts.bodyGraceMs };
    this.#connections = new ConnectionsPerIp(timeouts.maxConnectionsPerIp);
    this.#nonces = opts.nonces ?? new NonceCache({ logger: this.#logger });
    const limits = serverLimits(timeouts);
    this.#server = https.createServer({ cert: opts.certPem, key: opts.keyPem, ...limits }, (req, res) => {
      void this.#handle(req, res);
    });
    this.#server.maxHeadersCount = MAX_HEADERS_COUNT;
    // Counted at TCP accept, before the TLS handshake costs us anything.
    this.#server.on("connection", (socket: import("node:net").Socket) => {
      if (!this.#connections.admit(socket)) this.#opts.metrics?.httpRejections.inc({ reason: "connection_limit" });
    });
    // Requests the HTTP parser refuses are answered as JSON, like every other refusal,
    // except the request timeout of an authenticated blob upload, which keeps going on
    // its own clock (see uploadOutlivesRequestTimeout).
    this.#server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
      if (opts.blobs && uploadOutlivesRequestTimeout(err, socket)) return;
      answerClientError(err, socket, this.#logger);
    });
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

  /** One request through the pipeline of the module comment; every refusal ends as JSON. */
  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const exchange: Exchange = { route: "unmatched" };
    this.#observe(req, res, exchange);
    try {
      this.#admit(req);
      if (answerCors(req, res, this.#corsOrigins)) return;
      const url = requestUrl(req);
      if (await this.#serveOperational(req, res, url, exchange)) return;
      if (this.#console && serveConsole(this.#console, req, res, url.pathname)) {
        exchange.route = "console";
        return;
      }
      const deps = this.#opts.deps;
      const blobs = this.#opts.blobs;
      const blobMatch = deps && blobs ? matchBlobRoute(req.method ?? "GET", url.pathname) : undefined;
      if (blobMatch && deps && blobs) {
        exchange.route = blobMatch.name;
        return await this.#serveBlob(blobMatch, req, res, { store: deps.store, blobs });
      }
      await this.#serveJson(req, res, url, exchange);
    } catch (err) {
      sendHttpError(res, toHttpError(err), this.#logger);
    }
  }

  /** Metrics and one log line per request, with an id the caller also gets (x-request-id). */
  #observe(req: IncomingMessage, res: ServerResponse, exchange: Exchange): void {
    const started = performance.now();
    const metrics = this.#opts.metrics;
    const requestId = randomUUID();
    res.setHeader("x-request-id", requestId);
    res.once("finish", () => {
      const ms = performance.now() - started;
      metrics?.httpRequests.inc({ route: exchange.route, status: String(res.statusCode) });
      metrics?.httpLatency.observe({ route: exchange.route }, ms / 1000);
      // The line's fields are built only when someone reads them: debug is off by default.
      if (!this.#logger.isLevelEnabled("debug")) return;
      this.#logger.debug(
        {
          component: "control",
          requestId,
          method: req.method,
          route: exchange.route,
          status: res.statusCode,
          ip: req.socket.remoteAddress,
          ms: Number(ms.toFixed(2)),
        },
        "request",
      );
    });
  }

  /** The per-IP token bucket: the first and cheapest refusal, before anything is parsed. */
  #admit(req: IncomingMessage): void {
    if (!this.#limiter.take(rateLimitKey(req.socket.remoteAddress))) {
      this.#opts.metrics?.httpRejections.inc({ reason: "rate_limit" });
      throw rateLimited();
    }
  }

  /**
   * /healthz, /readyz (the same checks: ready to serve), /livez (alive, not failed) and
   * /metrics, which need no deps; false when the request is for none of them.
   */
  async #serveOperational(req: IncomingMessage, res: ServerResponse, url: URL, exchange: Exchange): Promise<boolean> {
    const probe = HEALTH_PATHS.get(url.pathname);
    if (probe && (req.method === "GET" || req.method === "HEAD")) {
      exchange.route = probe;
      const health =
        probe === "livez"
          ? (this.#opts.live?.() ?? { ok: true })
          : this.#opts.health
            ? await this.#opts.health()
            : { ok: true };
      send(res, health.ok ? 200 : 503, { status: health.ok ? "ok" : "unavailable", ...health.detail });
      return true;
    }
    if (url.pathname === "/metrics" && req.method === "GET" && this.#opts.metrics) {
      exchange.route = "metrics";
      await this.#metrics(req, res);
      return true;
    }
    return false;
  }

  /** Blob bodies are streamed, so those routes run their own pipeline (blob-routes.ts). */
  async #serveBlob(
    match: BlobRouteMatch,
    req: IncomingMessage,
    res: ServerResponse,
    deps: { store: ControlDeps["store"]; blobs: Blobs },
  ): Promise<void> {
    await handleBlobRoute(match, {
      req,
      res,
      blobs: deps.blobs,
      store: deps.store,
      inflight: this.#inflight,
      minRate: this.#minBodyRate,
      logger: this.#logger,
      metrics: this.#opts.metrics,
      authenticate: async (bodySha256) => (await this.#authenticate(req, bodySha256, deps.store)).signPub ?? "",
    });
  }

  /** A JSON route: match, bounded body, signature, then the body's shape, then the handler. */
  async #serveJson(req: IncomingMessage, res: ServerResponse, url: URL, exchange: Exchange): Promise<void> {
    const deps = this.#opts.deps;
    const { route, params } = matchRoute(req, url, deps ? router.match(req.method ?? "GET", url.pathname) : undefined);
    exchange.route = route.name;
    const raw = await this.#readBody(req);
    let signer = "";
    if (route.auth === "signed") {
      // The empty body's hash is a constant: most signed requests are bodiless GETs and DELETEs.
      const auth = await this.#authenticate(req, raw.length === 0 ? EMPTY_SHA256 : sha256Hex(raw), deps!.store);
      if (this.#nonces instanceof NonceCache) this.#opts.metrics?.nonceCacheSize.set(this.#nonces.size);
      signer = auth.signPub;
    }
    const body = parseJsonBody(req, raw, route);
    const result = await route.handler({ req, url, params, signer, body, deps: this.#routeDeps! });
    if (result.status === 204) {
      res.writeHead(204);
      return void res.end();
    }
    send(res, result.status, result.body);
  }

  /** The body under the JSON ceiling and the global in-flight budget; refusals are counted. */
  async #readBody(req: IncomingMessage): Promise<Buffer> {
    return readBody(req, {
      limit: JSON_BODY_LIMIT,
      inflight: this.#inflight,
      owner: rateLimitKey(req.socket.remoteAddress),
      minRate: this.#minBodyRate,
    }).catch((err: unknown) => {
      const reason = err instanceof HttpError ? BODY_REJECTIONS[err.status] : undefined;
      if (reason) this.#opts.metrics?.httpRejections.inc({ reason });
      throw err;
    });
  }

  #authenticate(req: IncomingMessage, bodySha256: string, store: ControlDeps["store"]): Promise<AuthResult> {
    return authenticateRequest({
      method: req.method ?? "GET",
      uri: req.url ?? "/",
      headers: req.headers,
      bodySha256,
      store,
      nonces: this.#nonces,
      identityLimit: this.#identityLimiter,
      logger: this.#logger,
    });
  }

  async #metrics(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Loopback only: metrics show who connects how often, which is nobody else's business.
    if (!isLoopback(req.socket.remoteAddress)) throw new HttpError(403, "metrics are served to loopback clients only");
    await this.#opts.beforeScrape?.().catch((err: Error) => {
      this.#logger.warn({ component: "control", err: err.message }, "could not refresh live metrics");
    });
    const { contentType, body } = await this.#opts.metrics!.render();
    res.writeHead(200, { "content-type": contentType, "content-length": Buffer.byteLength(body) });
    res.end(body);
  }
}

/** The rejection metric's reason for each refusal of a body. */
const BODY_REJECTIONS: Record<number, string> = { 408: "body_too_slow", 413: "body_limit", 503: "inflight_limit" };

/** What the request's log line and metrics need once the response is finished. */
interface Exchange {
  route: string;
}

/**
 * The request's URL, routed on the path exactly as sent (and signed): a leading "//"
 * must not be read as a host, and dot segments are refused rather than resolved.
 */
function requestUrl(req: IncomingMessage): URL {
  const rawUrl = req.url ?? "/";
  if (!rawUrl.startsWith("/") || /(^|\/)\.{1,2}(\/|\?|$)|\/\//.test(rawUrl.split("?")[0]!)) {
    throw new HttpError(400, "the request path must be absolute, without empty, '.' or '..' segments");
  }
  return new URL(`https://control.invalid${rawUrl}`);
}

function matchRoute(
  req: IncomingMessage,
  url: URL,
  match: RouteMatch<Route> | { allow: string[] } | undefined,
): RouteMatch<Route> {
  if (!match) throw new HttpError(404, `no route for ${req.method} ${url.pathname.slice(0, 200)}`);
  if (!("route" in match)) {
    throw new HttpError(405, `${req.method} is not allowed here; use ${match.allow.join(" or ")}`, {
      headers: { allow: match.allow.join(", ") },
    });
  }
  return match;
}

/** The JSON body, `{}` for an empty body on a route with a schema, checked against that schema. */
function parseJsonBody(req: IncomingMessage, raw: Buffer, route: Route): unknown {
  let body: unknown;
  if (raw.length > 0) {
    if (!/^application\/json\b/i.test(req.headers["content-type"] ?? "")) {
      throw new HttpError(415, "send the body as application/json");
    }
    try {
      body = JSON.parse(raw.toString("utf8"));
    } catch {
      throw new HttpError(400, "the request body is not valid JSON");
    }
  } else if (route.schema) {
    body = {};
  }
  if (route.schema) validateBody(route, body);
  return body;
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.startsWith("::ffff:") ? address.slice(7) : address;
  return a === "::1" || /^127\./.test(a);
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body ?? null);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(res.req.method === "HEAD" ? undefined : text);
}

/** How each refusal of Node's HTTP parser is answered (see `answerClientError`). */
const CLIENT_ERRORS: Record<number, { reason: string; code: string; message: string }> = {
  400: {
    reason: "Bad Request",
    code: "BAD_REQUEST",
    message: "malformed HTTP request; percent-encode anything but printable ASCII in the URL",
  },
  408: { reason: "Request Timeout", code: "REQUEST_TIMEOUT", message: "the request took too long to arrive" },
  431: {
    reason: "Request Header Fields Too Large",
    code: "HEADERS_TOO_LARGE",
    message: "the request headers are too large; send fewer or shorter headers",
  },
};

/**
 * A request Node's parser refuses (bad request line, bad header, oversized headers,
 * timeout) never reaches the handler, and Node's own answer is a bare status line —
 * or nothing at all on a kept-alive connection. Answer it like every other refusal:
 * `{error, message}` JSON, then close, since the rest of the stream cannot be trusted.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: import("node:stream").Duplex, logger: Logger): void {
  // A response still being written to this socket cannot be followed by another one.
  const busy = (socket as { _httpMessage?: unknown })._httpMessage;
  // A failed or timed-out TLS handshake has no channel to answer on: writing plaintext
  // into it would keep the socket open waiting for a flush that never comes.
  if (err.code === "ECONNRESET" || /^ERR_(TLS|SSL)_/.test(err.code ?? "") || !socket.writable || busy) {
    socket.destroy();
    return;
  }
  const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
  const e = CLIENT_ERRORS[status]!;
  logger.debug({ component: "control", code: err.code }, "malformed request refused");
  const text = JSON.stringify(new HttpError(status, e.message, { code: e.code }).toJSON());
  socket.end(
    `HTTP/1.1 ${status} ${e.reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
}
