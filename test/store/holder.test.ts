// The holder the callout and control plane use while the KV store opens: refuses every
// call (never answers from nothing), then forwards to the real store once set.

import path from "node:path";
import t, { type Test } from "tap";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { StoreUnavailableError } from "../../lib/errors.ts";
import { BusMetrics, instrumentStore } from "../../lib/metrics/index.ts";
import { createStoreHolder } from "../../lib/store/holder.ts";
import { openStore } from "../../lib/store/index.ts";
import { tempDir } from "../helpers/fs.ts";

async function sqlite(t: Test) {
  const dir = await tempDir(t);
  return openStore({ backend: "sqlite", file: path.join(dir, "store.db") });
}

t.test("before set: every call is refused as unavailable, predicates included", async (t) => {
  const holder = createStoreHolder("kv");
  t.equal(holder.store.backend, "kv");
  t.equal(holder.current, undefined);
  const id = createIdentity().signPub;
  const calls: Array<() => Promise<unknown>> = [
    () => holder.store.isAuthorized(id),
    () => holder.store.isMember("r".repeat(22), id),
    () => holder.store.getUser(id),
    () => holder.store.listRoomsFor(id),
    () => holder.store.addUser({ signPub: id, handle: "a", role: "member", kexPub: null }),
  ];
  for (const call of calls) {
    await t.rejects(call(), StoreUnavailableError);
  }
  await t.rejects(holder.store.hasAdmin(), { code: "STORE_UNAVAILABLE", message: /still opening/ });
  t.equal(await Promise.resolve(holder.store).then((s) => s.backend), "kv", "not a thenable");
});

t.test("after set: calls reach the real store", async (t) => {
  const real = await sqlite(t);
  const holder = createStoreHolder("sqlite");
  await holder.set(real);
  t.equal(holder.current, real);
  const id = createIdentity().signPub;
  t.equal(await holder.store.isAuthorized(id), false);
  await holder.store.addUser({ signPub: id, handle: "alice", role: "admin", kexPub: null });
  t.equal(await holder.store.isAuthorized(id), true);
  t.equal(await real.hasAdmin(), true, "written to the real store");
  await holder.store.close();
  await t.rejects(holder.store.isAuthorized(id), { code: "STORE_UNAVAILABLE", message: /closed/ });
  await t.rejects(real.isAuthorized(id), StoreUnavailableError, "closing the holder closed the real store");
});

t.test("a store that finishes opening after the holder closed is closed, never installed", async (t) => {
  const holder = createStoreHolder("sqlite");
  await holder.store.close();
  const late = await sqlite(t);
  await holder.set(late);
  t.equal(holder.current, undefined);
  await t.rejects(late.hasAdmin(), StoreUnavailableError, "the late store was closed");
  await t.rejects(holder.store.hasAdmin(), { message: /closed/ });
});

// The holder binds the real store's methods once per store, and the metrics wrapper
// keeps one timing wrapper per method: neither may outlive the store it was made for,
// and neither may remember an answer — only which function to call.
t.test("methods bound once: a later set() and close() are followed at once, answers never kept", async (t) => {
  const first = await sqlite(t);
  const second = await sqlite(t);
  t.teardown(() => first.close());
  const holder = createStoreHolder("sqlite");
  const timed = instrumentStore(holder.store, new BusMetrics());
  await holder.set(first);
  const id = createIdentity().signPub;
  await holder.store.addUser({ signPub: id, handle: "alice", role: "member", kexPub: null });
  const onlyInFirst = createIdentity().signPub;
  await holder.store.addUser({ signPub: onlyInFirst, handle: "bob", role: "member", kexPub: null });
  t.equal(holder.store.isAuthorized, holder.store.isAuthorized, "the same bound method on every access");
  t.equal(await timed.isAuthorized(id), true, "golden: through both layers");
  await first.revokeUser(id);
  t.equal(await timed.isAuthorized(id), false, "revoked: the next call reads the store again");
  await holder.set(second);
  t.equal(await holder.store.isAuthorized(id), false, "after set(): the second store answers, not the first");
  t.equal(await timed.isAuthorized(onlyInFirst), false, "and so does the timed layer above it");
  t.equal(await holder.store.isAuthorized(onlyInFirst), false, "a key only the first store has is unknown now");
  await timed.addUser({ signPub: id, handle: "alice", role: "member", kexPub: null });
  t.equal(await second.isAuthorized(id), true, "writes reach the second store");
  await holder.store.close();
  await t.rejects(timed.isAuthorized(id), { code: "STORE_UNAVAILABLE", message: /closed/ }, "closed: refused");
  await t.rejects(second.isAuthorized(id), StoreUnavailableError, "closing the holder closed the second store");
});

t.test("the timed layer counts every call of every method, refusals included", async (t) => {
  const real = await sqlite(t);
  const holder = createStoreHolder("sqlite");
  const metrics = new BusMetrics();
  const timed = instrumentStore(holder.store, metrics);
  const id = createIdentity().signPub;
  await t.rejects(timed.isAuthorized(id), StoreUnavailableError, "before set: refused");
  await holder.set(real);
  for (let i = 0; i < 3; i++) await timed.isAuthorized(id);
  await timed.hasAdmin();
  await holder.store.close();
  await t.rejects(timed.hasAdmin(), StoreUnavailableError);
  const counts = Object.fromEntries(
    (await metrics.storeLatency.get()).values
      .filter((v) => v.metricName?.endsWith("_count"))
      .map((v) => [v.labels.op, v.value]),
  );
  t.same(counts, { isAuthorized: 4, hasAdmin: 2 });
  const errors = (await metrics.storeErrors.get()).values.map((v) => [v.labels.op, v.value]);
  t.same(errors.sort(), [
    ["hasAdmin", 1],
    ["isAuthorized", 1],
  ]);
});
