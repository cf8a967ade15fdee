/**
 * What an unauthenticated peer can cost us, bounded before any body is read or any
 * signature checked: socket-level header limits and timeouts, body ceilings, a
 * per-IP token bucket and a global cap on body bytes being received.
 */
import type { IncomingMessage } from "node:http";
import net from "node:net";
import { ContentHashVerifier, sha256Hex } from "../crypto/index.ts";
import { InvalidArgumentError, StateError } from "../errors.ts";
import { HttpError } from "./http-error.ts";

/**
 * The control plane's deadlines and connection bounds, all operator settings
 * (`ControlServerOptions.timeouts`). The defaults are far above what a person or a
 * bot on a slow link needs and far below what lets idle peers pile up.
 */
export interface ControlTimeouts {
  /** The TLS handshake must finish within this, ms (default 5000; Node's own is 120 s). */
  handshakeMs?: number;
  /** A request's headers must arrive within this, ms (default 5000). */
  headersMs?: number;
  /** The whole request must arrive within this, ms (default 30000). */
  requestMs?: number;
  /** A JSON body must arrive at this many bytes/s or more over every `bodyGraceMs` window, else 408 (default 4096). */
  minBodyBytesPerSec?: number;
  /** The window over which that rate is measured, ms (default 5000): an idle body is cut after about this long. */
  bodyGraceMs?: number;
  /** Concurrent connections from one address (IPv6: one /64), counted before TLS (default 128). */
  maxConnectionsPerIp?: number;
}

export const DEFAULT_TIMEOUTS: Required<ControlTimeouts> = {
  handshakeMs: 5_000,
  headersMs: 5_000,
  requestMs: 30_000,
  minBodyBytesPerSec: 4096,
  bodyGraceMs: 5_000,
  maxConnectionsPerIp: 128,
};

/** The defaults under `timeouts`, each checked: a typo must not disable a deadline. */
export function resolveTimeouts(timeouts: ControlTimeouts = {}): Required<ControlTimeouts> {
  const out = { ...DEFAULT_TIMEOUTS, ...timeouts };
  for (const [name, value] of Object.entries(out)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new InvalidArgumentError(`timeouts.${name}`, `timeouts.${name} must be a positive whole number`);
    }
  }
  return out;
}

/**
 * Options for `https.createServer`. `connectionsCheckingInterval` is how often Node
 * enforces the header and request timeouts (its default, 30 s, would let a slow
 * sender hold a socket for far longer than they say).
 */
export function serverLimits(timeouts: Required<ControlTimeouts>) {
  return {
    maxHeaderSize: 16 * 1024,
    handshakeTimeout: timeouts.handshakeMs,
    headersTimeout: timeouts.headersMs,
    requestTimeout: timeouts.requestMs,
    keepAliveTimeout: 5_000,
    connectionsCheckingInterval: Math.min(1_000, timeouts.headersMs),
  } as const;
}

/** The server options under the default timeouts. */
export const SERVER_LIMITS = serverLimits(DEFAULT_TIMEOUTS);

/** `server.maxHeadersCount`: headers beyond it are dropped by Node. */
export const MAX_HEADERS_COUNT = 64;

/** Ceiling for JSON request bodies. */
export const JSON_BODY_LIMIT = 1024 * 1024;

function tooLarge(limit: number): HttpError {
  return new HttpError(413, `request body is larger than the limit of ${formatBytes(limit)} for this route`, {
    closeConnection: true,
  });
}

function busy(): HttpError {
  return new HttpError(503, "the control plane is receiving too much data right now; try again shortly", {
    code: "BUSY",
    closeConnection: true,
    headers: { "retry-after": "1" },
  });
}

function incomplete(cause?: unknown): HttpError {
  return new HttpError(400, "the request body was not received completely", { code: "BODY_INCOMPLETE", cause });
}

/** A handler read the body before us: a bug on our side, reported as an incomplete body. */
function alreadyConsumed(): StateError {
  return new StateError(["unread"], "consumed", "reading the request body");
}

function formatBytes(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} bytes`;
}

/** The declared Content-Length, undefined when absent (chunked). 413 when above `limit`. */
function declaredLength(req: IncomingMessage, limit: number): number | undefined {
  const raw = req.headers["content-length"];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new HttpError(400, "the Content-Length header is not a valid length", { closeConnection: true });
  }
  if (n > limit) throw tooLarge(limit);
  return n;
}

const EMPTY_BODY = Buffer.alloc(0);
const NO_BODY = Promise.resolve(EMPTY_BODY);

/** True when the request declares no body at all: no Content-Length, no Transfer-Encoding. */
export function hasNoBody(req: IncomingMessage): boolean {
  const h = req.headers;
  return h["content-length"] === undefined && h["transfer-encoding"] === undefined;
}

function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 0) throw new RangeError("body limit must be a non-negative integer");
}

/**
 * Stops taking data from a request we have refused. The socket is not destroyed
 * here, so the caller can still answer (send the HttpError with `sendHttpError`,
 * which closes the connection); TCP backpressure holds the sender meanwhile, and
 * the server's requestTimeout ends it if nobody answers.
 */
function stopReading(req: IncomingMessage, onData: (chunk: Buffer) => void): void {
  req.off("data", onData);
  req.pause();
}

type Finish<T> = (err: unknown, value?: T) => void;

interface BodyListeners {
  data: (chunk: Buffer) => void;
  end: () => void;
  close: () => void;
  /** Runs once when `finish` is first called, before the promise settles. */
  settle?: (failed: boolean) => void;
}

/**
 * Feeds the request's events to the listeners `make` returns until one of them calls
 * `finish`; later calls are ignored. A refusal stops reading (`stopReading`) but leaves
 * the socket to the caller, who still has to answer.
 */
function consumeRequest<T>(req: IncomingMessage, make: (finish: Finish<T>) => BodyListeners): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const finish: Finish<T> = (err, value) => {
      if (settled) return;
      settled = true;
      req.off("end", on.end);
      req.off("error", onError);
      req.off("close", on.close);
      on.settle?.(Boolean(err));
      if (err) {
        stopReading(req, on.data);
        reject(err);
      } else resolve(value!);
    };
    const on = make(finish);
    const onError = (err: Error) => finish(incomplete(err));
    if (req.readableEnded) return finish(incomplete(alreadyConsumed()));
    req.on("data", on.data);
    req.on("end", on.end);
    req.on("error", onError);
    req.on("close", on.close);
  });
}

export interface ReadBodyOptions {
  /** Maximum body size in bytes. */
  limit: number;
  /** When given, each chunk is counted in flight as it arrives, until the body is read or refused; 503 when over. */
  inflight?: InflightBytes;
  /** Whose share of `inflight` the chunks count against (the client address). */
  owner?: string;
  /** When given, a body slower than this on average after the grace period is cut with 408. */
  minRate?: MinBodyRate;
}

export interface MinBodyRate {
  bytesPerSec: number;
  graceMs: number;
}

function tooSlow(): HttpError {
  return new HttpError(408, "the request body arrived too slowly; send it at once, not in a trickle", {
    code: "BODY_TOO_SLOW",
    closeConnection: true,
  });
}

/**
 * Cuts a body that has not kept `rate` over any window of `graceMs`: an idle or
 * trickling sender, or one that sends a burst and then stalls, keeps a socket and its
 * bytes for about one window, not for the whole request timeout. While `ours()` is
 * true the request is paused on our side (a chunk still being written): the window
 * starts again, since a slow disk is not the sender's fault. Returns the function that
 * stops the watch.
 */
function watchRate(rate: MinBodyRate, received: () => number, cut: () => void, ours = () => false): () => void {
  const needed = (rate.bytesPerSec * rate.graceMs) / 1000;
  let windowStart = performance.now();
  let windowBytes = received();
  const timer = setInterval(
    () => {
      const now = performance.now();
      if (ours()) {
        windowStart = now;
        windowBytes = received();
        return;
      }
      if (now - windowStart < rate.graceMs) return;
      if (received() - windowBytes < needed) return cut();
      windowStart = now;
      windowBytes = received();
    },
    Math.max(50, Math.min(500, rate.graceMs / 4)),
  );
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * Reads the whole body into memory, never holding more than `limit` bytes of it:
 * an over-declared Content-Length is refused before a byte is read, and a chunked or
 * lying sender is cut as soon as it passes the ceiling (413, connection to be
 * closed). Bytes count in flight as they arrive, so a sender that declares a length
 * and then idles holds none of the budget. Rejects with HttpError only.
 */
export function readBody(req: IncomingMessage, opts: ReadBodyOptions): Promise<Buffer> {
  const { limit, inflight, owner, minRate } = opts;
  checkLimit(limit);
  // A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112
  // §6.3), and node:http's parser has already ended it: nothing to wait for, count or
  // time, so the listeners, the promise and the rate timer are skipped. node:http
  // drains the ended stream itself once the response is written.
  if (hasNoBody(req)) return NO_BODY;
  let declared: number | undefined;
  try {
    declared = declaredLength(req, limit);
  } catch (err) {
    return Promise.reject(err);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  let held = 0;
  return consumeRequest<Buffer>(req, (finish) => {
    const unwatch =
      minRate && declared !== 0
        ? watchRate(
            minRate,
            () => total,
            () => finish(tooSlow()),
          )
        : () => {};
    return {
      data: (chunk) => {
        total += chunk.length;
        if (total > limit) return finish(tooLarge(limit));
        if (inflight && !inflight.tryAcquire(chunk.length, owner)) return finish(busy());
        held += chunk.length;
        chunks.push(chunk);
      },
      end: () => {
        if (declared !== undefined && total !== declared) return finish(incomplete());
        finish(undefined, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total));
      },
      close: () => finish(incomplete()),
      settle: (failed) => {
        unwatch();
        inflight?.release(held, owner);
        if (failed) chunks.length = 0;
      },
    };
  });
}

export interface StreamBodyOptions {
  /** Maximum body size in bytes. */
  limit: number;
  /**
   * Receives each chunk; the request is paused until the returned promise settles
   * (write to disk here, awaiting backpressure). A rejection aborts with that error.
   */
  onChunk: (chunk: Buffer) => void | Promise<void>;
  /**
   * The declared, signed `x-unibus-content-sha256` (authenticated with
   * `bodySha256: "declared"`): at the end the body must hash to it, else 401 and the
   * caller discards what it stored.
   */
  expectSha256?: string;
  /** When given, each chunk is counted as in flight until `onChunk` has taken it; 503 when over. */
  inflight?: InflightBytes;
  /** When given, a body that falls below this rate (time spent in `onChunk` not counted) is cut with 408. */
  minRate?: MinBodyRate;
}

export interface StreamBodyResult {
  bytes: number;
  /** Lowercase hex SHA-256 of the whole body. */
  sha256: string;
}

/**
 * Streams the body through `onChunk` without buffering it, with the same ceiling
 * rules as `readBody`. On rejection the caller must discard whatever `onChunk` stored.
 */
export function streamBody(req: IncomingMessage, opts: StreamBodyOptions): Promise<StreamBodyResult> {
  checkLimit(opts.limit);
  let declared: number | undefined;
  let verifier: ContentHashVerifier;
  try {
    declared = declaredLength(req, opts.limit);
    // An unsigned caller hashes anyway, so `sha256` is always reported.
    verifier = new ContentHashVerifier(opts.expectSha256 ?? sha256Hex(""));
  } catch (err) {
    return Promise.reject(err);
  }
  return consumeRequest<StreamBodyResult>(req, (finish) => streamListeners(req, opts, declared, verifier, finish));
}

/**
 * Hands each chunk to `onChunk` with the request paused until it is taken (the
 * consumer's backpressure is ours), counting it in flight meanwhile; completes once
 * the body ended and every chunk was taken.
 */
function streamListeners(
  req: IncomingMessage,
  opts: StreamBodyOptions,
  declared: number | undefined,
  verifier: ContentHashVerifier,
  finish: Finish<StreamBodyResult>,
): BodyListeners {
  const { limit, onChunk, inflight } = opts;
  let total = 0;
  let pending = 0;
  let ended = false;
  let settled = false;
  const complete = () => {
    if (declared !== undefined && total !== declared) return finish(incomplete());
    const outcome = checkedHash(verifier, opts.expectSha256);
    if (outcome instanceof HttpError) return finish(outcome);
    finish(undefined, { bytes: total, sha256: outcome });
  };
  const taken = (chunk: Buffer, failure?: { err: unknown }) => {
    pending--;
    inflight?.release(chunk.length);
    if (failure) return finish(failure.err);
    if (settled) return;
    if (ended) complete();
    else req.resume();
  };
  const data = (chunk: Buffer) => {
    total += chunk.length;
    if (total > limit) return finish(tooLarge(limit));
    if (inflight && !inflight.tryAcquire(chunk.length)) return finish(busy());
    verifier.update(chunk);
    pending++;
    req.pause();
    handOver(onChunk, chunk).then(
      () => taken(chunk),
      (err: unknown) => taken(chunk, { err }),
    );
  };
  const end = () => {
    ended = true;
    if (pending === 0) complete();
  };
  const close = () => {
    if (!ended) finish(incomplete());
  };
  const unwatch =
    opts.minRate && declared !== 0
      ? watchRate(
          opts.minRate,
          () => total,
          () => finish(tooSlow()),
          () => pending > 0,
        )
      : () => {};
  const settle = () => {
    settled = true;
    unwatch();
  };
  return { data, end, close, settle };
}

/** `onChunk`'s outcome as a promise, a synchronous throw included. */
function handOver(onChunk: StreamBodyOptions["onChunk"], chunk: Buffer): Promise<void> {
  try {
    return Promise.resolve(onChunk(chunk));
  } catch (err) {
    return Promise.reject(err);
  }
}

/** The body's hash, or the 401 when it is not the signed one. */
function checkedHash(verifier: ContentHashVerifier, expectSha256: string | undefined): string | HttpError {
  const sha256 = verifier.digestHex();
  if (expectSha256 !== undefined && sha256 !== expectSha256) {
    return new HttpError(401, "signature does not verify: the body does not match x-unibus-content-sha256", {
      code: "AUTH_BODY_MISMATCH",
    });
  }
  return sha256;
}

export interface RateLimiterOptions {
  /** Sustained requests per second per client. Default 200. */
  ratePerSec?: number;
  /** Bucket size: requests a client may make at once. Default 400. */
  burst?: number;
  /** Memory bound: at most this many clients are tracked. Default 10 000. */
  maxTrackedIps?: number;
  /** Monotonic clock in ms; defaults to performance.now. */
  now?: () => number;
}

/** The per-signing-key bucket's defaults (`rateLimit.perIdentity`): far above what a person or a bot needs. */
export const DEFAULT_IDENTITY_RATE_LIMIT = { ratePerSec: 50, burst: 100 } as const;

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * A token bucket per client address (IPv6 grouped by /64: one host owns a whole
 * /64, so a per-address bucket would be no limit at all). Memory is bounded by
 * keeping two generations of buckets, each at most maxTrackedIps/2: when the current
 * one fills, the previous is dropped whole. A dropped client starts again with a full
 * bucket, which only ever forgives; lookups and eviction are O(1).
 */
export class RateLimiter {
  readonly ratePerSec: number;
  readonly burst: number;
  readonly maxTrackedIps: number;
  readonly #now: () => number;
  #current = new Map<string, Bucket>();
  #previous = new Map<string, Bucket>();

  constructor(opts: RateLimiterOptions = {}) {
    this.ratePerSec = opts.ratePerSec ?? 200;
    this.burst = opts.burst ?? 400;
    this.maxTrackedIps = opts.maxTrackedIps ?? 10_000;
    if (!(this.ratePerSec > 0) || !Number.isFinite(this.ratePerSec)) {
      throw new RangeError("RateLimiter: ratePerSec must be a positive number");
    }
    if (!(this.burst >= 1) || !Number.isFinite(this.burst)) throw new RangeError("RateLimiter: burst must be >= 1");
    if (!Number.isSafeInteger(this.maxTrackedIps) || this.maxTrackedIps < 2) {
      throw new RangeError("RateLimiter: maxTrackedIps must be an integer >= 2");
    }
    this.#now = opts.now ?? (() => performance.now());
  }

  /** Clients currently tracked (never more than maxTrackedIps). */
  get size(): number {
    return this.#current.size + this.#previous.size;
  }

  /** Takes one token for `ip`; false means refuse (429). */
  take(ip: string | undefined): boolean {
    const key = rateLimitKey(ip);
    const now = this.#now();
    let bucket = this.#current.get(key);
    if (!bucket) {
      bucket = this.#previous.get(key);
      if (bucket) this.#previous.delete(key);
      else bucket = { tokens: this.burst, at: now };
      if (this.#current.size >= Math.floor(this.maxTrackedIps / 2)) {
        this.#previous = this.#current;
        this.#current = new Map();
      }
      this.#current.set(key, bucket);
    }
    const elapsed = Math.max(0, now - bucket.at);
    bucket.tokens = Math.min(this.burst, bucket.tokens + (elapsed * this.ratePerSec) / 1000);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}

/** The 429 to answer when `RateLimiter.take` says no. */
export function rateLimited(): HttpError {
  return new HttpError(429, "too many requests from this address; slow down and retry shortly", {
    headers: { "retry-after": "1" },
    closeConnection: true,
  });
}

/**
 * The bucket key for a peer address: IPv4 as is (also when IPv4-mapped), IPv6 by
 * its /64 prefix, anything unparseable as itself.
 */
export function rateLimitKey(address: string | undefined): string {
  if (!address) return "unknown";
  if (address.toLowerCase().startsWith("::ffff:") && net.isIPv4(address.slice(7))) return address.slice(7);
  const bare = address.split("%")[0]!;
  if (!net.isIPv6(bare)) return address;
  const [head, tail] = bare.includes("::") ? bare.split("::") : [bare, undefined];
  const headGroups = head ? head.split(":") : [];
  let groups = headGroups;
  if (tail !== undefined) {
    const tailGroups = tail ? tail.split(":") : [];
    const tailCount = tailGroups.reduce((n, g) => n + (g.includes(".") ? 2 : 1), 0);
    groups = [...headGroups, ...Array<string>(8 - headGroups.length - tailCount).fill("0"), ...tailGroups];
  }
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(":")}::/64`;
}

/**
 * A global cap on request-body bytes being received at once, taken as bytes arrive
 * (a declared length reserves nothing: an idle sender that declares 1 MiB holds no
 * budget). Each owner (client address) may hold at most `perOwnerMax` of it, so one
 * address cannot take the whole budget from everyone else.
 */
export class InflightBytes {
  readonly max: number;
  readonly perOwnerMax: number;
  #used = 0;
  readonly #byOwner = new Map<string, number>();

  constructor(opts: { max: number; perOwnerMax?: number }) {
    if (!Number.isSafeInteger(opts?.max) || opts.max < 0) {
      throw new RangeError("InflightBytes: max must be a non-negative integer");
    }
    this.max = opts.max;
    this.perOwnerMax = opts.perOwnerMax ?? Math.max(JSON_BODY_LIMIT, Math.floor(opts.max / 8));
    if (!Number.isSafeInteger(this.perOwnerMax) || this.perOwnerMax < 0) {
      throw new RangeError("InflightBytes: perOwnerMax must be a non-negative integer");
    }
  }

  get used(): number {
    return this.#used;
  }

  /** Bytes `owner` holds now. */
  usedBy(owner: string): number {
    return this.#byOwner.get(owner) ?? 0;
  }

  /** Reserves `n` bytes (for `owner`, when given); false (reserve nothing) when that would pass a cap. */
  tryAcquire(n: number, owner?: string): boolean {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("InflightBytes: n must be a non-negative integer");
    if (this.#used + n > this.max) return false;
    if (owner !== undefined) {
      const held = this.usedBy(owner);
      if (held + n > this.perOwnerMax) return false;
      this.#byOwner.set(owner, held + n);
    }
    this.#used += n;
    return true;
  }

  release(n: number, owner?: string): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("InflightBytes: n must be a non-negative integer");
    this.#used = Math.max(0, this.#used - n);
    if (owner === undefined) return;
    const left = this.usedBy(owner) - n;
    if (left > 0) this.#byOwner.set(owner, left);
    else this.#byOwner.delete(owner);
  }
}

/**
 * Concurrent connections per client address (grouped like the rate limiter's keys),
 * counted from TCP accept, before the TLS handshake: past `maxPerIp` a new socket is
 * destroyed at once, so one address cannot hold every socket the process can open.
 */
export class ConnectionsPerIp {
  readonly maxPerIp: number;
  readonly #open = new Map<string, number>();

  constructor(maxPerIp: number) {
    if (!Number.isSafeInteger(maxPerIp) || maxPerIp < 1) {
      throw new RangeError("ConnectionsPerIp: maxPerIp must be a positive integer");
    }
    this.maxPerIp = maxPerIp;
  }

  /** Counts `socket` until it closes; false (and the socket destroyed) when its address is at the cap. */
  admit(socket: net.Socket): boolean {
    const key = rateLimitKey(socket.remoteAddress);
    const open = this.#open.get(key) ?? 0;
    if (open >= this.maxPerIp) {
      socket.destroy();
      return false;
    }
    this.#open.set(key, open + 1);
    socket.once("close", () => {
      const left = (this.#open.get(key) ?? 1) - 1;
      if (left > 0) this.#open.set(key, left);
      else this.#open.delete(key);
    });
    return true;
  }

  /** Connections open now from `address`'s group. */
  openFrom(address: string): number {
    return this.#open.get(rateLimitKey(address)) ?? 0;
  }
}
