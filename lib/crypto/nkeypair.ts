import crypto, { type KeyObject } from "node:crypto";
import { InvalidArgumentError } from "../errors.ts";
import { ed25519PrivateKey, ed25519PublicKeyCached, sign, verify } from "./ed25519.ts";
import { decodePublicKey, decodeSeed, encodePublicKey, encodeSeed, type KeyKind } from "./nkeys.ts";

/**
 * An Ed25519 key pair in NATS clothing (`U…`/`A…` public key, `SU…`/`SA…` seed),
 * signing with node:crypto. Replaces `@nats-io/nkeys` on every hot path.
 */
export class NKeyPair {
  readonly kind: KeyKind;
  /** The public key as NATS writes it: `U…`, `A…`. */
  readonly publicKey: string;
  readonly #key: KeyObject;
  readonly #seed: Uint8Array;

  private constructor(kind: KeyKind, seed: Uint8Array) {
    this.kind = kind;
    this.#seed = seed;
    this.#key = ed25519PrivateKey(seed);
    this.publicKey = encodePublicKey(
      kind,
      crypto.createPublicKey(this.#key).export({ format: "der", type: "spki" }).subarray(-32),
    );
  }

  static random(kind: KeyKind): NKeyPair {
    return new NKeyPair(kind, crypto.randomBytes(32));
  }

  static fromSeed(kind: KeyKind, seed: Uint8Array): NKeyPair {
    if (seed.length !== 32) throw new InvalidArgumentError("seed", "an Ed25519 seed is 32 bytes");
    return new NKeyPair(kind, Uint8Array.from(seed));
  }

  /** Parses `SU…`/`SA…` text; throws InvalidArgumentError on anything else. */
  static fromSeedText(kind: KeyKind, text: string): NKeyPair {
    const raw = decodeSeed(kind, text);
    if (!raw) throw new InvalidArgumentError("seed", `not a valid ${kind} nkey seed`);
    return new NKeyPair(kind, raw);
  }

  /** The seed as NATS writes it (`SU…`). A secret: never log it. */
  seedText(): string {
    return encodeSeed(this.kind, this.#seed);
  }

  sign(data: Uint8Array): Buffer {
    return sign(this.#key, data);
  }
}

/** Verifies an Ed25519 signature by the holder of nkey `publicKey` (of the given kind). */
export function verifyNkeySignature(
  kind: KeyKind,
  publicKey: string,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  const raw = decodePublicKey(kind, publicKey);
  const key = raw && ed25519PublicKeyCached(raw);
  return key ? verify(key, data, signature) : false;
}
