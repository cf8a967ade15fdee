import type { IncomingMessage, ServerResponse } from "node:http";
import https from "node:https";
import path from "node:path";
import t, { type Test } from "tap";
import { authenticateRequest } from "../../lib/control/auth.ts";
import { HttpError, sendHttpError } from "../../lib/control/http-error.ts";
import { JSON_BODY_LIMIT, RateLimiter, readBody, SERVER_LIMITS, streamBody } from "../../lib/control/limits.ts";
import { NonceCache, type NonceStore } from "../../lib/control/nonce-cache.ts";
import { AUTH_HEADERS, sha256Hex, signRequest } from "../../lib/crypto/canonical.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { openStore, type Store } from "../../lib/store/index.ts";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../../lib/tls/index.ts";
import { tempDir } from "../helpers/fs.ts";
import { replyJson as reply } from "../helpers/http.ts";
import { captureLogger } from "../helpers/log.ts";
import { listenLocal } from "../helpers/net.ts";

// A real HTTPS server whose one route reads the body, authenticates the request the
// way the control plane does, and answers with the verified key. Real signatures,
// real SQLite allowlist.

interface Harness {
  port: number;
  ca: string;
  store: Store;
  nonces: NonceCache;
  state: { now: () => number; nonces: NonceStore; identityLimit?: RateLimiter };
  logs: Record<string, unknown>[];
  admin: Identity;
  member: Identity;
  request(opts: {
    method?: string;
    path: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
  }): Promise<{ status: number; headers: Record<string, unknown>; json: Record<string, unknown> }>;
  signed(
    id: Identity,
    opts: { method?: string; path: string; body?: string; now?: number },
  ): { method: string; path: string; headers: Record<string, string>; body?: string };
}

async function harness(t: Test): Promise<Harness> {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  const cert = await loadOrCreateServerCertificate(dir, ca, { name: "control" });
  const store = await openStore({ backend: "sqlite", file: path.join(dir, "state.db") });
  t.teardown(() => store.close());
  const admin = createIdentity();
  const member = createIdentity();
  await store.addUser({ signPub: admin.signPub, handle: "admin", role: "admin" });
  await store.addUser({ signPub: member.signPub, handle: "member", role: "member" });

  const { logger, lines: logs } = captureLogger();
  const nonces = new NonceCache({ logger });
  const state: Harness["state"] = { now: Date.now, nonces };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    try {
      if (req.url?.startsWith("/blob")) {
        // A streamed route: authenticate on the declared hash, then check it while streaming.
        const auth = await authenticateRequest({
          method: req.method!,
          uri: req.url,
          headers: req.headers,
          bodySha256: "declared",
          store,
          nonces: state.nonces,
          now: state.now,
          logger,
        });
        let stored = 0;
        const result = await streamBody(req, {
          limit: 4 * 1024 * 1024,
          expectSha256: req.headers[AUTH_HEADERS.contentSha256] as string,
          onChunk: (chunk) => {
            stored += chunk.length;
          },
        });
        return reply(res, { ...auth, bytes: result.bytes, stored });
      }
      const body = await readBody(req, { limit: JSON_BODY_LIMIT });
      const auth = await authenticateRequest({
        method: req.method!,
        uri: req.url!,
        headers: req.headers,
        bodySha256: sha256Hex(body),
        store,
        nonces: state.nonces,
        ...(state.identityLimit ? { identityLimit: state.identityLimit } : {}),
        now: state.now,
        logger,
      });
      reply(res, { signPub: auth.signPub });
    } catch (err) {
      sendHttpError(res, err, logger);
    }
  };
  const server = https.createServer({ ...SERVER_LIMITS, cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    void handle(req, res);
  });
  const port = await listenLocal(t, server);
  const agent = new https.Agent({ ca: ca.certPem, keepAlive: true });
  t.teardown(() => agent.destroy());

  return {
    port,
    ca: ca.certPem,
    store,
    nonces,
    state,
    logs,
    admin,
    member,
    request: ({ method = "GET", path: p, headers = {}, body }) =>
      new Promise((resolve, reject) => {
        const req = https.request({ host: "127.0.0.1", port, method, path: p, headers, agent }, (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            resolve({ status: res.statusCode!, headers: res.headers, json: text ? JSON.parse(text) : {} });
          });
        });
        req.on("error", reject);
        req.end(body);
      }),
    signed: (id, { method = "GET", path: p, body, now }) => ({
      method,
      path: p,
      body,
      headers: signRequest(id, { method, uri: p, body, now }),
    }),
  };
}

const NOT_AUTHORIZED = { error: "auth_not_authorized", message: "key is not authorized on this bus" };
const REPLAYED = { error: "auth_replayed", message: "nonce already used (replayed request)" };
const BAD_SIGNATURE = { error: "auth_bad_signature", message: "signature does not verify" };

t.test("a signed request from a registered key passes and names its key", async (t) => {
  const h = await harness(t);
  const get = await h.request(h.signed(h.member, { path: "/rooms/r1?epoch=2" }));
  t.equal(get.status, 200);
  t.same(get.json, { signPub: h.member.signPub });
  const body = JSON.stringify({ name: "ops", encrypt: true });
  const post = await h.request(h.signed(h.admin, { method: "POST", path: "/rooms", body }));
  t.equal(post.status, 200);
  t.same(post.json, { signPub: h.admin.signPub });
  t.equal(h.nonces.size, 2, "both nonces remembered");
});

t.test(
  "an unregistered key is 'not authorized' — repeated, it never becomes 'replayed' nor fills the cache",
  async (t) => {
    const h = await harness(t);
    const stranger = createIdentity();
    const req = h.signed(stranger, { path: "/rooms" });
    for (let i = 0; i < 25; i++) {
      const res = await h.request(req);
      t.equal(res.status, 401);
      t.same(res.json, NOT_AUTHORIZED, `attempt ${i + 1}`);
      t.equal(res.headers["www-authenticate"], "UNIBUS-ED25519-V1");
    }
    for (let i = 0; i < 25; i++) {
      const res = await h.request(h.signed(stranger, { path: `/rooms?i=${i}` }));
      t.same(res.json, NOT_AUTHORIZED, "distinct nonces too");
    }
    t.equal(h.nonces.size, 0, "the nonce cache did not grow");
  },
);

t.test("a replayed request is refused", async (t) => {
  const h = await harness(t);
  const req = h.signed(h.member, { method: "POST", path: "/rooms", body: "{}" });
  t.equal((await h.request(req)).status, 200);
  const again = await h.request(req);
  t.equal(again.status, 401);
  t.same(again.json, REPLAYED);
  t.equal((await h.request(req)).status, 401, "and every time after");
});

t.test("clock skew: ±29 s passes, ±31 s is refused", async (t) => {
  const h = await harness(t);
  const T = Date.now();
  h.state.now = () => T;
  for (const offset of [-29_000, 29_000, -30_000, 30_000]) {
    const res = await h.request(h.signed(h.member, { path: "/rooms", now: T + offset }));
    t.equal(res.status, 200, `request clock ${offset / 1000} s off`);
  }
  for (const offset of [-31_000, 31_000, -3_600_000]) {
    const res = await h.request(h.signed(h.member, { path: "/rooms", now: T + offset }));
    t.equal(res.status, 401, `request clock ${offset / 1000} s off`);
    t.same(res.json, {
      error: "auth_clock_skew",
      message: "request timestamp is outside the allowed skew of 30 s; check this machine's clock",
    });
  }
});

t.test("a replay stays refused for the whole time its timestamp is acceptable", async (t) => {
  const h = await harness(t);
  const T = Date.now();
  const req = h.signed(h.member, { path: "/rooms", now: T });
  h.state.now = () => T - 30_000; // first seen as early as the skew allows
  t.equal((await h.request(req)).status, 200);
  h.state.now = () => T + 30_000; // replayed as late as the skew allows
  t.same((await h.request(req)).json, REPLAYED);
  h.state.now = () => T + 30_001;
  t.equal((await h.request(req)).json.error, "auth_clock_skew", "after that the skew check takes over");
});

t.test("tampering with any signed part breaks the signature", async (t) => {
  const h = await harness(t);
  const body = JSON.stringify({ role: "member" });
  const fresh = () => h.signed(h.member, { method: "POST", path: "/rooms/r1/members?notify=1", body });

  const tamperedBody = await h.request({ ...fresh(), body: JSON.stringify({ role: "admin" }) });
  t.equal(tamperedBody.status, 401, "body");
  t.same(tamperedBody.json, {
    error: "auth_body_mismatch",
    message: "signature does not verify: the body does not match x-unibus-content-sha256",
  });

  const both = fresh();
  const tamperedBoth = await h.request({
    ...both,
    body: "{}",
    headers: { ...both.headers, [AUTH_HEADERS.contentSha256]: sha256Hex("{}") },
  });
  t.same(tamperedBoth.json, BAD_SIGNATURE, "body and its declared hash together");

  t.same((await h.request({ ...fresh(), method: "PUT" })).json, BAD_SIGNATURE, "method");
  t.same((await h.request({ ...fresh(), path: "/rooms/r2/members?notify=1" })).json, BAD_SIGNATURE, "path");
  t.same((await h.request({ ...fresh(), path: "/rooms/r1/members?notify=0" })).json, BAD_SIGNATURE, "query");
  t.same((await h.request({ ...fresh(), path: "/rooms/r1/members" })).json, BAD_SIGNATURE, "query removed");
  t.same((await h.request({ ...fresh(), path: "/rooms/r1/./members?notify=1" })).json, BAD_SIGNATURE, "dot segment");
  const ts = fresh();
  ts.headers[AUTH_HEADERS.timestamp] = String(Number(ts.headers[AUTH_HEADERS.timestamp]) + 1);
  t.same((await h.request(ts)).json, BAD_SIGNATURE, "timestamp");
  const nonce = fresh();
  const original = nonce.headers[AUTH_HEADERS.nonce]!;
  nonce.headers[AUTH_HEADERS.nonce] = `${original.slice(0, -1)}${original.endsWith("A") ? "B" : "A"}`;
  t.same((await h.request(nonce)).json, BAD_SIGNATURE, "nonce");
  const key = fresh();
  key.headers[AUTH_HEADERS.key] = h.admin.signPub;
  t.same((await h.request(key)).json, BAD_SIGNATURE, "claiming another registered key");
  t.equal(h.nonces.size, 0, "no tampered request touched the nonce cache");
});

t.test("every missing header is named", async (t) => {
  const h = await harness(t);
  for (const header of Object.values(AUTH_HEADERS)) {
    const req = h.signed(h.member, { path: "/rooms" });
    delete req.headers[header];
    const res = await h.request(req);
    t.equal(res.status, 401);
    t.same(res.json, { error: "auth_missing_header", message: `missing ${header} header` });
  }
  const unsigned = await h.request({ path: "/rooms" });
  t.same(unsigned.json, { error: "auth_missing_header", message: "missing x-unibus-key header" });
});

t.test("malformed and hostile header values are 401s, never 500s", async (t) => {
  const h = await harness(t);
  const huge = "A".repeat(12_000);
  const cases: [string, string][] = [
    [AUTH_HEADERS.key, "not hex at all"],
    [AUTH_HEADERS.key, "g".repeat(64)],
    [AUTH_HEADERS.key, "00".repeat(32)],
    [AUTH_HEADERS.key, huge],
    [AUTH_HEADERS.timestamp, "yesterday"],
    [AUTH_HEADERS.timestamp, "1".repeat(40)],
    [AUTH_HEADERS.nonce, "!!!!!!!!!!!!!!!!!!!!!!!!"],
    [AUTH_HEADERS.nonce, huge],
    [AUTH_HEADERS.contentSha256, "xyz"],
    [AUTH_HEADERS.signature, "not/base64+url=="],
    [AUTH_HEADERS.signature, huge],
  ];
  for (const [header, value] of cases) {
    const req = h.signed(h.member, { path: "/rooms" });
    req.headers[header] = value;
    const res = await h.request(req);
    t.equal(res.status, 401, `${header}: ${value.slice(0, 16)}`);
    t.ok(
      res.json.message === BAD_SIGNATURE.message ||
        String(res.json.message).startsWith(`${header} header is malformed`),
      String(res.json.message),
    );
    t.notMatch(String(res.json.message), value.slice(0, 32), "the value is not echoed");
  }
  const dup = h.signed(h.member, { path: "/rooms" });
  const res = await new Promise<number>((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: h.port,
        path: "/rooms",
        ca: h.ca,
        headers: { ...dup.headers, [AUTH_HEADERS.nonce]: [dup.headers[AUTH_HEADERS.nonce]!, "B".repeat(22)] },
      },
      (r) => {
        r.resume();
        resolve(r.statusCode!);
      },
    );
    req.on("error", reject);
    req.end();
  });
  t.equal(res, 401, "a repeated header is malformed");
});

t.test("revoked and deleted users are refused", async (t) => {
  const h = await harness(t);
  t.equal((await h.request(h.signed(h.member, { path: "/rooms" }))).status, 200);
  await h.store.revokeUser(h.member.signPub);
  t.same((await h.request(h.signed(h.member, { path: "/rooms" }))).json, NOT_AUTHORIZED, "revoked");
  await h.store.deleteUser(h.member.signPub);
  t.same((await h.request(h.signed(h.member, { path: "/rooms" }))).json, NOT_AUTHORIZED, "deleted");
});

t.test("a store that cannot answer fails closed with a generic 503", async (t) => {
  const h = await harness(t);
  await h.store.close();
  const res = await h.request(h.signed(h.member, { path: "/rooms" }));
  t.equal(res.status, 503);
  t.same(res.json, {
    error: "auth_unavailable",
    message: "the control plane cannot check authorization right now; try again shortly",
  });
  t.equal(res.headers["retry-after"], "5");
  t.notMatch(JSON.stringify(res.json), /sqlite|SELECT|\.db|\/tmp|unibus-test/i, "no internals in the body");
  t.equal(h.nonces.size, 0, "not admitted");
  t.ok(
    h.logs.some((l) => l.level === "error" && l.code === "AUTH_UNAVAILABLE"),
    "the detail went to the log",
  );
});

t.test("a nonce store that fails or is full refuses (503), never admits", async (t) => {
  const h = await harness(t);
  h.state.nonces = {
    checkAndRemember: async () => {
      throw new Error("kv quorum lost");
    },
  };
  const down = await h.request(h.signed(h.member, { path: "/rooms" }));
  t.equal(down.status, 503);
  t.notMatch(String(down.json.message), /quorum/);
  h.state.nonces = new NonceCache({ max: 2, maxPerOwner: 1 });
  t.equal((await h.request(h.signed(h.member, { path: "/rooms" }))).status, 200);
  t.equal((await h.request(h.signed(h.admin, { path: "/rooms" }))).status, 200);
  const third = createIdentity();
  await h.store.addUser({ signPub: third.signPub, handle: "third", role: "member" });
  const full = await h.request(h.signed(third, { path: "/rooms" }));
  t.equal(full.status, 503);
  t.same(full.json, {
    error: "auth_nonce_cache_full",
    message: "the control plane is too busy to accept new requests; try again shortly",
  });
});

t.test("one key flooding the nonce cache gets 429 for itself; another key is still served", async (t) => {
  const h = await harness(t);
  h.state.nonces = new NonceCache({ max: 20, maxPerOwner: 5 });
  const statuses: number[] = [];
  for (let i = 0; i < 30; i++) statuses.push((await h.request(h.signed(h.member, { path: "/rooms" }))).status);
  t.same(statuses.slice(0, 5), [200, 200, 200, 200, 200]);
  t.same(new Set(statuses.slice(5)), new Set([429]), "the flooder is refused, not everyone");
  const quota = await h.request(h.signed(h.member, { path: "/rooms" }));
  t.equal(quota.json.error, "auth_nonce_quota");
  t.equal(quota.headers["retry-after"], "5");
  for (let i = 0; i < 5; i++) {
    t.equal((await h.request(h.signed(h.admin, { path: "/rooms" }))).status, 200, "another key during the flood");
  }
  const stranger = createIdentity();
  for (let i = 0; i < 10; i++) {
    const res = await h.request(h.signed(stranger, { path: "/rooms" }));
    t.equal(res.json.error, "auth_not_authorized", "an unregistered key never reaches the cache");
  }
  t.equal(h.nonces.size, 0, "the harness' own cache was untouched");
});

t.test("per-identity rate limit: a key past its bucket gets 429 before the nonce cache", async (t) => {
  const h = await harness(t);
  let now = 0;
  h.state.identityLimit = new RateLimiter({ ratePerSec: 1, burst: 3, now: () => now });
  const cache = new NonceCache();
  h.state.nonces = cache;
  for (let i = 0; i < 3; i++) t.equal((await h.request(h.signed(h.member, { path: "/rooms" }))).status, 200);
  const limited = await h.request(h.signed(h.member, { path: "/rooms" }));
  t.equal(limited.status, 429);
  t.same(limited.json, {
    error: "rate_limited_identity",
    message: "too many requests signed by this key; slow down and retry shortly",
  });
  t.equal(cache.heldBy(h.member.signPub), 3, "a refused request took no nonce");
  t.equal((await h.request(h.signed(h.admin, { path: "/rooms" }))).status, 200, "another key is served");
  now += 1000;
  t.equal((await h.request(h.signed(h.member, { path: "/rooms" }))).status, 200, "the bucket refills");
  const stranger = createIdentity();
  for (let i = 0; i < 5; i++) await h.request(h.signed(stranger, { path: "/rooms" }));
  t.equal(h.state.identityLimit.size, 2, "an unregistered key never gets a bucket");
});

t.test("the checks run in order: headers, skew, signature, allowlist, nonce", async (t) => {
  const h = await harness(t);
  const T = Date.now();
  h.state.now = () => T;
  const stranger = createIdentity();

  const skewedAndMissing = h.signed(h.member, { path: "/rooms", now: T + 60_000 });
  delete skewedAndMissing.headers[AUTH_HEADERS.signature];
  t.equal((await h.request(skewedAndMissing)).json.error, "auth_missing_header", "headers before skew");

  const skewedAndForged = h.signed(h.member, { path: "/rooms", now: T + 60_000 });
  skewedAndForged.headers[AUTH_HEADERS.signature] = "A".repeat(86);
  t.equal((await h.request(skewedAndForged)).json.error, "auth_clock_skew", "skew before signature");

  const forgedStranger = h.signed(stranger, { path: "/rooms", now: T });
  forgedStranger.headers[AUTH_HEADERS.signature] = "A".repeat(86);
  t.equal((await h.request(forgedStranger)).json.error, "auth_bad_signature", "signature before allowlist");

  const replayOfRevoked = h.signed(h.admin, { path: "/rooms", now: T });
  t.equal((await h.request(replayOfRevoked)).status, 200);
  await h.store.revokeUser(h.admin.signPub);
  t.same((await h.request(replayOfRevoked)).json, NOT_AUTHORIZED, "allowlist before nonce");

  const replay = h.signed(h.member, { path: "/rooms", now: T });
  t.equal((await h.request(replay)).status, 200);
  await h.store.close();
  t.equal((await h.request(replay)).status, 503, "a store failure refuses before the nonce is consulted");
});

t.test("there is no mode that lets an unsigned request through", async (t) => {
  const h = await harness(t);
  const unsigned = await h.request({ path: "/rooms" });
  t.equal(unsigned.status, 401, "refused, never served anonymously");
  t.equal(h.nonces.size, 0, "the nonce cache is untouched");
});

t.test("a streamed body is authenticated on its declared hash and checked while streaming", async (t) => {
  const h = await harness(t);
  const blob = Buffer.alloc(3 * 1024 * 1024 + 7, 0x5a);
  const ok = await h.request({
    method: "PUT",
    path: "/blob",
    body: blob,
    headers: signRequest(h.member, { method: "PUT", uri: "/blob", bodySha256: sha256Hex(blob) }),
  });
  t.equal(ok.status, 200);
  t.same(ok.json, { signPub: h.member.signPub, bytes: blob.length, stored: blob.length });

  const other = Buffer.from(blob);
  other[other.length - 1] = 0;
  const lie = await h.request({
    method: "PUT",
    path: "/blob",
    body: other,
    headers: signRequest(h.member, { method: "PUT", uri: "/blob", bodySha256: sha256Hex(blob) }),
  });
  t.equal(lie.status, 401, "the body did not match the signed hash");
  t.equal(lie.json.error, "auth_body_mismatch");

  const stranger = await h.request({
    method: "PUT",
    path: "/blob",
    body: blob,
    headers: signRequest(createIdentity(), { method: "PUT", uri: "/blob", bodySha256: sha256Hex(blob) }),
  });
  t.same(stranger.json, NOT_AUTHORIZED, "refused before a byte of the body is read");
});

t.test("HttpError keeps internals out of what the caller sees", async (t) => {
  const err = new HttpError(503, "try again", { cause: new Error("SQLITE_BUSY at /var/lib/x.db") });
  t.equal(err.code, "UNAVAILABLE");
  t.same(err.toJSON(), { error: "unavailable", message: "try again" });
  t.equal(err.message, "try again");
  t.equal(new HttpError(418, "odd").code, "BAD_REQUEST");
  t.equal(new HttpError(599, "odd").code, "INTERNAL");
});
