// The storage cap of the blob Object Store bucket (KV bus): an upload that would pass it
// is refused whole with 507 and leaves nothing behind; room comes back when blobs go; the
// cap is applied to an existing bucket on the next open; bad caps are refused by name.
import crypto from "node:crypto";
import { buffer as collect } from "node:stream/consumers";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import t from "tap";
import { startUnibus } from "../../lib/bus/unibus.ts";
import type { ControlClient } from "../../lib/client/control.ts";
import { type ObjectBlobStore, openBlobBucket } from "../../lib/control/blob-objects.ts";
import { sha256Hex } from "../../lib/crypto/canonical.ts";
import { api, member, testBus } from "../helpers/bus.ts";
import { NATS_SERVER, startJetStream } from "../helpers/nats.ts";

const KiB = 1024;
const STORAGE = 1024 * KiB;

async function* chunks(data: Buffer, size = 16 * KiB): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

t.test("an upload past the cap is 507 and stores nothing; deleting blobs makes room", async (t) => {
  const bus = await testBus(t, { natsServer: NATS_SERVER, store: "kv", blobs: { storageBytes: STORAGE } });
  await bus.whenStoreReady();
  const blobs = bus.blobs as ObjectBlobStore;
  const alice = await member(bus, "alice");
  const a: ControlClient = api(t, bus, alice);
  const room = (await a.request<{ id: string }>("POST", "/v1/rooms", { encrypt: false })).id;
  const put = (data: Buffer, size = true) =>
    a.putBlob(`/v1/rooms/${room}/blobs`, chunks(data), {
      sha256: sha256Hex(data),
      mimetype: "application/octet-stream",
      ...(size ? { size: data.length } : {}),
    });

  const first = await put(crypto.randomBytes(600 * KiB));
  const before = await blobs.storedBytes();
  for (const size of [true, false]) {
    await t.rejects(
      put(crypto.randomBytes(600 * KiB), size),
      { name: "ControlPlaneError", status: 507, code: "BLOB_STORAGE_FULL" },
      size ? "declared size" : "chunked",
    );
  }
  t.same(
    (await blobs.list()).map((m) => m.id),
    [first.id],
    "no blob added",
  );
  t.equal(await blobs.storedBytes(), before, "no chunk of the refused uploads left behind");
  const served = await a.getBlob(`/v1/rooms/${room}/blobs/${first.id}`);
  t.equal((await collect(served.stream)).length, first.size, "the stored blob is still served");

  await a.request("DELETE", `/v1/rooms/${room}/blobs/${first.id}`);
  const again = await put(crypto.randomBytes(600 * KiB));
  t.equal(again.size, 600 * KiB, "once a blob is deleted, an upload fits again");
});

t.test("the cap is set on a new bucket, changed on an existing one, removed when unset", async (t) => {
  const { url } = await startJetStream(t, "blobcap");
  const nc = await connect({ servers: url });
  t.teardown(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const capOf = async (name: string) => (await jsm.streams.info(`OBJ_${name}`)).config.max_bytes;
  const bucketPrefix = `t${crypto.randomBytes(4).toString("hex")}_`;
  const b1 = await openBlobBucket(nc, { replicas: 1, bucketPrefix, storageBytes: STORAGE });
  t.equal(await capOf(b1.name), STORAGE, "new bucket");
  await openBlobBucket(nc, { replicas: 1, bucketPrefix, storageBytes: 2 * STORAGE });
  t.equal(await capOf(b1.name), 2 * STORAGE, "raised on the existing bucket");
  await openBlobBucket(nc, { replicas: 1, bucketPrefix });
  t.equal(await capOf(b1.name), -1, "unset: no cap");
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    await t.rejects(
      openBlobBucket(nc, { replicas: 1, bucketPrefix, storageBytes: bad }),
      { name: "InvalidArgumentError", field: "storageBytes" },
      `storageBytes ${bad}`,
    );
  }
});

t.test("a bus refuses a bad blobs.storageBytes before it starts anything", async (t) => {
  for (const bad of [0, -5, 2.5]) {
    await t.rejects(
      startUnibus({ natsServer: NATS_SERVER, store: "kv", dataDir: t.testdir(), blobs: { storageBytes: bad } }),
      { name: "InvalidArgumentError", field: "blobs.storageBytes" },
      String(bad),
    );
  }
});
