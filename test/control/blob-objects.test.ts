// Blobs on a KV bus live in the JetStream Object Store: round trips over several
// chunks, the cap, the declared hash, other rooms, the collector and a room's blobs
// dropped at once — and no blob directory at all. A member cannot reach the bucket
// over NATS directly.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { buffer as collect } from "node:stream/consumers";
import t from "tap";
import type { ControlClient } from "../../lib/client/control.ts";
import type { ObjectBlobStore } from "../../lib/control/blob-objects.ts";
import { sha256Hex } from "../../lib/crypto/canonical.ts";
import { api, client, member, testBus } from "../helpers/bus.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

const KiB = 1024;
const DAY = 86_400_000;
const CAP = 1200 * KiB;

function refused(status: number, code?: string) {
  return { name: "ControlPlaneError", status, ...(code ? { code } : {}) };
}

async function* chunks(data: Buffer, size = 16 * KiB): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function createRoom(c: ControlClient): Promise<string> {
  return (await c.request<{ id: string }>("POST", "/v1/rooms", { encrypt: false })).id;
}

const bus = await testBus(t, { natsServer: NATS_SERVER, store: "kv", blobs: { maxBytes: CAP } });
await bus.whenStoreReady();
const blobs = bus.blobs as ObjectBlobStore;
const alice = await member(bus, "alice");
const bob = await member(bus, "bob");
const a = api(t, bus, alice);
const b = api(t, bus, bob);
const room = await createRoom(a);
await a.request("POST", `/v1/rooms/${room}/members`, { signPub: bob.signPub, epoch: 1 });
const put = (data: Buffer, opts: { sha256?: string; size?: boolean; roomId?: string } = {}) =>
  a.putBlob(`/v1/rooms/${opts.roomId ?? room}/blobs`, chunks(data), {
    sha256: opts.sha256 ?? sha256Hex(data),
    mimetype: "application/octet-stream",
    ...(opts.size === false ? {} : { size: data.length }),
  });

t.test("a blob of several chunks round-trips; its metadata is the object's", async (t) => {
  const data = crypto.randomBytes(1100 * KiB + 7); // three 512 KiB chunks, more than one fetch
  const info = await put(data);
  t.match(info, { id: /^[0-9a-f]{32}$/, roomId: room, size: data.length, sha256: sha256Hex(data) });
  const got = await b.getBlob(`/v1/rooms/${room}/blobs/${info.id}`);
  t.same({ size: got.size, sha256: got.sha256 }, { size: data.length, sha256: sha256Hex(data) });
  t.ok((await collect(got.stream)).equals(data), "another member reads the same bytes");
  t.match(await blobs.stat(info.id), { uploader: alice.signPub, mimetype: "application/octet-stream" });
  t.equal(info.expiresAt - info.createdAt, 30 * DAY);
  t.notOk(fs.existsSync(path.join(bus.dataDir, "blobs")), "no blob directory on a KV bus");

  const empty = await put(Buffer.alloc(0));
  t.equal((await collect((await a.getBlob(`/v1/rooms/${room}/blobs/${empty.id}`)).stream)).length, 0, "empty blob");
});

t.test("exactly the cap is accepted; one byte more is 413 and stores nothing", async (t) => {
  t.equal((await put(crypto.randomBytes(CAP))).size, CAP);
  const before = await blobs.storedBytes();
  const count = (await blobs.list()).length;
  await t.rejects(put(crypto.randomBytes(CAP + 1)), refused(413), "declared");
  await t.rejects(put(crypto.randomBytes(CAP + 1), { size: false }), refused(413), "chunked");
  t.equal((await blobs.list()).length, count, "no blob added");
  t.equal(await blobs.storedBytes(), before, "no chunk left behind");
});

t.test("a body that does not match its declared hash is 401 and stores nothing", async (t) => {
  const before = await blobs.storedBytes();
  const data = crypto.randomBytes(200 * KiB);
  for (const size of [true, false]) {
    await t.rejects(put(data, { sha256: sha256Hex("other"), size }), refused(401, "AUTH_BODY_MISMATCH"));
  }
  t.equal(await blobs.storedBytes(), before);
});

t.test("other rooms, unknown ids, non-members", async (t) => {
  const info = await put(Buffer.from("mine"));
  const other = await createRoom(a);
  await t.rejects(a.getBlob(`/v1/rooms/${other}/blobs/${info.id}`), refused(404), "another room's blob is 404");
  await t.rejects(a.getBlob(`/v1/rooms/${room}/blobs/${"0".repeat(32)}`), refused(404));
  const carol = api(t, bus, await member(bus, "carol"));
  await t.rejects(carol.getBlob(`/v1/rooms/${room}/blobs/${info.id}`), refused(403));
  await b.request("DELETE", `/v1/rooms/${room}/blobs/${info.id}`).then(
    () => t.fail("bob deleted alice's blob"),
    (err) => t.match(err, refused(403)),
  );
  await a.request("DELETE", `/v1/rooms/${room}/blobs/${info.id}`);
  await t.rejects(a.getBlob(`/v1/rooms/${room}/blobs/${info.id}`), refused(404), "deleted");
});

t.test("a member's NATS connection cannot read or write the blob bucket", async (t) => {
  const info = await put(Buffer.from("secret bytes"));
  const c = await client(t, bus, alice);
  const nc = c.nc;
  const denied = (subject: string) =>
    nc.request(subject, "", { timeout: 2000 }).then(
      () => "answered",
      (err: Error) => err.message,
    );
  t.notMatch(await denied(`$JS.API.STREAM.MSG.GET.OBJ_unibus_blobs`), /^answered$/, "no direct read of the stream");
  t.notMatch(
    await denied(`$JS.API.DIRECT.GET.OBJ_unibus_blobs.$O.unibus_blobs.M.${Buffer.from(info.id).toString("base64url")}`),
    /^answered$/,
  );
  nc.publish(`$O.unibus_blobs.M.${Buffer.from(info.id).toString("base64url")}`, "{}");
  await nc.flush().catch(() => {});
  t.ok(
    (await collect((await a.getBlob(`/v1/rooms/${room}/blobs/${info.id}`)).stream)).equals(Buffer.from("secret bytes")),
  );
});

t.test("the collector: expired blobs and deleted rooms' blobs go, live ones stay", async (t) => {
  const doomed = await createRoom(a);
  const gone = await put(Buffer.from("room goes"), { roomId: doomed });
  const live = await put(Buffer.from("stays"));
  await bus.store.deleteRoom(doomed);
  const report = await blobs.gc();
  t.same(
    report.removed.filter((r) => r.id === gone.id),
    [{ id: gone.id, reason: "room-gone" }],
  );
  t.notOk(report.removed.some((r) => r.id === live.id));
  t.ok((await collect((await a.getBlob(`/v1/rooms/${room}/blobs/${live.id}`)).stream)).equals(Buffer.from("stays")));
  const later = await blobs.gc({ now: Date.now() + 31 * DAY });
  t.ok(
    later.removed.some((r) => r.id === live.id && r.reason === "expired"),
    "expired after the max age",
  );
  await t.rejects(blobs.stat(live.id), { code: "NOT_FOUND" });
});

t.test("deleteRoomBlobs drops one room's blobs only", async (t) => {
  const r2 = await createRoom(a);
  const keep = await put(Buffer.from("keep"));
  await put(Buffer.from("one"), { roomId: r2 });
  await put(Buffer.from("two"), { roomId: r2 });
  t.equal(await blobs.deleteRoomBlobs(r2), 2);
  t.equal(await blobs.deleteRoomBlobs(r2), 0, "twice: nothing left");
  t.notOk((await blobs.list()).some((m) => m.roomId === r2));
  t.equal((await blobs.stat(keep.id)).roomId, room);
});

t.test("while the bucket is not open every call is refused as unavailable, never served from nowhere", async (t) => {
  const { ObjectBlobStore } = await import("../../lib/control/blob-objects.ts");
  const { toHttpError } = await import("../../lib/control/routes.ts");
  const opening = await new ObjectBlobStore({ bucket: () => undefined, store: bus.store }).start();
  t.teardown(() => opening.close());
  const unavailable = { code: "STORE_UNAVAILABLE" };
  await t.rejects(opening.stat("0".repeat(32)), unavailable);
  await t.rejects(opening.read("0".repeat(32)), unavailable);
  await t.rejects(opening.beginUpload({ roomId: room, uploader: alice.signPub, mimetype: "text/plain" }), unavailable);
  await t.rejects(opening.gc(), unavailable);
  const err = await opening.stat("0".repeat(32)).catch((e: unknown) => e);
  t.match(toHttpError(err), { status: 503 }, "the routes answer 503");
  await opening.close();
  await t.rejects(opening.stat("0".repeat(32)), { code: "BLOBS_CLOSED" }, "closed");
});
