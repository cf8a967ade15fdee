// The browser the console and the browser client are tested in has the WebCrypto
// primitives they rely on (Ed25519 and X25519 non-extractable keys, HKDF, SHA-256).
// A failure here means the chromium on this machine is too old, not that unibus is wrong.
import type { webcrypto } from "node:crypto";
import t from "tap";
import { launchBrowser, openPage, servePages } from "../helpers/browser.ts";

t.test("chromium has the WebCrypto primitives unibus uses", async (t) => {
  const browser = await launchBrowser(t);
  const { page, errors } = await openPage(t, browser);
  const origin = await servePages(t, { "/": { type: "text/html", body: "<!doctype html><title>p</title>" } });
  await page.goto(origin);
  const result = await page.evaluate(async () => {
    const s = crypto.subtle;
    const ed = (await s.generateKey({ name: "Ed25519" }, false, [
      "sign",
      "verify",
    ])) as unknown as webcrypto.CryptoKeyPair;
    const msg = new TextEncoder().encode("unibus");
    const sig = await s.sign({ name: "Ed25519" }, ed.privateKey, msg);
    const ok = await s.verify({ name: "Ed25519" }, ed.publicKey, sig, msg);
    const bad = await s.verify({ name: "Ed25519" }, ed.publicKey, sig, new TextEncoder().encode("unibuz"));
    const x = (await s.generateKey({ name: "X25519" }, false, ["deriveBits"])) as unknown as webcrypto.CryptoKeyPair;
    const y = (await s.generateKey({ name: "X25519" }, false, ["deriveBits"])) as unknown as webcrypto.CryptoKeyPair;
    const xy = new Uint8Array(await s.deriveBits({ name: "X25519", public: y.publicKey }, x.privateKey, 256));
    const yx = new Uint8Array(await s.deriveBits({ name: "X25519", public: x.publicKey }, y.privateKey, 256));
    let exported = "exported";
    try {
      await s.exportKey("pkcs8", ed.privateKey);
    } catch (err) {
      exported = (err as Error).name;
    }
    return { sigLength: sig.byteLength, ok, bad, agree: xy.join() === yx.join(), exported };
  });
  t.same(result, { sigLength: 64, ok: true, bad: false, agree: true, exported: "InvalidAccessError" });
  t.same(errors, []);
});
