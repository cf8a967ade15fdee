import t from "tap";
import * as one from "../lib/errors.ts";

// Node caches ES modules per URL, so a query string yields a second, distinct copy of
// the module: the situation of a test project and a library each installing unibus.
const two = (await import(new URL("../lib/errors.ts?copy=2", import.meta.url).href)) as typeof one;

t.test("the two copies are distinct modules", async (t) => {
  t.not(one.UnibusError, two.UnibusError);
  t.not(one.StateError, two.StateError);
  t.notOk(Object.getPrototypeOf(new two.StateError(["running"], "stopped")) === one.StateError.prototype);
});

t.test("an error from either copy is a UnibusError of the other", async (t) => {
  for (const [from, to] of [
    [one, two],
    [two, one],
  ] as const) {
    const errors = [
      new from.UnibusError("X", "x"),
      new from.StateError(["running"], "stopped"),
      new from.InvalidArgumentError("field", "bad"),
      new from.NotFoundError("room", "general"),
      new from.ControlPlaneError(403, "FORBIDDEN", "no"),
    ];
    for (const err of errors) {
      t.ok(err instanceof to.UnibusError, `${err.name} instanceof the other UnibusError`);
      t.ok(err instanceof from.UnibusError, `${err.name} instanceof its own UnibusError`);
      t.ok(err instanceof Error, `${err.name} is still an Error`);
    }
  }
});

t.test("a subclass matches its own class and its ancestors across copies", async (t) => {
  const state = new two.StateError(["running"], "stopped");
  t.ok(state instanceof one.StateError);
  t.ok(new one.StateError(["running"], "stopped") instanceof two.StateError);
  t.ok(new two.ConflictError("taken") instanceof one.ConflictError);

  class InviteLikeError extends two.ConflictError {}
  const derived = new InviteLikeError("spent");
  t.ok(derived instanceof one.ConflictError, "a subclass of a subclass narrows to its ancestor");
  t.ok(derived instanceof one.UnibusError);
  t.notOk(new one.ConflictError("taken") instanceof InviteLikeError, "an ancestor is not its subclass");
});

t.test("narrowing never confuses sibling classes", async (t) => {
  for (const [from, to] of [
    [one, one],
    [one, two],
    [two, one],
  ] as const) {
    t.notOk(new from.InvalidArgumentError("field", "bad") instanceof to.StateError);
    t.notOk(new from.StateError(["running"], "stopped") instanceof to.InvalidArgumentError);
    t.notOk(
      new from.UnibusError("STATE", "x") instanceof to.StateError,
      "a base with the same code is not a StateError",
    );
    t.notOk(new from.NotFoundError("room", "x") instanceof to.ConflictError);
  }
});

t.test("things that are not unibus errors do not match", async (t) => {
  const plain = Object.assign(new Error("x"), { code: "STATE", name: "StateError" });
  t.notOk(plain instanceof one.StateError, "an Error dressed up with our code and name");
  t.notOk(plain instanceof one.UnibusError);
  t.notOk({ [Symbol.for("unibus.error")]: "StateError" } instanceof one.StateError, "a brand that is not a chain");
  for (const value of [null, undefined, 0, "StateError", Symbol.for("unibus.error"), () => {}]) {
    t.notOk((value as unknown) instanceof one.UnibusError, `${String(value)} is not a UnibusError`);
  }
});

t.test("the brand stays out of the error's visible shape", async (t) => {
  const err = new one.StateError(["running"], "stopped");
  const enumerableSymbols = Object.getOwnPropertySymbols(err).filter((s) =>
    Object.prototype.propertyIsEnumerable.call(err, s),
  );
  t.same(enumerableSymbols, [], "the brand is not enumerable");
  t.notOk(JSON.stringify(err).includes("unibus.error"));
  t.equal(err.name, "StateError");
  t.equal(err.code, "STATE");
});
