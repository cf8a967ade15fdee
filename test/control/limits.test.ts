import { once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import https from "node:https";
import tls from "node:tls";
import t, { type Test } from "tap";
import { HttpError, sendHttpError } from "../../lib/control/http-error.ts";
import {
  ConnectionsPerIp,
  DEFAULT_TIMEOUTS,
  InflightBytes,
  JSON_BODY_LIMIT,
  MAX_HEADERS_COUNT,
  RateLimiter,
  rateLimited,
  rateLimitKey,
  readBody,
  resolveTimeouts,
  SERVER_LIMITS,
  streamBody,
} from "../../lib/control/limits.ts";
import { sha256Hex } from "../../lib/crypto/canonical.ts";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../../lib/tls/index.ts";
import { tempDir } from "../helpers/fs.ts";
import { replyJson as reply } from "../helpers/http.ts";
import { listenLocal } from "../helpers/net.ts";

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

const MiB = 1024 * 1024;

async function serve(
  t: Test,
  handler: Handler,
  options: https.ServerOptions = {},
): Promise<{ port: number; ca: string; server: https.Server }> {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  const cert = await loadOrCreateServerCertificate(dir, ca, { name: "control" });
  const server = https.createServer(
    { ...SERVER_LIMITS, ...options, cert: cert.certPem, key: cert.keyPem },
    (req, res) => {
      handler(req, res).catch((err) => sendHttpError(res, err));
    },
  );
  server.maxHeadersCount = MAX_HEADERS_COUNT;
  return { port: await listenLocal(t, server), ca: ca.certPem, server };
}

interface RawResult {
  status: number | undefined;
  text: string;
  /** Body bytes this client managed to hand to the socket. */
  sent: number;
  error: string | undefined;
}

/**
 * A raw TLS client: writes `head`, then (optionally) `total` body bytes in 64 KiB
 * pieces — chunk-framed or not — respecting backpressure, until done or the server
 * cuts it off. Resolves when the connection closes.
 */
function rawRequest(
  port: number,
  ca: string,
  head: string,
  body?: { total: number; chunked: boolean; end?: boolean },
): Promise<RawResult> {
  return new Promise((resolve) => {
    let text = "";
    let sent = 0;
    let error: string | undefined;
    let closed = false;
    const socket = tls.connect({ host: "127.0.0.1", port, ca });
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      text += d;
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      error ??= err.code ?? err.message;
    });
    socket.on("close", () => {
      closed = true;
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : undefined, text, sent, error });
    });
    socket.once("secureConnect", async () => {
      socket.write(head);
      if (!body) return;
      const piece = Buffer.alloc(64 * 1024, 0x61);
      const frame = body.chunked
        ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n")])
        : piece;
      while (!closed && sent < body.total) {
        const n = Math.min(piece.length, body.total - sent);
        const ok = socket.write(n === piece.length ? frame : framed(piece.subarray(0, n), body.chunked));
        sent += n;
        if (!ok) {
          await Promise.race([once(socket, "drain"), once(socket, "close")]).catch(() => {});
        }
      }
      if (!closed && body.chunked && body.end !== false) socket.write("0\r\n\r\n");
    });
  });
}

function framed(data: Buffer, chunked: boolean): Buffer {
  return chunked ? Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from("\r\n")]) : data;
}

function head(opts: { method?: string; path?: string; headers?: Record<string, string | number> }): string {
  const lines = [`${opts.method ?? "POST"} ${opts.path ?? "/"} HTTP/1.1`, "host: 127.0.0.1", "connection: close"];
  for (const [k, v] of Object.entries(opts.headers ?? {})) lines.push(`${k}: ${v}`);
  return `${lines.join("\r\n")}\r\n\r\n`;
}

t.test("readBody: exactly the limit is accepted, one byte more is 413 — declared or chunked", async (t) => {
  const limit = 64 * 1024;
  const inflight = new InflightBytes({ max: 10 * MiB });
  const { port, ca } = await serve(t, async (req, res) => {
    const body = await readBody(req, { limit, inflight });
    reply(res, { bytes: body.length, sha256: sha256Hex(body) });
  });
  for (const chunked of [false, true]) {
    const what = chunked ? "chunked" : "content-length";
    const lengthHeader = (n: number): Record<string, string | number> =>
      chunked ? { "transfer-encoding": "chunked" } : { "content-length": n };
    const exact = await rawRequest(port, ca, head({ headers: lengthHeader(limit) }), { total: limit, chunked });
    t.equal(exact.status, 200, `${what}: exactly the limit`);
    t.match(exact.text, `"bytes":${limit}`);
    const over = await rawRequest(port, ca, head({ headers: lengthHeader(limit + 1) }), { total: limit + 1, chunked });
    t.equal(over.status, 413, `${what}: limit + 1`);
    t.match(over.text, /"error":"body_too_large","message":"request body is larger than the limit of 64 KiB/);
    t.match(over.text, /connection: close/i, "the connection is closed, the rest is never drained");
    const empty = await rawRequest(port, ca, head({ headers: lengthHeader(0) }), { total: 0, chunked });
    t.equal(empty.status, 200, `${what}: empty body`);
    t.match(empty.text, `"sha256":"${sha256Hex("")}"`);
  }
  t.equal(inflight.used, 0, "every reservation was released");
});

t.test("a declared 400 MB body is refused before a byte is read", async (t) => {
  let reached = 0;
  const { port, ca } = await serve(t, async (req, res) => {
    reached++;
    await readBody(req, { limit: JSON_BODY_LIMIT });
    reply(res, { unexpected: true });
  });
  // Only the headers are sent: a server that tried to read the body would wait for it
  // until its request timeout; the answer arrives without a single body byte.
  const res = await rawRequest(port, ca, head({ headers: { "content-length": 400 * MiB } }));
  t.equal(res.status, 413);
  t.match(res.text, /larger than the limit of 1 MiB/);
  t.equal(reached, 1);
});

t.test("400 MB senders (honest Content-Length and chunked) are cut at the ceiling; RSS stays bounded", async (t) => {
  const { port, ca } = await serve(t, async (req, res) => {
    const body = await readBody(req, { limit: JSON_BODY_LIMIT });
    reply(res, { bytes: body.length });
  });
  // Warm up TLS, the parser and the allocator so the baseline is honest.
  await rawRequest(port, ca, head({ headers: { "content-length": 1024 } }), { total: 1024, chunked: false });
  const total = 400 * MiB;
  for (const chunked of [false, true]) {
    global.gc?.();
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 5);
    const headers: Record<string, string | number> = chunked
      ? { "transfer-encoding": "chunked" }
      : { "content-length": total };
    const res = await rawRequest(port, ca, head({ headers }), { total, chunked });
    clearInterval(sampler);
    peak = Math.max(peak, process.memoryUsage().rss);
    const what = chunked ? "chunked" : "content-length";
    // The refusal lingers (FIN, then a bounded wait) instead of resetting, so even a
    // sender still pushing its body reads the 413.
    t.equal(res.status, 413, `${what}: refused with 413 (${res.error ?? "clean close"})`);
    t.ok(res.sent < 64 * MiB, `${what}: cut off after ${(res.sent / MiB).toFixed(1)} MiB of 400`);
    t.ok(peak - before < 96 * MiB, `${what}: RSS grew ${((peak - before) / MiB).toFixed(1)} MiB (< 96)`);
  }
});

t.test("streamBody: ceiling, backpressure, hash check, errors", async (t) => {
  const limit = 256 * 1024;
  let maxPending = 0;
  let mode: "ok" | "fail" = "ok";
  const inflight = new InflightBytes({ max: MiB });
  const { port, ca } = await serve(t, async (req, res) => {
    let pending = 0;
    let stored = 0;
    const result = await streamBody(req, {
      limit,
      inflight,
      expectSha256: req.headers["x-expect"] as string | undefined,
      onChunk: async (chunk) => {
        pending++;
        maxPending = Math.max(maxPending, pending);
        await new Promise((r) => setImmediate(r));
        if (mode === "fail") throw new HttpError(507, "disk full");
        stored += chunk.length;
        pending--;
      },
    });
    reply(res, { ...result, stored });
  });
  const data = Buffer.alloc(limit, 0x61);
  for (const chunked of [false, true]) {
    const what = chunked ? "chunked" : "content-length";
    const lengthHeader = (n: number): Record<string, string | number> =>
      chunked ? { "transfer-encoding": "chunked" } : { "content-length": n };
    const exact = await rawRequest(
      port,
      ca,
      head({ headers: { ...lengthHeader(limit), "x-expect": sha256Hex(data) } }),
      {
        total: limit,
        chunked,
      },
    );
    t.equal(exact.status, 200, `${what}: exactly the limit`);
    t.match(exact.text, `{"bytes":${limit},"sha256":"${sha256Hex(data)}","stored":${limit}}`);
    const over = await rawRequest(port, ca, head({ headers: lengthHeader(limit + 1) }), { total: limit + 1, chunked });
    t.equal(over.status, 413, `${what}: limit + 1`);
    const flood = await rawRequest(port, ca, head({ headers: lengthHeader(100 * MiB) }), {
      total: 100 * MiB,
      chunked,
    });
    t.equal(flood.status, 413, `${what}: a 100 MB flood is refused`);
    t.ok(flood.sent < 64 * MiB, `${what}: cut off after ${(flood.sent / MiB).toFixed(1)} MiB`);
    const lie = await rawRequest(
      port,
      ca,
      head({ headers: { ...lengthHeader(1000), "x-expect": sha256Hex("something else") } }),
      { total: 1000, chunked },
    );
    t.equal(lie.status, 401, `${what}: body does not match the declared hash`);
    t.match(lie.text, /auth_body_mismatch/);
  }
  t.equal(maxPending, 1, "one chunk at a time: the request waits for onChunk");
  mode = "fail";
  const failed = await rawRequest(port, ca, head({ headers: { "content-length": 1000 } }), {
    total: 1000,
    chunked: false,
  });
  t.equal(failed.status, 507, "an onChunk failure is the route's answer");
  t.equal(inflight.used, 0, "in-flight bytes released");
});

t.test("InflightBytes caps bytes being received; readBody answers 503 when over", async (t) => {
  const cap = new InflightBytes({ max: 100 });
  t.ok(cap.tryAcquire(60));
  t.notOk(cap.tryAcquire(41), "would pass the cap");
  t.equal(cap.used, 60, "a refused reservation takes nothing");
  t.ok(cap.tryAcquire(40));
  cap.release(100);
  t.equal(cap.used, 0);
  cap.release(5);
  t.equal(cap.used, 0, "never negative");
  t.throws(() => cap.tryAcquire(-1), RangeError);
  t.throws(() => new InflightBytes({ max: -1 }), RangeError);

  const inflight = new InflightBytes({ max: 100 * 1024, perOwnerMax: 100 * 1024 });
  const seen: string[] = [];
  const { port, ca } = await serve(t, async (req, res) => {
    try {
      await readBody(req, { limit: JSON_BODY_LIMIT, inflight, owner: rateLimitKey(req.socket.remoteAddress) });
    } catch (err) {
      seen.push(`${req.url} ${(err as HttpError).code}`);
      throw err;
    }
    reply(res, { ok: true });
  });
  // A sender that declares 80 KiB and sends nothing: it holds no budget.
  const idler = tls.connect({ host: "127.0.0.1", port, ca }, () => {
    idler.write(head({ path: "/idle", headers: { "content-length": 80 * 1024 } }));
  });
  idler.on("error", () => {});
  const beside = await rawRequest(port, ca, head({ headers: { "content-length": 90 * 1024 } }), {
    total: 90 * 1024,
    chunked: false,
  });
  t.equal(beside.status, 200, "a declared length reserves nothing: 90 KiB fits beside an idle 80 KiB");
  // A sender that sends 80 KiB of its 96 KiB and stalls: what arrived is held.
  const staller = tls.connect({ host: "127.0.0.1", port, ca }, () => {
    staller.write(head({ path: "/stall", headers: { "content-length": 96 * 1024 } }));
    staller.write(Buffer.alloc(80 * 1024));
  });
  staller.on("error", () => {});
  while (inflight.used < 80 * 1024) await new Promise((r) => setTimeout(r, 5));
  t.equal(inflight.used, 80 * 1024, "bytes count as they arrive");
  const busy = await rawRequest(port, ca, head({ headers: { "content-length": 40 * 1024 } }), {
    total: 40 * 1024,
    chunked: false,
  });
  t.equal(busy.status, 503, "40 KiB more does not fit");
  t.match(busy.text, /"error":"busy"/);
  t.match(busy.text, /retry-after: 1/i);
  const small = await rawRequest(port, ca, head({ headers: { "content-length": 1024 } }), {
    total: 1024,
    chunked: false,
  });
  t.equal(small.status, 200, "1 KiB still fits");
  staller.destroy();
  idler.destroy();
  while (inflight.used !== 0) await new Promise((r) => setTimeout(r, 5));
  t.equal(inflight.used, 0, "a sender that went away releases what it held");
  t.same(seen.sort(), ["/ BUSY", "/idle BODY_INCOMPLETE", "/stall BODY_INCOMPLETE"].sort());
});

t.test("InflightBytes: one owner holds at most its share; others still fit", async (t) => {
  const cap = new InflightBytes({ max: 100, perOwnerMax: 30 });
  t.ok(cap.tryAcquire(30, "a"));
  t.notOk(cap.tryAcquire(1, "a"), "a is at its share");
  t.equal(cap.usedBy("a"), 30);
  t.ok(cap.tryAcquire(30, "b"), "b is not affected");
  t.ok(cap.tryAcquire(30, "c"));
  t.notOk(cap.tryAcquire(11, "d"), "the global cap still holds");
  cap.release(30, "a");
  t.equal(cap.usedBy("a"), 0);
  t.ok(cap.tryAcquire(10, "a"), "released share can be taken again");
  t.equal(new InflightBytes({ max: 64 * MiB }).perOwnerMax, 8 * MiB, "default share: an eighth");
  t.equal(new InflightBytes({ max: 100 }).perOwnerMax, MiB, "never below one JSON body");
  t.throws(() => new InflightBytes({ max: 10, perOwnerMax: -1 }), RangeError);
});

t.test(
  "readBody's minimum rate: idle, trickling and burst-then-stall bodies get 408; a steady one is read",
  async (t) => {
    const minRate = { bytesPerSec: 1024, graceMs: 300 };
    const { port, ca } = await serve(t, async (req, res) => {
      const body = await readBody(req, { limit: JSON_BODY_LIMIT, minRate });
      reply(res, { bytes: body.length });
    });
    const paced = (declared: number, step: number, everyMs: number, upTo: number) =>
      new Promise<string>((resolve) => {
        let text = "";
        let sent = 0;
        let timer: NodeJS.Timeout | undefined;
        const socket = tls.connect({ host: "127.0.0.1", port, ca }, () => {
          socket.write(head({ headers: { "content-length": declared } }));
          timer = setInterval(() => {
            if (sent >= upTo) return;
            const n = Math.min(step, upTo - sent);
            socket.write(Buffer.alloc(n, 0x20));
            sent += n;
          }, everyMs);
        });
        socket.setEncoding("utf8");
        socket.on("data", (d: string) => {
          text += d;
        });
        socket.on("error", () => {});
        socket.on("close", () => {
          clearInterval(timer);
          resolve(text);
        });
      });
    const [idle, trickle, stall, steady] = await Promise.all([
      paced(1000, 0, 50, 0),
      paced(1000, 1, 50, 1000),
      paced(4096, 4000, 10, 4000),
      paced(2048, 256, 50, 2048),
    ]);
    t.match(idle, /^HTTP\/1\.1 408/, "idle: 408");
    t.match(idle, /"error":"body_too_slow"/);
    t.match(trickle, /^HTTP\/1\.1 408/, "20 bytes/s: 408");
    t.match(stall, /^HTTP\/1\.1 408/, "a burst then a stall: 408");
    t.match(steady, /^HTTP\/1\.1 200/, "5 KiB/s: read to the end");
    t.match(steady, /"bytes":2048/);
  },
);

t.test(
  "streamBody's minimum rate: idle and trickling uploads get 408; time spent in onChunk is not the sender's",
  async (t) => {
    const minRate = { bytesPerSec: 1024, graceMs: 300 };
    let slowDisk = false;
    const { port, ca } = await serve(t, async (req, res) => {
      const result = await streamBody(req, {
        limit: MiB,
        minRate,
        // Our side holding the request for 1.2 s, four windows, must not count against the sender.
        onChunk: () => (slowDisk ? new Promise((r) => setTimeout(r, 1200)) : undefined),
      });
      reply(res, { bytes: result.bytes });
    });
    const paced = (declared: number, step: number, everyMs: number, upTo: number) =>
      new Promise<string>((resolve) => {
        let text = "";
        let sent = 0;
        let timer: NodeJS.Timeout | undefined;
        const socket = tls.connect({ host: "127.0.0.1", port, ca }, () => {
          socket.write(head({ method: "PUT", headers: { "content-length": declared } }));
          timer = setInterval(() => {
            if (sent >= upTo) return;
            const n = Math.min(step, upTo - sent);
            socket.write(Buffer.alloc(n, 0x20));
            sent += n;
          }, everyMs);
        });
        socket.setEncoding("utf8");
        socket.on("data", (d: string) => {
          text += d;
        });
        socket.on("error", () => {});
        socket.on("close", () => {
          clearInterval(timer);
          resolve(text);
        });
      });
    const [idle, trickle, stall] = await Promise.all([
      paced(1000, 0, 50, 0),
      paced(1000, 1, 50, 1000),
      paced(8192, 4000, 10, 4000),
    ]);
    t.match(idle, /^HTTP\/1\.1 408/, "idle upload: 408");
    t.match(idle, /"error":"body_too_slow"/);
    t.match(trickle, /^HTTP\/1\.1 408/, "20 bytes/s: 408");
    t.match(stall, /^HTTP\/1\.1 408/, "a burst then a stall: 408");
    slowDisk = true;
    const held = await paced(2048, 2048, 10, 2048);
    t.match(held, /^HTTP\/1\.1 200/, "a whole body held up by a slow onChunk is read to the end");
    t.match(held, /"bytes":2048/);
  },
);

t.test("resolveTimeouts: defaults, overrides, and refusal of bad values", async (t) => {
  t.same(resolveTimeouts(), DEFAULT_TIMEOUTS);
  t.equal(resolveTimeouts({ handshakeMs: 1000 }).handshakeMs, 1000);
  t.equal(resolveTimeouts({ handshakeMs: 1000 }).headersMs, DEFAULT_TIMEOUTS.headersMs);
  for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => resolveTimeouts({ bodyGraceMs: bad }), { code: "INVALID_ARGUMENT", field: "timeouts.bodyGraceMs" });
  }
  t.throws(() => new ConnectionsPerIp(0), RangeError);
});

t.test("RateLimiter: a burst, then refusal for one address while another is served", async (t) => {
  let now = 0;
  const limiter = new RateLimiter({ ratePerSec: 10, burst: 5, now: () => now });
  for (let i = 0; i < 5; i++) t.ok(limiter.take("198.51.100.7"), `burst ${i + 1}`);
  t.notOk(limiter.take("198.51.100.7"), "bucket empty");
  t.ok(limiter.take("198.51.100.8"), "another address is served");
  now += 100;
  t.ok(limiter.take("198.51.100.7"), "one token back after 1/rate s");
  t.notOk(limiter.take("198.51.100.7"));
  now += 60_000;
  for (let i = 0; i < 5; i++) t.ok(limiter.take("198.51.100.7"), "refilled, but only up to the burst");
  t.notOk(limiter.take("198.51.100.7"));

  t.ok(limiter.take("::ffff:198.51.100.9"));
  t.equal(rateLimitKey("::ffff:198.51.100.9"), "198.51.100.9", "IPv4-mapped IPv6 is the IPv4 address");
  t.equal(rateLimitKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  t.equal(rateLimitKey("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::/64", "one /64, one bucket");
  t.equal(rateLimitKey("2001:db8::1"), "2001:db8:0:0::/64");
  t.equal(rateLimitKey("::1"), "0:0:0:0::/64");
  t.equal(rateLimitKey("fe80::1%eth0"), "fe80:0:0:0::/64");
  t.equal(rateLimitKey("64:ff9b::192.0.2.1"), "64:ff9b:0:0::/64");
  t.equal(rateLimitKey(undefined), "unknown");
  const v6 = new RateLimiter({ ratePerSec: 1, burst: 2, now: () => now });
  t.ok(v6.take("2001:db8:1:2::1"));
  t.ok(v6.take("2001:db8:1:2::2"));
  t.notOk(v6.take("2001:db8:1:2::3"), "rotating addresses inside a /64 does not escape the limit");
  t.ok(v6.take("2001:db8:1:3::1"), "the next /64 is someone else");

  const defaults = new RateLimiter();
  t.equal(defaults.ratePerSec, 200);
  t.equal(defaults.burst, 400);
  t.equal(defaults.maxTrackedIps, 10_000);
  t.throws(() => new RateLimiter({ ratePerSec: 0 }), RangeError);
  t.throws(() => new RateLimiter({ burst: 0 }), RangeError);
  t.throws(() => new RateLimiter({ maxTrackedIps: 1 }), RangeError);
});

t.test("RateLimiter memory is bounded by maxTrackedIps", async (t) => {
  let now = 0;
  const limiter = new RateLimiter({ ratePerSec: 1, burst: 3, maxTrackedIps: 100, now: () => now });
  let maxSize = 0;
  for (let i = 0; i < 20_000; i++) {
    limiter.take(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    maxSize = Math.max(maxSize, limiter.size);
  }
  t.ok(maxSize <= 100, `never more than 100 tracked (max ${maxSize})`);
  // A busy client that keeps coming back keeps its (empty) bucket across generations.
  const busy = new RateLimiter({ ratePerSec: 1, burst: 3, maxTrackedIps: 100, now: () => now });
  for (let i = 0; i < 3; i++) busy.take("192.0.2.1");
  let refused = 0;
  for (let i = 0; i < 1000; i++) {
    busy.take(`10.0.${i >> 8}.${i & 255}`);
    if (!busy.take("192.0.2.1")) refused++;
  }
  t.equal(refused, 1000, "interleaved new addresses do not reset an active client's bucket");
  now += 1;
});

t.test("a flood from one address gets 429 on a real server while another address is served", async (t) => {
  const limiter = new RateLimiter({ ratePerSec: 1, burst: 5 });
  const { port, ca } = await serve(t, async (req, res) => {
    if (!limiter.take(req.socket.remoteAddress)) return sendHttpError(res, rateLimited());
    reply(res, { ok: true });
  });
  const get = (localAddress: string) =>
    new Promise<number>((resolve, reject) => {
      const req = https.request({ host: "127.0.0.1", port, path: "/", ca, localAddress, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on("error", reject);
      req.end();
    });
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) statuses.push(await get("127.0.0.1"));
  t.same(statuses.slice(0, 5), [200, 200, 200, 200, 200], "the burst is served");
  t.ok(statuses.slice(5).filter((s) => s === 429).length >= 6, `then 429s (${statuses.join(",")})`);
  t.equal(await get("127.0.0.2"), 200, "another address is still served");
});

t.test("socket-level limits: 431 for oversized headers, slow senders are cut", async (t) => {
  t.same(SERVER_LIMITS, {
    maxHeaderSize: 16 * 1024,
    handshakeTimeout: 5_000,
    headersTimeout: 5_000,
    requestTimeout: 30_000,
    keepAliveTimeout: 5_000,
    connectionsCheckingInterval: 1_000,
  });
  let handled = 0;
  // Same settings, but timeouts short enough for a test; the mechanism is what is checked.
  const { port, ca } = await serve(
    t,
    async (req, res) => {
      handled++;
      const body = await readBody(req, { limit: JSON_BODY_LIMIT });
      reply(res, { bytes: body.length });
    },
    { headersTimeout: 300, requestTimeout: 600, connectionsCheckingInterval: 50 },
  );
  const fits = await rawRequest(
    port,
    ca,
    head({ headers: { "x-padding": "a".repeat(15 * 1024), "content-length": 0 } }),
  );
  t.equal(fits.status, 200, "15 KiB of headers fit");
  const big = await rawRequest(
    port,
    ca,
    head({ headers: { "x-padding": "a".repeat(17 * 1024), "content-length": 0 } }),
  );
  t.equal(big.status, 431, "17 KiB of headers: 431");
  const many: Record<string, string> = {};
  for (let i = 0; i < 2000; i++) many[`x-h${i}`] = "v";
  const tooMany = await rawRequest(port, ca, head({ headers: many }));
  t.equal(tooMany.status, 431, "many small headers add up to the same limit");
  t.equal(handled, 1, "no oversized request reached the handler");

  // Slowloris: headers trickle in and are never finished.
  const loris = await new Promise<{ text: string; sentLines: number }>((resolve) => {
    let text = "";
    let sentLines = 0;
    const socket = tls.connect({ host: "127.0.0.1", port, ca }, () => {
      socket.write("GET / HTTP/1.1\r\nhost: x\r\n");
      const timer = setInterval(() => {
        if (socket.writable) {
          socket.write(`x-slow-${sentLines++}: y\r\n`);
        }
      }, 20);
      socket.on("close", () => {
        clearInterval(timer);
        resolve({ text, sentLines });
      });
    });
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      text += d;
    });
    socket.on("error", () => {});
  });
  t.match(loris.text, /^HTTP\/1\.1 408/, "the server gave up on the unfinished headers (408) and closed");
  t.equal(handled, 1, "the handler never ran");

  // A slow body: headers complete, the body never does.
  const slowBody = await new Promise<string>((resolve) => {
    let text = "";
    const socket = tls.connect({ host: "127.0.0.1", port, ca }, () => {
      socket.write(head({ headers: { "content-length": 1000 } }));
      const timer = setInterval(() => {
        if (socket.writable) socket.write("a");
      }, 20);
      socket.on("close", () => {
        clearInterval(timer);
        resolve(text);
      });
    });
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      text += d;
    });
    socket.on("error", () => {});
  });
  t.match(slowBody, /^HTTP\/1\.1 408/, "requestTimeout cut the trickling body (408) and closed");
});

t.test("readBody and streamBody refuse bad input without reading", async (t) => {
  const { port, ca } = await serve(t, async (req, res) => {
    if (req.url === "/bad-limit") {
      try {
        await readBody(req, { limit: -1 });
      } catch (err) {
        return reply(res, { error: (err as Error).name });
      }
    }
    if (req.url === "/twice") {
      await readBody(req, { limit: 100 });
      await readBody(req, { limit: 100 });
    }
    if (req.url === "/stream-declared") await streamBody(req, { limit: 10, onChunk: () => {} });
    reply(res, { unexpected: true });
  });
  const bad = await rawRequest(port, ca, head({ path: "/bad-limit", headers: { "content-length": 0 } }));
  t.match(bad.text, /"error":"RangeError"/, "a negative limit is a programming error");
  const twice = await rawRequest(port, ca, head({ path: "/twice", headers: { "content-length": 2 } }), {
    total: 2,
    chunked: false,
  });
  t.equal(twice.status, 400, "a body cannot be read twice");
  t.match(twice.text, /body_incomplete/);
  const declared = await rawRequest(port, ca, head({ path: "/stream-declared", headers: { "content-length": 11 } }));
  t.equal(declared.status, 413, "streamBody refuses an over-declared length up front");
});

t.test("sendHttpError: generic 500 for unknown errors, detail only in the log", async (t) => {
  const { port, ca } = await serve(t, async () => {
    throw new Error("SELECT * FROM users WHERE signPub = '...' at /var/lib/unibus/state.db");
  });
  const res = await rawRequest(port, ca, head({ headers: { "content-length": 0 } }));
  t.equal(res.status, 500);
  t.match(res.text, /\{"error":"internal","message":"internal error"\}$/);
  t.notMatch(res.text, /SELECT|state\.db/);
});
