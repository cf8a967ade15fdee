import crypto from "node:crypto";

/** Raw public keys as lowercase hex, the way identities hand them to the store. */
export function signPubHex(): string {
  return rawPub(crypto.generateKeyPairSync("ed25519").publicKey);
}

export function kexPubHex(): string {
  return rawPub(crypto.generateKeyPairSync("x25519").publicKey);
}

function rawPub(key: crypto.KeyObject): string {
  // SPKI for both curves is a 12-byte header followed by the 32-byte key.
  return key.export({ format: "der", type: "spki" }).subarray(12).toString("hex");
}
