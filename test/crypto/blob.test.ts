import crypto from "node:crypto";
import { buffer as collect } from "node:stream/consumers";
import fc from "fast-check";
import t from "tap";
import { BLOB_HEADER_BYTES, decryptBlob, encryptBlob } from "../../lib/crypto/blob.ts";
import { newRoomKey } from "../../lib/crypto/room-key.ts";

const ROOM = "0123456789abcdef01234567";

async function* pieces(buf: Buffer, sizes: number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  let i = 0;
  while (at < buf.length) {
    const n = Math.max(1, sizes[i++ % sizes.length] ?? 1);
    yield buf.subarray(at, at + n);
    at += n;
  }
}

const roundTrip = async (plain: Buffer, chunkBytes: number, key = newRoomKey(), split = [7, 1000, 3]) => {
  const sealed = await collect(encryptBlob(pieces(plain, split), { roomKey: key, roomId: ROOM, epoch: 3, chunkBytes }));
  const back = await collect(
    decryptBlob(pieces(sealed, [13, 4096]), { roomId: ROOM, keyFor: async (e) => (e === 3 ? key : undefined) }),
  );
  return { sealed, back };
};

t.test("round trips at every size around chunk boundaries, in any input split", async (t) => {
  for (const size of [0, 1, 63, 64, 65, 127, 128, 129, 1000]) {
    const plain = crypto.randomBytes(size);
    const { sealed, back } = await roundTrip(plain, 64);
    t.ok(back.equals(plain), `size ${size}`);
    t.equal(
      sealed.length,
      BLOB_HEADER_BYTES + size + 16 * Math.max(1, Math.ceil(size / 64)),
      `one tag per chunk for ${size}`,
    );
  }
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 600 }),
      fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 5 }),
      async (bytes, split) => {
        const plain = Buffer.from(bytes);
        const { back } = await roundTrip(plain, 50, newRoomKey(), split);
        return back.equals(plain);
      },
    ),
    { numRuns: 150 },
  );
});

t.test("tampering, truncation, reordering and a wrong key are detected", async (t) => {
  const key = newRoomKey();
  const plain = crypto.randomBytes(300);
  const { sealed } = await roundTrip(plain, 64, key);
  const open = (bytes: Buffer, k = key) =>
    collect(decryptBlob(pieces(bytes, [999]), { roomId: ROOM, keyFor: async () => k }));
  for (const at of [5, BLOB_HEADER_BYTES + 1, sealed.length - 1, BLOB_HEADER_BYTES + 80 + 5]) {
    const bad = Buffer.from(sealed);
    bad[at] = (bad[at] ?? 0) ^ 0x40;
    await t.rejects(open(bad), { code: "CRYPTO" }, `flipped byte at ${at}`);
  }
  const frame = 64 + 16;
  await t.rejects(
    open(sealed.subarray(0, BLOB_HEADER_BYTES + frame * 2)),
    { code: "CRYPTO" },
    "truncated at a chunk boundary",
  );
  await t.rejects(open(sealed.subarray(0, sealed.length - 3)), { code: "CRYPTO" }, "truncated mid-chunk");
  const swapped = Buffer.concat([
    sealed.subarray(0, BLOB_HEADER_BYTES),
    sealed.subarray(BLOB_HEADER_BYTES + frame, BLOB_HEADER_BYTES + 2 * frame),
    sealed.subarray(BLOB_HEADER_BYTES, BLOB_HEADER_BYTES + frame),
    sealed.subarray(BLOB_HEADER_BYTES + 2 * frame),
  ]);
  await t.rejects(open(swapped), { code: "CRYPTO" }, "two chunks swapped");
  await t.rejects(open(sealed, newRoomKey()), { code: "CRYPTO" }, "wrong key");
  await t.rejects(
    collect(decryptBlob(pieces(sealed, [999]), { roomId: "ffffffffffffffffffffffff", keyFor: async () => key })),
    { code: "CRYPTO" },
    "another room",
  );
  await t.rejects(collect(decryptBlob(pieces(sealed, [999]), { roomId: ROOM, keyFor: async () => undefined })), {
    code: "CRYPTO",
    message: /never held/,
  });
  await t.rejects(open(Buffer.from("not a blob at all, but long enough to have a header")), { code: "CRYPTO" });
  await t.rejects(open(Buffer.alloc(3)), { code: "CRYPTO" });
});
