/**
 * Whatever arrives on a room subject, parseFrame and openFrame return a value (never
 * throw) and never hand out plaintext unless the frame is genuine.
 */
import fc from "fast-check";
import t from "tap";
import { encodeFrame, type OpenFrameOptions, openFrame, parseFrame } from "../../lib/crypto/frame.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { newRoomKey } from "../../lib/crypto/room-key.ts";

const ROOM = "fuzz";
const alice = createIdentity();
const key = newRoomKey();
const otherKey = newRoomKey();
const keys = new Map([
  [1, key],
  [2, otherKey],
]);

// Receivers that must never accept a frame they did not see made.
const STRICT: [string, OpenFrameOptions][] = [
  ["encrypted room, one key", { roomId: ROOM, encrypted: true, roomKey: key, requireSignature: false }],
  [
    "encrypted room, key lookup",
    { roomId: ROOM, encrypted: true, roomKey: (e) => keys.get(e), requireSignature: false },
  ],
  ["encrypted signMsgs room", { roomId: ROOM, encrypted: true, roomKey: key, requireSignature: true }],
  ["encrypted room without keys", { roomId: ROOM, encrypted: true, requireSignature: false }],
  ["cleartext signMsgs room", { roomId: ROOM, encrypted: false, requireSignature: true }],
];
const OPEN_ROOM: OpenFrameOptions = { roomId: ROOM, encrypted: false, requireSignature: false };

// Random bytes, and random bytes behind a plausible header, so the fuzzing reaches
// past the version and flag checks.
const anyBytes = fc.uint8Array({ maxLength: 400, size: "max" });
const headerish = fc
  .tuple(
    fc.constantFrom(0, 1, 2, 3, 4, 0xff),
    fc.integer({ min: 0, max: 3 }),
    fc.uint8Array({ minLength: 32, maxLength: 32 }),
    fc.uint8Array({ maxLength: 300, size: "max" }),
  )
  .map(([flags, epoch, sender, tail]) => {
    const b = Buffer.concat([Buffer.from([1, flags, 0, 0, 0, epoch]), sender, tail]);
    return new Uint8Array(b);
  });
const withGenuineSender = fc
  .tuple(fc.constantFrom(0, 1, 2, 3), fc.integer({ min: 0, max: 3 }), fc.uint8Array({ maxLength: 300, size: "max" }))
  .map(
    ([flags, epoch, tail]) =>
      new Uint8Array(Buffer.concat([Buffer.from([1, flags, 0, 0, 0, epoch]), Buffer.from(alice.signPub, "hex"), tail])),
  );
const mutatedGenuine = fc
  .tuple(
    fc.boolean(),
    fc.boolean(),
    fc.uint8Array({ maxLength: 64, size: "max" }),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }),
  )
  .map(([encrypted, sign, payload, edits]) => {
    const frame = Buffer.from(
      encodeFrame({
        roomId: ROOM,
        epoch: 1,
        sender: alice,
        plaintext: payload,
        roomKey: encrypted ? key : undefined,
        sign,
      }),
    );
    const genuine = Buffer.from(frame);
    for (const [at, mask] of edits) frame[at % frame.length]! ^= mask;
    // Two edits at one position can cancel out and give back the genuine frame.
    return { frame: new Uint8Array(frame), encrypted, sign, changed: !frame.equals(genuine) };
  });

const RUNS = 2000;

t.test("random bytes: never a throw, never plaintext", async (t) => {
  for (const [name, gen] of [
    ["any bytes", anyBytes],
    ["plausible header", headerish],
    ["genuine sender key", withGenuineSender],
  ] as const) {
    t.doesNotThrow(
      () =>
        fc.assert(
          fc.property(gen, (bytes) => {
            const parsed = parseFrame(bytes);
            for (const [, opts] of STRICT) {
              if (openFrame(bytes, opts).ok) return false;
              if (openFrame(parsed, opts).ok) return false;
            }
            // A cleartext room without signatures accepts any well-formed unsigned
            // cleartext frame by design; it must still never throw, and accept nothing else.
            const open = openFrame(bytes, OPEN_ROOM);
            const wellFormedClear = bytes.length >= 38 && bytes[0] === 1 && bytes[1] === 0;
            return open.ok === wellFormedClear;
          }),
          { numRuns: RUNS },
        ),
      `${name}: ${RUNS} runs`,
    );
  }
});

t.test("mutated genuine frames: never a throw, never plaintext", async (t) => {
  t.doesNotThrow(
    () =>
      fc.assert(
        fc.property(mutatedGenuine, ({ frame, encrypted, sign, changed }) => {
          parseFrame(frame);
          const strict: OpenFrameOptions = { roomId: ROOM, encrypted, roomKey: key, requireSignature: sign };
          if (!encrypted && !sign) return true; // nothing protects such a frame
          if (!changed) return openFrame(frame, strict).ok; // the edits cancelled out: still genuine
          return !openFrame(frame, strict).ok;
        }),
        { numRuns: RUNS },
      ),
    `${RUNS} runs`,
  );
});

t.test("values that are not bytes", async (t) => {
  for (const v of [undefined, null, "frame", 42, {}, [1, 0, 0, 0, 0, 1], new ArrayBuffer(64)]) {
    const p = parseFrame(v as unknown as Uint8Array);
    t.match(p, { ok: false, reason: "malformed" }, `parseFrame(${String(v)})`);
    t.match(openFrame(v as unknown as Uint8Array, STRICT[0]![1]), { ok: false }, `openFrame(${String(v)})`);
  }
});
