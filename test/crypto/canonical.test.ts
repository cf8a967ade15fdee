import fc from "fast-check";
import t from "tap";
import {
  AUTH_HEADERS,
  type CanonicalRequestParts,
  ContentHashVerifier,
  canonicalRequest,
  EMPTY_SHA256,
  newNonce,
  parseSignedHeaders,
  requestUriOf,
  type SignedHeaders,
  SignedRequestError,
  sha256Hex,
  signRequest,
  URI_MAX,
  verifySignedRequest,
} from "../../lib/crypto/canonical.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { InvalidArgumentError } from "../../lib/errors.ts";

const id = createIdentity();
const other = createIdentity();
const NONCE = "AAAAAAAAAAAAAAAAAAAAAA";

function parts(over: Partial<CanonicalRequestParts> = {}): CanonicalRequestParts {
  return {
    method: "GET",
    uri: "/rooms/r1?epoch=2",
    timestamp: 1_700_000_000_000,
    nonce: NONCE,
    bodySha256: EMPTY_SHA256,
    ...over,
  };
}

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof InvalidArgumentError) return err.field;
    throw err;
  }
  return undefined;
}

t.test("the canonical request is six fixed lines", async (t) => {
  t.equal(
    canonicalRequest(parts({ method: "post" })),
    `UNIBUS-ED25519-V1\nPOST\n/rooms/r1?epoch=2\n1700000000000\n${NONCE}\n${EMPTY_SHA256}`,
  );
  t.equal(canonicalRequest(parts({ timestamp: "1700000000000" })), canonicalRequest(parts()), "number or decimal text");
  t.equal(EMPTY_SHA256, sha256Hex(""));
  t.equal(sha256Hex("abc"), sha256Hex(Buffer.from("abc")));
});

t.test("the URI is signed exactly as sent: no decoding, no normalisation", async (t) => {
  const forms = [
    "/a/b",
    "/a/./b",
    "/a/../b",
    "/a//b",
    "/a%2Fb",
    "/a%2fb",
    "/A/b",
    "/a/b?",
    "/a/b?x=1&y=2",
    "/a/b?y=2&x=1",
  ];
  const lines = new Set(forms.map((uri) => canonicalRequest(parts({ uri }))));
  t.equal(lines.size, forms.length, "every spelling is a different request");
  t.ok(canonicalRequest(parts({ uri: "/q?a=%20&b=~!$&'()*+,;=:@/?" })), "query punctuation is fine");
  t.ok(canonicalRequest(parts({ uri: `/${"a".repeat(URI_MAX - 1)}` })), "URI_MAX characters");
  for (const uri of [
    "",
    "rooms",
    "*",
    "https://host/rooms",
    "/a b",
    "/a\nb",
    "/a\r\nx-injected: 1",
    "/a\tb",
    "/é",
    "/a#frag",
    "/a\u0000",
    `/${"a".repeat(URI_MAX)}`,
  ]) {
    t.equal(
      fieldOf(() => canonicalRequest(parts({ uri }))),
      "uri",
      JSON.stringify(uri.slice(0, 20)),
    );
  }
  const url = new URL("https://localhost:8443/rooms/a b/é?x=é y&z");
  t.equal(requestUriOf(url), "/rooms/a%20b/%C3%A9?x=%C3%A9%20y&z", "what node:https and undici put on the wire");
  t.equal(requestUriOf("https://h/x?"), "/x", "an empty query is not sent");
  t.ok(canonicalRequest(parts({ uri: requestUriOf(url) })), "a URL object's request URI can always be signed");
});

t.test("every other field is validated, so none can hold the separator", async (t) => {
  const bad: [keyof CanonicalRequestParts, unknown][] = [
    ["method", ""],
    ["method", "GE T"],
    ["method", "GET\n"],
    ["method", "X".repeat(33)],
    ["method", 7],
    ["timestamp", -1],
    ["timestamp", 1.5],
    ["timestamp", "017"],
    ["timestamp", "1e12"],
    ["timestamp", Number.MAX_SAFE_INTEGER + 2],
    ["timestamp", "9999999999999999"],
    ["timestamp", "12\n"],
    ["nonce", "short"],
    ["nonce", `${NONCE}=`],
    ["nonce", `${NONCE.slice(1)}+`],
    ["nonce", "A".repeat(65)],
    ["bodySha256", EMPTY_SHA256.toUpperCase()],
    ["bodySha256", EMPTY_SHA256.slice(1)],
    ["bodySha256", undefined],
  ];
  for (const [field, value] of bad) {
    t.equal(
      fieldOf(() => canonicalRequest(parts({ [field]: value }))),
      field,
      `${field} ${JSON.stringify(value)}`,
    );
  }
  t.ok(canonicalRequest(parts({ nonce: "A".repeat(64) })), "64-char nonce");
  t.ok(canonicalRequest(parts({ timestamp: 0 })), "timestamp 0 is well-formed (the skew check refuses it)");
});

t.test("signRequest produces headers that verify", async (t) => {
  const body = JSON.stringify({ hello: "world" });
  const headers = signRequest(id, { method: "POST", uri: "/rooms", body, now: 1_700_000_000_123 });
  t.same(Object.keys(headers).sort(), Object.values(AUTH_HEADERS).sort());
  t.equal(headers[AUTH_HEADERS.key], id.signPub);
  t.equal(headers[AUTH_HEADERS.timestamp], "1700000000123");
  t.equal(headers[AUTH_HEADERS.contentSha256], sha256Hex(body));
  t.match(headers[AUTH_HEADERS.nonce], /^[A-Za-z0-9_-]{22}$/);
  t.match(headers[AUTH_HEADERS.signature], /^[A-Za-z0-9_-]{86}$/);
  const signed = parseSignedHeaders(headers);
  t.same(signed, {
    signPub: id.signPub,
    timestamp: 1_700_000_000_123,
    nonce: headers[AUTH_HEADERS.nonce],
    contentSha256: sha256Hex(body),
    signature: headers[AUTH_HEADERS.signature],
  });
  t.ok(verifySignedRequest({ method: "POST", uri: "/rooms", signed }));
  t.ok(verifySignedRequest({ method: "post", uri: "/rooms", signed }), "the method is compared uppercased");

  const a = signRequest(id, { method: "GET", uri: "/x" });
  const b = signRequest(id, { method: "GET", uri: "/x" });
  t.not(a[AUTH_HEADERS.nonce], b[AUTH_HEADERS.nonce], "a new nonce per request");
  t.equal(a[AUTH_HEADERS.contentSha256], EMPTY_SHA256, "no body: hash of the empty string");
  t.not(newNonce(), newNonce());

  const bytes = new Uint8Array([1, 2, 3]);
  const streamed = signRequest(id, { method: "PUT", uri: "/blobs", bodySha256: sha256Hex(bytes) });
  t.equal(streamed[AUTH_HEADERS.contentSha256], sha256Hex(bytes), "a precomputed hash for streamed uploads");
  t.ok(signRequest(id, { method: "PUT", uri: "/blobs", body: bytes, bodySha256: sha256Hex(bytes) }));
  t.equal(
    fieldOf(() => signRequest(id, { method: "PUT", uri: "/blobs", body: bytes, bodySha256: EMPTY_SHA256 })),
    "bodySha256",
    "body and bodySha256 must agree",
  );
  t.equal(
    fieldOf(() => signRequest(id, { method: "GET", uri: "/a b" })),
    "uri",
    "an unsignable URI is an error",
  );
  t.equal(
    fieldOf(() => signRequest(id, { method: "GET", uri: "/x", bodySha256: "nope" })),
    "bodySha256",
    "a bad precomputed hash is an error",
  );
});

t.test("any single changed field breaks the signature", async (t) => {
  const headers = signRequest(id, { method: "POST", uri: "/rooms/r1?x=1", body: "{}" });
  const signed = parseSignedHeaders(headers);
  const ok = (s: SignedHeaders, method = "POST", uri = "/rooms/r1?x=1") =>
    verifySignedRequest({ method, uri, signed: s });
  t.ok(ok(signed));
  t.notOk(ok(signed, "PUT"), "method");
  t.notOk(ok(signed, "POST", "/rooms/r2?x=1"), "path");
  t.notOk(ok(signed, "POST", "/rooms/r1?x=2"), "query");
  t.notOk(ok(signed, "POST", "/rooms/r1"), "query dropped");
  t.notOk(ok(signed, "POST", "/rooms/r1?x=1&"), "query extended");
  t.notOk(ok({ ...signed, timestamp: signed.timestamp + 1 }), "timestamp");
  t.notOk(ok({ ...signed, nonce: newNonce() }), "nonce");
  t.notOk(ok({ ...signed, contentSha256: EMPTY_SHA256 }), "declared body hash");
  t.notOk(ok({ ...signed, signPub: other.signPub }), "another key");
  const sig = Buffer.from(signed.signature, "base64url");
  sig[10]! ^= 1;
  t.notOk(ok({ ...signed, signature: sig.toString("base64url") }), "one flipped signature bit");
  t.notOk(ok({ ...signed, signPub: "00".repeat(32) }), "a key that is not a curve point");
  t.notOk(ok({ ...signed, signature: "x" }), "a short signature");
  t.notOk(ok(signed, "POST", "/a b"), "an unsignable URI is false, not a throw");
});

t.test("parseSignedHeaders names the missing or malformed header, never echoing it", async (t) => {
  const good = signRequest(id, { method: "GET", uri: "/x" });
  for (const header of Object.values(AUTH_HEADERS)) {
    const { [header]: _gone, ...rest } = good;
    const err = t.throws(() => parseSignedHeaders(rest)) as SignedRequestError;
    t.ok(err instanceof SignedRequestError);
    t.equal(err.header, header);
    t.equal(err.problem, "missing");
    t.equal(err.message, `missing ${header} header`);
    t.match(
      t.throws(() => parseSignedHeaders({ ...good, [header]: "" })),
      { problem: "missing", header },
    );
  }
  const huge = "f".repeat(16_000);
  const malformed: [string, string | string[]][] = [
    [AUTH_HEADERS.key, "zz".repeat(32)],
    [AUTH_HEADERS.key, id.signPub.slice(2)],
    [AUTH_HEADERS.key, huge],
    [AUTH_HEADERS.key, `${id.signPub}, ${id.signPub}`],
    [AUTH_HEADERS.key, [id.signPub, id.signPub]],
    [AUTH_HEADERS.timestamp, "soon"],
    [AUTH_HEADERS.timestamp, "-5"],
    [AUTH_HEADERS.timestamp, "99999999999999999999"],
    [AUTH_HEADERS.timestamp, "9999999999999999"],
    [AUTH_HEADERS.nonce, "a+b/c=".repeat(5)],
    [AUTH_HEADERS.nonce, huge],
    [AUTH_HEADERS.contentSha256, EMPTY_SHA256.toUpperCase()],
    [AUTH_HEADERS.contentSha256, huge],
    [AUTH_HEADERS.signature, Buffer.alloc(64).toString("base64")],
    [AUTH_HEADERS.signature, "A".repeat(85)],
    [AUTH_HEADERS.signature, huge],
  ];
  for (const [header, value] of malformed) {
    const err = t.throws(() => parseSignedHeaders({ ...good, [header]: value })) as SignedRequestError;
    t.equal(err.header, header, `${header} ${String(value).slice(0, 20)}`);
    t.equal(err.problem, "malformed");
    t.match(err.message, new RegExp(`^${header} header is malformed: expected `));
    t.ok(err.message.length < 120, "the value is not echoed");
  }
  t.equal(parseSignedHeaders({ ...good, [AUTH_HEADERS.key]: id.signPub.toUpperCase() }).signPub, id.signPub);
  t.match(
    t.throws(() => parseSignedHeaders(undefined as never)),
    { problem: "missing", header: AUTH_HEADERS.key },
  );
});

t.test("ContentHashVerifier compares a streamed body with the declared hash", async (t) => {
  const v = new ContentHashVerifier(sha256Hex("hello world"));
  v.update(Buffer.from("hello "));
  v.update(Buffer.from("world"));
  t.ok(v.matches());
  t.equal(v.digestHex(), sha256Hex("hello world"));
  t.throws(() => v.update(Buffer.from("more")), "finalised");
  const w = new ContentHashVerifier(sha256Hex("hello world"));
  w.update(Buffer.from("hello w0rld"));
  t.notOk(w.matches());
  t.throws(() => new ContentHashVerifier("nope"), InvalidArgumentError);
});

t.test("property: random requests never crash, always verify, and break on any single change", async (t) => {
  const method = fc.oneof(
    fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"),
    fc.string({ minLength: 0, maxLength: 40 }),
  );
  const uri = fc.oneof(
    fc.webPath().map((p) => (p.startsWith("/") ? p : `/${p}`)),
    fc.webUrl({ withQueryParameters: true, withFragments: true }).map((u) => requestUriOf(u)),
    fc.string({ unit: "binary", maxLength: 100 }),
    fc.string({ maxLength: 100 }).map((s) => `/${s}`),
  );
  const body = fc.oneof(fc.uint8Array({ maxLength: 256 }), fc.string({ unit: "binary", maxLength: 256 }));
  const change = fc.constantFrom("method", "uri", "timestamp", "nonce", "contentSha256", "signature", "signPub");
  let signedCount = 0;
  fc.assert(
    fc.property(method, uri, body, fc.integer({ min: 0, max: 4_000_000_000_000 }), change, (m, u, b, now, what) => {
      let headers: Record<string, string>;
      try {
        headers = signRequest(id, { method: m, uri: u, body: b, now });
      } catch (err) {
        // The only acceptable failure: a field that cannot be signed, named.
        if (!(err instanceof InvalidArgumentError) || !["method", "uri"].includes(err.field)) throw err;
        return;
      }
      signedCount++;
      const signed = parseSignedHeaders(headers);
      if (!verifySignedRequest({ method: m, uri: u, signed })) return false;
      let method2 = m;
      let uri2 = u;
      const s2 = { ...signed };
      switch (what) {
        case "method":
          method2 = m.toUpperCase() === "GET" ? "POST" : "GET";
          break;
        case "uri":
          uri2 = u.endsWith("x") ? `${u}y` : `${u}x`;
          break;
        case "timestamp":
          s2.timestamp = now + 1;
          break;
        case "nonce":
          s2.nonce = newNonce();
          break;
        case "contentSha256":
          s2.contentSha256 = sha256Hex(`${s2.contentSha256}!`);
          break;
        case "signature": {
          const sig = Buffer.from(s2.signature, "base64url");
          sig[now % 64]! ^= 1 << (now % 8);
          s2.signature = sig.toString("base64url");
          break;
        }
        case "signPub":
          s2.signPub = other.signPub;
          break;
      }
      return !verifySignedRequest({ method: method2, uri: uri2, signed: s2 });
    }),
    { numRuns: 300 },
  );
  t.ok(signedCount > 60, `most generated requests were signable (${signedCount}/300)`);
});

t.test("property: arbitrary header values never throw anything but SignedRequestError", async (t) => {
  const value = fc.oneof(
    fc.string({ unit: "binary", maxLength: 200 }),
    fc.array(fc.string(), { maxLength: 3 }),
    fc.constant(undefined),
  );
  t.doesNotThrow(
    () =>
      fc.assert(
        fc.property(value, value, value, value, value, (k, ts, n, h, s) => {
          const headers = {
            [AUTH_HEADERS.key]: k,
            [AUTH_HEADERS.timestamp]: ts,
            [AUTH_HEADERS.nonce]: n,
            [AUTH_HEADERS.contentSha256]: h,
            [AUTH_HEADERS.signature]: s,
          };
          try {
            const signed = parseSignedHeaders(headers);
            return verifySignedRequest({ method: "GET", uri: "/", signed }) === false;
          } catch (err) {
            return err instanceof SignedRequestError;
          }
        }),
        { numRuns: 300 },
      ),
    "property holds",
  );
});
