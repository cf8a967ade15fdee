import crypto from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { nonceKey } from "../../lib/control/nonce-cache.ts";
import { type KvNonceStore, NonceTtlError, openKvNonceStore } from "../../lib/control/nonce-kv.ts";
import { InvalidArgumentError, StoreUnavailableError } from "../../lib/errors.ts";
import { NatsServerProcess } from "../../lib/nats/process.ts";
import { tempDir } from "../helpers/fs.ts";
import { NATS_SERVER, startJetStream } from "../helpers/nats.ts";

const main = await startJetStream(t, "nonces1");

// Two connections stand for two nodes of a cluster.
const nc1 = await connect({ servers: main.url });
t.teardown(() => nc1.close());
const nc2 = await connect({ servers: main.url });
t.teardown(() => nc2.close());

/** A fresh bucket per test, so tests never see each other's nonces. */
const prefix = () => `t${crypto.randomBytes(5).toString("hex")}_`;
/** A realistic key: a hex signing key and a nonce, with the ":" KV keys do not allow. */
const aKey = () => nonceKey(crypto.randomBytes(32).toString("hex"), crypto.randomBytes(16).toString("base64url"));

async function open(
  t: Test,
  opts: { nc?: NatsConnection; bucketPrefix?: string; ttlMs?: number; timeoutMs?: number; maxPerOwner?: number } = {},
): Promise<KvNonceStore> {
  const store = await openKvNonceStore({
    nc: opts.nc ?? nc1,
    bucketPrefix: opts.bucketPrefix ?? prefix(),
    storage: "memory",
    ...(opts.ttlMs !== undefined ? { ttlMs: opts.ttlMs } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    ...(opts.maxPerOwner !== undefined ? { maxPerOwner: opts.maxPerOwner } : {}),
  });
  t.teardown(() => store.close());
  return store;
}

t.test("a nonce is fresh once, then replayed", async (t) => {
  const store = await open(t);
  const k = aKey();
  t.equal(await store.checkAndRemember(k, 60_000), "fresh");
  t.equal(await store.checkAndRemember(k, 60_000), "replayed");
  t.equal(await store.checkAndRemember(k, 1), "replayed", "a shorter TTL does not make it fresh");
  t.equal(await store.checkAndRemember(aKey(), 60_000), "fresh", "another nonce is independent");
  t.equal(store.maxAgeMs, 60_000, "the default max_age");
  t.equal(store.bucket.endsWith("nonces"), true);
});

t.test("one key's flood uses up its own share on this node; other keys are still fresh", async (t) => {
  const store = await open(t, { maxPerOwner: 3 });
  const flooder = crypto.randomBytes(32).toString("hex");
  const other = crypto.randomBytes(32).toString("hex");
  const mine = (i: number) => nonceKey(flooder, `n${i}`);
  for (let i = 0; i < 3; i++) t.equal(await store.checkAndRemember(mine(i), 60_000, flooder), "fresh");
  for (let i = 3; i < 20; i++) t.equal(await store.checkAndRemember(mine(i), 60_000, flooder), "quota");
  t.equal(await store.checkAndRemember(nonceKey(other, "n0"), 60_000, other), "fresh", "another key is served");
  t.equal(await store.checkAndRemember(mine(0), 60_000, other), "replayed", "a replay is still caught");
  t.equal(await store.checkAndRemember(mine(3), 60_000), "fresh", "quota refusals never reached the bucket");
  await t.rejects(openKvNonceStore({ nc: nc1, maxPerOwner: 0 }), InvalidArgumentError);
});

t.test("keys differing only in characters KV keys disallow are distinct", async (t) => {
  const store = await open(t);
  for (const k of ["a:b", "a.b", "a b", "a*b", "a>b", "ä:b", "a:b "]) {
    t.equal(await store.checkAndRemember(k, 1000), "fresh", JSON.stringify(k));
  }
  t.equal(await store.checkAndRemember("a:b", 1000), "replayed");
});

t.test("two stores on two connections share the verdict (cross-node)", async (t) => {
  const bucketPrefix = prefix();
  const a = await open(t, { nc: nc1, bucketPrefix });
  const b = await open(t, { nc: nc2, bucketPrefix });
  const k1 = aKey();
  const k2 = aKey();
  t.equal(await a.checkAndRemember(k1, 60_000), "fresh");
  t.equal(await b.checkAndRemember(k1, 60_000), "replayed", "seen on node a is a replay on node b");
  t.equal(await b.checkAndRemember(k2, 60_000), "fresh");
  t.equal(await a.checkAndRemember(k2, 60_000), "replayed", "and the other way round");
});

t.test("many concurrent checks of one key from two nodes: exactly one is fresh", async (t) => {
  const bucketPrefix = prefix();
  const a = await open(t, { nc: nc1, bucketPrefix });
  const b = await open(t, { nc: nc2, bucketPrefix });
  for (let round = 0; round < 5; round++) {
    const k = aKey();
    const verdicts = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).checkAndRemember(k, 60_000)),
    );
    t.equal(verdicts.filter((v) => v === "fresh").length, 1, `round ${round}: one fresh`);
    t.equal(verdicts.filter((v) => v === "replayed").length, 19, `round ${round}: the rest replayed`);
  }
});

t.test("a nonce becomes fresh again once the bucket's max_age has passed", async (t) => {
  const store = await open(t, { ttlMs: 1000 });
  t.equal(store.maxAgeMs, 1000);
  const k = aKey();
  t.equal(await store.checkAndRemember(k, 1000), "fresh");
  t.equal(await store.checkAndRemember(k, 1000), "replayed");
  // No timing assertion: only that JetStream eventually drops it (the cap just stops a hang).
  let verdict = "replayed";
  for (let i = 0; i < 100 && verdict === "replayed"; i++) {
    await new Promise((r) => setTimeout(r, 200));
    verdict = await store.checkAndRemember(k, 1000);
  }
  t.equal(verdict, "fresh", "fresh after expiry");
  t.equal(await store.checkAndRemember(k, 1000), "replayed", "and remembered again");
});

t.test("a deleted entry does not block a new create (nats.js falls back to CAS on the marker)", async (t) => {
  const store = await open(t);
  const k = aKey();
  t.equal(await store.checkAndRemember(k, 1000), "fresh");
  const kv = await new Kvm(nc1).open(store.bucket);
  await kv.delete(crypto.createHash("sha256").update(k).digest("hex"));
  t.equal(await store.checkAndRemember(k, 1000), "fresh");
  t.equal(await store.checkAndRemember(k, 1000), "replayed");
});

t.test("a TTL above the bucket's max_age throws a typed error", async (t) => {
  const store = await open(t, { ttlMs: 2000 });
  const k = aKey();
  const err = await store.checkAndRemember(k, 2001).catch((e: unknown) => e);
  t.type(err, NonceTtlError);
  t.type(err, InvalidArgumentError);
  t.equal((err as NonceTtlError).code, "INVALID_ARGUMENT");
  t.match((err as Error).message, /2001 ms.*2000 ms/);
  t.equal(await store.checkAndRemember(k, 2000), "fresh", "nothing was remembered by the refused call");
});

t.test("an existing bucket's max_age is raised, never lowered", async (t) => {
  const bucketPrefix = prefix();
  const short = await open(t, { bucketPrefix, ttlMs: 1000 });
  t.equal(short.maxAgeMs, 1000);
  const long = await open(t, { nc: nc2, bucketPrefix, ttlMs: 5000 });
  t.equal(long.maxAgeMs, 5000, "raised to cover the longer TTL");
  const jsm = await jetstreamManager(nc1);
  const info = await jsm.streams.info(`KV_${long.bucket}`);
  t.equal(info.config.max_age, 5000 * 1_000_000, "the stream itself keeps entries 5 s");
  const again = await open(t, { bucketPrefix, ttlMs: 2000 });
  t.equal(again.maxAgeMs, 5000, "a shorter request keeps the longer max_age");
  await t.rejects(again.checkAndRemember(aKey(), 5001), NonceTtlError);
  t.equal(await again.checkAndRemember(aKey(), 5000), "fresh");
  t.equal(short.maxAgeMs, 1000, "an already open store keeps the limit it opened with (still safe)");
});

t.test("bad options are InvalidArgumentError", async (t) => {
  const cases: Array<[Record<string, unknown> | undefined, string]> = [
    [undefined, "opts"],
    [{}, "nc"],
    [{ nc: "nats://x" }, "nc"],
    [{ nc: nc1, replicas: 0 }, "replicas"],
    [{ nc: nc1, replicas: 6 }, "replicas"],
    [{ nc: nc1, replicas: 1.5 }, "replicas"],
    [{ nc: nc1, ttlMs: 0 }, "ttlMs"],
    [{ nc: nc1, ttlMs: 50 }, "ttlMs"],
    [{ nc: nc1, ttlMs: 1000.5 }, "ttlMs"],
    [{ nc: nc1, ttlMs: Number.POSITIVE_INFINITY }, "ttlMs"],
    [{ nc: nc1, timeoutMs: 0 }, "timeoutMs"],
    [{ nc: nc1, timeoutMs: Number.NaN }, "timeoutMs"],
    [{ nc: nc1, openTimeoutMs: -1 }, "openTimeoutMs"],
    [{ nc: nc1, bucketPrefix: "a.b" }, "bucketPrefix"],
    [{ nc: nc1, bucketPrefix: "" }, "bucketPrefix"],
    [{ nc: nc1, bucketPrefix: "x".repeat(49) }, "bucketPrefix"],
    [{ nc: nc1, storage: "disk" }, "storage"],
  ];
  for (const [opts, field] of cases) {
    const err = await openKvNonceStore(opts as never).catch((e: unknown) => e);
    t.type(
      err,
      InvalidArgumentError,
      `${JSON.stringify(opts, (k, v) => (k === "nc" && typeof v === "object" ? "<nc>" : v))}`,
    );
    t.equal((err as InvalidArgumentError).field, field);
    t.ok((err as Error).message.length > 10, "a message saying what is wrong");
  }
});

t.test("bad arguments to checkAndRemember are InvalidArgumentError", async (t) => {
  const store = await open(t);
  await t.rejects(store.checkAndRemember("", 1000), InvalidArgumentError);
  await t.rejects(store.checkAndRemember(42 as never, 1000), InvalidArgumentError);
  await t.rejects(store.checkAndRemember("k", 0), InvalidArgumentError);
  await t.rejects(store.checkAndRemember("k", -5), InvalidArgumentError);
  await t.rejects(store.checkAndRemember("k", Number.NaN), InvalidArgumentError);
  t.equal(await store.checkAndRemember("k", 1000), "fresh", "none of them remembered anything");
});

t.test("close() stops answering but leaves the given connection open", async (t) => {
  const own = await connect({ servers: main.url });
  t.teardown(() => own.close());
  const store = await open(t, { nc: own });
  t.equal(await store.checkAndRemember(aKey(), 1000), "fresh");
  await store.close();
  await t.rejects(store.checkAndRemember(aKey(), 1000), StoreUnavailableError);
  t.equal(own.isClosed(), false, "the caller's connection is still open");
});

t.test("a closed connection rejects, never fresh", async (t) => {
  const own = await connect({ servers: main.url });
  const store = await open(t, { nc: own });
  await own.close();
  await t.rejects(store.checkAndRemember(aKey(), 1000), StoreUnavailableError);
  await t.rejects(openKvNonceStore({ nc: own }), InvalidArgumentError, "opening on a closed connection");
});

t.test("a stopped server: a call rejects within the timeout instead of answering fresh", async (t) => {
  const s2 = await startJetStream(t, "nonces2");
  const own = await connect({ servers: s2.url, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
  t.teardown(() => own.close());
  const store = await open(t, { nc: own, timeoutMs: 400 });
  const seen = aKey();
  t.equal(await store.checkAndRemember(seen, 1000), "fresh", "answers while up");
  await s2.server.stop();
  const results = await Promise.allSettled([store.checkAndRemember(aKey(), 1000), store.checkAndRemember(seen, 1000)]);
  for (const [i, r] of results.entries()) {
    t.equal(r.status, "rejected", `call ${i} does not answer`);
    if (r.status === "rejected") {
      t.type(r.reason, StoreUnavailableError, `call ${i}: StoreUnavailableError`);
      t.notMatch(String((r.reason as Error).message), /127\.0\.0\.1/, "no address in the message");
    }
  }
});

t.test("opening against a server without JetStream fails as StoreUnavailableError", async (t) => {
  const dir = await tempDir(t);
  const plain = new NatsServerProcess({
    binary: NATS_SERVER,
    workDir: dir,
    config: { serverName: "plain", host: "127.0.0.1", port: -1 },
  });
  t.teardown(() => plain.stop());
  const ports = await plain.start();
  const own = await connect({ servers: `nats://127.0.0.1:${ports.nats}` });
  t.teardown(() => own.close());
  await t.rejects(openKvNonceStore({ nc: own, openTimeoutMs: 2000, timeoutMs: 500 }), StoreUnavailableError);
});
