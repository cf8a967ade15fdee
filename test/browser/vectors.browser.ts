// The golden vectors (fixtures/vectors) pass in the browser build as they do in Node:
// frames, sealed keys, identity files, signed requests, registration proofs and blobs,
// byte for byte, and every invalid case refused for the same reason.
import fs from "node:fs";
import t from "tap";
import { launchBrowser, pageWithBundle } from "../helpers/browser-client.ts";

const load = (name: string) =>
  JSON.parse(fs.readFileSync(new URL(`../../fixtures/vectors/${name}.json`, import.meta.url), "utf8"));
const fixtures = {
  frames: load("frames"),
  seal: load("seal"),
  identity: load("identity"),
  requests: load("requests"),
  blobs: load("blobs"),
};

interface Check {
  name: string;
  got: unknown;
  want: unknown;
}

t.test("every golden vector, in chromium", async (t) => {
  const browser = await launchBrowser(t);
  const { page, errors } = await pageWithBundle(t, browser, undefined);
  const checks: Check[] = await page.evaluate(runVectors, fixtures);
  t.ok(checks.length > 50, `${checks.length} checks ran`);
  for (const c of checks) t.same(c.got, c.want, c.name);
  t.same(errors, []);
});

/** Runs in the page: returns what the browser build produced beside what the vectors say. */
async function runVectors(fx: typeof fixtures): Promise<Check[]> {
  const u = (globalThis as unknown as { unibus: typeof import("../../lib/browser/index.ts") }).unibus;
  const subtle = globalThis.crypto.subtle;
  const hex = (s: string | null) => Uint8Array.from((s ?? "").match(/../g) ?? [], (b) => Number.parseInt(b, 16));
  const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const pkcs8 = (prefix: number[], raw: Uint8Array) => Uint8Array.from([...prefix, ...raw]);
  const ED = [48, 46, 2, 1, 0, 48, 5, 6, 3, 43, 101, 112, 4, 34, 4, 32];
  const X = [48, 46, 2, 1, 0, 48, 5, 6, 3, 43, 101, 110, 4, 34, 4, 32];
  const signer = async (seedHex: string, signPub: string) => {
    const key = await subtle.importKey("pkcs8", pkcs8(ED, hex(seedHex)), { name: "Ed25519" }, false, ["sign"]);
    return { signPub, sign: async (d: Uint8Array) => new Uint8Array(await subtle.sign({ name: "Ed25519" }, key, d)) };
  };
  const kexHolder = async (secretHex: string, kexPub: string) => {
    const key = await subtle.importKey("pkcs8", pkcs8(X, hex(secretHex)), { name: "X25519" }, false, ["deriveBits"]);
    return new u.BrowserIdentity("00".repeat(32), kexPub, key, key);
  };
  const reasonOf = async (p: Promise<unknown>) =>
    p.then(
      () => "accepted",
      (e: { reason?: string; message?: string }) => e.reason ?? e.message,
    );
  const out: Check[] = [];
  for (const v of fx.frames.vectors) {
    const sender = await signer(v.senderSignSeed, v.senderSignPub);
    const frame = await u.encodeFrame({
      roomId: v.roomId,
      epoch: v.epoch,
      sender,
      plaintext: hex(v.plaintext),
      ...(v.roomKey ? { roomKey: hex(v.roomKey), nonce: hex(v.nonce) } : {}),
      sign: v.signed,
    });
    out.push({ name: `frame: ${v.name}: encoded`, got: toHex(frame), want: v.frame });
    const opened = await u.openFrame(hex(v.frame), {
      roomId: v.roomId,
      encrypted: v.roomKey !== null,
      ...(v.roomKey ? { roomKey: hex(v.roomKey) } : {}),
      requireSignature: false,
    });
    const got = opened.ok
      ? { plaintext: toHex(opened.plaintext), verified: opened.verified, sender: opened.sender }
      : opened.reason;
    out.push({
      name: `frame: ${v.name}: opened`,
      got,
      want: { plaintext: v.plaintext, verified: v.signed, sender: v.senderSignPub },
    });
  }
  for (const v of fx.frames.invalid) {
    const r = await u.openFrame(hex(v.frame), {
      roomId: v.roomId,
      encrypted: v.encrypted,
      ...(v.roomKey ? { roomKey: hex(v.roomKey) } : {}),
      requireSignature: v.requireSignature,
    });
    out.push({ name: `frame refused: ${v.name}`, got: r.ok ? "opened" : r.reason, want: v.reason });
  }
  for (const v of fx.seal.vectors) {
    const opts = { roomKey: hex(v.roomKey), recipientKexPub: v.recipientKexPub, roomId: v.roomId, epoch: v.epoch };
    out.push({ name: `seal: ${v.name}`, got: await u.sealRoomKey(opts, hex(v.ephemeralSecret)), want: v.sealed });
    const identity = await kexHolder(v.recipientKexSecret, v.recipientKexPub);
    const key = await u.openRoomKey({ sealed: v.sealed, identity, roomId: v.roomId, epoch: v.epoch });
    out.push({ name: `open sealed: ${v.name}`, got: toHex(key), want: v.roomKey });
  }
  for (const v of fx.seal.invalid) {
    const pub = fx.seal.vectors.find(
      (x: { recipientKexSecret: string }) => x.recipientKexSecret === v.recipientKexSecret,
    );
    const identity = await kexHolder(v.recipientKexSecret, pub?.recipientKexPub ?? "00".repeat(32));
    const got = await reasonOf(u.openRoomKey({ sealed: v.sealed, identity, roomId: v.roomId, epoch: v.epoch }));
    out.push({ name: `sealed key refused: ${v.name}`, got, want: v.reason });
  }
  for (const v of fx.identity.vectors) {
    const id = await u.importIdentity(v.file);
    out.push({
      name: `identity: ${v.name}`,
      got: id.toJSON(),
      want: { signPub: v.signPub, kexPub: v.kexPub, nkey: v.nkey },
    });
    const sig = await id.sign(new TextEncoder().encode(v.login.nonce));
    const b64 = btoa(String.fromCharCode(...sig))
      .replace(/\+/g, "-")
      .replace(/\//g, "_")
      .replace(/=+$/, "");
    out.push({ name: `identity: ${v.name}: login signature`, got: b64, want: v.login.sig });
    // the secrets live only in non-extractable CryptoKeys held in private fields
    const reachable = `${Object.getOwnPropertyNames(id).sort().join()} ${JSON.stringify(id)}`;
    out.push({
      name: `identity: ${v.name}: no secret reachable from the object`,
      got: reachable.includes(JSON.parse(v.file).signSeed) || reachable.includes(JSON.parse(v.file).kexSecret),
      want: false,
    });
    out.push({
      name: `identity: ${v.name}: own properties`,
      got: Object.getOwnPropertyNames(id).sort(),
      want: ["kexPub", "nkey", "signPub"],
    });
  }
  for (const v of fx.identity.invalid) {
    const got = await reasonOf(u.importIdentity(v.file));
    out.push({ name: `identity refused: ${v.name}`, got: String(got).includes(`(${v.reason})`), want: true });
  }
  for (const v of fx.requests.vectors) {
    const s = await signer(v.signSeed, v.signPub);
    const headers = await u.signRequest(s, {
      method: v.method,
      uri: v.uri,
      body: hex(v.body),
      now: Number(v.timestamp),
      nonce: v.nonce,
    });
    out.push({ name: `request: ${v.name}`, got: headers, want: v.headers });
  }
  for (const v of fx.requests.registration) {
    const s = await signer(v.signSeed, v.signPub);
    const sig = await s.sign(new TextEncoder().encode(v.message));
    const b64 = btoa(String.fromCharCode(...sig))
      .replace(/\+/g, "-")
      .replace(/\//g, "_")
      .replace(/=+$/, "");
    out.push({ name: `registration proof: ${v.name}`, got: b64, want: v.proof });
  }
  for (const v of fx.blobs.vectors) {
    const opts = {
      roomKey: hex(v.roomKey),
      roomId: v.roomId,
      epoch: v.epoch,
      chunkSize: v.chunkSize,
      salt: hex(v.salt),
    };
    out.push({ name: `blob: ${v.name}`, got: toHex(await u.encryptBlob(hex(v.plaintext), opts)), want: v.blob });
    const plain = await u.decryptBlob(hex(v.blob), { roomId: v.roomId, keyFor: async () => hex(v.roomKey) });
    out.push({ name: `blob opened: ${v.name}`, got: toHex(plain), want: v.plaintext });
  }
  for (const v of fx.blobs.invalid) {
    const got = await reasonOf(u.decryptBlob(hex(v.blob), { roomId: v.roomId, keyFor: async () => hex(v.roomKey) }));
    out.push({ name: `blob refused: ${v.name}`, got, want: v.reason });
  }
  return out;
}
