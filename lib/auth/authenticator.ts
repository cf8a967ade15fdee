import type { Authenticator } from "@nats-io/transport-node";

/**
 * A nats.js authenticator that answers the server's nonce challenge with an Ed25519
 * signature made by node:crypto (nats.js' own nkeyAuthenticator uses tweetnacl, ~14 ms
 * per connect here).
 */
export function nkeySigner(nkey: string, sign: (data: Uint8Array) => Uint8Array): Authenticator {
  return (nonce?: string) => ({
    nkey,
    sig: nonce ? Buffer.from(sign(Buffer.from(nonce))).toString("base64url") : "",
  });
}
