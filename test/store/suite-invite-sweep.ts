import type { Test } from "tap";
import { ConflictError, InvalidArgumentError } from "../../lib/errors.ts";
import {
  hashInviteToken,
  type Invite,
  InviteRefusedError,
  inviteIdOf,
  type NewInvite,
  newInviteToken,
} from "../../lib/store/index.ts";
import { refuses, type SuiteContext } from "./context.ts";
import { kexPubHex, signPubHex } from "./keys.ts";

function invite(handle: string, ttlMs = 60_000): NewInvite & { ttlMs: number } {
  return { token: newInviteToken(), handle, role: "member", createdBy: "host", ttlMs };
}

const registration = () => ({ signPub: signPubHex(), kexPub: kexPubHex() });

/** An invite made with ttlMs 1 is expired once a millisecond has passed. */
const tick = () => new Promise((r) => setTimeout(r, 3));

/** An invite as the store keeps it, expired a second ago. */
function expiredRecord(handle: string): Invite {
  const tokenHash = hashInviteToken(newInviteToken());
  const at = Date.now() - 2000;
  return {
    id: inviteIdOf(tokenHash),
    tokenHash,
    handle,
    role: "member",
    createdBy: "host",
    createdAt: at,
    expiresAt: at + 1000,
    status: "open",
    spentBy: null,
    spentAt: null,
  };
}

/** `n` calls of `fn`, `width` at a time. */
async function inBatches(n: number, width: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  for (let at = 0; at < n; at += width) {
    await Promise.all(Array.from({ length: Math.min(width, n - at) }, (_, j) => fn(at + j)));
  }
}

/** sweepInvites, and invites at a scale where a scan per call would show. */
export async function inviteSweepTests(t: Test, ctx: SuiteContext): Promise<void> {
  const { fresh } = ctx;

  t.test("sweepInvites removes spent, cancelled and expired invites; open ones stay and still count", async (t) => {
    const s = await fresh(t);
    const open = invite("open");
    const spent = invite("spent");
    const cancelled = invite("cancelled");
    const expired = invite("expired", 1);
    for (const i of [open, spent, cancelled, expired]) await s.createInvite(i);
    await s.consumeInvite(spent.token, registration());
    await s.cancelInvite(cancelled.token);
    await tick();
    t.equal(await s.sweepInvites(Date.now() + 1), 3, "three could no longer be consumed");
    t.same(
      (await s.listInvites()).map((i) => i.handle),
      ["open"],
    );
    t.equal(await s.sweepInvites(Date.now() + 1), 0, "a second sweep finds nothing");
    await refuses(
      t,
      s,
      "a swept token is unknown",
      () => s.consumeInvite(cancelled.token, registration()),
      InviteRefusedError,
      {
        reason: "unknown",
      },
    );
    await refuses(t, s, "the open invite still holds its handle", () => s.createInvite(invite("open")), ConflictError);
    const again = await s.createInvite(invite("expired"));
    t.equal(again.status, "open", "a swept invite's handle can be invited again");
    t.equal((await s.consumeInvite(open.token, registration())).handle, "open", "the open one is still consumable");
  });

  t.test("sweepInvites keeps invites made at or after the cut", async (t) => {
    const s = await fresh(t);
    const old = await s.createInvite(invite("old", 1));
    await tick();
    const young = await s.createInvite(invite("young", 1));
    await tick();
    t.equal(await s.sweepInvites(old.createdAt), 0, "the cut is exclusive");
    t.equal(await s.sweepInvites(young.createdAt), young.createdAt > old.createdAt ? 1 : 0);
    t.same(
      (await s.listInvites()).map((i) => i.handle),
      young.createdAt > old.createdAt ? ["young"] : ["old", "young"],
    );
  });

  t.test("sweepInvites: a bad cut is InvalidArgumentError naming it; nothing removed", async (t) => {
    const s = await fresh(t);
    await s.createInvite(invite("gone", 1));
    await tick();
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, "0", null, undefined]) {
      await refuses(t, s, `before ${String(bad)}`, () => s.sweepInvites(bad as number), InvalidArgumentError, {
        field: "before",
      });
    }
    t.equal((await s.listInvites()).length, 1);
  });

  t.test("10,000 invites: create and consume stay correct, and the spent and expired ones are swept", async (t) => {
    const s = await fresh(t);
    const stale = 9_990;
    if (ctx.seedInvites)
      await ctx.seedInvites(
        s,
        Array.from({ length: stale }, (_, i) => expiredRecord(`old${i}`)),
      );
    else await inBatches(stale, 20, (i) => s.createInvite(invite(`old${i}`, 1)));
    const live = Array.from({ length: 10 }, (_, i) => invite(`live${i}`));
    for (const i of live) await s.createInvite(i);
    await tick();
    // t.rejects, not refuses(): a snapshot per check would dwarf what is tested here.
    await t.rejects(s.createInvite(invite("live3")), ConflictError, "an open invite's handle among 10,000");
    await t.rejects(s.createInvite({ ...invite("x"), token: live[7]!.token }), ConflictError, "a used token");
    await t.rejects(s.consumeInvite(newInviteToken(), registration()), InviteRefusedError, "an unknown token");
    const fresh5 = live.slice(0, 5);
    for (const i of fresh5) t.equal((await s.consumeInvite(i.token, registration())).handle, i.handle);
    t.equal((await s.listInvites()).length, 10_000);
    t.equal(await s.sweepInvites(Date.now() + 1), stale + 5, "the expired and the spent ones went");
    t.same(
      (await s.listInvites()).map((i) => i.handle).sort(),
      live.slice(5).map((i) => i.handle),
    );
    const made = await s.createInvite(invite(`old${stale - 1}`));
    t.equal(made.status, "open", "an expired invite's handle is free again");
  });
}
