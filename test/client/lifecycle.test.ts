// Room lifecycle end to end on a real bus: delete, leave, hand over, and deleting a
// user who owns rooms — as owner, member, admin and stranger.
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import t from "tap";
import { connectAsService } from "../../lib/auth/service-connection.ts";
import { loadOrCreateServiceKeys } from "../../lib/auth/service-keys.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { ControlPlaneError, NotFoundError } from "../../lib/errors.ts";
import { api, member, reconnected, testBus, user } from "../helpers/bus.ts";
import { collector } from "../helpers/room.ts";

/** Does the room's stream still exist? Asked with the bus's own service key. */
async function hasStream(bus: Unibus, roomId: string): Promise<boolean> {
  const keys = await loadOrCreateServiceKeys(bus.dataDir);
  const nc = await connectAsService({ servers: [bus.natsUrl], caPem: bus.caPem, key: keys.app, name: "test" });
  try {
    return await (await jetstreamManager(nc)).streams.info(`ROOM_${roomId}`).then(
      () => true,
      () => false,
    );
  } finally {
    await nc.close();
  }
}

/** A fresh subscription to `subject`: resolves with the broker's refusal, or "" when it was accepted. */
async function subscribeRefusal(nc: NatsConnection, subject: string): Promise<string> {
  const sub = nc.subscribe(subject);
  const closed = sub.closed.then((err) => String(err ?? ""));
  await nc.flush();
  const answer = await Promise.race([closed, nc.flush().then(() => undefined)]);
  if (answer !== undefined) return answer;
  sub.unsubscribe();
  return "";
}

const status = (err: unknown): unknown => (err instanceof ControlPlaneError ? err.status : err);

t.test("the owner deletes a room: subject, history, keys and blobs go for every member", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const room = await alice.c.createRoom({ persist: true });
  await reconnected(bob.c, () => room.addMember(bob.id));
  const bobRoom = await bob.c.openRoom(room.id);
  const atBob = collector(bobRoom);
  await bob.c.nc.flush();
  await room.publish("before");
  await atBob.until(1);
  const blob = await room.putBlob(new TextEncoder().encode("secret file"), { mimetype: "text/plain" });
  t.ok(await hasStream(bus, room.id), "a persisted room has its stream");

  const bobBack = reconnected(bob.c, async () => {});
  await room.delete();
  await bobBack;
  t.equal(await subscribeRefusal(bob.c.nc, room.subject).then((e) => /Permissions Violation/.test(e)), true);
  t.notOk(await hasStream(bus, room.id), "its history is gone");
  await t.rejects(bus.blobs.stat(blob.id), NotFoundError, "its blob is gone from disk");
  t.equal(status(await bob.c.openRoom(room.id).catch((e) => e)), 403, "a former member cannot open it");
  t.equal(status(await bobRoom.getBlob(blob.id).catch((e) => e)), 403, "nor fetch its blob");
  await t.rejects(bus.store.getRoom(room.id), NotFoundError);
  t.same(await bob.c.listMyRooms(), []);
  t.same(atBob.texts(), ["before"], "nothing arrived after the delete");
});

t.test("a member, a stranger and a non-member cannot delete or hand over a room", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const mallory = await member(bus, "mallory");
  const room = await alice.c.createRoom();
  await reconnected(bob.c, () => room.addMember(bob.id));
  const bobRoom = await bob.c.openRoom(room.id);
  t.equal(status(await bobRoom.delete().catch((e) => e)), 403, "a member cannot delete");
  t.equal(status(await bobRoom.transferTo(bob.id).catch((e) => e)), 403, "nor take the room");
  const m = api(t, bus, mallory);
  for (const [method, path, body] of [
    ["DELETE", `/v1/rooms/${room.id}`, undefined],
    ["POST", `/v1/rooms/${room.id}/transfer`, { to: mallory.signPub }],
    ["POST", `/v1/rooms/${room.id}/leave`, {}],
    ["DELETE", "/v1/rooms/000000000000000000000000", undefined],
  ] as const) {
    t.equal(status(await m.request(method, path, body).catch((e) => e)), 403, `stranger: ${method} ${path}`);
  }
  t.same(
    (await bus.store.listMembers(room.id)).map((x) => [x.signPub, x.role]),
    [
      [alice.id.signPub, "owner"],
      [bob.id.signPub, "member"],
    ],
    "nothing changed",
  );
  t.equal(status(await room.leave().catch((e) => e)), 409, "the owner cannot leave its own room");
});

t.test("an admin deletes or hands over a room it is not a member of", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const root = await member(bus, "root", "admin");
  const one = await alice.c.createRoom();
  const two = await alice.c.createRoom({ encrypt: false });
  await reconnected(bob.c, () => one.addMember(bob.id));
  const admin = api(t, bus, root);
  const moved = await admin.request<{ ownerSignPub: string }>("POST", `/v1/rooms/${one.id}/transfer`, {
    to: bob.id.signPub,
  });
  t.equal(moved.ownerSignPub, bob.id.signPub);
  t.equal((await bus.store.getMember(one.id, alice.id.signPub)).role, "member", "the old owner stays a member");
  await admin.request("DELETE", `/v1/rooms/${two.id}`);
  await t.rejects(bus.store.getRoom(two.id), NotFoundError);
  t.equal(status(await admin.request("DELETE", `/v1/rooms/${two.id}`).catch((e) => e)), 404, "twice: 404");
  const bad = await admin.request("POST", `/v1/rooms/${one.id}/transfer`, { to: root.signPub }).catch((e) => e);
  t.equal(status(bad), 404, "handing it to a non-member is refused");
  const badKey = await admin.request("POST", `/v1/rooms/${one.id}/transfer`, { to: "xyz" }).catch((e) => e);
  t.equal(status(badKey), 400);
});

t.test("the new owner runs the room; the old one can then leave", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const carol = await user(t, bus, "carol");
  const room = await alice.c.createRoom();
  await reconnected(bob.c, () => room.addMember(bob.id));
  await room.transferTo(bob.id);
  t.equal(room.ownerSignPub, bob.id.signPub);
  const bobRoom = await bob.c.openRoom(room.id);
  await reconnected(carol.c, () => bobRoom.addMember(carol.id));
  t.equal(status(await room.addMember(carol.id).catch((e) => e)), 403, "the old owner no longer adds members");
  await reconnected(alice.c, () => room.leave());
  t.same(
    (await bus.store.listMembers(room.id)).map((m) => m.signPub).sort(),
    [bob.id.signPub, carol.id.signPub].sort(),
  );
});

t.test("a member who leaves an encrypted room reads nothing published after", async (t) => {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const carol = await user(t, bus, "carol");
  const room = await alice.c.createRoom({ persist: true });
  await reconnected(bob.c, () => room.addMember(bob.id));
  await reconnected(carol.c, () => room.addMember(carol.id));
  const bobRoom = await bob.c.openRoom(room.id);
  const carolRoom = await carol.c.openRoom(room.id);
  const atBob = collector(bobRoom);
  const atCarol = collector(carolRoom);
  await Promise.all([bob.c.nc.flush(), carol.c.nc.flush()]);
  await room.publish("one");
  await atBob.until(1);
  await reconnected(bob.c, () => bobRoom.leave());
  t.equal((await bus.store.getRoom(room.id)).epoch, 2, "the leave moved the room to epoch 2");
  await t.rejects(bus.store.getSealedKey(room.id, bob.id.signPub, 2), NotFoundError, "bob never got the new key");
  await room.publish("two");
  await atCarol.until(2);
  t.same(atCarol.texts(), ["one", "two"], "carol follows the new epoch without a gap");
  t.same(atBob.texts(), ["one"], "bob received nothing after leaving");
  t.match(await subscribeRefusal(bob.c.nc, room.subject), /Permissions Violation/, "the subject is refused to bob");
  const keyAnswer = await api(t, bus, bob.id)
    .request("GET", `/v1/rooms/${room.id}/keys/${bob.id.signPub}?epoch=2`)
    .catch((e) => e);
  t.equal(status(keyAnswer), 403, "the key route refuses the leaver");
  // an attacker's leave: keys that still include itself are refused, and it stays in
  const carolApi = api(t, bus, carol.id);
  const sneaky = await carolApi
    .request("POST", `/v1/rooms/${room.id}/leave`, {
      fromEpoch: 2,
      sealedKeys: [
        { signPub: alice.id.signPub, sealed: "AAAA" },
        { signPub: carol.id.signPub, sealed: "AAAA" },
      ],
    })
    .catch((e) => e);
  t.equal(status(sneaky), 409, "a leave that keeps the next key for the leaver is refused");
  t.equal(status(await carolApi.request("POST", `/v1/rooms/${room.id}/leave`, {}).catch((e) => e)), 400, "no keys");
  t.ok(await bus.store.isMember(room.id, carol.id.signPub), "carol is still in");
});

t.test("deleting a user who owns rooms needs an explicit choice", async (t) => {
  const bus = await testBus(t);
  const root = await member(bus, "root", "admin");
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const carol = await member(bus, "carol");
  const kept = await alice.c.createRoom({ encrypt: false });
  await reconnected(bob.c, () => kept.addMember(bob.id));
  const admin = api(t, bus, root);
  const path = `/v1/users/${alice.id.signPub}`;
  const refused = await admin.request("DELETE", path).catch((e) => e);
  t.equal(status(refused), 409);
  t.match(String((refused as Error).message), /\?rooms=delete/, "the refusal names the next call");
  t.equal(status(await admin.request("DELETE", `${path}?rooms=keep`).catch((e) => e)), 400);
  const notMember = await admin.request("DELETE", `${path}?rooms=transfer&to=${carol.signPub}`).catch((e) => e);
  t.equal(status(notMember), 409, "a new owner outside the room is refused");
  t.ok(await bus.store.isAuthorized(alice.id.signPub), "nothing was deleted");
  await admin.request("DELETE", `${path}?rooms=transfer&to=${bob.id.signPub}`);
  t.equal((await bus.store.getRoom(kept.id)).ownerSignPub, bob.id.signPub, "bob owns the room now");
  await t.rejects(bus.store.getUser(alice.id.signPub), NotFoundError);

  const gone = await bob.c.createRoom({ encrypt: false, persist: true });
  await admin.request("DELETE", `/v1/users/${bob.id.signPub}?rooms=delete`);
  await t.rejects(bus.store.getRoom(gone.id), NotFoundError);
  await t.rejects(bus.store.getRoom(kept.id), NotFoundError);
  t.notOk(await hasStream(bus, gone.id), "the deleted room's history went too");
});
