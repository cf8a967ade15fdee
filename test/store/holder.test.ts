// The holder the callout and control plane use while the KV store opens: refuses every
// call (never answers from nothing), then forwards to the real store once set.

import path from "node:path";
import t, { type Test } from "tap";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { StoreUnavailableError } from "../../lib/errors.ts";
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
