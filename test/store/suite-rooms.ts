import type { Test } from "tap";
import { ConflictError, InvalidArgumentError, NotFoundError } from "../../lib/errors.ts";
import type { NewRoom } from "../../lib/store/index.ts";
import { newUser, refuses, roomInput, type SuiteContext, sealed, withRoom } from "./context.ts";
import { signPubHex } from "./keys.ts";

/** Rooms, members, per-epoch keys and discovery. */
export async function roomTests(t: Test, ctx: SuiteContext): Promise<void> {
  const { fresh } = ctx;

  t.test("create an encrypted room: epoch 1, the owner as member, the owner's key", async (t) => {
    const s = await fresh(t);
    const alice = await s.addUser(newUser("alice"));
    const input = roomInput(alice.signPub.toUpperCase(), { persist: true, signMsgs: true });
    const before = Date.now();
    const room = await s.createRoom(input);
    t.same(
      { ...room, createdAt: 0 },
      {
        id: input.id,
        subject: input.subject,
        ownerSignPub: alice.signPub,
        encrypt: true,
        persist: true,
        signMsgs: true,
        epoch: 1,
        createdAt: 0,
      },
      "the owner's key is stored lowercase",
    );
    t.ok(Number.isInteger(room.createdAt) && room.createdAt >= before, "createdAt is integer ms");
    t.same(await s.getRoom(room.id), room, "getRoom returns what createRoom returned");
    t.same(await s.listMembers(room.id), [
      { roomId: room.id, signPub: alice.signPub, role: "owner", addedAt: room.createdAt },
    ]);
    t.same(await s.getMember(room.id, alice.signPub.toUpperCase()), {
      roomId: room.id,
      signPub: alice.signPub,
      role: "owner",
      addedAt: room.createdAt,
    });
    const key = { roomId: room.id, epoch: 1, signPub: alice.signPub, sealed: input.ownerSealedKey };
    t.same(await s.getSealedKey(room.id, alice.signPub), key, "latest key");
    t.same(await s.getSealedKey(room.id, alice.signPub, 1), key, "key at epoch 1");
    t.equal(await s.isMember(room.id, alice.signPub), true);
    t.same(await s.listRoomsFor(alice.signPub), [{ ...room, role: "owner" }]);
    const snap = await s.snapshot();
    t.same(snap.rooms, [room]);
    t.same(snap.sealedKeys, [key]);
  });

  t.test("a cleartext room has no keys and no epochs to rotate", async (t) => {
    const s = await fresh(t);
    const alice = await s.addUser(newUser("alice"));
    const bot = await s.addUser({ signPub: signPubHex(), handle: "bot", role: "member" });
    const room = await s.createRoom(roomInput(alice, { encrypt: false, ownerSealedKey: undefined }));
    t.equal(room.encrypt, false);
    const nulled = await s.createRoom(roomInput(alice, { encrypt: false, ownerSealedKey: null }));
    t.equal(nulled.epoch, 1, "null is absent too");
    const byBot = await s.createRoom(roomInput(bot, { encrypt: false, ownerSealedKey: null }));
    t.equal(byBot.ownerSignPub, bot.signPub, "an owner without kexPub may hold a cleartext room");
    await refuses(t, s, "no key to fetch", () => s.getSealedKey(room.id, alice.signPub), NotFoundError, {
      kind: "sealed key",
      id: `${room.id}/${alice.signPub}`,
    });
    const member = await s.addMember(room.id, { signPub: bot.signPub });
    t.same(member, { roomId: room.id, signPub: bot.signPub, role: "member", addedAt: member.addedAt });
    t.equal((await s.getMember(room.id, bot.signPub)).role, "member");
    await refuses(
      t,
      s,
      "a key for a cleartext room",
      () => s.addMember(byBot.id, { signPub: alice.signPub, sealedKey: sealed(), epoch: 1 }),
      InvalidArgumentError,
      { field: "sealedKey" },
    );
    await refuses(
      t,
      s,
      "a wrong epoch, even without a key",
      () => s.addMember(byBot.id, { signPub: alice.signPub, epoch: 2 }),
      ConflictError,
    );
    t.ok(await s.addMember(byBot.id, { signPub: alice.signPub, epoch: 1 }), "the right epoch is accepted");
    await refuses(t, s, "rekey", () => s.rekey(room.id, { fromEpoch: 1, sealedKeys: [] }), ConflictError, {
      message: /not encrypted/,
    });
  });

  t.test("createRoom: bad input is InvalidArgumentError naming the field; nothing written", async (t) => {
    const s = await fresh(t);
    const alice = await s.addUser(newUser("alice"));
    const good = roomInput(alice);
    const cases: Array<[string, unknown, string]> = [
      ["not an object", null, "room"],
      ["an array", [good], "room"],
      ["id empty", { ...good, id: "" }, "id"],
      ["id too long", { ...good, id: "a".repeat(65) }, "id"],
      ["id with a dot", { ...good, id: "a.b" }, "id"],
      ["id with a space", { ...good, id: "a b" }, "id"],
      ["id with a slash", { ...good, id: "a/b" }, "id"],
      ["id non-ASCII", { ...good, id: "r\u00e9" }, "id"],
      ["id a number", { ...good, id: 7 }, "id"],
      ["id missing", { ...good, id: undefined }, "id"],
      ["subject empty", { ...good, subject: "" }, "subject"],
      ["subject *", { ...good, subject: "*" }, "subject"],
      ["subject >", { ...good, subject: ">" }, "subject"],
      ["subject with * token", { ...good, subject: "room.*" }, "subject"],
      ["subject with > token", { ...good, subject: "room.>" }, "subject"],
      ["subject with * inside a token", { ...good, subject: "room.a*" }, "subject"],
      ["subject with a space", { ...good, subject: "room. a" }, "subject"],
      ["subject with a tab", { ...good, subject: "room.\ta" }, "subject"],
      ["subject with a newline", { ...good, subject: "room.a\r\nPUB x" }, "subject"],
      ["subject with an empty token", { ...good, subject: "room..a" }, "subject"],
      ["subject with a leading dot", { ...good, subject: ".room" }, "subject"],
      ["subject with a trailing dot", { ...good, subject: "room." }, "subject"],
      ["subject under $SYS", { ...good, subject: "$SYS.ACCOUNT" }, "subject"],
      ["subject under $JS.API", { ...good, subject: "$JS.API.STREAM.LIST" }, "subject"],
      ["subject under $KV", { ...good, subject: "$KV.users.x" }, "subject"],
      ["subject an inbox", { ...good, subject: `_INBOX.${alice.signPub}` }, "subject"],
      ["subject an inbox, other case", { ...good, subject: "_inbox.x" }, "subject"],
      ["subject a reply root", { ...good, subject: "_R_.x" }, "subject"],
      ["subject non-ASCII", { ...good, subject: "r\u00f6\u00f6m" }, "subject"],
      ["subject too long", { ...good, subject: "a".repeat(129) }, "subject"],
      ["subject with 17 tokens", { ...good, subject: Array(17).fill("a").join(".") }, "subject"],
      ["subject a number", { ...good, subject: 1 }, "subject"],
      ["ownerSignPub malformed", { ...good, ownerSignPub: "xyz" }, "ownerSignPub"],
      ["ownerSignPub missing", { ...good, ownerSignPub: undefined }, "ownerSignPub"],
      ["encrypt a string", { ...good, encrypt: "true" }, "encrypt"],
      ["encrypt missing", { ...good, encrypt: undefined }, "encrypt"],
      ["persist a number", { ...good, persist: 1 }, "persist"],
      ["signMsgs null", { ...good, signMsgs: null }, "signMsgs"],
      ["ownerSealedKey missing on an encrypted room", { ...good, ownerSealedKey: undefined }, "ownerSealedKey"],
      ["ownerSealedKey given on a cleartext room", { ...good, encrypt: false }, "ownerSealedKey"],
      ["ownerSealedKey empty", { ...good, ownerSealedKey: "" }, "ownerSealedKey"],
      ["ownerSealedKey standard base64", { ...good, ownerSealedKey: "ab+/cd==" }, "ownerSealedKey"],
      ["ownerSealedKey padded", { ...good, ownerSealedKey: "abcd==" }, "ownerSealedKey"],
      ["ownerSealedKey impossible length", { ...good, ownerSealedKey: "abcde" }, "ownerSealedKey"],
      ["ownerSealedKey too long", { ...good, ownerSealedKey: "a".repeat(4100) }, "ownerSealedKey"],
      ["ownerSealedKey an object", { ...good, ownerSealedKey: { x: 1 } }, "ownerSealedKey"],
    ];
    for (const [label, input, field] of cases) {
      await refuses(t, s, label, () => s.createRoom(input as NewRoom), InvalidArgumentError, { field });
    }
    t.ok(await s.createRoom(good), "the good input is accepted afterwards");
  });

  t.test("createRoom: edges that are allowed", async (t) => {
    const s = await fresh(t);
    const alice = await s.addUser(newUser("alice"));
    const subjects = ["a", "A.b", "a.b", "room.x-y_z.09", "b".repeat(128), Array(16).fill("c").join(".")];
    const accepted: string[] = [];
    for (const subject of subjects) accepted.push((await s.createRoom(roomInput(alice, { subject }))).subject);
    t.same(accepted, subjects, "subjects are stored exactly, case-sensitive");
    t.equal((await s.createRoom(roomInput(alice, { id: "a".repeat(64) }))).id, "a".repeat(64), "64-char id");
    t.equal((await s.createRoom(roomInput(alice, { id: "R_-9" }))).id, "R_-9");
    t.equal((await s.createRoom(roomInput(alice, { id: "r_-9" }))).id, "r_-9", "ids are case-sensitive");
    const minimal = await s.createRoom(roomInput(alice, { ownerSealedKey: "AA" }));
    t.equal((await s.getSealedKey(minimal.id, alice.signPub)).sealed, "AA", "the shortest sealed key");
    const max = "A".repeat(4096);
    const big = await s.createRoom(roomInput(alice, { ownerSealedKey: max }));
    t.equal((await s.getSealedKey(big.id, alice.signPub)).sealed, max, "the longest sealed key");
    await refuses(
      t,
      s,
      "$ inside a token",
      () => s.createRoom(roomInput(alice, { subject: "a$b" })),
      InvalidArgumentError,
      { field: "subject" },
    );
  });

  t.test("createRoom: owner, id and subject conflicts; nothing written", async (t) => {
    const s = await fresh(t);
    const { alice, bob, room } = await withRoom(s);
    const noKex = await s.addUser({ signPub: signPubHex(), handle: "nokex", role: "member" });
    const unknown = signPubHex();
    await refuses(t, s, "unknown owner", () => s.createRoom(roomInput(unknown)), NotFoundError, {
      kind: "user",
      id: unknown,
    });
    await refuses(t, s, "duplicate id", () => s.createRoom(roomInput(bob, { id: room.id })), ConflictError, {
      message: new RegExp(room.id),
    });
    await refuses(
      t,
      s,
      "duplicate subject",
      () => s.createRoom(roomInput(bob, { subject: room.subject })),
      ConflictError,
      { message: /subject/ },
    );
    await refuses(t, s, "owner without kexPub", () => s.createRoom(roomInput(noKex)), ConflictError, {
      message: /kexPub/,
    });
    await s.revokeUser(bob.signPub);
    await refuses(t, s, "revoked owner", () => s.createRoom(roomInput(bob)), ConflictError, { message: /revoked/ });
    t.same((await s.snapshot()).rooms, [room]);
    t.equal(
      (await s.createRoom(roomInput(alice, { subject: room.subject.toUpperCase() }))).encrypt,
      true,
      "another case is another subject",
    );
  });

  t.test("listRooms: every room, oldest first, deleted ones gone", async (t) => {
    const s = await fresh(t);
    t.same(await s.listRooms(), [], "no rooms yet");
    const alice = await s.addUser(newUser("alice"));
    const bob = await s.addUser(newUser("bob"));
    const first = await s.createRoom(roomInput(alice));
    const second = await s.createRoom(roomInput(bob, { encrypt: false, ownerSealedKey: null }));
    const third = await s.createRoom(roomInput(alice, { persist: true }));
    const listed = await s.listRooms();
    const expected = [first, second, third].sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
    t.same(listed, expected, "rooms of every owner, by createdAt then id");
    await s.deleteRoom(second.id);
    t.same(
      (await s.listRooms()).map((r) => r.id),
      expected.filter((r) => r.id !== second.id).map((r) => r.id),
      "a deleted room is no longer listed",
    );
  });

  t.test("getRoom and deleteRoom: NotFound and malformed ids", async (t) => {
    const s = await fresh(t);
    const { alice, room } = await withRoom(s, { id: "roomA" });
    for (const id of ["roomB", "rooma", "ROOMA"]) {
      await refuses(t, s, `getRoom ${id}`, () => s.getRoom(id), NotFoundError, { kind: "room", id });
      await refuses(t, s, `deleteRoom ${id}`, () => s.deleteRoom(id), NotFoundError, { kind: "room", id });
    }
    for (const bad of ["", "a.b", "a b", "x".repeat(65), undefined, 3]) {
      for (const op of ["getRoom", "deleteRoom", "listMembers"] as const) {
        await refuses(t, s, `${op}(${JSON.stringify(bad)})`, () => s[op](bad as string), InvalidArgumentError, {
          field: "roomId",
        });
      }
      await refuses(t, s, "getMember", () => s.getMember(bad as string, alice.signPub), InvalidArgumentError, {
        field: "roomId",
      });
    }
    t.same(await s.getRoom("roomA"), room);
  });

  t.test("addMember: the member and its current-epoch key, in one go", async (t) => {
    const s = await fresh(t);
    const { alice, bob, carol, room } = await withRoom(s);
    const bobKey = sealed();
    const added = await s.addMember(room.id, { signPub: bob.signPub.toUpperCase(), sealedKey: bobKey, epoch: 1 });
    t.same(added, { roomId: room.id, signPub: bob.signPub, role: "member", addedAt: added.addedAt });
    t.ok(added.addedAt >= room.createdAt);
    const carolAdded = await s.addMember(room.id, {
      signPub: carol.signPub,
      role: "member",
      sealedKey: sealed(),
      epoch: 1,
    });
    t.same(
      (await s.listMembers(room.id)).map((m) => [m.signPub, m.role]),
      // The owner joined first, but within one millisecond the tie goes to signPub.
      [
        [alice.signPub, (await s.getMember(room.id, alice.signPub)).addedAt, "owner"],
        [bob.signPub, added.addedAt, "member"],
        [carol.signPub, carolAdded.addedAt, "member"],
      ]
        .sort((a, b) => Number(a[1]) - Number(b[1]) || String(a[0]).localeCompare(String(b[0])))
        .map(([k, , role]) => [k, role]),
      "ordered by addedAt, then signPub",
    );
    t.same(await s.getMember(room.id, bob.signPub), added);
    t.equal(await s.isMember(room.id, bob.signPub.toUpperCase()), true);
    t.same(await s.getSealedKey(room.id, bob.signPub), {
      roomId: room.id,
      epoch: 1,
      signPub: bob.signPub,
      sealed: bobKey,
    });
    t.same(await s.listRoomsFor(bob.signPub), [{ ...room, role: "member" }]);
  });

  t.test("roomIfMember: the room for a member, undefined for everyone and everything else", async (t) => {
    const s = await fresh(t);
    const { alice, bob, carol, room } = await withRoom(s);
    const other = await s.createRoom(roomInput(carol));
    t.same(await s.roomIfMember(room.id, alice.signPub), room, "the owner");
    t.same(await s.roomIfMember(room.id, alice.signPub.toUpperCase()), room, "any case of the key");
    t.equal(await s.roomIfMember(room.id, bob.signPub), undefined, "a registered non-member");
    t.equal(await s.roomIfMember(other.id, alice.signPub), undefined, "a member of another room");
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    t.same(await s.roomIfMember(room.id, bob.signPub), room, "a member once added");
    await s.removeMember(room.id, bob.signPub);
    t.equal(await s.roomIfMember(room.id, bob.signPub), undefined, "and not once removed");
    const rekeyed = await s.rekey(room.id, {
      fromEpoch: 1,
      sealedKeys: [{ signPub: alice.signPub, sealed: sealed() }],
    });
    t.equal((await s.roomIfMember(room.id, alice.signPub))?.epoch, rekeyed.epoch, "the room as it is now");
    for (const [id, key] of [
      ["nope", alice.signPub],
      ["0".repeat(24), alice.signPub],
      [room.id, "not-a-key"],
      [room.id, signPubHex()],
    ] as const) {
      t.equal(await s.roomIfMember(id, key), undefined, `undefined for ${id.slice(0, 8)} / ${key.slice(0, 8)}`);
    }
    await s.deleteRoom(room.id);
    t.equal(await s.roomIfMember(room.id, alice.signPub), undefined, "a deleted room");
  });

  t.test("addMember: every refusal is typed and writes nothing", async (t) => {
    const s = await fresh(t);
    const { alice, bob, carol, room } = await withRoom(s);
    const noKex = await s.addUser({ signPub: signPubHex(), handle: "nokex", role: "member" });
    const revoked = await s.addUser(newUser("mallory"));
    await s.revokeUser(revoked.signPub);
    const ok = (extra: Record<string, unknown> = {}) => ({
      signPub: bob.signPub,
      sealedKey: sealed(),
      epoch: 1,
      ...extra,
    });
    const unknown = signPubHex();

    await refuses(t, s, "unknown room", () => s.addMember("nope", ok()), NotFoundError, { kind: "room", id: "nope" });
    await refuses(t, s, "unknown user", () => s.addMember(room.id, ok({ signPub: unknown })), NotFoundError, {
      kind: "user",
      id: unknown,
    });
    await refuses(t, s, "revoked user", () => s.addMember(room.id, ok({ signPub: revoked.signPub })), ConflictError, {
      message: /revoked/,
    });
    await refuses(t, s, "the owner again", () => s.addMember(room.id, ok({ signPub: alice.signPub })), ConflictError, {
      message: /already a member/,
    });
    await refuses(t, s, "no kexPub", () => s.addMember(room.id, ok({ signPub: noKex.signPub })), ConflictError, {
      message: /kexPub/,
    });
    await refuses(t, s, "a second owner", () => s.addMember(room.id, ok({ role: "owner" })), InvalidArgumentError, {
      field: "role",
      message: /one owner/,
    });
    for (const [label, extra, field] of [
      ["role admin", { role: "admin" }, "role"],
      ["signPub malformed", { signPub: "xyz" }, "signPub"],
      ["signPub missing", { signPub: undefined }, "signPub"],
      ["sealedKey missing", { sealedKey: undefined }, "sealedKey"],
      ["sealedKey malformed", { sealedKey: "not base64url!" }, "sealedKey"],
      ["epoch missing", { epoch: undefined }, "epoch"],
      ["epoch 0", { epoch: 0 }, "epoch"],
      ["epoch negative", { epoch: -1 }, "epoch"],
      ["epoch fractional", { epoch: 1.5 }, "epoch"],
      ["epoch a string", { epoch: "1" }, "epoch"],
      ["epoch NaN", { epoch: Number.NaN }, "epoch"],
    ] as const) {
      await refuses(t, s, label, () => s.addMember(room.id, ok(extra) as never), InvalidArgumentError, { field });
    }
    await refuses(t, s, "not an object", () => s.addMember(room.id, null as never), InvalidArgumentError, {
      field: "member",
    });
    await refuses(t, s, "malformed room id", () => s.addMember("a.b", ok()), InvalidArgumentError, {
      field: "roomId",
    });

    await s.addMember(room.id, ok());
    await refuses(t, s, "already a member", () => s.addMember(room.id, ok()), ConflictError, {
      message: /already a member/,
    });
    await s.rekey(room.id, {
      fromEpoch: 1,
      sealedKeys: [alice, bob].map((u) => ({ signPub: u.signPub, sealed: sealed() })),
    });
    await refuses(
      t,
      s,
      "a key for a past epoch",
      () => s.addMember(room.id, ok({ signPub: carol.signPub, epoch: 1 })),
      ConflictError,
      { message: /epoch 2, not 1/ },
    );
    await refuses(
      t,
      s,
      "a key for a future epoch",
      () => s.addMember(room.id, ok({ signPub: carol.signPub, epoch: 3 })),
      ConflictError,
    );
    const c = await s.addMember(room.id, ok({ signPub: carol.signPub, epoch: 2 }));
    t.equal(c.role, "member", "the current epoch is accepted");
    t.equal((await s.getSealedKey(room.id, carol.signPub)).epoch, 2);
    await refuses(
      t,
      s,
      "no key at epoch 1 for a member added at 2",
      () => s.getSealedKey(room.id, carol.signPub, 1),
      NotFoundError,
      {
        kind: "sealed key",
        id: `${room.id}/${carol.signPub}@1`,
      },
    );
  });

  t.test("getMember, isMember and listMembers on misses", async (t) => {
    const s = await fresh(t);
    const { bob, room } = await withRoom(s);
    await refuses(t, s, "not a member", () => s.getMember(room.id, bob.signPub), NotFoundError, {
      kind: "member",
      id: `${room.id}/${bob.signPub}`,
    });
    await refuses(t, s, "unknown room", () => s.getMember("nope", bob.signPub), NotFoundError, { kind: "room" });
    await refuses(t, s, "listMembers unknown room", () => s.listMembers("nope"), NotFoundError, { kind: "room" });
    await refuses(t, s, "malformed key", () => s.getMember(room.id, "xyz"), InvalidArgumentError, {
      field: "signPub",
    });
    t.equal(await s.isMember(room.id, bob.signPub), false, "not a member");
    t.equal(await s.isMember("nope", bob.signPub), false, "unknown room");
    t.equal(await s.isMember(room.id, signPubHex()), false, "unknown key");
    for (const [roomId, key] of [
      ["a.b", bob.signPub],
      ["", bob.signPub],
      [undefined, bob.signPub],
      [room.id, "xyz"],
      [room.id, undefined],
      [room.id, `${room.ownerSignPub}00`],
      [room.id.toUpperCase(), room.ownerSignPub],
    ]) {
      t.equal(await s.isMember(roomId as string, key as string), false, `malformed ${roomId}/${key}: false, no throw`);
    }
    t.equal(await s.isMember(room.id, room.ownerSignPub.toUpperCase()), true, "keys in any case");
  });

  t.test("removeMember: membership goes, past keys stay, the owner cannot leave", async (t) => {
    const s = await fresh(t);
    const { alice, bob, room } = await withRoom(s);
    const bobKey = sealed();
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: bobKey, epoch: 1 });
    await s.removeMember(room.id, bob.signPub.toUpperCase());
    t.equal(await s.isMember(room.id, bob.signPub), false);
    t.same(await s.listRoomsFor(bob.signPub), []);
    t.same(
      (await s.listMembers(room.id)).map((m) => m.signPub),
      [alice.signPub],
    );
    t.equal((await s.getSealedKey(room.id, bob.signPub, 1)).sealed, bobKey, "the removed member's past key is kept");

    await refuses(t, s, "removed twice", () => s.removeMember(room.id, bob.signPub), NotFoundError, {
      kind: "member",
      id: `${room.id}/${bob.signPub}`,
    });
    await refuses(t, s, "the owner", () => s.removeMember(room.id, alice.signPub), ConflictError, {
      message: /owns room/,
    });
    await refuses(t, s, "unknown room", () => s.removeMember("nope", bob.signPub), NotFoundError, { kind: "room" });
    await refuses(t, s, "malformed room", () => s.removeMember("a b", bob.signPub), InvalidArgumentError, {
      field: "roomId",
    });
    await refuses(t, s, "malformed key", () => s.removeMember(room.id, "xyz"), InvalidArgumentError, {
      field: "signPub",
    });

    const again = sealed();
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: again, epoch: 1 });
    t.equal((await s.getSealedKey(room.id, bob.signPub)).sealed, again, "re-added at the same epoch: the new key wins");
    t.equal((await s.snapshot()).sealedKeys.filter((k) => k.signPub === bob.signPub).length, 1);
  });

  t.test("rekey: a new epoch with a key for exactly every member; the removed never get it", async (t) => {
    const s = await fresh(t);
    const { alice, bob, carol, room } = await withRoom(s);
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    await s.addMember(room.id, { signPub: carol.signPub, sealedKey: sealed(), epoch: 1 });
    const carolOld = await s.getSealedKey(room.id, carol.signPub);
    const aliceOld = await s.getSealedKey(room.id, alice.signPub);
    await s.removeMember(room.id, carol.signPub);

    const keys = { [alice.signPub]: sealed(), [bob.signPub]: sealed() };
    const rekeyed = await s.rekey(room.id, {
      fromEpoch: 1,
      sealedKeys: [
        { signPub: bob.signPub.toUpperCase(), sealed: keys[bob.signPub]! },
        { signPub: alice.signPub, sealed: keys[alice.signPub]! },
      ],
    });
    t.same(rekeyed, { ...room, epoch: 2 }, "only the epoch moves");
    t.same(await s.getRoom(room.id), rekeyed);
    for (const u of [alice, bob]) {
      t.same(await s.getSealedKey(room.id, u.signPub), {
        roomId: room.id,
        epoch: 2,
        signPub: u.signPub,
        sealed: keys[u.signPub],
      });
    }
    t.same(await s.getSealedKey(room.id, alice.signPub, 1), aliceOld, "past epochs stay readable");
    t.same(await s.getSealedKey(room.id, carol.signPub), carolOld, "the removed member's newest key is epoch 1");
    await refuses(
      t,
      s,
      "no epoch-2 key for the removed member",
      () => s.getSealedKey(room.id, carol.signPub, 2),
      NotFoundError,
      {
        kind: "sealed key",
      },
    );
    await refuses(
      t,
      s,
      "an epoch that does not exist",
      () => s.getSealedKey(room.id, alice.signPub, 3),
      NotFoundError,
      {
        kind: "sealed key",
        id: `${room.id}/${alice.signPub}@3`,
      },
    );
    const again = await s.rekey(room.id, {
      fromEpoch: 2,
      sealedKeys: [alice, bob].map((u) => ({ signPub: u.signPub, sealed: sealed() })),
    });
    t.equal(again.epoch, 3, "epochs keep counting");
    t.same(
      (await s.snapshot()).sealedKeys.map((k) => [k.epoch, k.signPub]),
      [
        [1, alice.signPub],
        [1, bob.signPub],
        [1, carol.signPub],
        [2, alice.signPub],
        [2, bob.signPub],
        [3, alice.signPub],
        [3, bob.signPub],
      ].sort((a, b) => Number(a[0]) - Number(b[0]) || String(a[1]).localeCompare(String(b[1]))),
      "every epoch's keys, in order",
    );
  });

  t.test("rekey: every refusal is typed and writes nothing", async (t) => {
    const s = await fresh(t);
    const { alice, bob, carol, room } = await withRoom(s);
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    const key = (u: { signPub: string }) => ({ signPub: u.signPub, sealed: sealed() });

    const missing = await refuses(
      t,
      s,
      "a member missing",
      () => s.rekey(room.id, { fromEpoch: 1, sealedKeys: [key(alice)] }),
      ConflictError,
    );
    t.match(missing.message, bob.signPub, "names the missing member");
    const extra = await refuses(
      t,
      s,
      "a non-member included",
      () => s.rekey(room.id, { fromEpoch: 1, sealedKeys: [key(alice), key(bob), key(carol)] }),
      ConflictError,
    );
    t.match(extra.message, carol.signPub, "names the extra key");
    await refuses(t, s, "no keys at all", () => s.rekey(room.id, { fromEpoch: 1, sealedKeys: [] }), ConflictError);
    await refuses(
      t,
      s,
      "a stale epoch",
      () => s.rekey(room.id, { fromEpoch: 2, sealedKeys: [key(alice), key(bob)] }),
      ConflictError,
      { message: /epoch 1, not 2/ },
    );
    await refuses(
      t,
      s,
      "unknown room",
      () => s.rekey("nope", { fromEpoch: 1, sealedKeys: [key(alice)] }),
      NotFoundError,
      { kind: "room", id: "nope" },
    );
    for (const [label, input, field] of [
      ["not an object", null, "rekey"],
      ["fromEpoch missing", { sealedKeys: [key(alice), key(bob)] }, "fromEpoch"],
      ["fromEpoch 0", { fromEpoch: 0, sealedKeys: [key(alice), key(bob)] }, "fromEpoch"],
      ["fromEpoch a string", { fromEpoch: "1", sealedKeys: [key(alice), key(bob)] }, "fromEpoch"],
      ["sealedKeys not a list", { fromEpoch: 1, sealedKeys: key(alice) }, "sealedKeys"],
      ["sealedKeys missing", { fromEpoch: 1 }, "sealedKeys"],
      ["an entry not an object", { fromEpoch: 1, sealedKeys: [key(alice), "x"] }, "sealedKeys"],
      [
        "an entry with a bad key",
        { fromEpoch: 1, sealedKeys: [key(alice), { signPub: "xyz", sealed: "AA" }] },
        "sealedKeys",
      ],
      [
        "an entry with a bad sealed",
        { fromEpoch: 1, sealedKeys: [key(alice), { signPub: bob.signPub, sealed: "a b" }] },
        "sealedKeys",
      ],
      [
        "a member twice (any case)",
        { fromEpoch: 1, sealedKeys: [key(alice), key(bob), { signPub: bob.signPub.toUpperCase(), sealed: "AA" }] },
        "sealedKeys",
      ],
    ] as const) {
      await refuses(t, s, label, () => s.rekey(room.id, input as never), InvalidArgumentError, { field });
    }
    await refuses(
      t,
      s,
      "malformed room id",
      () => s.rekey("a.b", { fromEpoch: 1, sealedKeys: [key(alice), key(bob)] }),
      InvalidArgumentError,
      { field: "roomId" },
    );
    t.equal((await s.getRoom(room.id)).epoch, 1);
  });

  t.test("rekey: of two racing rekeys from the same epoch, exactly one wins", async (t) => {
    const s = await fresh(t);
    const { alice, bob, room } = await withRoom(s);
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    const stores = [s, s];
    if (ctx.sibling) stores.push(await ctx.sibling(t, s), await ctx.sibling(t, s));
    const results = await Promise.allSettled(
      stores.map((st) =>
        st.rekey(room.id, {
          fromEpoch: 1,
          sealedKeys: [alice, bob].map((u) => ({ signPub: u.signPub, sealed: sealed() })),
        }),
      ),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    t.equal(won.length, 1, "one rekey won");
    t.ok(
      results.every((r) => r.status === "fulfilled" || r.reason instanceof ConflictError),
      "the others are ConflictError",
    );
    t.equal((await s.getRoom(room.id)).epoch, 2);
    t.equal((await s.snapshot()).sealedKeys.filter((k) => k.epoch === 2).length, 2, "one set of epoch-2 keys");
  });

  t.test("getSealedKey: misses and malformed input", async (t) => {
    const s = await fresh(t);
    const { alice, bob, room } = await withRoom(s);
    await refuses(t, s, "a non-member", () => s.getSealedKey(room.id, bob.signPub), NotFoundError, {
      kind: "sealed key",
      id: `${room.id}/${bob.signPub}`,
    });
    await refuses(t, s, "unknown room", () => s.getSealedKey("nope", alice.signPub), NotFoundError, { kind: "room" });
    for (const epoch of [0, -1, 1.5, Number.NaN, "1", null]) {
      await refuses(
        t,
        s,
        `epoch ${String(epoch)}`,
        () => s.getSealedKey(room.id, alice.signPub, epoch as number),
        InvalidArgumentError,
        { field: "epoch" },
      );
    }
    await refuses(t, s, "malformed key", () => s.getSealedKey(room.id, "xyz"), InvalidArgumentError, {
      field: "signPub",
    });
    await refuses(t, s, "malformed room", () => s.getSealedKey("", alice.signPub), InvalidArgumentError, {
      field: "roomId",
    });
  });

  t.test("listRoomsFor: the rooms of one endpoint with its role; [] for none", async (t) => {
    const s = await fresh(t);
    const { alice, bob, carol, room } = await withRoom(s);
    t.same(await s.listRoomsFor(bob.signPub), [], "a user in no room");
    t.same(await s.listRoomsFor(signPubHex()), [], "an unknown key");
    const second = await s.createRoom(roomInput(bob, { encrypt: false, ownerSealedKey: null }));
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    await s.rekey(room.id, {
      fromEpoch: 1,
      sealedKeys: [alice, bob].map((u) => ({ signPub: u.signPub, sealed: sealed() })),
    });
    const bobs = await s.listRoomsFor(bob.signPub.toUpperCase());
    const expected = [
      { ...room, epoch: 2, role: "member" },
      { ...second, role: "owner" },
    ].sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
    t.same(bobs, expected, "both rooms, current epochs, ordered by createdAt then id");
    t.same(await s.listRoomsFor(carol.signPub), [], "carol is in none");
    t.same(
      (await s.listRoomsFor(alice.signPub)).map((r) => r.id),
      [room.id],
    );
    for (const bad of ["", "xyz", undefined, 1]) {
      await refuses(
        t,
        s,
        `malformed ${JSON.stringify(bad)}`,
        () => s.listRoomsFor(bad as string),
        InvalidArgumentError,
        {
          field: "signPub",
        },
      );
    }
  });

  t.test("a revoked member stays listed; membership is not authorization", async (t) => {
    const s = await fresh(t);
    const { bob, room } = await withRoom(s);
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    await s.revokeUser(bob.signPub);
    t.equal(await s.isMember(room.id, bob.signPub), true, "still a member");
    t.equal(await s.isAuthorized(bob.signPub), false, "but not authorized: callers check both");
    t.equal((await s.listMembers(room.id)).length, 2);
    await s.removeMember(room.id, bob.signPub);
    t.equal(await s.isMember(room.id, bob.signPub), false, "a revoked member can be removed");
  });

  t.test("deleteRoom takes members and every epoch's keys along", async (t) => {
    const s = await fresh(t);
    const { alice, bob, room } = await withRoom(s);
    const other = await s.createRoom(roomInput(bob));
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    await s.rekey(room.id, {
      fromEpoch: 1,
      sealedKeys: [alice, bob].map((u) => ({ signPub: u.signPub, sealed: sealed() })),
    });
    const before = await s.snapshot();
    await s.deleteRoom(room.id);
    const after = await s.snapshot();
    t.same(after.rooms, [other]);
    t.same(
      after.members,
      before.members.filter((m) => m.roomId !== room.id),
    );
    t.same(
      after.sealedKeys,
      before.sealedKeys.filter((k) => k.roomId !== room.id),
    );
    t.same(after.users, before.users, "users are untouched");
    t.equal(await s.isMember(room.id, alice.signPub), false);
    t.same(await s.listRoomsFor(alice.signPub), []);
    await refuses(t, s, "deleted twice", () => s.deleteRoom(room.id), NotFoundError, { kind: "room" });
    const reused = await s.createRoom(roomInput(alice, { id: room.id, subject: room.subject }));
    t.equal(reused.epoch, 1, "the id and subject are free again, and the new room starts over");
    t.same(await s.listMembers(room.id), [
      { roomId: room.id, signPub: alice.signPub, role: "owner", addedAt: reused.createdAt },
    ]);
    await refuses(
      t,
      s,
      "no old keys leak into the new room",
      () => s.getSealedKey(room.id, bob.signPub),
      NotFoundError,
    );
  });

  t.test("deleteUser: memberships and keys go with the user; an owner is refused", async (t) => {
    const s = await fresh(t);
    const { alice, bob, carol, room } = await withRoom(s);
    const bobs = await s.createRoom(roomInput(bob, { id: "bobs-room" }));
    await s.addMember(room.id, { signPub: bob.signPub, sealedKey: sealed(), epoch: 1 });
    await s.addMember(room.id, { signPub: carol.signPub, sealedKey: sealed(), epoch: 1 });
    await s.addMember(bobs.id, { signPub: carol.signPub, sealedKey: sealed(), epoch: 1 });

    await refuses(t, s, "an owner", () => s.deleteUser(bob.signPub), ConflictError, { message: /bobs-room/ });
    await refuses(t, s, "another owner", () => s.deleteUser(alice.signPub), ConflictError, {
      message: new RegExp(room.id),
    });

    const before = await s.snapshot();
    await s.deleteUser(carol.signPub);
    const after = await s.snapshot();
    t.same(
      after.users,
      before.users.filter((u) => u.signPub !== carol.signPub),
    );
    t.same(
      after.members,
      before.members.filter((m) => m.signPub !== carol.signPub),
      "every membership gone",
    );
    t.same(
      after.sealedKeys,
      before.sealedKeys.filter((k) => k.signPub !== carol.signPub),
      "every key gone",
    );
    t.same(after.rooms, before.rooms, "rooms untouched");
    t.same(await s.listRoomsFor(carol.signPub), []);

    await s.deleteRoom(bobs.id);
    await s.deleteUser(bob.signPub);
    t.same(
      (await s.listMembers(room.id)).map((m) => m.signPub),
      [alice.signPub],
      "an ex-owner's memberships in other rooms go too",
    );
    t.same(
      (await s.snapshot()).sealedKeys.map((k) => k.signPub),
      [alice.signPub],
    );
    const back = await s.addUser({ signPub: carol.signPub, kexPub: carol.kexPub, handle: "carol", role: "member" });
    t.same(await s.listRoomsFor(back.signPub), [], "a re-added key starts with no rooms");
    await refuses(t, s, "and no keys", () => s.getSealedKey(room.id, back.signPub, 1), NotFoundError);
  });

  t.test("a sibling store sees rooms, members and keys at once", { skip: !ctx.sibling }, async (t) => {
    const s = await fresh(t);
    const other = await ctx.sibling!(t, s);
    const { bob, room } = await withRoom(s);
    t.same(await other.getRoom(room.id), room);
    const key = sealed();
    await other.addMember(room.id, { signPub: bob.signPub, sealedKey: key, epoch: 1 });
    t.equal(await s.isMember(room.id, bob.signPub), true);
    t.equal((await s.getSealedKey(room.id, bob.signPub)).sealed, key);
    t.same(await other.snapshot(), await s.snapshot());
  });
}
