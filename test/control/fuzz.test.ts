// Property-based fuzzing of the control plane: random bodies, headers and URIs at every
// route (and at paths that are no route), unsigned, signed by a member or an admin, and
// signed-then-tampered. Whatever arrives, the answer is a 4xx or a success — never a
// 5xx —, an error is `{error, message}` JSON that leaks no stack, SQL or file path, and
// the server keeps answering /healthz.
import crypto from "node:crypto";
import fc from "fast-check";
import t, { type Test } from "tap";
import type { Agent } from "undici";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { JSON_BODY_LIMIT } from "../../lib/control/limits.ts";
import { ROUTES, type Route, registrationProofMessage } from "../../lib/control/routes.ts";
import { AUTH_HEADERS, signRequest } from "../../lib/crypto/canonical.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { newInviteToken } from "../../lib/store/index.ts";
import { member, testBus } from "../helpers/bus.ts";
import { trustingAgent } from "../helpers/http.ts";

/** By hand: FUZZ_SCALE=10 for a deeper run, FUZZ_SEED=<seed> to replay one, FUZZ_DEBUG=1 to print every answer. */
const SCALE = Number(process.env.FUZZ_SCALE ?? 1) || 1;

type Method = "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS";

interface FuzzRequest {
  method: Method;
  path: string;
  headers: Record<string, string | string[]>;
  body: Buffer | undefined;
}

interface Fixture {
  bus: Unibus;
  agent: Agent;
  origin: string;
  signers: { member: Identity; admin: Identity };
  /** Real ids, keys and tokens, so some random requests reach deep into a handler. */
  pool: string[];
  tokens: string[];
}

// ---- leaks an error body must never carry (beyond what the request itself sent) ----

const LEAKS: [RegExp, string][] = [
  [/\n\s+at /, "a stack trace"],
  [/\bat [^\s]+ \(.*:\d+:\d+\)/, "a stack frame"],
  [/(?:\/work\/|\/home\/|\/tmp\/|\/usr\/|node_modules|file:\/\/|node:internal|\.ts:\d+)/, "a file path"],
  [/\b(?:SELECT\s|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|SQLITE_\w+|sqlite|constraint failed)/i, "SQL"],
  [/\b(?:TypeError|ReferenceError|RangeError|SyntaxError|Cannot read propert)/, "an internal error"],
];

// ---- generators ----

const hex = (bytes: number) =>
  fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString("hex"));
const hex64 = hex(32);
const b64url = (min: number, max: number) =>
  fc.uint8Array({ minLength: min, maxLength: max }).map((b) => Buffer.from(b).toString("base64url"));

/** Strings an attacker would try in a URI: broken escapes, traversal, encoded separators. */
const NASTY_SEGMENTS = [
  "..",
  ".",
  "%2e%2e",
  "%2E%2E%2F",
  "%2F",
  "a%2Fb",
  "%",
  "%z",
  "%zz",
  "%E0%A4%A",
  "%C0%AF",
  "%00",
  "%FF%FE",
  "%ED%A0%80",
  "%F0%9F%98%80",
  "%20",
  "~",
  "*",
  ">",
  "$SYS",
  "_INBOX",
  "null",
  "undefined",
  "__proto__",
  "constructor",
  "0",
  "-1",
  "1e999",
];

function segment(pool: string[], realWeight = 3) {
  return fc.oneof(
    { weight: realWeight, arbitrary: fc.constantFrom(...pool) },
    { weight: 2, arbitrary: hex64 },
    { weight: 1, arbitrary: hex(6) },
    { weight: 2, arbitrary: fc.constantFrom(...NASTY_SEGMENTS) },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }).map(encodeURIComponent) },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 20 }).map(encodeURIComponent) },
    // raw printable ASCII (sub-delimiters, quotes, brackets) minus the URI's own separators
    { weight: 1, arbitrary: fc.stringMatching(/^[\x21-\x7e]{1,30}$/).map((s) => s.replace(/[/?#]/g, "")) },
    // Latin-1 bytes on the request line: legal for undici, refused by Node's parser
    { weight: 1, arbitrary: fc.stringMatching(/^[\x80-\xff]{1,8}$/) },
    { weight: 1, arbitrary: fc.constant("") },
    { weight: 1, arbitrary: fc.integer({ min: 200, max: 6000 }).map((n) => "a".repeat(n)) },
  );
}

const queryValue = fc.oneof(
  fc.constantFrom("1", "2", "0", "-1", "1.5", "1e3", "99999999999999999999", "NaN", "", "%", "%zz", "[]", "true"),
  fc.string({ maxLength: 20 }).map(encodeURIComponent),
);
const query = fc.oneof(
  { weight: 3, arbitrary: fc.constant("") },
  { weight: 1, arbitrary: fc.constant("?") },
  {
    weight: 3,
    arbitrary: fc
      .array(
        fc.tuple(
          fc.oneof(
            fc.constantFrom("epoch", "epoch", "limit", "__proto__", ""),
            fc.string({ maxLength: 8 }).map(encodeURIComponent),
          ),
          queryValue,
        ),
        { minLength: 1, maxLength: 4 },
      )
      .map((pairs) => `?${pairs.map(([k, v]) => `${k}=${v}`).join("&")}`),
  },
);

/** A path shaped like a route, with its parameters replaced and sometimes bent. */
function routePath(pool: string[]) {
  return fc
    .tuple(
      fc.constantFrom(...ROUTES),
      fc.array(segment(pool, 10), { minLength: 2, maxLength: 2 }),
      fc.oneof(
        { weight: 12, arbitrary: fc.constant("as-is") },
        { weight: 1, arbitrary: fc.constantFrom("trailing-slash", "extra-segment", "upper", "double-slash") },
      ),
      segment(pool),
    )
    .map(([route, params, bend, extra]) => {
      let i = 0;
      let path = route.path
        .split("/")
        .map((part) => (part.startsWith(":") ? params[i++]! : part))
        .join("/");
      if (bend === "trailing-slash") path += "/";
      else if (bend === "extra-segment") path += `/${extra}`;
      else if (bend === "upper") path = path.toUpperCase();
      else if (bend === "double-slash") path = path.replace("/v1/", "//v1/");
      return { route, path };
    });
}

/** A path that is no route at all. */
function otherPath(pool: string[]) {
  return fc
    .tuple(
      fc.constantFrom("/", "/v1/", "/v2/", "/healthz/", "/metrics/", "/.."),
      fc.array(segment(pool), { maxLength: 6 }),
    )
    .map(([prefix, segs]) => (prefix + segs.join("/")).replace(/^\/\/+/, "/"));
}

const fieldValue = (pool: string[]) =>
  fc.oneof(
    { weight: 3, arbitrary: hex64 },
    { weight: 2, arbitrary: fc.constantFrom(...pool) },
    { weight: 2, arbitrary: b64url(1, 80) },
    { weight: 2, arbitrary: fc.boolean() },
    { weight: 2, arbitrary: fc.constantFrom(0, -1, 1, 2, 1.5, 2 ** 31, 2 ** 31 + 1, 2 ** 53, 1e300, -0) },
    { weight: 2, arbitrary: fc.constantFrom("7d", "0d", "1ms", "999999d", "12h", "x", "", "member", "admin", "owner") },
    { weight: 1, arbitrary: fc.integer() },
    { weight: 1, arbitrary: fc.string({ maxLength: 80 }) },
    { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{86}$/) },
    {
      weight: 1,
      arbitrary: fc.array(fc.record({ signPub: fc.oneof(hex64, fc.constantFrom(...pool)), sealed: b64url(1, 64) }), {
        maxLength: 4,
      }),
    },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  );

const FIELDS = [
  "encrypt",
  "persist",
  "signMsgs",
  "owner",
  "ownerSealedKey",
  "signPub",
  "role",
  "sealedKey",
  "epoch",
  "fromEpoch",
  "sealedKeys",
  "kexPub",
  "handle",
  "ttl",
  "token",
  "proof",
] as const;

/** Objects made of the API's own field names with plausible and implausible values. */
function nearValidBody(pool: string[]) {
  const v = fieldValue(pool);
  return fc.record(Object.fromEntries(FIELDS.map((f) => [f, v])) as Record<(typeof FIELDS)[number], typeof v>, {
    requiredKeys: [],
  });
}

/** A registration a real invitee would send (for a real, random or spent token). */
function registration(tokens: string[]) {
  return fc.oneof(fc.constantFrom(...tokens), hex64).map((token) => {
    const id = createIdentity();
    return {
      token,
      signPub: id.signPub,
      kexPub: id.kexPub,
      proof: id.sign(registrationProofMessage(token)).toString("base64url"),
    };
  });
}

/** A body for the route the request goes to (undefined when it goes to no route). */
type BodyFor = (route: Route | undefined) => Buffer | undefined;

function body(pool: string[], tokens: string[]): fc.Arbitrary<BodyFor> {
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const fixed =
    (b: Buffer | undefined): BodyFor =>
    () =>
      b;
  // Mostly the route's own fields, so requests get past the schema into the handler;
  // now and then one field it does not know.
  const shaped = fc.tuple(nearValidBody(pool), fc.integer({ min: 0, max: 7 }), registration(tokens)).map(
    ([fields, dice, reg]): BodyFor =>
      (route) => {
        if (route?.name === "register" && dice < 4) return json(reg);
        const known = Object.keys((route?.schema?.properties as object | undefined) ?? {});
        return json(Object.fromEntries(Object.entries(fields).filter(([k]) => dice === 0 || known.includes(k))));
      },
  );
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant(fixed(undefined)) },
    { weight: 6, arbitrary: shaped },
    { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => fixed(json(v))) },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 2048 }).map((b) => fixed(Buffer.from(b))) },
    {
      weight: 2,
      arbitrary: fc
        .constantFrom(
          "{",
          "[",
          '{"a":',
          "null",
          '"x"',
          "1e999",
          "-",
          '{"__proto__":{"polluted":true}}',
          '{"constructor":{"prototype":{"polluted":true}}}',
          "\uFEFF{}",
          '{"handle":"a","handle":"b"}',
          '{"epoch":1e400}',
          '{"handle":"\\ud800"}',
          "\u0000",
          " ",
        )
        .map((s) => fixed(Buffer.from(s))),
    },
    // huge, but within the 1 MiB ceiling: one long string, or deep nesting
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.integer({ min: 64 * 1024, max: JSON_BODY_LIMIT - 64 }), fc.constantFrom("string", "field", "nested"))
        .map(([n, shape]) => {
          if (shape === "string") return fixed(Buffer.from(`"${"a".repeat(n - 2)}"`));
          if (shape === "field") return fixed(Buffer.from(`{"handle":"${"x".repeat(n - 14)}"}`));
          const depth = Math.floor(n / 2);
          return fixed(Buffer.from(`${"[".repeat(depth)}${"]".repeat(depth)}`));
        }),
    },
  );
}

const contentType = fc.oneof(
  { weight: 6, arbitrary: fc.constant("application/json") },
  { weight: 2, arbitrary: fc.constant(undefined) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "text/plain",
      "application/json; charset=utf-8",
      "application/json; charset=utf-16",
      "APPLICATION/JSON",
      "application/jsonx",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "application/octet-stream",
      "",
    ),
  },
  { weight: 1, arbitrary: fc.stringMatching(/^[\x20-\x7e]{1,60}$/) },
);

const headerValue = fc.oneof(
  fc.stringMatching(/^[\x21-\x7e]{1,100}$/),
  hex64,
  b64url(16, 48),
  fc.constantFrom("0", "-1", "99999999999999999999", "NaN", "1e3", String(Date.now()), "x".repeat(127)),
  fc.stringMatching(/^[\x80-\xff]{1,20}$/),
  fc.integer({ min: 200, max: 4000 }).map((n) => "a".repeat(n)),
);
const AUTH_NAMES = Object.values(AUTH_HEADERS);

/** Up to five x-unibus-* headers, each absent, random or repeated; plus unknown x-unibus-* ones. */
const garbageAuth = fc
  .tuple(
    fc.array(fc.option(fc.oneof(headerValue, fc.array(headerValue, { minLength: 2, maxLength: 3 }))), {
      minLength: AUTH_NAMES.length,
      maxLength: AUTH_NAMES.length,
    }),
    fc.array(fc.tuple(fc.stringMatching(/^x-unibus-[a-z0-9-]{1,20}$/), headerValue), { maxLength: 4 }),
  )
  .map(([values, extra]) => {
    const h: Record<string, string | string[]> = {};
    values.forEach((v, i) => {
      if (v !== null) h[AUTH_NAMES[i]!] = v;
    });
    for (const [k, v] of extra) h[k] = v;
    return h;
  });

/** How a correctly signed request is then damaged, if at all. */
const tamper = fc.oneof(
  { weight: 5, arbitrary: fc.constant({ kind: "none" as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constantFrom("replace" as const, "drop" as const, "duplicate" as const),
      header: fc.constantFrom(...AUTH_NAMES),
      value: headerValue,
    }),
  },
);

type Auth = "none" | "member" | "admin" | "garbage";

function request(fx: Fixture, auth: fc.Arbitrary<Auth>, paths: "routes" | "others") {
  const { pool, tokens } = fx;
  const methods: Method[] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
  const target =
    paths === "routes"
      ? fc
          .tuple(
            routePath(pool),
            fc.oneof(
              { weight: 6, arbitrary: fc.constant(null) },
              { weight: 1, arbitrary: fc.constantFrom(...methods) },
            ),
          )
          .map(([{ route, path }, m]) => ({ route: route as Route | undefined, path, method: m ?? route.method }))
      : fc
          .tuple(otherPath(pool), fc.constantFrom(...methods))
          .map(([path, method]) => ({ route: undefined as Route | undefined, path, method }));
  return fc
    .record({
      target,
      query,
      body: body(pool, tokens),
      contentType,
      auth,
      tamper,
      garbage: garbageAuth,
    })
    .map(({ target, query, body, contentType, auth, tamper, garbage }): FuzzRequest => {
      const path = target.path + query;
      const method = target.method as Method;
      // undici sends no body with GET or HEAD, so none is signed either
      const payload = method === "GET" || method === "HEAD" ? undefined : body(target.route);
      const headers: Record<string, string | string[]> = {};
      if (contentType !== undefined) headers["content-type"] = contentType;
      if (auth === "garbage") Object.assign(headers, garbage);
      else if (auth !== "none") {
        try {
          Object.assign(headers, signRequest(fx.signers[auth], { method, uri: path, body: payload ?? "" }));
        } catch {
          // a URI the canonical form cannot carry (Latin-1, too long): it goes unsigned
        }
        if (tamper.kind === "replace") headers[tamper.header] = tamper.value;
        else if (tamper.kind === "drop") delete headers[tamper.header];
        else if (tamper.kind === "duplicate" && headers[tamper.header] !== undefined)
          headers[tamper.header] = [headers[tamper.header] as string, tamper.value];
      }
      return { method, path, headers, body: payload };
    });
}

// ---- sending and judging ----

function describe(r: FuzzRequest): string {
  const path = r.path.length > 200 ? `${r.path.slice(0, 200)}…(${r.path.length})` : r.path;
  return `${r.method} ${path} body=${r.body?.length ?? "none"}`;
}

async function send(fx: Fixture, r: FuzzRequest): Promise<{ status: number; text: string; contentType: string }> {
  const res = await fx.agent.request({
    origin: fx.origin,
    path: r.path,
    method: r.method,
    headers: r.headers,
    body: r.body,
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });
  const text = await res.body.text();
  return { status: res.statusCode, text, contentType: String(res.headers["content-type"] ?? "") };
}

/** Everything wrong with one answer, as sentences; empty when it is fine. */
function judge(r: FuzzRequest, res: { status: number; text: string; contentType: string }): string[] {
  const problems: string[] = [];
  if (res.status >= 500) problems.push(`status ${res.status}`);
  if (res.status < 400 || r.method === "HEAD") return problems;
  let parsed: unknown;
  try {
    parsed = JSON.parse(res.text);
  } catch {
    return [...problems, `${res.status} error body is not JSON: ${JSON.stringify(res.text.slice(0, 200))}`];
  }
  if (!/^application\/json\b/.test(res.contentType)) problems.push(`error content-type ${res.contentType}`);
  const o = parsed as { error?: unknown; message?: unknown };
  if (
    typeof parsed !== "object" ||
    parsed === null ||
    Object.keys(parsed).sort().join() !== "error,message" ||
    typeof o.error !== "string" ||
    typeof o.message !== "string"
  ) {
    problems.push(`error body is not {error, message}: ${res.text.slice(0, 200)}`);
    return problems;
  }
  // What the caller sent may be echoed back (a path in a 404): only what it did not send is a leak.
  let message = o.message;
  for (const echoed of [r.path, safeDecode(r.path), r.body?.toString("utf8") ?? ""])
    if (echoed) message = message.split(echoed).join("");
  for (const [pattern, what] of LEAKS)
    if (pattern.test(message) && !pattern.test(r.path) && !pattern.test(r.body?.toString("utf8") ?? ""))
      problems.push(`error message leaks ${what}: ${o.message.slice(0, 300)}`);
  return problems;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

async function healthz(t: Test, fx: Fixture, after: string): Promise<void> {
  const res = await send(fx, { method: "GET", path: "/healthz", headers: {}, body: undefined });
  t.equal(res.status, 200, `/healthz answers 200 after ${after}`);
}

/** Runs `numRuns` random requests; fails with the first offending request (shrunk). */
async function fuzz(
  t: Test,
  fx: Fixture,
  name: string,
  arb: fc.Arbitrary<FuzzRequest>,
  numRuns: number,
  stats: Map<number, number>,
): Promise<void> {
  const outcome = await fc.check(
    fc.asyncProperty(arb, async (r) => {
      let res: Awaited<ReturnType<typeof send>>;
      try {
        res = await send(fx, r);
      } catch (err) {
        throw new Error(`${describe(r)}: no answer (${(err as Error).message})`);
      }
      stats.set(res.status, (stats.get(res.status) ?? 0) + 1);
      if (process.env.FUZZ_DEBUG)
        console.error(name, res.status, r.method, r.path.slice(0, 80), res.text.slice(0, 120));
      const problems = judge(r, res);
      if (problems.length) throw new Error(`${describe(r)} → ${problems.join("; ")}`);
    }),
    {
      numRuns: Math.round(numRuns * SCALE),
      endOnFailure: true,
      ...(process.env.FUZZ_SEED ? { seed: Number(process.env.FUZZ_SEED) } : {}),
    },
  );
  t.notOk(outcome.failed, `${name}: ${outcome.numRuns} requests, no 5xx, only clean JSON errors`, {
    problem: outcome.failed ? (outcome.errorInstance as Error | undefined)?.message?.slice(0, 2000) : undefined,
    seed: outcome.seed,
  });
  await healthz(t, fx, name);
}

async function fixture(t: Test): Promise<Fixture> {
  // No throttling: the point is what each request does, not how many arrive.
  const bus = await testBus(t, { rateLimit: { ratePerSec: 1e6, burst: 1e6 } });
  const agent = trustingAgent(t, bus.caPem, { keepAliveTimeout: 4_000, connections: 4 });
  const admin = await member(bus, "fuzz-admin", "admin");
  const m = await member(bus, "fuzz-member");
  const decoy = await member(bus, "decoy");
  const store = bus.store;
  // a room the member owns (the admin is in it too), and one it is not in
  const own = await store.createRoom({
    id: "r-own",
    subject: "unibus.room.r-own",
    ownerSignPub: m.signPub,
    encrypt: true,
    persist: false,
    signMsgs: false,
    ownerSealedKey: crypto.randomBytes(48).toString("base64url"),
  });
  await store.addMember(own.id, {
    signPub: admin.signPub,
    sealedKey: crypto.randomBytes(48).toString("base64url"),
    epoch: 1,
  });
  const other = await store.createRoom({
    id: "r-other",
    subject: "unibus.room.r-other",
    ownerSignPub: decoy.signPub,
    encrypt: false,
    persist: false,
    signMsgs: false,
  });
  const tokens: string[] = [];
  const inviteIds: string[] = [];
  for (let i = 0; i < 6; i++) {
    const token = newInviteToken();
    const invite = await store.createInvite({ token, handle: `invitee-${i}`, role: "member", createdBy: "host" });
    tokens.push(token);
    inviteIds.push(invite.id);
  }
  // The signers' own keys are in the pool too: the fuzzer may revoke or delete them, which
  // is fine — every later request still has to be answered cleanly.
  const pool = [
    own.id,
    other.id,
    m.signPub,
    admin.signPub,
    decoy.signPub,
    decoy.signPub.toUpperCase(),
    ...inviteIds,
    tokens[0]!,
  ];
  return {
    bus,
    agent,
    origin: bus.controlUrl,
    signers: { member: m, admin },
    pool,
    tokens,
  };
}

t.test("random requests at every route and beyond: no 5xx, no crash, clean JSON errors", async (t) => {
  const stats = new Map<number, number>();
  const fx = await fixture(t);
  await healthz(t, fx, "start");

  await fuzz(t, fx, "unsigned, at the routes", request(fx, fc.constant("none"), "routes"), 90, stats);
  await fuzz(t, fx, "signed by a member", request(fx, fc.constant("member"), "routes"), 110, stats);
  await fuzz(t, fx, "signed by an admin", request(fx, fc.constant("admin"), "routes"), 90, stats);
  await fuzz(t, fx, "garbage x-unibus-* headers", request(fx, fc.constant("garbage"), "routes"), 70, stats);
  await fuzz(
    t,
    fx,
    "paths that are no route",
    request(fx, fc.constantFrom<Auth>("none", "member", "garbage"), "others"),
    60,
    stats,
  );

  // the fuzzer may have revoked or deleted anyone (the admin included): the store still answers
  await t.resolves(fx.bus.store.snapshot(), "the store still answers");
  const counts = [...stats.entries()].sort(([a], [b]) => a - b);
  t.comment(`statuses: ${counts.map(([s, n]) => `${s}×${n}`).join(" ")}`);
  t.ok(
    counts.some(([s]) => s < 300),
    "some requests got through to a handler and succeeded",
  );
});
