import type { Test } from "tap";
import { ConflictError, InvalidArgumentError, NotFoundError } from "../../lib/errors.ts";
import { refuses, type SuiteContext, sealed, withRoom } from "./context.ts";

/** Room lifecycle: leaving with a rekey, handing a room over, a former owner deleted. */
export async function lifecycleTests(t: Test, ctx: SuiteContext): Promise<void> {
  const { fresh } = ctx;

  t.test("removeMember with a rekey: out and on to the next epoch in one step", async (t) => {
    const s = await fresh(t);
    const { alice, bob, carol, room } = await withRoom(s);
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    await s.addMember(room.id, { signPub: carol.signPub, sealedKey: sealed(), epoch: 1 });
    const aliceKey = sealed();
    await s.removeMember(room.id, bob.signPub, {
      fromEpoch: 1,
      sealedKeys: [
        { signPub: alice.signPub, sealed: aliceKey },
        { signPub: carol.signPub.toUpperCase(), sealed: sealed() },
      ],
    });
    t.equal(await s.isMember(room.id, bob.signPub), false);
    t.equal((await s.getRoom(room.id)).epoch, 2);
    t.equal((await s.getSealedKey(room.id, alice.signPub)).sealed, aliceKey);
    t.equal((await s.getSealedKey(room.id, bob.signPub)).epoch, 1, "the leaver never gets epoch 2");

    await refuses(
      t,
      s,
      "keys that still include the leaver",
      () =>
        s.removeMember(room.id, carol.signPub, {
          fromEpoch: 2,
          sealedKeys: [
            { signPub: alice.signPub, sealed: sealed() },
            { signPub: carol.signPub, sealed: sealed() },
          ],
        }),
      ConflictError,
      { message: /non-member/ },
    );
    await refuses(
      t,
      s,
      "a stale epoch",
      () =>
        s.removeMember(room.id, carol.signPub, {
          fromEpoch: 1,
          sealedKeys: [{ signPub: alice.signPub, sealed: sealed() }],
        }),
      ConflictError,
      { message: /epoch 2/ },
    );
    await refuses(
      t,
      s,
      "malformed keys",
      () => s.removeMember(room.id, carol.signPub, { fromEpoch: 2, sealedKeys: "no" as never }),
      InvalidArgumentError,
      { field: "sealedKeys" },
    );
    t.equal(await s.isMember(room.id, carol.signPub), true, "a refused leave leaves the member in");
  });

  t.test("removeMember with a rekey refuses a cleartext room and writes nothing", async (t) => {
    const s = await fresh(t);
    const { alice, bob, room } = await withRoom(s, { encrypt: false, ownerSealedKey: null });
    await s.addMember(room.id, { signPub: bob.signPub });
    await refuses(
      t,
      s,
      "cleartext",
      () =>
        s.removeMember(room.id, bob.signPub, {
          fromEpoch: 1,
          sealedKeys: [{ signPub: alice.signPub, sealed: sealed() }],
        }),
      ConflictError,
      { message: /not encrypted/ },
    );
  });

  t.test("transferRoom: the member becomes owner, the owner a member", async (t) => {
    const s = await fresh(t);
    const { alice, bob, room } = await withRoom(s);
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    const moved = await s.transferRoom(room.id, bob.signPub.toUpperCase());
    t.same(moved, { ...room, ownerSignPub: bob.signPub }, "only the owner changes");
    t.same(await s.getRoom(room.id), moved);
    t.equal((await s.getMember(room.id, bob.signPub)).role, "owner");
    t.equal((await s.getMember(room.id, alice.signPub)).role, "member");
    t.same(
      (await s.listRoomsFor(alice.signPub)).map((r) => r.role),
      ["member"],
    );
    await s.removeMember(room.id, alice.signPub); // a former owner can now be removed
    await s.deleteUser(alice.signPub); // and deleted: it owns nothing
    t.same(
      (await s.listMembers(room.id)).map((m) => m.signPub),
      [bob.signPub],
    );
  });

  t.test("transferRoom: every refusal is typed and writes nothing", async (t) => {
    const s = await fresh(t);
    const { alice, bob, carol, room } = await withRoom(s);
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    await refuses(t, s, "a non-member", () => s.transferRoom(room.id, carol.signPub), NotFoundError, {
      kind: "member",
      id: `${room.id}/${carol.signPub}`,
    });
    await refuses(t, s, "the owner itself", () => s.transferRoom(room.id, alice.signPub), ConflictError, {
      message: /already owns/,
    });
    await refuses(t, s, "unknown room", () => s.transferRoom("nope", bob.signPub), NotFoundError, { kind: "room" });
    await refuses(t, s, "malformed room", () => s.transferRoom("a b", bob.signPub), InvalidArgumentError, {
      field: "roomId",
    });
    await refuses(t, s, "malformed key", () => s.transferRoom(room.id, "xyz"), InvalidArgumentError, {
      field: "signPub",
    });
    await s.revokeUser(bob.signPub);
    await refuses(t, s, "a revoked member", () => s.transferRoom(room.id, bob.signPub), ConflictError, {
      message: /revoked/,
    });
  });

  t.test("deleteRoom: members, keys and discovery go; the subject is free again", async (t) => {
    const s = await fresh(t);
    const { alice, bob, room } = await withRoom(s);
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    await s.deleteRoom(room.id);
    await refuses(t, s, "gone", () => s.getRoom(room.id), NotFoundError, { kind: "room" });
    t.same(await s.listRoomsFor(bob.signPub), []);
    t.equal(await s.isMember(room.id, bob.signPub), false);
    t.same((await s.snapshot()).sealedKeys, []);
    await refuses(t, s, "deleted twice", () => s.deleteRoom(room.id), NotFoundError, { kind: "room" });
    await s.deleteUser(alice.signPub); // it owns nothing now
  });
}
