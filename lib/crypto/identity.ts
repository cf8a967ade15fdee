/**
 * A unibus identity: an Ed25519 signing key (who you are: allowlist, NATS login,
 * request and frame signatures) and an X25519 key-exchange key (what room keys are
 * sealed to). Stored as one JSON file, mode 0600. A corrupt or loosely-permissioned
 * file is an error — silently making a new identity would lock its owner out of
 * every room.
 */
import crypto, { type KeyObject } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { InvalidArgumentError, KeyFileError } from "../errors.ts";
import { ed25519PrivateKey, rawPublicKey, sign, x25519PrivateKey } from "./ed25519.ts";
import { writeFileAtomic } from "./files.ts";
import { decodePublicKey, encodePublicKey, encodeSeed } from "./nkeys.ts";

const FILE_TYPE = "unibus-identity";
const FILE_VERSION = 1;

export interface IdentityFile {
  type: typeof FILE_TYPE;
  version: typeof FILE_VERSION;
  signPub: string;
  kexPub: string;
  /** base64url of the raw 32-byte Ed25519 seed. Secret. */
  signSeed: string;
  /** base64url of the raw 32-byte X25519 private key. Secret. */
  kexSecret: string;
  createdAt: string;
}

export class Identity {
  /** Ed25519 public key, lowercase hex: the user id on the allowlist. */
  readonly signPub: string;
  /** X25519 public key, lowercase hex: room keys are sealed to it. */
  readonly kexPub: string;
  /** The signing key as a NATS user nkey (`U…`). */
  readonly nkey: string;
  readonly createdAt: string;
  readonly #signKey: KeyObject;
  readonly #kexKey: KeyObject;
  readonly #signSeed: Buffer;
  readonly #kexSecret: Buffer;

  constructor(signSeed: Uint8Array, kexSecret: Uint8Array, createdAt = new Date().toISOString()) {
    this.#signSeed = Buffer.from(signSeed);
    this.#kexSecret = Buffer.from(kexSecret);
    this.#signKey = ed25519PrivateKey(this.#signSeed);
    this.#kexKey = x25519PrivateKey(this.#kexSecret);
    const signRaw = rawPublicKey(this.#signKey);
    this.signPub = signRaw.toString("hex");
    this.kexPub = rawPublicKey(this.#kexKey).toString("hex");
    this.nkey = encodePublicKey("user", signRaw);
    this.createdAt = createdAt;
  }

  sign(data: Uint8Array): Buffer {
    return sign(this.#signKey, data);
  }

  /** The X25519 private key, for opening sealed room keys. */
  kexPrivateKey(): KeyObject {
    return this.#kexKey;
  }

  /** The signing seed as a NATS user seed (`SU…`). A secret. */
  nkeySeed(): string {
    return encodeSeed("user", this.#signSeed);
  }

  /** The file form. Holds secrets: write it only through `saveIdentity`. */
  toFile(): IdentityFile {
    return {
      type: FILE_TYPE,
      version: FILE_VERSION,
      signPub: this.signPub,
      kexPub: this.kexPub,
      signSeed: this.#signSeed.toString("base64url"),
      kexSecret: this.#kexSecret.toString("base64url"),
      createdAt: this.createdAt,
    };
  }

  /** Only public parts: safe to print or log. */
  toJSON(): { signPub: string; kexPub: string; nkey: string } {
    return { signPub: this.signPub, kexPub: this.kexPub, nkey: this.nkey };
  }
}

export function createIdentity(): Identity {
  return new Identity(crypto.randomBytes(32), crypto.randomBytes(32));
}

/** Writes the identity file with mode 0600; refuses to overwrite an existing file. */
export async function saveIdentity(identity: Identity, file: string): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(identity.toFile(), null, 2)}\n`, { mode: 0o600, exclusive: true });
}

export async function loadIdentity(file: string): Promise<Identity> {
  const abs = path.resolve(file);
  let text: string;
  try {
    const st = await fs.stat(abs);
    if (process.platform !== "win32" && (st.mode & 0o077) !== 0) {
      throw new KeyFileError(
        abs,
        `identity file ${abs} is readable by other users (mode ${(st.mode & 0o777).toString(8)}); run \`chmod 600 ${abs}\``,
      );
    }
    text = await fs.readFile(abs, "utf8");
  } catch (err) {
    if (err instanceof KeyFileError) throw err;
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new KeyFileError(
        abs,
        `identity file ${abs} does not exist; create one with \`unibus identity new --out ${abs}\``,
      );
    }
    throw new KeyFileError(
      abs,
      `identity file ${abs} cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`,
      { cause: err },
    );
  }
  return parseIdentity(abs, text);
}

/**
 * The public half of an identity file: its signing and key-exchange keys, read without
 * decoding the secrets (`unibus user add --identity`: the admin's machine may hold
 * someone else's file, and the seeds have no business in that process).
 */
export async function readPublicKeys(file: string): Promise<{ signPub: string; kexPub: string }> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await fs.readFile(abs, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new KeyFileError(abs, `identity file ${abs} cannot be read (${code})`, { cause: err });
  }
  let data: Partial<IdentityFile>;
  try {
    data = JSON.parse(text);
  } catch {
    throw new KeyFileError(abs, `identity file ${abs} is not JSON; pass a file made by \`unibus identity new\``);
  }
  const hex = /^[0-9a-f]{64}$/;
  if (data?.type !== FILE_TYPE || !hex.test(String(data.signPub)) || !hex.test(String(data.kexPub))) {
    throw new KeyFileError(abs, `${abs} is not a unibus identity file; pass a file made by \`unibus identity new\``);
  }
  return { signPub: data.signPub!, kexPub: data.kexPub! };
}

function parseIdentity(file: string, text: string): Identity {
  const corrupt = (why: string) =>
    new KeyFileError(
      file,
      `identity file ${file} is corrupt (${why}); restore it from a backup — it is not regenerated, because a new key would lose every room`,
    );
  let data: Partial<IdentityFile>;
  try {
    data = JSON.parse(text);
  } catch {
    throw corrupt("not JSON");
  }
  if (typeof data !== "object" || data === null || data.type !== FILE_TYPE) throw corrupt("not a unibus identity");
  if (data.version !== FILE_VERSION) throw corrupt(`unsupported version ${String(data.version)}`);
  const signSeed = decodeSecret(data.signSeed);
  const kexSecret = decodeSecret(data.kexSecret);
  if (!signSeed || !kexSecret) throw corrupt("bad key material");
  let identity: Identity;
  try {
    identity = new Identity(signSeed, kexSecret, typeof data.createdAt === "string" ? data.createdAt : undefined);
  } catch {
    throw corrupt("bad key material");
  }
  if (identity.signPub !== data.signPub || identity.kexPub !== data.kexPub)
    throw corrupt("public keys do not match the secrets");
  return identity;
}

function decodeSecret(value: unknown): Buffer | undefined {
  if (typeof value !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(value)) return undefined;
  const raw = Buffer.from(value, "base64url");
  return raw.length === 32 ? raw : undefined;
}

/**
 * An identity from its file form held in memory (`identity.toFile()` handed across a
 * process boundary, as a test runner's global setup does). Checked like a file on disk.
 */
export function identityFromFile(data: IdentityFile, label = "(in memory)"): Identity {
  return parseIdentity(label, JSON.stringify(data));
}

/** Loads `file`, or creates it (0600) when it does not exist. Never overwrites. */
export async function loadOrCreateIdentity(file: string): Promise<Identity> {
  try {
    return await loadIdentity(file);
  } catch (err) {
    if (!(err instanceof KeyFileError) || (await exists(file))) throw err;
  }
  const identity = createIdentity();
  try {
    await saveIdentity(identity, file);
  } catch (err) {
    // Lost a race with another process creating the same file: use theirs.
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return loadIdentity(file);
    throw err;
  }
  return identity;
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * Normalises a signing public key given as 64 hex chars (any case) or a NATS user
 * nkey (`U…`) to lowercase hex. Throws InvalidArgumentError otherwise.
 */
export function parseSignPub(input: string, field = "signPub"): string {
  const text = String(input).trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return text.toLowerCase();
  if (text.startsWith("U")) {
    const raw = decodePublicKey("user", text);
    if (raw) return Buffer.from(raw).toString("hex");
  }
  throw new InvalidArgumentError(
    field,
    `${field} must be an Ed25519 public key: 64 hex characters or a NATS user key (U…)`,
  );
}
