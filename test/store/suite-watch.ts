import type { Test } from "tap";
import type { Store } from "../../lib/store/index.ts";
import { newUser, type SuiteContext } from "./context.ts";

/** Resolves with the first report `watchUsers` makes that names `signPub` (or null: "check yours"). */
function nextChange(s: Store, signPub: string): { seen: Promise<string | null>; stop: () => void } {
  let stop = () => {};
  const seen = new Promise<string | null>((resolve) => {
    const w = s.watchUsers((k) => {
      if (k === null || k === signPub) resolve(k);
    });
    stop = () => w.stop();
  });
  return { seen, stop };
}

/** watchUsers: changes by any writer reach the watcher; stop() and close() end it. */
export async function watchTests(t: Test, ctx: SuiteContext): Promise<void> {
  const { fresh } = ctx;

  t.test("watchUsers reports a revoke and a delete made by another store on the same state", async (t) => {
    const s = await fresh(t);
    // Both backends give a second view of the same state (another connection, another file handle).
    if (!ctx.sibling) throw new Error("the watch suite needs ctx.sibling: a second store on the same state");
    const other = await ctx.sibling(t, s);
    for (const change of ["revoke", "delete"] as const) {
      const u = await s.addUser(newUser(`w${change}`));
      const w = nextChange(s, u.signPub);
      if (change === "revoke") await other.revokeUser(u.signPub);
      else await other.deleteUser(u.signPub);
      const k = await w.seen;
      w.stop();
      t.ok(k === null || k === u.signPub, `${change}: reported (by key, or as "check yours")`);
      t.equal(await s.isAuthorized(u.signPub), false, `${change}: the check the watcher then makes denies`);
    }
  });

  t.test("watchUsers reports this store's own writes too", async (t) => {
    const s = await fresh(t);
    const u = await s.addUser(newUser("own"));
    const w = nextChange(s, u.signPub);
    await s.revokeUser(u.signPub);
    t.ok([null, u.signPub].includes(await w.seen));
    w.stop();
  });

  t.test("watchUsers: nothing after stop(), and closing the store ends a watch without an error", async (t) => {
    const s = await fresh(t);
    let calls = 0;
    const w = s.watchUsers(() => calls++);
    w.stop();
    w.stop(); // twice is harmless
    const u = await s.addUser(newUser("quiet"));
    await s.revokeUser(u.signPub);
    // a later watch sees the next change, so the first one would have had its chance
    const later = nextChange(s, u.signPub);
    await s.deleteUser(u.signPub);
    await later.seen;
    later.stop();
    t.equal(calls, 0, "a stopped watch is not called");
    s.watchUsers(() => calls++);
    await t.resolves(s.close(), "close() with a running watch resolves");
  });
}
