import crypto from "node:crypto";
import type { Test } from "tap";
import { ConflictError, InvalidArgumentError, NotFoundError, UserExistsError } from "../../lib/errors.ts";
import {
  DEFAULT_INVITE_TTL_MS,
  type Invite,
  InviteRefusedError,
  type NewInvite,
  newInviteToken,
  type Store,
} from "../../lib/store/index.ts";
import { newUser, refuses, type SuiteContext } from "./context.ts";
import { kexPubHex, signPubHex } from "./keys.ts";

const sha256 = (s: string) => crypto.createHash("sha256").update(s).digest("hex");

function invite(extra: Partial<NewInvite> = {}): NewInvite {
  return { token: newInviteToken(), handle: "newbie", role: "member", createdBy: "host", ...extra };
}

function registration(extra: Record<string, unknown> = {}) {
  return { signPub: signPubHex(), kexPub: kexPubHex(), ...extra };
}

/** Invites: create, list, cancel, and the single-use registration. */
export async function inviteTests(t: Test, ctx: SuiteContext): Promise<void> {
  const { fresh } = ctx;

  t.test("createInvite stores only the token's hash", async (t) => {
    const s = await fresh(t);
    const admin = await s.addUser(newUser("admin", { role: "admin" }));
    const token = newInviteToken();
    t.match(token, /^[0-9a-f]{64}$/, "newInviteToken: 32 random bytes in hex");
    const before = Date.now();
    const inv = await s.createInvite({
      token: token.toUpperCase(),
      handle: "NewBie",
      role: "admin",
      createdBy: admin.signPub.toUpperCase(),
      ttlMs: 60_000,
    });
    const hash = sha256(token);
    t.same(inv, {
      id: hash.slice(0, 12),
      tokenHash: hash,
      handle: "newbie",
      role: "admin",
      createdBy: admin.signPub,
      createdAt: inv.createdAt,
      expiresAt: inv.createdAt + 60_000,
      status: "open",
      spentBy: null,
      spentAt: null,
    });
    t.ok(Number.isInteger(inv.createdAt) && inv.createdAt >= before);
    t.same(await s.listInvites(), [inv]);
    const snap = await s.snapshot();
    t.same(snap.invites, [inv]);
    t.notOk(JSON.stringify(snap).includes(token), "the token is nowhere in the state");

    const dflt = await s.createInvite(invite({ handle: "other" }));
    t.equal(dflt.expiresAt - dflt.createdAt, DEFAULT_INVITE_TTL_MS, "7 days by default");
    t.equal(DEFAULT_INVITE_TTL_MS, 7 * 24 * 3600 * 1000);
  });

  t.test("createInvite: bad input is InvalidArgumentError naming the field; nothing written", async (t) => {
    const s = await fresh(t);
    const good = invite();
    const cases: Array<[string, unknown, string]> = [
      ["not an object", null, "invite"],
      ["token short", { ...good, token: good.token.slice(2) }, "token"],
      ["token not hex", { ...good, token: "g".repeat(64) }, "token"],
      ["token missing", { ...good, token: undefined }, "token"],
      ["handle bad", { ...good, handle: "-x" }, "handle"],
      ["handle missing", { ...good, handle: undefined }, "handle"],
      ["role bad", { ...good, role: "owner" }, "role"],
      ["createdBy empty", { ...good, createdBy: "" }, "createdBy"],
      ["createdBy with a space", { ...good, createdBy: "the host" }, "createdBy"],
      ["createdBy too long", { ...good, createdBy: "a".repeat(65) }, "createdBy"],
      ["createdBy missing", { ...good, createdBy: undefined }, "createdBy"],
      ["ttlMs 0", { ...good, ttlMs: 0 }, "ttlMs"],
      ["ttlMs negative", { ...good, ttlMs: -1 }, "ttlMs"],
      ["ttlMs fractional", { ...good, ttlMs: 1.5 }, "ttlMs"],
      ["ttlMs NaN", { ...good, ttlMs: Number.NaN }, "ttlMs"],
      ["ttlMs Infinity", { ...good, ttlMs: Number.POSITIVE_INFINITY }, "ttlMs"],
      ["ttlMs over a year", { ...good, ttlMs: 366 * 24 * 3600 * 1000 }, "ttlMs"],
      ["ttlMs a string", { ...good, ttlMs: "7d" }, "ttlMs"],
    ];
    for (const [label, input, field] of cases) {
      const err = await refuses(t, s, label, () => s.createInvite(input as NewInvite), InvalidArgumentError, {
        field,
      });
      t.notOk(err.message.includes(good.token), `${label}: the token is not echoed`);
    }
    t.ok(await s.createInvite(good), "the good input is accepted afterwards");
    t.equal((await s.createInvite(invite({ handle: "year", ttlMs: 365 * 24 * 3600 * 1000 }))).handle, "year");
  });

  t.test("createInvite: conflicts on token and handle", async (t) => {
    const s = await fresh(t);
    await s.addUser(newUser("alice"));
    const first = invite({ handle: "newbie" });
    await s.createInvite(first);
    await refuses(t, s, "the same token", () => s.createInvite({ ...first, handle: "other" }), ConflictError);
    await refuses(
      t,
      s,
      "the same token, other case",
      () => s.createInvite({ ...first, token: first.token.toUpperCase(), handle: "other" }),
      ConflictError,
    );
    await refuses(t, s, "a user's handle", () => s.createInvite(invite({ handle: "ALICE" })), ConflictError, {
      message: /"alice"/,
    });
    await refuses(
      t,
      s,
      "a handle with an open invite",
      () => s.createInvite(invite({ handle: "NewBie" })),
      ConflictError,
      { message: /open invite/ },
    );
    await s.cancelInvite(first.token);
    t.ok(await s.createInvite(invite({ handle: "newbie" })), "a cancelled invite frees its handle");
  });

  t.test("consumeInvite registers one active user and spends the token", async (t) => {
    const s = await fresh(t);
    const token = newInviteToken();
    const inv = await s.createInvite(invite({ token, handle: "newbie", role: "admin" }));
    const reg = registration();
    const before = Date.now();
    const user = await s.consumeInvite(token.toUpperCase(), {
      signPub: reg.signPub.toUpperCase(),
      kexPub: reg.kexPub.toUpperCase(),
    });
    t.same(user, {
      signPub: reg.signPub,
      kexPub: reg.kexPub,
      handle: "newbie",
      role: "admin",
      status: "active",
      createdAt: user.createdAt,
      revokedAt: null,
    });
    t.ok(user.createdAt >= before);
    t.same(await s.getUser(reg.signPub), user);
    t.equal(await s.isAuthorized(reg.signPub), true);
    t.equal(await s.hasAdmin(), true);
    const [spent] = await s.listInvites();
    t.same(spent, { ...inv, status: "spent", spentBy: reg.signPub, spentAt: spent!.spentAt });
    t.ok(Number.isInteger(spent!.spentAt) && spent!.spentAt! >= inv.createdAt);

    const again = await refuses(
      t,
      s,
      "a second use, with another key",
      () => s.consumeInvite(token, registration()),
      InviteRefusedError,
      { reason: "spent", code: "CONFLICT" },
    );
    t.type(again, ConflictError, "a refusal is a ConflictError");
    await refuses(t, s, "a second use, with the same key", () => s.consumeInvite(token, reg), InviteRefusedError, {
      reason: "spent",
    });
  });

  t.test("consumeInvite: unknown, cancelled and expired tokens are refused with a reason", async (t) => {
    const s = await fresh(t);
    const unknown = newInviteToken();
    const e1 = await refuses(t, s, "unknown", () => s.consumeInvite(unknown, registration()), InviteRefusedError, {
      reason: "unknown",
    });
    t.notOk(e1.message.includes(unknown), "the token is not echoed");

    const cancelled = invite({ handle: "c" });
    await s.createInvite(cancelled);
    await s.cancelInvite(cancelled.token);
    await refuses(t, s, "cancelled", () => s.consumeInvite(cancelled.token, registration()), InviteRefusedError, {
      reason: "cancelled",
      message: /cancelled/,
    });

    const timed = invite({ handle: "timed", ttlMs: 60_000 });
    const inv = await s.createInvite(timed);
    for (const [label, now] of [
      ["at expiresAt", inv.expiresAt],
      ["after expiresAt", inv.expiresAt + 1],
      ["long after", inv.expiresAt + 365 * 24 * 3600 * 1000],
    ] as const) {
      await refuses(t, s, label, () => s.consumeInvite(timed.token, registration({ now })), InviteRefusedError, {
        reason: "expired",
        message: /expired/,
      });
    }
    const user = await s.consumeInvite(timed.token, registration({ now: inv.expiresAt - 1 }));
    t.equal(user.handle, "timed", "one millisecond before expiry is still valid");
  });

  t.test("consumeInvite: an already-registered key is UserExistsError and spends the token", async (t) => {
    const s = await fresh(t);
    const existing = await s.addUser(newUser("alice"));
    const revoked = await s.addUser(newUser("mallory"));
    await s.revokeUser(revoked.signPub);
    for (const u of [existing, revoked]) {
      const inv = invite({ handle: `for-${u.handle}` });
      await s.createInvite(inv);
      const before = await s.snapshot();
      const err = await s
        .consumeInvite(inv.token, { signPub: u.signPub.toUpperCase(), kexPub: kexPubHex() })
        .catch((e: unknown) => e);
      t.type(err, UserExistsError, u.handle);
      t.equal((err as UserExistsError).signPub, u.signPub);
      const after = await s.snapshot();
      t.same(after.users, before.users, `${u.handle}: the user is untouched (a revoked key stays revoked)`);
      const spent = after.invites.find((i) => i.handle === `for-${u.handle}`)!;
      t.equal(spent.status, "spent", `${u.handle}: the token is spent`);
      t.equal(spent.spentBy, u.signPub);
      await refuses(
        t,
        s,
        "and cannot be retried with a new key",
        () => s.consumeInvite(inv.token, registration()),
        InviteRefusedError,
        {
          reason: "spent",
        },
      );
    }
  });

  t.test("consumeInvite: a handle taken since the invite was made leaves the token open", async (t) => {
    const s = await fresh(t);
    const inv = invite({ handle: "newbie" });
    await s.createInvite(inv);
    await s.addUser(newUser("NEWBIE"));
    await refuses(t, s, "handle taken", () => s.consumeInvite(inv.token, registration()), InviteRefusedError, {
      reason: "handle_taken",
    });
    t.equal((await s.listInvites())[0]!.status, "open", "an admin can still cancel it");
    t.equal((await s.cancelInvite(inv.token)).status, "cancelled");
  });

  t.test("consumeInvite: bad input is InvalidArgumentError and leaves the token open", async (t) => {
    const s = await fresh(t);
    const inv = invite();
    await s.createInvite(inv);
    const cases: Array<[string, string, unknown, string]> = [
      ["token short", inv.token.slice(1), registration(), "token"],
      ["token not hex", "z".repeat(64), registration(), "token"],
      ["token missing", undefined as never, registration(), "token"],
      ["registration missing", inv.token, undefined, "registration"],
      ["signPub missing", inv.token, registration({ signPub: undefined }), "signPub"],
      ["signPub malformed", inv.token, registration({ signPub: "xyz" }), "signPub"],
      ["signPub small order", inv.token, registration({ signPub: "00".repeat(32) }), "signPub"],
      ["kexPub missing", inv.token, registration({ kexPub: undefined }), "kexPub"],
      ["kexPub null", inv.token, registration({ kexPub: null }), "kexPub"],
      ["kexPub low order", inv.token, registration({ kexPub: "00".repeat(32) }), "kexPub"],
      ["now NaN", inv.token, registration({ now: Number.NaN }), "now"],
      ["now a string", inv.token, registration({ now: "soon" }), "now"],
      ["now Infinity", inv.token, registration({ now: Number.POSITIVE_INFINITY }), "now"],
    ];
    for (const [label, token, reg, field] of cases) {
      const err = await refuses(t, s, label, () => s.consumeInvite(token, reg as never), InvalidArgumentError, {
        field,
      });
      t.notOk(err.message.includes(inv.token), `${label}: the token is not echoed`);
    }
    t.equal((await s.consumeInvite(inv.token, registration())).handle, "newbie", "the token still works");
  });

  t.test("consumeInvite: 50 concurrent consumers of one token make exactly one user", async (t) => {
    const s = await fresh(t);
    const stores: Store[] = [s];
    if (ctx.sibling) for (let i = 0; i < 9; i++) stores.push(await ctx.sibling(t, s));
    const inv = invite({ handle: "racer" });
    await s.createInvite(inv);
    const regs = Array.from({ length: 50 }, () => registration());
    const results = await Promise.allSettled(
      regs.map((reg, i) => stores[i % stores.length]!.consumeInvite(inv.token, reg)),
    );
    const winners = results.filter((r) => r.status === "fulfilled");
    t.equal(winners.length, 1, "exactly one registration succeeded");
    const losers = results.filter((r) => r.status === "rejected");
    t.ok(
      losers.every((r) => r.reason instanceof InviteRefusedError && r.reason.reason === "spent"),
      "every other one was refused as spent",
    );
    const users = await s.listUsers();
    t.equal(users.length, 1, "one user in the store");
    const winner = (winners[0] as PromiseFulfilledResult<{ signPub: string }>).value;
    t.equal(users[0]!.signPub, winner.signPub);
    t.equal((await s.listInvites())[0]!.spentBy, winner.signPub, "spent by the winner");
  });

  t.test("cancelInvite by id or token; spent and cancelled ones are conflicts", async (t) => {
    const s = await fresh(t);
    const a = invite({ handle: "a" });
    const b = invite({ handle: "b" });
    const c = invite({ handle: "c" });
    const ia = await s.createInvite(a);
    const ib = await s.createInvite(b);
    await s.createInvite(c);

    const byId = await s.cancelInvite(ia.id.toUpperCase());
    t.same(byId, { ...ia, status: "cancelled" }, "by id (any case); nothing else changes");
    t.same(await s.cancelInvite(b.token), { ...ib, status: "cancelled" }, "by token");
    await refuses(t, s, "cancelled twice", () => s.cancelInvite(ia.id), ConflictError, { message: /cancelled/ });
    await s.consumeInvite(c.token, registration());
    await refuses(t, s, "spent", () => s.cancelInvite(c.token), ConflictError, { message: /spent/ });

    const unknownToken = newInviteToken();
    const e = await refuses(t, s, "unknown token", () => s.cancelInvite(unknownToken), NotFoundError, {
      kind: "invite",
      id: sha256(unknownToken).slice(0, 12),
    });
    t.notOk(e.message.includes(unknownToken), "an unknown token is named by its id, never echoed");
    await refuses(t, s, "unknown id", () => s.cancelInvite("0123456789ab"), NotFoundError, {
      kind: "invite",
      id: "0123456789ab",
    });
    for (const bad of ["", "0123456789a", "0123456789abc", "g123456789ab", a.token.slice(1), undefined, 12]) {
      await refuses(
        t,
        s,
        `malformed ${JSON.stringify(bad)}`,
        () => s.cancelInvite(bad as string),
        InvalidArgumentError,
        {
          field: "invite",
        },
      );
    }
  });

  t.test("listInvites: every invite, by createdAt then id", async (t) => {
    const s = await fresh(t);
    const made: Invite[] = [];
    for (const h of ["e", "d", "c", "b", "a"]) made.push(await s.createInvite(invite({ handle: h })));
    await s.cancelInvite(made[1]!.id);
    const list = await s.listInvites();
    t.same(
      list.map((i) => i.id),
      [...made].sort((x, y) => x.createdAt - y.createdAt || (x.id < y.id ? -1 : 1)).map((i) => i.id),
    );
    t.equal(list.filter((i) => i.status === "cancelled").length, 1, "cancelled ones included");
  });
}
