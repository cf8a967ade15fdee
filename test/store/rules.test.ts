import fc from "fast-check";
import t from "tap";
import { ConflictError } from "../../lib/errors.ts";
import { InviteRefusedError } from "../../lib/store/errors.ts";
import { decideConsume, inviteRefusal, listSome, rekeyMismatch } from "../../lib/store/rules.ts";
import type { Invite } from "../../lib/store/types.ts";

const open = (expiresAt: unknown) => ({ status: "open", expiresAt });

t.test("inviteRefusal: expiry parsing fails closed", async (t) => {
  const now = 1_700_000_000_000;
  t.equal(inviteRefusal(open(now + 1), now), null, "valid until expiresAt");
  t.equal(inviteRefusal(open(now), now), "expired", "expired at expiresAt");
  for (const garbage of [
    Number.NaN,
    undefined,
    null,
    "9999999999999",
    `${now + 1000}`,
    {},
    [],
    true,
    Number.POSITIVE_INFINITY,
  ]) {
    t.equal(inviteRefusal(open(garbage), now), "expired", `expiresAt ${String(garbage)} counts as expired`);
  }
  for (const badNow of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
    t.equal(inviteRefusal(open(now + 1000), badNow), "expired", `now ${badNow} counts as expired`);
  }
  t.equal(inviteRefusal({ status: "spent", expiresAt: now + 1 }, now), "spent");
  t.equal(inviteRefusal({ status: "cancelled", expiresAt: now + 1 }, now), "cancelled");
  for (const status of ["OPEN", "", undefined, "expired"]) {
    t.not(inviteRefusal({ status, expiresAt: now + 1 }, now), null, `status ${String(status)} is never consumable`);
  }
  fc.assert(
    fc.property(fc.anything(), fc.anything(), fc.double(), (status, expiresAt, at) => {
      const r = inviteRefusal({ status, expiresAt }, at);
      return r === null
        ? status === "open" && typeof expiresAt === "number" && Number.isFinite(at) && at < expiresAt
        : true;
    }),
  );
});

t.test("decideConsume: the order of refusals", async (t) => {
  const inv = { status: "open", expiresAt: 2000 } as Invite;
  const reason = (fn: () => unknown) => {
    try {
      return fn();
    } catch (err) {
      return err instanceof InviteRefusedError ? err.reason : err;
    }
  };
  t.equal(
    reason(() => decideConsume(undefined, 1000, { userExists: true, handleTaken: true })),
    "unknown",
  );
  t.equal(
    reason(() => decideConsume({ ...inv, status: "spent" }, 1000, { userExists: true, handleTaken: true })),
    "spent",
  );
  t.equal(
    reason(() => decideConsume(inv, 2000, { userExists: true, handleTaken: true })),
    "expired",
  );
  t.equal(
    decideConsume(inv, 1000, { userExists: true, handleTaken: true }),
    "user_exists",
    "an existing key spends even so",
  );
  t.equal(
    reason(() => decideConsume(inv, 1000, { userExists: false, handleTaken: true })),
    "handle_taken",
  );
  t.equal(decideConsume(inv, 1000, { userExists: false, handleTaken: false }), "create");
  const err = new InviteRefusedError("expired");
  t.type(err, ConflictError);
  t.equal(err.code, "CONFLICT");
  t.equal(err.name, "InviteRefusedError");
});

t.test("rekeyMismatch names what is missing and what is extra", async (t) => {
  t.equal(rekeyMismatch(["a", "b"], ["b", "a"]), null);
  t.equal(rekeyMismatch([], []), null);
  t.match(rekeyMismatch(["a", "b"], ["a"]), /no key for member\(s\) b/);
  t.match(rekeyMismatch(["a"], ["a", "c"]), /a key for non-member\(s\) c/);
  t.match(rekeyMismatch(["a", "b"], ["c"]), /no key for member\(s\) a, b; a key for non-member\(s\) c/);
  t.equal(listSome(["1", "2", "3"], 2), "1, 2 and 1 more");
  t.equal(listSome(["1", "2"], 2), "1, 2");
  const many = Array.from({ length: 500 }, (_, i) => `m${String(i).padStart(3, "0")}`);
  t.ok((rekeyMismatch(many, [])?.length ?? 0) < 400, "a big room does not make a huge message");
});
