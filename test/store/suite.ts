import type { Test } from "tap";
import {
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  StoreUnavailableError,
  UserExistsError,
} from "../../lib/errors.ts";
import type { Invite, NewUser, Store } from "../../lib/store/index.ts";
import { newInviteToken } from "../../lib/store/index.ts";
import { roomInput, type SuiteContext, sealed, withRoom } from "./context.ts";
import { kexPubHex, signPubHex } from "./keys.ts";
import { inviteSweepTests } from "./suite-invite-sweep.ts";
import { inviteTests } from "./suite-invites.ts";
import { lifecycleTests } from "./suite-lifecycle.ts";
import { roomTests } from "./suite-rooms.ts";
import { watchTests } from "./suite-watch.ts";

export interface SuiteOptions {
  /** Opens another store on the same state as `store` (another process's view), if the backend can. */
  sibling?: (store: Store) => Promise<Store>;
  /** Writes invite records as they are (bulk set-up for scale tests), if the backend can do it faster than createInvite. */
  seedInvites?: (store: Store, invites: Invite[]) => Promise<void>;
}

/**
 * The one behaviour suite every Store backend must pass. Each subtest gets a fresh,
 * empty store from `open` and closes it afterwards.
 */
export function storeSuite(
  t: Test,
  name: string,
  open: () => Promise<Store>,
  opts: SuiteOptions = {},
): Promise<unknown> {
  async function fresh(tt: Test): Promise<Store> {
    const store = await open();
    tt.teardown(() => store.close());
    return store;
  }
  const sibling = opts.sibling;
  const ctx: SuiteContext = {
    fresh,
    ...(opts.seedInvites ? { seedInvites: opts.seedInvites } : {}),
    sibling:
      sibling &&
      (async (tt, store) => {
        const other = await sibling(store);
        tt.teardown(() => other.close());
        return other;
      }),
  };
  function member(handle: string, extra: Partial<NewUser> = {}): NewUser {
    return { signPub: signPubHex(), kexPub: kexPubHex(), handle, role: "member", ...extra };
  }

  return t.test(`Store behaviour: ${name}`, async (t) => {
    t.test("add, get and list a user", async (t) => {
      const s = await fresh(t);
      t.ok(s.backend === "sqlite" || s.backend === "kv", "names its backend");
      t.same(await s.listUsers(), [], "a new store is empty");
      const input = member("alice", { role: "admin" });
      const before = Date.now();
      const added = await s.addUser(input);
      t.match(added, {
        signPub: input.signPub,
        kexPub: input.kexPub,
        handle: "alice",
        role: "admin",
        status: "active",
        revokedAt: null,
      });
      t.type(added.createdAt, "number");
      t.ok(Number.isInteger(added.createdAt) && added.createdAt >= before, "createdAt is an integer ms timestamp");
      t.same(await s.getUser(input.signPub), added, "getUser returns what addUser returned");
      t.same(await s.listUsers(), [added]);
      t.equal(await s.isAuthorized(input.signPub), true);
    });

    t.test("kexPub is optional", async (t) => {
      const s = await fresh(t);
      const omitted = await s.addUser({ signPub: signPubHex(), handle: "bot1", role: "member" });
      const nulled = await s.addUser({ signPub: signPubHex(), kexPub: null, handle: "bot2", role: "member" });
      t.equal(omitted.kexPub, null);
      t.equal(nulled.kexPub, null);
      t.equal((await s.getUser(omitted.signPub)).kexPub, null);
    });

    t.test("listUsers is ordered by createdAt, then handle, and includes revoked users", async (t) => {
      const s = await fresh(t);
      const handles = ["mallory", "bob", "carol", "alice", "dave"];
      for (const h of handles) await s.addUser(member(h));
      const revoked = (await s.listUsers()).find((u) => u.handle === "carol")!;
      await s.revokeUser(revoked.signPub);
      const list = await s.listUsers();
      t.same(list.map((u) => u.handle).sort(), [...handles].sort(), "every user, revoked included");
      const sorted = [...list].sort((a, b) => a.createdAt - b.createdAt || (a.handle < b.handle ? -1 : 1));
      t.same(list, sorted);
      t.equal(list.find((u) => u.handle === "carol")?.status, "revoked");
    });

    t.test("keys are case-insensitive and returned lowercase", async (t) => {
      const s = await fresh(t);
      const signPub = signPubHex();
      const kexPub = kexPubHex();
      const added = await s.addUser({
        signPub: signPub.toUpperCase(),
        kexPub: kexPub.toUpperCase(),
        handle: "Alice",
        role: "member",
      });
      t.equal(added.signPub, signPub);
      t.equal(added.kexPub, kexPub);
      t.equal(added.handle, "alice", "handles are lowercased");
      t.same(await s.getUser(signPub.toUpperCase()), added);
      t.same(await s.getUser(signPub), added);
      t.equal(await s.isAuthorized(signPub.toUpperCase()), true);
      const mixed = signPub.slice(0, 32).toUpperCase() + signPub.slice(32);
      t.equal((await s.revokeUser(mixed)).status, "revoked");
      await s.deleteUser(signPub.toUpperCase());
      t.same(await s.listUsers(), []);
    });

    t.test("a duplicate signing key is UserExistsError, in any case", async (t) => {
      const s = await fresh(t);
      const first = await s.addUser(member("alice"));
      for (const key of [first.signPub, first.signPub.toUpperCase()]) {
        const err = await s.addUser({ signPub: key, handle: "other", role: "admin" }).catch((e: unknown) => e);
        t.type(err, UserExistsError);
        t.equal((err as UserExistsError).signPub, first.signPub, "the error names the normalised key");
      }
      t.same(await s.listUsers(), [first], "nothing was written");
      t.equal(await s.hasAdmin(), false, "the refused admin did not slip in");
    });

    t.test("setKexPub registers a missing key-exchange key once", async (t) => {
      const s = await fresh(t);
      const u = await s.addUser({ signPub: signPubHex(), handle: "alice", role: "admin" });
      t.equal(u.kexPub, null);
      const kexPub = kexPubHex();
      const set = await s.setKexPub(u.signPub.toUpperCase(), kexPub.toUpperCase());
      t.equal(set.kexPub, kexPub, "stored lowercase");
      t.same(await s.getUser(u.signPub), set);
      const again = await s.setKexPub(u.signPub, kexPubHex()).catch((e: unknown) => e);
      t.type(again, ConflictError, "never replaced");
      t.match((again as Error).message, /already has a key-exchange key/);
      t.equal((await s.getUser(u.signPub)).kexPub, kexPub, "the first key stays");
    });

    t.test("setKexPub refuses bad input, unknown and revoked users", async (t) => {
      const s = await fresh(t);
      const u = await s.addUser({ signPub: signPubHex(), handle: "alice", role: "member" });
      for (const bad of ["", "zz", "00".repeat(32)]) {
        const err = await s.setKexPub(u.signPub, bad).catch((e: unknown) => e);
        t.type(err, InvalidArgumentError, `refused ${JSON.stringify(bad)}`);
        t.equal((err as InvalidArgumentError).field, "kexPub");
      }
      await t.rejects(s.setKexPub(signPubHex(), kexPubHex()), NotFoundError);
      await s.revokeUser(u.signPub);
      await t.rejects(s.setKexPub(u.signPub, kexPubHex()), ConflictError);
      t.equal((await s.getUser(u.signPub)).kexPub, null, "nothing written");
    });

    t.test("a revoked user's key is still taken", async (t) => {
      const s = await fresh(t);
      const u = await s.addUser(member("alice"));
      await s.revokeUser(u.signPub);
      await t.rejects(s.addUser({ signPub: u.signPub, handle: "alice2", role: "member" }), UserExistsError);
      t.equal(await s.isAuthorized(u.signPub), false, "re-adding cannot reactivate a revoked key");
    });

    t.test("a duplicate handle is ConflictError naming the handle, in any case", async (t) => {
      const s = await fresh(t);
      const first = await s.addUser(member("alice"));
      for (const handle of ["alice", "ALICE", "Alice"]) {
        const err = await s.addUser(member(handle)).catch((e: unknown) => e);
        t.type(err, ConflictError, handle);
        t.match((err as Error).message, /"alice"/);
      }
      t.same(await s.listUsers(), [first], "nothing was written");
    });

    t.test("bad input is InvalidArgumentError naming the field, and nothing is written", async (t) => {
      const s = await fresh(t);
      const good = member("alice");
      const cases: Array<[string, unknown, string]> = [
        ["signPub not hex", { ...good, signPub: "zz".repeat(32) }, "signPub"],
        ["signPub too short", { ...good, signPub: good.signPub.slice(2) }, "signPub"],
        ["signPub too long", { ...good, signPub: `${good.signPub}00` }, "signPub"],
        ["signPub empty", { ...good, signPub: "" }, "signPub"],
        ["signPub missing", { ...good, signPub: undefined }, "signPub"],
        ["signPub a number", { ...good, signPub: 42 }, "signPub"],
        ["signPub with whitespace", { ...good, signPub: ` ${good.signPub.slice(1)}` }, "signPub"],
        ["signPub small-order point (all zero)", { ...good, signPub: "00".repeat(32) }, "signPub"],
        ["signPub identity point", { ...good, signPub: `01${"00".repeat(31)}` }, "signPub"],
        ["signPub not on the curve", { ...good, signPub: `02${"00".repeat(31)}` }, "signPub"],
        ["signPub non-canonical (y >= p)", { ...good, signPub: `${"ff".repeat(31)}7f` }, "signPub"],
        ["kexPub not hex", { ...good, kexPub: "g".repeat(64) }, "kexPub"],
        ["kexPub too short", { ...good, kexPub: "ab" }, "kexPub"],
        ["kexPub a number", { ...good, kexPub: 7 }, "kexPub"],
        ["kexPub low order (zero)", { ...good, kexPub: "00".repeat(32) }, "kexPub"],
        ["kexPub low order (one)", { ...good, kexPub: `01${"00".repeat(31)}` }, "kexPub"],
        ["kexPub non-canonical (u >= p)", { ...good, kexPub: "ff".repeat(32) }, "kexPub"],
        ["handle empty", { ...good, handle: "" }, "handle"],
        ["handle too long", { ...good, handle: "a".repeat(65) }, "handle"],
        ["handle leading dash", { ...good, handle: "-alice" }, "handle"],
        ["handle leading dot", { ...good, handle: ".alice" }, "handle"],
        ["handle with space", { ...good, handle: "al ice" }, "handle"],
        ["handle with slash", { ...good, handle: "al/ice" }, "handle"],
        ["handle non-ASCII", { ...good, handle: "\u00e5lice" }, "handle"],
        ["handle Kelvin sign", { ...good, handle: "\u212aelvin" }, "handle"],
        ["handle missing", { ...good, handle: undefined }, "handle"],
        ["role unknown", { ...good, role: "owner" }, "role"],
        ["role wrong case", { ...good, role: "Admin" }, "role"],
        ["role missing", { ...good, role: undefined }, "role"],
        ["not an object", null, "user"],
      ];
      for (const [label, input, field] of cases) {
        const err = await s.addUser(input as NewUser).catch((e: unknown) => e);
        t.type(err, InvalidArgumentError, label);
        t.equal((err as InvalidArgumentError).field, field, `${label}: field`);
      }
      t.same(await s.listUsers(), [], "nothing was written");
      t.equal(await s.isAuthorized(good.signPub), false);
      t.equal(await s.hasAdmin(), false);
      t.ok(await s.addUser(good), "the same key is still free afterwards");
    });

    t.test("handle edges that are allowed", async (t) => {
      const s = await fresh(t);
      for (const handle of ["a", "7", "a".repeat(64), "a.b_c-d", "Bot-01.prod"]) {
        t.equal((await s.addUser(member(handle))).handle, handle.toLowerCase(), handle);
      }
    });

    t.test("revoke marks the user revoked and stamps revokedAt", async (t) => {
      const s = await fresh(t);
      const u = await s.addUser(member("alice"));
      const other = await s.addUser(member("bob"));
      const revoked = await s.revokeUser(u.signPub);
      t.equal(revoked.status, "revoked");
      t.type(revoked.revokedAt, "number");
      t.ok(revoked.revokedAt! >= u.createdAt, "revokedAt is not before createdAt");
      t.same({ ...revoked, status: "active", revokedAt: null }, u, "nothing else changed");
      t.same(await s.getUser(u.signPub), revoked, "the revocation is stored");
      t.equal(await s.isAuthorized(u.signPub), false);
      t.equal(await s.isAuthorized(other.signPub), true, "other users are untouched");

      const err = await s.revokeUser(u.signPub).catch((e: unknown) => e);
      t.type(err, ConflictError, "a second revoke is a conflict");
      t.same(await s.getUser(u.signPub), revoked, "and changes nothing");
    });

    t.test("reinstate makes a revoked user active again, changing nothing else", async (t) => {
      const s = await fresh(t);
      const u = await s.addUser(member("alice"));
      await s.revokeUser(u.signPub);
      const back = await s.reinstateUser(u.signPub);
      t.same(back, u, "as it was before the revocation");
      t.same(await s.getUser(u.signPub), back, "stored");
      t.equal(await s.isAuthorized(u.signPub), true);
      // Edge: revoked again after a reinstatement.
      t.equal((await s.revokeUser(u.signPub)).status, "revoked");
      t.equal((await s.reinstateUser(u.signPub)).status, "active");

      const err = await s.reinstateUser(u.signPub).catch((e: unknown) => e);
      t.type(err, ConflictError, "reinstating an active user is a conflict");
      t.match((err as Error).message, /already active/);
      const missing = await s.reinstateUser("ab".repeat(32)).catch((e: unknown) => e);
      t.type(missing, NotFoundError, "an unknown user is NotFoundError");
    });

    t.test("updateUser changes role, handle and kexPub, each checked as at addUser", async (t) => {
      const s = await fresh(t);
      const u = await s.addUser(member("alice"));
      const bob = await s.addUser(member("bob"));
      const promoted = await s.updateUser(u.signPub.toUpperCase(), { role: "admin" });
      t.same(promoted, { ...u, role: "admin" }, "only the role changed");
      t.equal(await s.hasAdmin(), true, "an admin now");
      const kex = kexPubHex();
      const renamed = await s.updateUser(u.signPub, { handle: "Alicia", kexPub: kex.toUpperCase() });
      t.same(renamed, { ...promoted, handle: "alicia", kexPub: kex }, "handle lowercased, kexPub set");
      const replaced = await s.updateUser(u.signPub, { kexPub: kexPubHex() });
      t.not(replaced.kexPub, kex, "an existing kexPub is replaced (setKexPub never would)");
      t.same(await s.getUser(u.signPub), replaced, "stored");
      // The old handle is free again; the new one is taken.
      t.equal((await s.addUser(member("alice"))).handle, "alice", "the old handle can be reused");
      const taken = await s.updateUser(bob.signPub, { handle: "alicia" }).catch((e: unknown) => e);
      t.type(taken, ConflictError, "another user's handle is a conflict");
      t.match((taken as Error).message, /already taken/);
      t.same(await s.getUser(bob.signPub), bob, "and bob is unchanged");
      // Edge: a revoked user may be edited; its own handle again is no change.
      await s.revokeUser(bob.signPub);
      t.match(await s.updateUser(bob.signPub, { handle: "bob", role: "admin" }), { status: "revoked", role: "admin" });
    });

    t.test("updateUser refuses bad changes and unknown users, changing nothing", async (t) => {
      const s = await fresh(t);
      const u = await s.addUser(member("alice"));
      for (const [changes, field] of [
        [{}, "changes"],
        [null, "changes"],
        [{ status: "active" }, "changes"],
        [{ role: "root" }, "role"],
        [{ handle: "-bad" }, "handle"],
        [{ handle: "" }, "handle"],
        [{ kexPub: "zz" }, "kexPub"],
        [{ kexPub: null }, "kexPub"],
      ] as const) {
        const err = await s.updateUser(u.signPub, changes as never).catch((e: unknown) => e);
        t.type(err, InvalidArgumentError, `${JSON.stringify(changes)} is refused`);
        t.equal((err as InvalidArgumentError).field, field, `naming ${field}`);
      }
      t.same(await s.getUser(u.signPub), u, "nothing changed");
      await t.rejects(s.updateUser(signPubHex(), { role: "admin" }), NotFoundError);
      await t.rejects(s.updateUser("not-a-key", { role: "admin" }), InvalidArgumentError);
    });

    t.test("unknown users are NotFoundError", async (t) => {
      const s = await fresh(t);
      await s.addUser(member("alice"));
      const unknown = signPubHex();
      for (const [op, call] of [
        ["getUser", () => s.getUser(unknown.toUpperCase())],
        ["revokeUser", () => s.revokeUser(unknown)],
        ["deleteUser", () => s.deleteUser(unknown)],
      ] as const) {
        const err = await call().catch((e: unknown) => e);
        t.type(err, NotFoundError, op);
        t.match(err, { kind: "user", id: unknown }, `${op}: names the user by its lowercase key`);
      }
      t.equal((await s.listUsers()).length, 1);
    });

    t.test("lookups with a malformed key are InvalidArgumentError", async (t) => {
      const s = await fresh(t);
      for (const bad of ["", "xyz", "g".repeat(64), "a".repeat(63), undefined, 5]) {
        for (const op of ["getUser", "revokeUser", "deleteUser"] as const) {
          const err = await s[op](bad as string).catch((e: unknown) => e);
          t.type(err, InvalidArgumentError, `${op}(${JSON.stringify(bad)})`);
          t.equal((err as InvalidArgumentError).field, "signPub");
        }
      }
    });

    t.test("delete removes the user for good", async (t) => {
      const s = await fresh(t);
      const u = await s.addUser(member("alice", { role: "admin" }));
      const bob = await s.addUser(member("bob"));
      await s.deleteUser(u.signPub);
      await t.rejects(s.getUser(u.signPub), NotFoundError);
      t.equal(await s.isAuthorized(u.signPub), false);
      t.equal(await s.hasAdmin(), false);
      t.same(await s.listUsers(), [bob]);
      await t.rejects(s.deleteUser(u.signPub), NotFoundError, "a second delete is NotFound");
      const back = await s.addUser({ signPub: u.signPub, handle: "alice", role: "member" });
      t.equal(back.status, "active", "a deleted key and handle can be added again");
    });

    t.test("delete works on a revoked user", async (t) => {
      const s = await fresh(t);
      const u = await s.addUser(member("alice"));
      await s.revokeUser(u.signPub);
      await s.deleteUser(u.signPub);
      await t.rejects(s.getUser(u.signPub), NotFoundError);
    });

    t.test("isAuthorized is true only for an existing active user", async (t) => {
      const s = await fresh(t);
      const active = await s.addUser(member("alice"));
      const revoked = await s.addUser(member("bob"));
      await s.revokeUser(revoked.signPub);
      t.equal(await s.isAuthorized(active.signPub), true, "active");
      t.equal(await s.isAuthorized(revoked.signPub), false, "revoked");
      t.equal(await s.isAuthorized(signPubHex()), false, "unknown");
      for (const bad of [
        "",
        "xyz",
        "g".repeat(64),
        `${active.signPub}00`,
        active.signPub.slice(2),
        undefined,
        null,
        1,
      ]) {
        t.equal(await s.isAuthorized(bad as string), false, `malformed ${JSON.stringify(bad)} is false, not an error`);
      }
    });

    t.test("hasAdmin is true only while an active admin exists", async (t) => {
      const s = await fresh(t);
      t.equal(await s.hasAdmin(), false, "empty store");
      await s.addUser(member("bob"));
      t.equal(await s.hasAdmin(), false, "members only");
      const admin = await s.addUser(member("alice", { role: "admin" }));
      t.equal(await s.hasAdmin(), true, "an active admin");
      await s.revokeUser(admin.signPub);
      t.equal(await s.hasAdmin(), false, "the only admin is revoked");
      await s.addUser(member("carol", { role: "admin" }));
      t.equal(await s.hasAdmin(), true, "another admin");
    });

    await roomTests(t, ctx);
    await lifecycleTests(t, ctx);
    await inviteTests(t, ctx);
    await inviteSweepTests(t, ctx);
    await watchTests(t, ctx);

    t.test("snapshot of an empty store", async (t) => {
      const s = await fresh(t);
      t.same(await s.snapshot(), { version: 1, users: [], rooms: [], members: [], sealedKeys: [], invites: [] });
    });

    t.test("snapshot: the whole state, in a fixed order, deep-equal when nothing changed", async (t) => {
      const s = await fresh(t);
      const { alice, bob, carol, room } = await withRoom(s);
      for (let i = 0; i < 4; i++) await s.addUser(member(`extra${i}`));
      await s.revokeUser(carol.signPub);
      const clear = await s.createRoom(roomInput(bob, { encrypt: false, ownerSealedKey: null, persist: true }));
      await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
      await s.rekey(room.id, {
        fromEpoch: 1,
        sealedKeys: [alice, bob].map((u) => ({ signPub: u.signPub, sealed: sealed() })),
      });
      await s.addMember(clear.id, { signPub: alice.signPub });
      const token = newInviteToken();
      await s.createInvite({ token, handle: "inv1", role: "member", createdBy: "host" });
      await s.createInvite({ token: newInviteToken(), handle: "inv2", role: "admin", createdBy: alice.signPub });
      await s.cancelInvite(token);
      const spendable = newInviteToken();
      await s.createInvite({ token: spendable, handle: "inv3", role: "member", createdBy: "host" });
      const reg = await s.consumeInvite(spendable, { signPub: signPubHex(), kexPub: kexPubHex() });

      const snap = await s.snapshot();
      t.same(await s.snapshot(), snap, "two snapshots of the same state are deep-equal");
      t.equal(snap.version, 1);
      const by =
        <T>(key: (x: T) => string) =>
        (a: T, b: T) =>
          key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
      t.same(snap.users, [...(await s.listUsers())].sort(by((u) => u.signPub)), "every user, by signPub");
      t.equal(snap.users.length, 8);
      t.match(
        snap.users.find((u) => u.signPub === carol.signPub),
        { status: "revoked", revokedAt: Number },
      );
      t.ok(
        snap.users.some((u) => u.signPub === reg.signPub),
        "the registered user",
      );
      t.same(snap.rooms, [{ ...room, epoch: 2 }, clear].sort(by((r) => r.id)), "rooms with their real epochs, by id");
      const members = [...(await s.listMembers(room.id)), ...(await s.listMembers(clear.id))].sort(
        by((m) => `${m.roomId}/${m.signPub}`),
      );
      t.same(snap.members, members, "every member, by room then key");
      t.equal(snap.sealedKeys.length, 4, "epoch 1 (alice, bob) and epoch 2 (alice, bob)");
      t.same(
        snap.sealedKeys,
        [...snap.sealedKeys].sort(by((k) => `${k.roomId}/${String(k.epoch).padStart(10, "0")}/${k.signPub}`)),
        "keys by room, epoch, key",
      );
      for (const k of snap.sealedKeys) t.same(await s.getSealedKey(k.roomId, k.signPub, k.epoch), k);
      t.same(snap.invites, [...(await s.listInvites())].sort(by((i) => i.tokenHash)), "every invite, by hash");
      t.same(
        snap.invites.map((i) => i.status).sort(),
        ["cancelled", "open", "spent"],
        "open, spent and cancelled invites",
      );
      t.notOk(JSON.stringify(snap).includes(token), "no token in the snapshot");
      if (ctx.sibling) t.same(await (await ctx.sibling(t, s)).snapshot(), snap, "a sibling store sees the same");
    });

    t.test("after close every method throws StoreUnavailableError", async (t) => {
      const store = await open();
      const u = await store.addUser(member("alice", { role: "admin" }));
      await store.close();
      await t.resolves(store.close(), "close is idempotent");
      const calls: Array<[string, () => Promise<unknown>]> = [
        ["addUser", () => store.addUser(member("bob"))],
        ["getUser", () => store.getUser(u.signPub)],
        ["listUsers", () => store.listUsers()],
        ["revokeUser", () => store.revokeUser(u.signPub)],
        ["deleteUser", () => store.deleteUser(u.signPub)],
        ["isAuthorized", () => store.isAuthorized(u.signPub)],
        ["isAuthorized (malformed key)", () => store.isAuthorized("xyz")],
        ["hasAdmin", () => store.hasAdmin()],
        ["createRoom", () => store.createRoom(roomInput(u))],
        ["getRoom", () => store.getRoom("r1")],
        ["deleteRoom", () => store.deleteRoom("r1")],
        ["listMembers", () => store.listMembers("r1")],
        ["getMember", () => store.getMember("r1", u.signPub)],
        ["isMember", () => store.isMember("r1", u.signPub)],
        ["isMember (malformed id)", () => store.isMember("a b", u.signPub)],
        ["addMember", () => store.addMember("r1", { signPub: u.signPub, sealedKey: sealed(), epoch: 1 })],
        ["removeMember", () => store.removeMember("r1", u.signPub)],
        ["rekey", () => store.rekey("r1", { fromEpoch: 1, sealedKeys: [] })],
        ["getSealedKey", () => store.getSealedKey("r1", u.signPub)],
        ["listRoomsFor", () => store.listRoomsFor(u.signPub)],
        [
          "createInvite",
          () => store.createInvite({ token: newInviteToken(), handle: "x", role: "member", createdBy: "host" }),
        ],
        ["listInvites", () => store.listInvites()],
        ["cancelInvite", () => store.cancelInvite(newInviteToken())],
        ["consumeInvite", () => store.consumeInvite(newInviteToken(), { signPub: signPubHex(), kexPub: kexPubHex() })],
        ["snapshot", () => store.snapshot()],
      ];
      for (const [label, call] of calls) {
        const result = await call().then(
          (value) => ({ value }),
          (error: unknown) => ({ error }),
        );
        t.type("error" in result ? result.error : result.value, StoreUnavailableError, label);
      }
    });
  });
}
