// Acknowledged publishing into persisted rooms: `publish(x, { ack: true })` resolves once
// the room's stream has stored the frame (with its sequence), live subscribers get the
// same frame, and every way it can fail is a typed error. Attackers: a member cannot use
// the JetStream path to reach a room it is not in nor read another room's stream info,
// and a co-member answering the publish in the stream's place is not believed.
// (A full disk: test/bus/disk-full.test.ts.)
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { connectAsService } from "../../lib/auth/service-connection.ts";
import { loadServiceKeys } from "../../lib/auth/service-keys.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import type { Room } from "../../lib/client/room.ts";
import {
  AckMismatchError,
  AckTimeoutError,
  HistoryUnavailableError,
  InvalidArgumentError,
  PublishRefusedError,
  StateError,
} from "../../lib/errors.ts";
import { client, reconnected, testBus, user } from "../helpers/bus.ts";
import { collector } from "../helpers/room.ts";

async function pair(t: Test, opts: { encrypt?: boolean; persist?: boolean; signMsgs?: boolean } = {}) {
  const bus = await testBus(t);
  const alice = await user(t, bus, "alice");
  const bob = await user(t, bus, "bob");
  const room = await alice.c.createRoom({ encrypt: true, persist: true, ...opts });
  await reconnected(bob.c, () => room.addMember(bob.id));
  const bobRoom = await bob.c.openRoom(room.id);
  return { bus, alice, bob, room, bobRoom };
}

async function historyOf(room: Room): Promise<string[]> {
  const out: string[] = [];
  for await (const m of room.history()) out.push(new TextDecoder().decode(m.data));
  return out;
}

/** The bus's own JetStream manager (host-trusted), for what a test does behind the members' backs. */
async function serviceManager(t: Test, bus: Unibus) {
  const keys = await loadServiceKeys(bus.dataDir);
  const nc = await connectAsService({ servers: [bus.natsUrl], caPem: bus.caPem, key: keys.app, name: "test" });
  t.teardown(() => nc.close());
  return jetstreamManager(nc);
}

/** Why a raw request from a member's connection failed: the server's own words. */
async function refusal(nc: NatsConnection, subject: string, body: string): Promise<string> {
  const err = await nc.request(subject, body, { timeout: 3000 }).then(
    () => "answered",
    (e: Error) => `${e.message} ${(e.cause as Error | undefined)?.message ?? ""}`,
  );
  return err;
}

for (const encrypt of [true, false]) {
  t.test(
    `an acked publish resolves with its sequence once stored; history and live subscribers have it (encrypt: ${encrypt})`,
    async (t) => {
      const { room, bobRoom, bob } = await pair(t, { encrypt, signMsgs: true });
      const live = collector(bobRoom);
      await bob.c.nc.flush();
      await room.publish("plain-before");
      const first = await room.publish("acked-1", { ack: true });
      const batch = await room.publishMany(["m0", "m1", "m2"], { ack: true });
      await room.publish("plain-after");
      t.same(first, { seq: 2 }, "the plain publish before it went first");
      t.same(
        batch.map((a) => a.seq),
        [3, 4, 5],
        "one ack per item, in order",
      );
      t.same(
        (await historyOf(room)).slice(0, 5),
        ["plain-before", "acked-1", "m0", "m1", "m2"],
        "stored, in call order",
      );
      t.equal(await live.until(6), 6);
      t.same(live.texts(), ["plain-before", "acked-1", "m0", "m1", "m2", "plain-after"], "live: the same frames");
      t.ok(
        live.got.every((m) => m.verified),
        "signed by alice, verified by bob",
      );
      const from = [];
      for await (const m of bobRoom.history({ fromSeq: batch[1]!.seq })) from.push(new TextDecoder().decode(m.data));
      t.same(from.slice(0, 2), ["m1", "m2"], "the sequence is where history finds it");
    },
  );
}

t.test("edges: an empty batch, a room without history, bad options, an oversized message", async (t) => {
  const { alice, room } = await pair(t);
  t.same(await room.publishMany([], { ack: true }), [], "an empty batch: nothing to wait for");
  const ephemeral = await alice.c.createRoom({ encrypt: true, persist: false });
  const err = await ephemeral.publish("x", { ack: true }).catch((e: unknown) => e);
  t.ok(err instanceof InvalidArgumentError, "InvalidArgumentError");
  t.match(err, { field: "ack", message: /keeps no history.*nothing to acknowledge/ });
  const manyErr = await ephemeral.publishMany(["x"], { ack: true }).catch((e: unknown) => e);
  t.match(manyErr, { code: "INVALID_ARGUMENT", field: "ack" });
  t.same(await ephemeral.publish("x", { ack: false }), undefined, "ack: false is the plain publish");
  for (const timeoutMs of [0, -1, 1.5, Number.NaN]) {
    t.match(await room.publish("x", { ack: true, timeoutMs }).catch((e: unknown) => e), {
      code: "INVALID_ARGUMENT",
      field: "timeoutMs",
    });
  }
  const max = alice.c.nc.info!.max_payload;
  const huge = new Uint8Array(max);
  t.match(await room.publish(huge, { ack: true }).catch((e: unknown) => e), {
    code: "INVALID_ARGUMENT",
    field: "data",
    message: /at most/,
  });
  t.match(await room.publishMany(["ok", huge], { ack: true }).catch((e: unknown) => e), {
    field: "items",
    message: /item 1 .*nothing was sent/,
  });
  const kept = await room.publish("kept", { ack: true });
  t.same(await historyOf(room), ["kept"], "nothing of the refused calls was stored");
  t.equal(kept.seq, 1);
});

t.test(
  "a message larger than the room's whole history cap is stored and dropped at once: not acknowledged",
  async (t) => {
    const { alice } = await pair(t);
    const small = await alice.c.createRoom({ encrypt: true, persist: true, retention: { maxBytes: 1024 } });
    const err = await small.publish("y".repeat(2048), { ack: true }).catch((e: unknown) => e);
    // nats-server answers a PubAck for it (seq 1) but keeps nothing: the read-back tells.
    t.ok(err instanceof AckMismatchError, `AckMismatchError (got ${String(err)})`);
    t.match(err, { code: "ACK_MISMATCH", seq: 1, stored: 0, message: /larger than the room's maxBytes/ });
    t.same(await historyOf(small), [], "nothing kept");
    t.equal((await small.publish("small", { ack: true })).seq, 2, "a message that fits still goes in");
    t.same(await historyOf(small), ["small"]);
  },
);

t.test("a member removed from the room: the ack path is refused by the broker, typed", async (t) => {
  const { room, bob, bobRoom } = await pair(t);
  await bobRoom.publish("from bob", { ack: true });
  await reconnected(bob.c, () => room.removeMember(bob.id));
  const err = await bobRoom.publish("after removal", { ack: true, timeoutMs: 3000 }).catch((e: unknown) => e);
  t.ok(err instanceof PublishRefusedError || err instanceof InvalidArgumentError, `refused (got ${String(err)})`);
  // An encrypted room moved to a key bob never got: refused before sending. Cleartext: by the broker.
  const clear = await pair(t, { encrypt: false });
  await clear.bobRoom.publish("in", { ack: true });
  await reconnected(clear.bob.c, () => clear.room.removeMember(clear.bob.id));
  const refused = await clear.bobRoom.publish("out", { ack: true, timeoutMs: 3000 }).catch((e: unknown) => e);
  t.ok(refused instanceof PublishRefusedError, `PublishRefusedError (got ${String(refused)})`);
  t.match(refused, { code: "PUBLISH_REFUSED", reason: "permission", message: /may not publish there/ });
  t.same(await historyOf(clear.room), ["in"], "nothing of the refused publish was stored");
  t.same(await historyOf(room), ["from bob"]);
});

t.test("an attacker's connection cannot use the JetStream path outside its rooms", async (t) => {
  const { bus, alice, room } = await pair(t, { encrypt: false });
  const mallory = await user(t, bus, "mallory");
  const own = await mallory.c.createRoom({ encrypt: false, persist: true });
  await own.publish("mine", { ack: true });
  const nc = mallory.c.nc;
  // A JetStream publish (a request on the subject) into alice's room: the broker refuses it.
  t.match(await refusal(nc, room.subject, "forged"), /Permissions Violation for Publish/);
  // Other rooms' stream info, and the JetStream API at large.
  for (const subject of [
    `$JS.API.STREAM.INFO.ROOM_${room.id}`,
    `$JS.API.STREAM.INFO.ROOM_${own.id}`,
    `$JS.API.DIRECT.GET.ROOM_${room.id}`,
    "$JS.API.STREAM.NAMES",
    "$JS.API.INFO",
  ]) {
    t.match(await refusal(nc, subject, "{}"), /Permissions Violation for Publish/, `${subject} refused`);
  }
  t.same(await historyOf(room), [], "alice's room holds nothing of mallory's");
  t.equal((await alice.c.openRoom(room.id)).id, room.id);
  t.same(await historyOf(own), ["mine"], "mallory's own room works");
});

t.test("a co-member answering in the stream's place is not believed", async (t) => {
  const { bus, room, bob, bobRoom } = await pair(t, { encrypt: false });
  await room.publish("first", { ack: true });
  // Behind the members' backs, the room's stream stops capturing the room's subject:
  // from now on only bob answers alice's publishes, each time with a forged PubAck.
  const jsm = await serviceManager(t, bus);
  const info = await jsm.streams.info(`ROOM_${room.id}`);
  await jsm.streams.update(info.config.name, { ...info.config, subjects: [`${room.subject}.elsewhere`] });
  let forged = 0;
  bob.c.nc.subscribe(room.subject, {
    callback: (_e, m) => {
      if (!m.reply) return;
      forged++;
      m.respond(JSON.stringify({ stream: `ROOM_${room.id}`, seq: 1 }));
    },
  });
  await bob.c.nc.flush();
  const err = await room.publish("second", { ack: true }).catch((e: unknown) => e);
  t.equal(forged, 1, "bob answered");
  t.ok(err instanceof AckMismatchError, `AckMismatchError (got ${String(err)})`);
  t.match(err, { code: "ACK_MISMATCH", seq: 1, stored: 0 });
  const batch = await room.publishMany(["a", "b"], { ack: true }).catch((e: unknown) => e);
  t.match(batch, { code: "ACK_MISMATCH", stored: 0 });
  t.same(await historyOf(bobRoom), ["first"], "the stream still holds only what it acknowledged");
});

t.test("no stream: HistoryUnavailableError when no one listens, AckTimeoutError when members do", async (t) => {
  const { bus, alice, room, bob, bobRoom } = await pair(t, { encrypt: false });
  await room.publish("first", { ack: true });
  const jsm = await serviceManager(t, bus);
  await jsm.streams.delete(`ROOM_${room.id}`);
  const gone = await room.publish("lost", { ack: true }).catch((e: unknown) => e);
  t.ok(gone instanceof HistoryUnavailableError, `HistoryUnavailableError (got ${String(gone)})`);
  t.match(gone, { code: "HISTORY_UNAVAILABLE", roomId: room.id });
  // A live subscriber does not answer: the publish waits its timeout out.
  collector(bobRoom);
  await bob.c.nc.flush();
  const timedOut = await room.publish("unanswered", { ack: true, timeoutMs: 300 }).catch((e: unknown) => e);
  t.ok(timedOut instanceof AckTimeoutError, `AckTimeoutError (got ${String(timedOut)})`);
  t.match(timedOut, { code: "ACK_TIMEOUT", timeoutMs: 300, stored: 0, message: /may or may not be stored/ });
  const many = await room.publishMany(["x", "y"], { ack: true, timeoutMs: 300 }).catch((e: unknown) => e);
  t.match(many, { code: "ACK_TIMEOUT", stored: 0 });
  const again = await client(t, bus, alice.id);
  const closedRoom = await again.openRoom(room.id);
  await again.close();
  const closed = await closedRoom.publish("closed", { ack: true }).catch((e: unknown) => e);
  t.ok(closed instanceof StateError, "publishing on a closed client: StateError");
});
