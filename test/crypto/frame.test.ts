import fc from "fast-check";
import t from "tap";
import {
  clearFrameHeader,
  encodeFrame,
  encodeFrameWithNonce,
  FLAG_SIGNED,
  FRAME_HEADER_BYTES,
  type FrameSender,
  frameEpoch,
  frameOverhead,
  type OpenFrameOptions,
  openClearFrame,
  openFrame,
  parseFrame,
  payloadBytes,
  writeClearFrame,
} from "../../lib/crypto/frame.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { newRoomKey } from "../../lib/crypto/room-key.ts";
import { InvalidArgumentError } from "../../lib/errors.ts";

const alice = createIdentity();
const bob = createIdentity();
const key1 = newRoomKey();
const key2 = newRoomKey();
const ROOM = "room-a";

type Kind = { encrypted: boolean; signed: boolean };
const KINDS: Kind[] = [
  { encrypted: true, signed: true },
  { encrypted: true, signed: false },
  { encrypted: false, signed: true },
  { encrypted: false, signed: false },
];
const label = (k: Kind) => `${k.encrypted ? "encrypted" : "cleartext"}, ${k.signed ? "signed" : "unsigned"}`;

function make(k: Kind, plaintext: Uint8Array | string = "hi", extra: { roomId?: string; epoch?: number } = {}) {
  return encodeFrame({
    roomId: extra.roomId ?? ROOM,
    epoch: extra.epoch ?? 1,
    sender: alice,
    plaintext,
    roomKey: k.encrypted ? key1 : undefined,
    sign: k.signed,
  });
}

function opts(k: Kind, more: Partial<OpenFrameOptions> = {}): OpenFrameOptions {
  return {
    roomId: ROOM,
    encrypted: k.encrypted,
    roomKey: k.encrypted ? key1 : undefined,
    requireSignature: false,
    ...more,
  };
}

t.test("round trips every kind of frame", async (t) => {
  for (const k of KINDS) {
    for (const payload of [Buffer.from("hello, room"), "grüße ✓", new Uint8Array(0), Buffer.alloc(1 << 20, 7)]) {
      const frame = make(k, payload);
      const bytes = typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
      t.equal(frame.length, bytes.length + frameOverhead(k.encrypted, k.signed), `${label(k)}: size`);
      const r = openFrame(frame, opts(k, { requireSignature: k.signed }));
      if (!r.ok) {
        t.fail(`${label(k)}: ${r.reason}`);
        continue;
      }
      t.ok(Buffer.from(r.plaintext).equals(Buffer.from(bytes)), `${label(k)}: plaintext of ${bytes.length} bytes`);
      t.equal(r.sender, alice.signPub);
      t.equal(r.epoch, 1);
      t.equal(r.encrypted, k.encrypted);
      t.equal(r.verified, k.signed);
    }
  }
});

t.test("parseFrame reads the structure; frameEpoch routes without parsing", async (t) => {
  const frame = make({ encrypted: true, signed: true }, "abc", { epoch: 0xfffffffe });
  const p = parseFrame(frame);
  t.ok(p.ok);
  if (!p.ok) return;
  t.equal(p.version, 1);
  t.equal(p.encrypted, true);
  t.equal(p.signed, true);
  t.equal(p.epoch, 0xfffffffe);
  t.equal(p.sender, alice.signPub);
  t.equal(p.nonce?.length, 12);
  t.equal(p.body.length, 3 + 16);
  t.equal(p.signature?.length, 64);
  t.equal(frameEpoch(frame), 0xfffffffe);
  t.equal(frameEpoch(new Uint8Array(10)), undefined, "too short");
  t.equal(frameEpoch(Buffer.concat([Buffer.from([2]), frame.subarray(1)])), undefined, "another version");
  t.equal(frameEpoch("nope" as unknown as Uint8Array), undefined);
  // openFrame takes the parse result as well as the bytes.
  const r = openFrame(p, opts({ encrypted: true, signed: true }));
  t.ok(r.ok && Buffer.from(r.plaintext).toString() === "abc");
});

t.test("a key per epoch: lookup, unknown epoch, wrong epoch key", async (t) => {
  const keys = new Map([
    [1, key1],
    [2, key2],
  ]);
  const lookup = (e: number) => keys.get(e);
  for (const epoch of [1, 2]) {
    const frame = encodeFrame({
      roomId: ROOM,
      epoch,
      sender: bob,
      plaintext: `e${epoch}`,
      roomKey: keys.get(epoch),
      sign: false,
    });
    const r = openFrame(frame, { roomId: ROOM, encrypted: true, roomKey: lookup, requireSignature: false });
    t.ok(r.ok && Buffer.from(r.plaintext).toString() === `e${epoch}`, `epoch ${epoch} opens with its key`);
  }
  const e3 = encodeFrame({ roomId: ROOM, epoch: 3, sender: bob, plaintext: "x", roomKey: newRoomKey(), sign: false });
  const unknown = openFrame(e3, { roomId: ROOM, encrypted: true, roomKey: lookup, requireSignature: false });
  t.match(unknown, { ok: false, reason: "unknown-epoch", epoch: 3, sender: bob.signPub });
  const noKey = openFrame(e3, { roomId: ROOM, encrypted: true, requireSignature: false });
  t.match(noKey, { ok: false, reason: "unknown-epoch" });
  const e2 = encodeFrame({ roomId: ROOM, epoch: 2, sender: bob, plaintext: "x", roomKey: key2, sign: false });
  t.match(openFrame(e2, { roomId: ROOM, encrypted: true, roomKey: key1, requireSignature: false }), {
    ok: false,
    reason: "undecryptable",
    epoch: 2,
  });
  // The same key under a claimed epoch that differs from the one used: the epoch is authenticated.
  const relabelled = Buffer.from(e2);
  relabelled.writeUInt32BE(1, 2);
  t.match(openFrame(relabelled, { roomId: ROOM, encrypted: true, roomKey: lookup, requireSignature: false }), {
    ok: false,
    reason: "undecryptable",
  });
});

t.test("a frame for room A does not open as room B", async (t) => {
  const expected: Record<string, string> = {
    "encrypted, signed": "bad-signature",
    "encrypted, unsigned": "undecryptable",
    "cleartext, signed": "bad-signature",
  };
  for (const k of KINDS.slice(0, 3)) {
    const r = openFrame(make(k), opts(k, { roomId: "room-b" }));
    t.match(r, { ok: false, reason: expected[label(k)] }, label(k));
  }
  // Room ids that share a prefix are different contexts (the length is encoded).
  const k = { encrypted: true, signed: false };
  t.match(openFrame(make(k, "x", { roomId: "ab" }), opts(k, { roomId: "abc" })), { ok: false });
});

t.test("requireSignature refuses unsigned frames", async (t) => {
  for (const k of KINDS.filter((k) => !k.signed)) {
    t.match(openFrame(make(k), opts(k, { requireSignature: true })), { ok: false, reason: "unsigned" }, label(k));
  }
});

t.test("a bad signature is refused even where signatures are optional", async (t) => {
  for (const k of KINDS.filter((k) => k.signed)) {
    const frame = Buffer.from(make(k));
    frame[frame.length - 1]! ^= 0x80;
    t.match(openFrame(frame, opts(k)), { ok: false, reason: "bad-signature" }, label(k));
  }
});

t.test("a frame signed by X but claiming sender Y fails", async (t) => {
  const impostor: FrameSender = { signPub: alice.signPub, sign: (d) => bob.sign(d) };
  for (const encrypted of [true, false]) {
    const frame = encodeFrame({
      roomId: ROOM,
      epoch: 1,
      sender: impostor,
      plaintext: "trust me",
      roomKey: encrypted ? key1 : undefined,
      sign: true,
    });
    t.match(openFrame(frame, opts({ encrypted, signed: true })), { ok: false, reason: "bad-signature" });
  }
  // Rewriting the sender of a genuine signed frame to someone else.
  const frame = Buffer.from(make({ encrypted: false, signed: true }));
  Buffer.from(bob.signPub, "hex").copy(frame, 6);
  t.match(openFrame(frame, opts({ encrypted: false, signed: true })), {
    ok: false,
    reason: "bad-signature",
    sender: bob.signPub,
  });
  // A sender field that is not a valid Ed25519 point.
  const junk = Buffer.from(make({ encrypted: false, signed: true }));
  junk.fill(0xff, 6, 38);
  t.match(openFrame(junk, opts({ encrypted: false, signed: true })), { ok: false, reason: "bad-signature" });
});

t.test("stripping the signature", async (t) => {
  const strip = (f: Uint8Array) => {
    const c = Buffer.from(f.subarray(0, f.length - 64));
    c[1]! &= ~FLAG_SIGNED;
    return c;
  };
  const enc = { encrypted: true, signed: true };
  t.match(openFrame(strip(make(enc)), opts(enc)), { ok: false, reason: "undecryptable" }, "flags are in the AD");
  const clear = { encrypted: false, signed: true };
  t.match(openFrame(strip(make(clear)), opts(clear, { requireSignature: true })), { ok: false, reason: "unsigned" });
  t.match(
    openFrame(strip(make(clear)), opts(clear)),
    { ok: true, verified: false },
    "without signMsgs a cleartext room cannot tell (documented)",
  );
});

t.test("a frame in a room of the other mode is refused", async (t) => {
  t.match(openFrame(make({ encrypted: false, signed: true }), { ...opts({ encrypted: true, signed: true }) }), {
    ok: false,
    reason: "wrong-mode",
  });
  t.match(openFrame(make({ encrypted: true, signed: false }), opts({ encrypted: false, signed: false })), {
    ok: false,
    reason: "wrong-mode",
  });
});

t.test("tampering with any single byte is detected", async (t) => {
  for (const k of KINDS.filter((k) => k.encrypted || k.signed)) {
    t.doesNotThrow(
      () =>
        fc.assert(
          fc.property(
            fc.uint8Array({ maxLength: 200 }),
            fc.nat(),
            fc.integer({ min: 1, max: 255 }),
            (payload, at, mask) => {
              const frame = Buffer.from(make(k, payload));
              const i = at % frame.length;
              frame[i]! ^= mask;
              // A room that relies on signatures requires them: in a cleartext room without
              // signMsgs, clearing the "signed" flag turns the signature into plaintext of an
              // unsigned frame anyone could have sent (documented above; found by CI).
              const r = openFrame(frame, opts(k, { requireSignature: k.signed }));
              return !r.ok;
            },
          ),
          { numRuns: 500 },
        ),
      `${label(k)}: 500 single-byte changes refused`,
    );
    t.doesNotThrow(
      () =>
        fc.assert(
          fc.property(
            fc.uint8Array({ maxLength: 64 }),
            fc.nat(),
            fc.uint8Array({ minLength: 1, maxLength: 8 }),
            (payload, at, extra) => {
              const frame = make(k, payload);
              const cut = frame.subarray(0, at % frame.length);
              const longer = Buffer.concat([frame, extra]);
              return !openFrame(cut, opts(k)).ok && !openFrame(longer, opts(k)).ok;
            },
          ),
          { numRuns: 300 },
        ),
      `${label(k)}: truncation and extension refused`,
    );
  }
});

t.test("nonces are fresh per frame", async (t) => {
  const nonces = new Set<string>();
  const k = { encrypted: true, signed: false };
  for (let i = 0; i < 3000; i++) {
    const p = parseFrame(make(k, "same"));
    if (p.ok) nonces.add(Buffer.from(p.nonce!).toString("hex"));
  }
  t.equal(nonces.size, 3000, "3000 frames, 3000 nonces (across several refills of the nonce pool)");
  t.not(Buffer.from(make(k, "same")).toString("hex"), Buffer.from(make(k, "same")).toString("hex"));
});

t.test("encodeFrameWithNonce is deterministic (Ed25519 is)", async (t) => {
  const nonce = Buffer.alloc(12, 9);
  const o = { roomId: ROOM, epoch: 4, sender: alice, plaintext: "x", roomKey: key1, sign: true };
  t.same(Buffer.from(encodeFrameWithNonce(o, nonce)), Buffer.from(encodeFrameWithNonce(o, nonce)));
  t.throws(() => encodeFrameWithNonce(o, Buffer.alloc(11)), InvalidArgumentError);
});

t.test("the plaintext of a cleartext frame does not alias the frame", async (t) => {
  const frame = Buffer.from(make({ encrypted: false, signed: false }, "abc"));
  const r = openFrame(frame, opts({ encrypted: false, signed: false }));
  frame.fill(0);
  t.ok(r.ok && Buffer.from(r.plaintext).toString() === "abc");
});

t.test("many distinct senders still verify (the sender-key cache is bounded, not a correctness input)", async (t) => {
  const k = { encrypted: false, signed: true };
  let ok = 0;
  const first = createIdentity();
  const firstFrame = encodeFrame({ roomId: ROOM, epoch: 1, sender: first, plaintext: "0", sign: true });
  for (let i = 0; i < 1100; i++) {
    const id = createIdentity();
    const r = openFrame(encodeFrame({ roomId: ROOM, epoch: 1, sender: id, plaintext: "x", sign: true }), opts(k));
    if (r.ok && r.verified && r.sender === id.signPub) ok++;
  }
  t.equal(ok, 1100);
  t.match(openFrame(firstFrame, opts(k)), { ok: true, verified: true, sender: first.signPub }, "evicted sender again");
});

t.test("the caller's own mistakes throw InvalidArgumentError", async (t) => {
  const base = { roomId: ROOM, epoch: 1, sender: alice, plaintext: "x", sign: false };
  const bad: [string, Record<string, unknown>][] = [
    ["epoch -1", { epoch: -1 }],
    ["epoch 1.5", { epoch: 1.5 }],
    ["epoch 2^32", { epoch: 2 ** 32 }],
    ["epoch as a string", { epoch: "1" }],
    ["short room key", { roomKey: new Uint8Array(31) }],
    ["room key as hex", { roomKey: "00".repeat(32) }],
    ["empty room id", { roomId: "" }],
    ["room id over 255 bytes", { roomId: "ü".repeat(128) }],
    ["sender without sign", { sender: { signPub: alice.signPub } }],
    ["sender with a bad key", { sender: { signPub: "xyz", sign: () => new Uint8Array(64) } }],
    ["sign not a boolean", { sign: "yes" }],
    ["plaintext a number", { plaintext: 5 }],
  ];
  for (const [what, patch] of bad) {
    t.throws(() => encodeFrame({ ...base, ...patch } as never), InvalidArgumentError, what);
  }
  t.throws(
    () => encodeFrame({ ...base, sign: true, sender: { signPub: alice.signPub, sign: () => new Uint8Array(10) } }),
    InvalidArgumentError,
    "a signer that returns a short signature",
  );
  const frame = make({ encrypted: true, signed: false });
  t.throws(
    () => openFrame(frame, { roomId: "", encrypted: true, roomKey: key1, requireSignature: false }),
    InvalidArgumentError,
  );
  t.throws(
    () =>
      openFrame(frame, { roomId: ROOM, encrypted: true, roomKey: () => new Uint8Array(16), requireSignature: false }),
    InvalidArgumentError,
  );
});

// The cleartext fast paths: a publisher writes frames in place (clearFrameHeader +
// writeClearFrame), a cleartext room opens them without the general parse
// (openClearFrame). Each must give exactly what encodeFrame / openFrame give.

const CLEAR_PAYLOADS: Array<[string, Uint8Array | string]> = [
  ["empty bytes", new Uint8Array(0)],
  ["empty string", ""],
  ["one byte", Uint8Array.of(0)],
  ["256 random bytes", crypto.getRandomValues(new Uint8Array(256))],
  ["unicode text", "héllo wörld ✓ 日本語 🦄"],
  ["a lone surrogate (encoded as U+FFFD)", "a\ud800b"],
  ["64 KiB", new Uint8Array(64 * 1024).fill(7)],
];

t.test("writeClearFrame writes encodeFrame's bytes in place, touching nothing around them", async (t) => {
  const header = clearFrameHeader(7, alice);
  for (const [name, payload] of CLEAR_PAYLOADS) {
    const want = encodeFrame({ roomId: ROOM, epoch: 7, sender: alice, plaintext: payload, sign: false });
    const size = payloadBytes(payload);
    t.equal(FRAME_HEADER_BYTES + size, want.length, `${name}: size`);
    const buf = Buffer.alloc(want.length + 10, 0xee);
    writeClearFrame(buf, 5, header, payload, size);
    t.same(buf.subarray(5, 5 + want.length), Buffer.from(want), `${name}: same bytes`);
    t.ok(buf.subarray(0, 5).every((b) => b === 0xee) && buf.subarray(5 + want.length).every((b) => b === 0xee), name);
  }
});

t.test("clearFrameHeader refuses what encodeFrame refuses", async (t) => {
  for (const epoch of [-1, 1.5, 2 ** 32, Number.NaN]) {
    t.throws(() => clearFrameHeader(epoch, alice), InvalidArgumentError, `epoch ${epoch}`);
  }
  t.throws(() => clearFrameHeader(1, { signPub: "zz", sign: () => new Uint8Array(64) }), InvalidArgumentError);
  t.throws(() => clearFrameHeader(1, null as unknown as FrameSender), InvalidArgumentError);
});

const CLEAR_ROOM: OpenFrameOptions = { roomId: ROOM, encrypted: false, requireSignature: false };

t.test("openClearFrame opens a cleartext unsigned frame as openFrame does", async (t) => {
  for (const [name, payload] of CLEAR_PAYLOADS) {
    const frame = make({ encrypted: false, signed: false }, payload, { epoch: 2 ** 31 });
    t.same(openClearFrame(frame, CLEAR_ROOM), openFrame(frame, CLEAR_ROOM), name);
  }
  const frame = make({ encrypted: false, signed: false }, "mine");
  const opened = openClearFrame(frame, CLEAR_ROOM)!;
  frame.fill(0);
  t.equal(Buffer.from(opened.plaintext).toString(), "mine", "the plaintext does not alias the frame");
});

t.test("openClearFrame leaves every other frame and every other room to openFrame", async (t) => {
  const clear = make({ encrypted: false, signed: false });
  for (const k of KINDS.filter((k) => k.encrypted || k.signed)) {
    t.equal(openClearFrame(make(k), CLEAR_ROOM), undefined, label(k));
  }
  t.equal(openClearFrame(clear, { ...CLEAR_ROOM, encrypted: true }), undefined, "an encrypted room");
  t.equal(openClearFrame(clear, { ...CLEAR_ROOM, requireSignature: true }), undefined, "a signMsgs room");
  const broken: Array<[string, Uint8Array]> = [
    ["empty", new Uint8Array(0)],
    ["one byte short of a header", clear.subarray(0, FRAME_HEADER_BYTES - 1)],
    ["another version", Uint8Array.from([2, ...clear.subarray(1)])],
    ["unknown flags", Uint8Array.from([1, 0x80, ...clear.subarray(2)])],
  ];
  for (const [name, bytes] of broken) {
    t.equal(openClearFrame(bytes, CLEAR_ROOM), undefined, `${name}: left to openFrame`);
    t.equal(openFrame(bytes, CLEAR_ROOM).ok, false, `${name}: which refuses it`);
  }
  const headerOnly = clear.subarray(0, FRAME_HEADER_BYTES);
  t.same(openClearFrame(headerOnly, CLEAR_ROOM), openFrame(headerOnly, CLEAR_ROOM), "exactly a header: empty payload");
});

t.test("the sender is read right whoever sent the frame before (the last sender's hex is reused)", async (t) => {
  // a sender that differs from the previous one only in its last byte
  const twin: FrameSender = {
    signPub: `${alice.signPub.slice(0, 62)}${alice.signPub.endsWith("00") ? "01" : "00"}`,
    sign: alice.sign.bind(alice),
  };
  const senders = [alice, bob, bob, twin, alice, twin];
  for (const s of senders) {
    const frame = encodeFrame({ roomId: ROOM, epoch: 1, sender: s, plaintext: "x", sign: false });
    t.equal(openClearFrame(frame, CLEAR_ROOM)?.sender, s.signPub.toLowerCase());
    const parsed = parseFrame(frame);
    t.equal(parsed.ok && parsed.sender, s.signPub.toLowerCase());
  }
});
