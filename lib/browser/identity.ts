/**
 * A unibus identity in a browser page: imported from its identity file (docs/protocol.md
 * §2.1) into non-extractable WebCrypto keys. Once imported the secrets cannot be read
 * back by script — not by this library, not by anything else running in the page — and
 * the text of the file is not kept.
 */

import { encodePublicKey } from "../crypto/nkeys.ts";
import { KeyFileError } from "../errors.ts";
import { fromBase64url, fromHex, randomBytes, toHex } from "./bytes.ts";
import type { CryptoKey } from "./primitives.ts";
import {
  ed25519PrivateKey,
  ed25519PublicKey,
  sign,
  verify,
  x25519,
  x25519Ephemeral,
  x25519PrivateKey,
  x25519PublicKey,
} from "./primitives.ts";

const HEX64 = /^[0-9a-f]{64}$/;
const SECRET = /^[A-Za-z0-9_-]{43}$/;

export class BrowserIdentity {
  /** Ed25519 public key, lowercase hex: the user id on the allowlist. */
  readonly signPub: string;
  /** X25519 public key, lowercase hex: room keys are sealed to it. */
  readonly kexPub: string;
  /** The signing key as a NATS user nkey (`U…`). */
  readonly nkey: string;
  readonly #signKey: CryptoKey;
  readonly #kexKey: CryptoKey;

  constructor(signPub: string, kexPub: string, signKey: CryptoKey, kexKey: CryptoKey) {
    this.signPub = signPub;
    this.kexPub = kexPub;
    this.nkey = encodePublicKey("user", fromHex(signPub));
    this.#signKey = signKey;
    this.#kexKey = kexKey;
  }

  sign(data: Uint8Array): Promise<Uint8Array> {
    return sign(this.#signKey, data);
  }

  /** X25519 with this identity's key-exchange key (opening sealed room keys). */
  agree(publicKey: CryptoKey): Promise<Uint8Array | undefined> {
    return x25519(this.#kexKey, publicKey);
  }

  /** Only public parts. */
  toJSON(): { signPub: string; kexPub: string; nkey: string } {
    return { signPub: this.signPub, kexPub: this.kexPub, nkey: this.nkey };
  }
}

/**
 * Reads an identity file's text (from a file input, say) into non-extractable keys.
 * Refuses it with KeyFileError for the reasons of docs/protocol.md §2.1 — never makes a
 * new identity in its place.
 */
export async function importIdentity(text: string, name = "the identity file"): Promise<BrowserIdentity> {
  const corrupt = (why: string) =>
    new KeyFileError(name, `${name} is corrupt (${why}); choose the file made by \`unibus identity new\``);
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(text);
  } catch {
    throw corrupt("not JSON");
  }
  if (typeof data !== "object" || data === null || data.type !== "unibus-identity")
    throw corrupt("not a unibus identity");
  if (data.version !== 1) throw corrupt(`unsupported version ${String(data.version)}`);
  const signSeed = secret(data.signSeed);
  const kexSecret = secret(data.kexSecret);
  if (!signSeed || !kexSecret) throw corrupt("bad key material");
  const { signPub, kexPub } = data;
  if (typeof signPub !== "string" || !HEX64.test(signPub) || typeof kexPub !== "string" || !HEX64.test(kexPub)) {
    throw corrupt("public keys do not match the secrets");
  }
  let keys: { signKey: CryptoKey; kexKey: CryptoKey };
  try {
    keys = { signKey: await ed25519PrivateKey(signSeed), kexKey: await x25519PrivateKey(kexSecret) };
  } catch {
    throw corrupt("bad key material");
  } finally {
    signSeed.fill(0);
    kexSecret.fill(0);
  }
  if (!(await holdsKeys(keys.signKey, keys.kexKey, signPub, kexPub)))
    throw corrupt("public keys do not match the secrets");
  return new BrowserIdentity(signPub, kexPub, keys.signKey, keys.kexKey);
}

function secret(value: unknown): Uint8Array | undefined {
  if (typeof value !== "string" || !SECRET.test(value)) return undefined;
  const raw = fromBase64url(value);
  return raw?.length === 32 ? raw : undefined;
}

/**
 * Whether the (non-extractable) secrets belong to the stated public keys, proven without
 * reading them: a signature that verifies under `signPub`, and X25519 agreement with a
 * throwaway key pair giving the same secret both ways.
 */
async function holdsKeys(signKey: CryptoKey, kexKey: CryptoKey, signPub: string, kexPub: string): Promise<boolean> {
  const probe = randomBytes(32);
  const signed = await verify(await ed25519PublicKey(fromHex(signPub)), probe, await sign(signKey, probe));
  if (!signed) return false;
  const other = await x25519Ephemeral();
  const mine = await x25519(kexKey, other.publicKey);
  const theirs = await x25519(other.privateKey, await x25519PublicKey(fromHex(kexPub)));
  return mine !== undefined && theirs !== undefined && toHex(mine) === toHex(theirs);
}
