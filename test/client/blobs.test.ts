// Encrypted blobs through a room: bounded memory for 100 MiB, corruption detected.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import t from "tap";
import { connect } from "../../lib/client/connect.ts";
import { member, testBus } from "../helpers/bus.ts";

// V8 frees Buffer memory lazily; collecting every few MiB makes RSS show what the code
// keeps alive rather than when the collector happened to run.
v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

const MiB = 1024 * 1024;

async function* generate(total: number, hash: crypto.Hash): AsyncGenerator<Uint8Array> {
  const block = crypto.randomBytes(MiB);
  for (let sent = 0, i = 0; sent < total; sent += MiB, i++) {
    // vary each block so chunk reordering would show
    const piece = Buffer.from(block);
    piece.writeUInt32BE(i, 0);
    hash.update(piece);
    gc();
    yield piece;
  }
}

t.test("a 100 MiB encrypted blob round-trips with bounded memory", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  await using c = await connect({ natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, identity: alice });
  const room = await c.createRoom();
  gc();
  // Live memory: JS heap plus Buffer/ArrayBuffer memory. (RSS also counts what the
  // allocator keeps after a free, which says nothing about what this code holds.)
  const live = () => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const before = live();
  const rssBefore = process.memoryUsage().rss;
  let peak = before;
  let rssPeak = rssBefore;
  const sample = setInterval(() => {
    peak = Math.max(peak, live());
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }, 20);
  t.teardown(() => clearInterval(sample));

  const sent = crypto.createHash("sha256");
  const info = await room.putBlob(generate(100 * MiB, sent), { mimetype: "application/octet-stream" });
  t.ok(info.size > 100 * MiB, "ciphertext is a little larger than the plaintext");
  const onDisk = Buffer.alloc(4096);
  const fd = fs.openSync(path.join(bus.dataDir, "blobs", info.id), "r");
  fs.readSync(fd, onDisk, 0, 4096, 0);
  fs.closeSync(fd);
  t.notOk(
    onDisk.includes(Buffer.from("UBB1")) && onDisk.subarray(28).every((b) => b === 0),
    "stored bytes are ciphertext",
  );

  const got = await room.getBlob(info.id);
  t.equal(got.mimetype, "application/octet-stream");
  const received = crypto.createHash("sha256");
  let bytes = 0;
  let n = 0;
  for await (const chunk of got.data) {
    received.update(chunk);
    bytes += chunk.length;
    if (++n % 16 === 0) gc();
  }
  clearInterval(sample);
  t.equal(bytes, 100 * MiB);
  t.equal(received.digest("hex"), sent.digest("hex"), "the plaintext came back intact");
  const growth = (peak - before) / MiB;
  t.ok(growth < 64, `live memory grew ${growth.toFixed(1)} MiB (< 64 MiB) for a 100 MiB blob`);
  t.comment(`RSS grew ${((rssPeak - rssBefore) / MiB).toFixed(1)} MiB (client and server in one process)`);
});

t.test("a corrupted chunk on the server is detected, never returned as plaintext", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  await using c = await connect({ natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, identity: alice });
  const room = await c.createRoom();
  const plain = crypto.randomBytes(300 * 1024);
  const info = await room.putBlob(plain, { mimetype: "image/png" });
  const file = path.join(bus.dataDir, "blobs", info.id);
  const stored = fs.readFileSync(file);
  stored[200 * 1024] = (stored[200 * 1024] ?? 0) ^ 0xff;
  fs.writeFileSync(file, stored);
  const got = await room.getBlob(info.id);
  const out: Uint8Array[] = [];
  await t.rejects(
    (async () => {
      for await (const chunk of got.data) out.push(chunk);
    })(),
    { code: /^(CRYPTO|BLOB_INTEGRITY)$/ },
  );
  const delivered = Buffer.concat(out);
  t.ok(delivered.length < plain.length, "the stream stopped at the corrupted chunk");
  t.ok(plain.subarray(0, delivered.length).equals(delivered), "only verified chunks were delivered");
});
