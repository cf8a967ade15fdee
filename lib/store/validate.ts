import crypto from "node:crypto";
import { InvalidArgumentError } from "../errors.ts";
import type { Role } from "./types.ts";

/**
 * Input rules shared by every backend, so that SQLite and KV refuse exactly the same
 * things with exactly the same errors. Each function returns the normalised value or
 * throws `InvalidArgumentError` naming the field.
 */

const HEX_KEY = /^[0-9a-f]{64}$/;
// ASCII only: a handle shows up in logs and CLIs, where look-alike letters would deceive.
const HANDLE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
export const HANDLE_MAX = 64;
export const ROLES: readonly Role[] = ["admin", "member"];

const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
const X25519_SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");

/** Keys are stored and compared lowercase; anything else passes through to fail validation. */
export function normalizeKey(key: string): string {
  return typeof key === "string" ? key.toLowerCase() : key;
}

/** True when `key` (any case) has the shape of a 32-byte key in hex. */
export function isKeyShape(key: unknown): key is string {
  return typeof key === "string" && HEX_KEY.test(key.toLowerCase());
}

/** For lookups: a key that cannot possibly be stored is the caller's mistake, not a miss. */
export function lookupKey(signPub: unknown, field = "signPub"): string {
  if (!isKeyShape(signPub)) {
    throw new InvalidArgumentError(field, `${field} must be a 32-byte public key written as 64 hex characters`);
  }
  return signPub.toLowerCase();
}

export function validateSignPub(signPub: unknown): string {
  const key = lookupKey(signPub);
  const raw = Buffer.from(key, "hex");
  if (!isCanonicalEd25519Point(raw) || !nodeAccepts(ED25519_SPKI_PREFIX, raw)) {
    throw new InvalidArgumentError(
      "signPub",
      "signPub is not a usable Ed25519 public key (not a canonical, full-order curve point); pass the public key of an identity made by `unibus identity new`",
    );
  }
  return key;
}

/** `undefined` and `null` both mean "not registered yet". */
export function validateKexPub(kexPub: unknown): string | null {
  if (kexPub === undefined || kexPub === null) return null;
  const key = lookupKey(kexPub, "kexPub");
  const raw = Buffer.from(key, "hex");
  if (leToBigInt(raw) >= P || !nodeAccepts(X25519_SPKI_PREFIX, raw) || !x25519ContributesSecret(raw)) {
    throw new InvalidArgumentError(
      "kexPub",
      "kexPub is not a usable X25519 public key (non-canonical or low-order); pass the key-exchange key of an identity made by `unibus identity new`",
    );
  }
  return key;
}

/** Accepts any case and stores lowercase, so "Alice" and "alice" are the same handle. */
export function validateHandle(handle: unknown): string {
  const shown = typeof handle === "string" && handle.length <= 80 ? ` (got ${JSON.stringify(handle)})` : "";
  if (typeof handle !== "string" || handle.length < 1 || handle.length > HANDLE_MAX) {
    throw new InvalidArgumentError("handle", `handle must be 1 to ${HANDLE_MAX} characters${shown}`);
  }
  if (!HANDLE.test(handle)) {
    throw new InvalidArgumentError(
      "handle",
      `handle must start with a letter or digit and contain only letters, digits, ".", "_" or "-"${shown}`,
    );
  }
  return handle.toLowerCase();
}

export function validateRole(role: unknown): Role {
  if (typeof role !== "string" || !(ROLES as readonly string[]).includes(role)) {
    throw new InvalidArgumentError("role", `role must be "admin" or "member"`);
  }
  return role as Role;
}

export interface ValidNewUser {
  signPub: string;
  kexPub: string | null;
  handle: string;
  role: Role;
}

/** Validates every field before any backend writes anything. */
export function validateNewUser(u: unknown): ValidNewUser {
  if (typeof u !== "object" || u === null) {
    throw new InvalidArgumentError("user", "a new user must be an object with signPub, handle and role");
  }
  const o = u as Record<string, unknown>;
  return {
    signPub: validateSignPub(o.signPub),
    kexPub: validateKexPub(o.kexPub),
    handle: validateHandle(o.handle),
    role: validateRole(o.role),
  };
}

function nodeAccepts(prefix: Buffer, raw: Buffer): boolean {
  try {
    crypto.createPublicKey({ key: Buffer.concat([prefix, raw]), format: "der", type: "spki" });
    return true;
  } catch {
    return false;
  }
}

// OpenSSL imports any 32 bytes as an Ed25519 key and only fails later, at verify time.
// Decoding the point here (RFC 8032 §5.1.3) refuses keys that can never verify
// anything, and rejecting the small-order points closes the door on keys for which
// forged signatures can verify.
const P = 2n ** 255n - 19n;
const D = mod(-121665n * modInverse(121666n));
const SQRT_M1 = modPow(2n, (P - 1n) / 4n);

function mod(a: bigint): bigint {
  const r = a % P;
  return r < 0n ? r + P : r;
}

function modPow(base: bigint, exp: bigint): bigint {
  let result = 1n;
  let b = mod(base);
  let e = exp;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return result;
}

function modInverse(a: bigint): bigint {
  return modPow(a, P - 2n);
}

function leToBigInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}

/** Exported for tests: true when `raw` decodes to an Ed25519 point of order > 8. */
export function isCanonicalEd25519Point(raw: Uint8Array): boolean {
  if (raw.length !== 32) return false;
  const bytes = Uint8Array.from(raw);
  const sign = (bytes[31]! & 0x80) >> 7;
  bytes[31]! &= 0x7f;
  const y = leToBigInt(bytes);
  if (y >= P) return false;
  const y2 = mod(y * y);
  const u = mod(y2 - 1n);
  const v = mod(D * y2 + 1n);
  const v3 = mod(v * v * v);
  const v7 = mod(v3 * v3 * v);
  let x = mod(u * v3 * modPow(u * v7, (P - 5n) / 8n));
  const vx2 = mod(v * x * x);
  if (vx2 === u) {
    // x is a square root of u/v
  } else if (vx2 === mod(-u)) {
    x = mod(x * SQRT_M1);
  } else {
    return false;
  }
  if (x === 0n && sign === 1) return false;
  if (Number(x & 1n) !== sign) x = P - x;
  return !isSmallOrder(x, y);
}

/** 8·P is the identity exactly when P lies in the small-order subgroup. */
function isSmallOrder(x: bigint, y: bigint): boolean {
  let X = x;
  let Y = y;
  let Z = 1n;
  for (let i = 0; i < 3; i++) {
    // Point doubling in extended coordinates for a = -1 (dbl-2008-hwcd); T is not needed.
    const A = mod(X * X);
    const B = mod(Y * Y);
    const C = mod(2n * Z * Z);
    const E = mod((X + Y) * (X + Y) - A - B);
    const G = mod(B - A);
    const F = mod(G - C);
    const H = mod(-A - B);
    X = mod(E * F);
    Y = mod(G * H);
    Z = mod(F * G);
  }
  return X === 0n && Y === Z;
}

// Every clamped X25519 scalar is a multiple of 8, so a low-order public key yields an
// all-zero shared secret for any peer; OpenSSL refuses to derive it, which is the test.
const probeKey = crypto.generateKeyPairSync("x25519").privateKey;

function x25519ContributesSecret(raw: Buffer): boolean {
  try {
    const publicKey = crypto.createPublicKey({
      key: Buffer.concat([X25519_SPKI_PREFIX, raw]),
      format: "der",
      type: "spki",
    });
    crypto.diffieHellman({ privateKey: probeKey, publicKey });
    return true;
  } catch {
    return false;
  }
}
