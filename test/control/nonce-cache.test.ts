import t from "tap";
import { NonceCache, type NonceStore, nonceKey } from "../../lib/control/nonce-cache.ts";
import { captureLogger } from "../helpers/log.ts";

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

t.test("fresh, then replayed within the TTL, fresh again after it", async (t) => {
  const c = clock();
  const cache = new NonceCache({ ttlMs: 1000, now: c.now });
  t.equal(cache.check("a"), "fresh");
  t.equal(cache.check("a"), "replayed");
  t.equal(await cache.checkAndRemember("a", 1000), "replayed", "the async NonceStore form agrees");
  t.equal(cache.check("b"), "fresh");
  c.advance(1000);
  t.equal(cache.check("a"), "replayed", "still remembered at exactly ttlMs (inclusive)");
  c.advance(1);
  t.equal(cache.check("a"), "fresh", "forgotten after the TTL");
  t.equal(cache.size, 1, "b expired too, a was remembered again");
});

t.test("nonces are scoped to the signing key", async (t) => {
  const cache = new NonceCache();
  t.equal(cache.check(nonceKey("k1", "n")), "fresh");
  t.equal(cache.check(nonceKey("k2", "n")), "fresh");
  t.equal(cache.check(nonceKey("k1", "n")), "replayed");
});

t.test("expired entries are pruned in insertion order, and only those", async (t) => {
  const c = clock();
  const cache = new NonceCache({ ttlMs: 100, now: c.now });
  for (let i = 0; i < 10; i++) {
    cache.check(`n${i}`);
    c.advance(10);
  }
  // now = start + 100; n0 expires at start + 100 (still live), n1 at start + 110.
  t.equal(cache.size, 10);
  c.advance(1);
  cache.check("probe-1");
  t.equal(cache.size, 10, "n0 pruned, probe added");
  t.equal(cache.check("n0"), "fresh", "n0 was forgotten");
  t.equal(cache.check("n1"), "replayed", "n1 is still live");
  c.advance(50);
  cache.check("probe-2");
  // n0..n5 expired (n0 again is new, expires later); n6..n9, probes and n0 remain.
  t.equal(cache.check("n5"), "fresh", "n5 expired");
  t.equal(cache.check("n6"), "replayed", "n6 live");
  c.advance(10_000);
  t.equal(cache.check("last"), "fresh");
  t.equal(cache.size, 1, "everything expired is gone");
});

t.test("memory is capped: full refuses new nonces (and logs once), replays are still replays", async (t) => {
  const c = clock();
  const { logger, lines } = captureLogger();
  const cache = new NonceCache({ ttlMs: 1000, max: 3, now: c.now, logger });
  t.equal(cache.check("a"), "fresh");
  c.advance(100);
  t.equal(cache.check("b"), "fresh");
  t.equal(cache.check("c"), "fresh");
  t.equal(cache.check("d"), "full");
  t.equal(await cache.checkAndRemember("e", 1000), "full");
  t.equal(cache.check("a"), "replayed", "a full cache still recognises replays");
  t.equal(cache.size, 3, "never more than max");
  t.equal(cache.check("d"), "full", "a refused nonce was not remembered");
  t.equal(lines.filter((l) => l.level === "error").length, 1, "one error line per full episode, not per request");
  t.match(lines[0], { component: "control-auth", max: 3, msg: /nonce cache is full/ });

  c.advance(901);
  t.equal(cache.check("d"), "fresh", "room again once the oldest expired");
  t.equal(cache.size, 3);
  t.equal(cache.check("e"), "full", "full again");
  t.equal(lines.filter((l) => l.level === "error").length, 2, "a new episode logs again");
});

t.test("pruning work is proportional to what expired (many entries, steady state)", async (t) => {
  // A steady stream: every step adds one and expires one. Correctness and the bound,
  // not timing, are what is checked; the queue is compacted as it goes.
  const c = clock();
  const cache = new NonceCache({ ttlMs: 5000, max: 10_000, now: c.now });
  for (let i = 0; i < 5000; i++) {
    cache.check(`x${i}`);
    c.advance(1);
  }
  let notFresh = 0;
  let maxSize = 0;
  for (let i = 5000; i < 60_000; i++) {
    if (cache.check(`x${i}`) !== "fresh") notFresh++;
    maxSize = Math.max(maxSize, cache.size);
    c.advance(1);
  }
  t.equal(notFresh, 0, "every new nonce was fresh");
  t.ok(maxSize <= 5001, `size stays at the live window (max ${maxSize})`);
  t.equal(cache.check("x59990"), "replayed");
  t.equal(cache.check("x10"), "fresh");
});

t.test("mixed TTLs stay correct (a long-lived head does not hide replays)", async (t) => {
  const c = clock();
  const cache = new NonceCache({ ttlMs: 100, now: c.now });
  t.equal(await cache.checkAndRemember("long", 10_000), "fresh");
  t.equal(await cache.checkAndRemember("short", 10), "fresh");
  c.advance(11);
  t.equal(cache.check("short", 10), "fresh", "expired behind a live head: treated as new");
  t.equal(cache.check("short", 10), "replayed");
  c.advance(11);
  t.equal(cache.check("long"), "replayed");
});

t.test("the in-memory cache is a NonceStore; bad options are refused", async (t) => {
  const store: NonceStore = new NonceCache();
  t.equal(await store.checkAndRemember("k", 60_000), "fresh");
  t.throws(() => new NonceCache({ ttlMs: 0 }), RangeError);
  t.throws(() => new NonceCache({ max: 0 }), RangeError);
  t.throws(() => new NonceCache({ max: 1.5 }), RangeError);
});

t.test("one key's flood uses up its own share: other keys are still fresh, never full", async (t) => {
  const c = clock();
  const cache = new NonceCache({ ttlMs: 1000, max: 10, maxPerOwner: 3, now: c.now });
  for (let i = 0; i < 3; i++) t.equal(cache.check(`flood:${i}`, 1000, "flood"), "fresh");
  for (let i = 3; i < 50; i++) t.equal(cache.check(`flood:${i}`, 1000, "flood"), "quota", "the flooder is refused");
  t.equal(cache.size, 3, "a refused nonce is not remembered");
  t.equal(cache.heldBy("flood"), 3);
  t.equal(cache.check("other:1", 1000, "other"), "fresh", "another key is served during the flood");
  t.equal(cache.check("flood:0", 1000, "flood"), "replayed", "a replay is still a replay, not quota");
  c.advance(1001);
  t.equal(cache.check("flood:99", 1000, "flood"), "fresh", "the share comes back as entries expire");
  t.equal(cache.heldBy("flood"), 1);
});

t.test("many keys together still meet the global cap (full), and the default share is bounded", async (t) => {
  const c = clock();
  const cache = new NonceCache({ ttlMs: 1000, max: 4, maxPerOwner: 2, now: c.now });
  t.equal(cache.check("a:1", 1000, "a"), "fresh");
  t.equal(cache.check("a:2", 1000, "a"), "fresh");
  t.equal(cache.check("b:1", 1000, "b"), "fresh");
  t.equal(cache.check("b:2", 1000, "b"), "fresh");
  t.equal(cache.check("c:1", 1000, "c"), "full", "the global cap still holds");
  t.equal(new NonceCache().check("x:1", 1000, "x"), "fresh");
  t.throws(() => new NonceCache({ maxPerOwner: 0 }), RangeError);
});
