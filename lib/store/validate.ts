import crypto from "node:crypto";
import { InvalidArgumentError } from "../errors.ts";
import type { Role, UserChanges } from "./types.ts";

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
/** A kexPub that must be given (`setKexPub`), checked like one at `addUser`. */
export function requiredKexPub(kexPub: unknown): string {
  const key = validateKexPub(kexPub);
  if (key === null) throw new InvalidArgumentError("kexPub", "kexPub is required");
  return key;
}

/** Why `setKexPub` refused an existing user: set once, active users only. */
export function kexConflict(u: { signPub: string; kexPub: string | null; status: string }): string {
  return u.kexPub !== null
    ? `user ${u.signPub} already has a key-exchange key; it is set once (rotate by registering a new identity)`
    : `user ${u.signPub} is revoked`;
}

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

const CHANGE_FIELDS = ["role", "handle", "kexPub"] as const;

/** The fields of an `updateUser`, each checked as at `addUser`; at least one, no others. */
export function validateUserChanges(input: unknown): UserChanges {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new InvalidArgumentError("changes", "changes must be an object with role, handle or kexPub");
  }
  const fields = input as Record<string, unknown>;
  const unknown = Object.keys(fields).filter((k) => !(CHANGE_FIELDS as readonly string[]).includes(k));
  if (unknown.length) throw new InvalidArgumentError("changes", `unknown field(s): ${unknown.join(", ")}`);
  const given = CHANGE_FIELDS.filter((k) => fields[k] !== undefined);
  if (given.length === 0) throw new InvalidArgumentError("changes", "nothing to change: give role, handle or kexPub");
  return {
    ...(fields.role !== undefined ? { role: validateRole(fields.role) } : {}),
    ...(fields.handle !== undefined ? { handle: validateHandle(fields.handle) } : {}),
    ...(fields.kexPub !== undefined ? { kexPub: requiredKexPub(fields.kexPub) } : {}),
  };
}

export interface ValidNewUser {
  signPub: string;
  kexPub: string | null;
  handle: string;
  role: Role;
}

/** Validates every field before any backend writes anything. */
export function validateNewUser(input: unknown): ValidNewUser {
  if (typeof input !== "object" || input === null) {
    throw new InvalidArgumentError("user", "a new user must be an object with signPub, handle and role");
  }
  const fields = input as Record<string, unknown>;
  return {
    signPub: validateSignPub(fields.signPub),
    kexPub: validateKexPub(fields.kexPub),
    handle: validateHandle(fields.handle),
    role: validateRole(fields.role),
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

// ---- rooms ----

const ROOM_ID = /^[A-Za-z0-9_-]{1,64}$/;
const SUBJECT_TOKEN = /^[A-Za-z0-9_-]+$/;
export const SUBJECT_MAX = 128;
const SUBJECT_TOKENS_MAX = 16;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
export const SEALED_MAX = 4096;

/** True when `id` (exactly, ids are case-sensitive) has the shape of a room id. */
export function isRoomIdShape(id: unknown): id is string {
  return typeof id === "string" && ROOM_ID.test(id);
}

export function validateRoomId(id: unknown, field = "roomId"): string {
  if (!isRoomIdShape(id)) {
    throw new InvalidArgumentError(field, `${field} must be 1 to 64 characters of letters, digits, "_" or "-"`);
  }
  return id;
}

/**
 * A room's subject is what the broker's ACL grants to members, so anything that could
 * match more than the room is refused here: wildcards (`*`, `>`), empty tokens and
 * whitespace (by the token alphabet), and the reserved roots — `$…` (system, JetStream,
 * KV) by the alphabet, `_…` (inboxes, replies) explicitly. A member of a room named
 * `_INBOX.<someone>` would otherwise read that someone's replies.
 */
export function validateSubject(subject: unknown): string {
  if (typeof subject !== "string" || subject.length < 1 || subject.length > SUBJECT_MAX) {
    throw new InvalidArgumentError("subject", `subject must be 1 to ${SUBJECT_MAX} characters`);
  }
  const tokens = subject.split(".");
  if (tokens.length > SUBJECT_TOKENS_MAX || !tokens.every((tok) => SUBJECT_TOKEN.test(tok))) {
    throw new InvalidArgumentError(
      "subject",
      `subject must be up to ${SUBJECT_TOKENS_MAX} dot-separated tokens of letters, digits, "_" or "-" (no wildcards, spaces or empty tokens)`,
    );
  }
  if (tokens[0]!.startsWith("_")) {
    throw new InvalidArgumentError(
      "subject",
      `subject must not start with "_": that namespace is reserved for inboxes`,
    );
  }
  return subject;
}

export function validateFlag(value: unknown, field: string): boolean {
  if (typeof value !== "boolean") throw new InvalidArgumentError(field, `${field} must be true or false`);
  return value;
}

/** A sealed room key: base64url without padding; the store never looks inside. */
export function validateSealed(sealed: unknown, field: string): string {
  if (
    typeof sealed !== "string" ||
    sealed.length > SEALED_MAX ||
    !BASE64URL.test(sealed) ||
    sealed.length % 4 === 1 // no base64 encoding has this length
  ) {
    throw new InvalidArgumentError(
      field,
      `${field} must be a sealed room key in base64url without padding, at most ${SEALED_MAX} characters`,
    );
  }
  return sealed;
}

export function validateEpoch(epoch: unknown, field = "epoch"): number {
  if (typeof epoch !== "number" || !Number.isSafeInteger(epoch) || epoch < 1) {
    throw new InvalidArgumentError(field, `${field} must be a whole number from 1`);
  }
  return epoch;
}

function asObject(value: unknown, field: string, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(field, what);
  }
  return value as Record<string, unknown>;
}

/** A key may be absent (undefined or null) or present; which one a room needs is checked by the caller. */
function optionalSealed(value: unknown, field: string): string | null {
  return value === undefined || value === null ? null : validateSealed(value, field);
}

export interface ValidNewRoom {
  id: string;
  subject: string;
  ownerSignPub: string;
  encrypt: boolean;
  persist: boolean;
  signMsgs: boolean;
  ownerSealedKey: string | null;
}

export function validateNewRoom(input: unknown): ValidNewRoom {
  const fields = asObject(input, "room", "a new room must be an object with id, subject, ownerSignPub and flags");
  const v: ValidNewRoom = {
    id: validateRoomId(fields.id, "id"),
    subject: validateSubject(fields.subject),
    ownerSignPub: lookupKey(fields.ownerSignPub, "ownerSignPub"),
    encrypt: validateFlag(fields.encrypt, "encrypt"),
    persist: validateFlag(fields.persist, "persist"),
    signMsgs: validateFlag(fields.signMsgs, "signMsgs"),
    ownerSealedKey: optionalSealed(fields.ownerSealedKey, "ownerSealedKey"),
  };
  sealedMatchesRoom(v.encrypt, v.ownerSealedKey, "ownerSealedKey");
  return v;
}

/** An encrypted room needs a key for every member; a cleartext room has none to give. */
export function sealedMatchesRoom(encrypt: boolean, sealed: string | null, field: string): void {
  if (encrypt && sealed === null) {
    throw new InvalidArgumentError(field, `${field} is required: the room is encrypted, so every member needs its key`);
  }
  if (!encrypt && sealed !== null) {
    throw new InvalidArgumentError(field, `${field} must be absent: the room is not encrypted and has no key`);
  }
}

export interface ValidNewMember {
  signPub: string;
  role: "member";
  sealedKey: string | null;
  epoch: number | null;
}

export function validateNewMember(input: unknown): ValidNewMember {
  const fields = asObject(
    input,
    "member",
    "a new member must be an object with signPub (and sealedKey and epoch for an encrypted room)",
  );
  const signPub = lookupKey(fields.signPub);
  if (fields.role !== undefined && fields.role !== "member") {
    throw new InvalidArgumentError(
      "role",
      fields.role === "owner"
        ? "a room has exactly one owner, its creator; add this user as a member"
        : `role must be "member"`,
    );
  }
  return {
    signPub,
    role: "member",
    sealedKey: optionalSealed(fields.sealedKey, "sealedKey"),
    epoch: fields.epoch === undefined ? null : validateEpoch(fields.epoch),
  };
}

export interface ValidRekey {
  fromEpoch: number;
  sealedKeys: Array<{ signPub: string; sealed: string }>;
}

export function validateRekey(input: unknown): ValidRekey {
  const fields = asObject(input, "rekey", "a rekey must be an object with fromEpoch and sealedKeys");
  const fromEpoch = validateEpoch(fields.fromEpoch, "fromEpoch");
  if (!Array.isArray(fields.sealedKeys)) {
    throw new InvalidArgumentError("sealedKeys", "sealedKeys must be a list of { signPub, sealed }, one per member");
  }
  const seen = new Set<string>();
  const sealedKeys = fields.sealedKeys.map((entry: unknown, i: number) => {
    const e = asObject(entry, "sealedKeys", `sealedKeys[${i}] must be an object with signPub and sealed`);
    const signPub = lookupKey(e.signPub, "sealedKeys");
    if (seen.has(signPub)) {
      throw new InvalidArgumentError("sealedKeys", `sealedKeys lists ${signPub} more than once`);
    }
    seen.add(signPub);
    return { signPub, sealed: validateSealed(e.sealed, "sealedKeys") };
  });
  return { fromEpoch, sealedKeys };
}

// ---- invites ----

export const DEFAULT_INVITE_TTL_MS = 7 * 24 * 60 * 60 * 1000;
export const MAX_INVITE_TTL_MS = 365 * 24 * 60 * 60 * 1000;
const INVITE_ID = /^[0-9a-f]{12}$/;
const CREATED_BY = /^[a-z0-9][a-z0-9._:@-]{0,63}$/;

/** The token is a secret: messages about it never echo it. */
export function validateInviteToken(token: unknown): string {
  if (!isKeyShape(token)) {
    throw new InvalidArgumentError("token", "an invite token is 64 hex characters; check that it was copied whole");
  }
  return token.toLowerCase();
}

export function validateCreatedBy(createdBy: unknown): string {
  const v = typeof createdBy === "string" ? createdBy.toLowerCase() : createdBy;
  if (typeof v !== "string" || !CREATED_BY.test(v)) {
    throw new InvalidArgumentError(
      "createdBy",
      `createdBy must be 1 to 64 characters of letters, digits, ".", "_", ":", "@" or "-" (an admin's signPub, or a label such as "host")`,
    );
  }
  return v;
}

export function validateTtl(ttlMs: unknown): number {
  if (ttlMs === undefined) return DEFAULT_INVITE_TTL_MS;
  if (typeof ttlMs !== "number" || !Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_INVITE_TTL_MS) {
    throw new InvalidArgumentError("ttlMs", "ttlMs must be a whole number of milliseconds, from 1 up to 365 days");
  }
  return ttlMs;
}

export interface ValidNewInvite {
  token: string;
  handle: string;
  role: Role;
  createdBy: string;
  ttlMs: number;
}

export function validateNewInvite(input: unknown): ValidNewInvite {
  const fields = asObject(input, "invite", "a new invite must be an object with token, handle, role and createdBy");
  return {
    token: validateInviteToken(fields.token),
    handle: validateHandle(fields.handle),
    role: validateRole(fields.role),
    createdBy: validateCreatedBy(fields.createdBy),
    ttlMs: validateTtl(fields.ttlMs),
  };
}

/** The cut of `sweepInvites`: a time in ms since the epoch (invites made before it may go). */
export function validateSweepBefore(before: unknown): number {
  if (typeof before !== "number" || !Number.isSafeInteger(before) || before < 0) {
    throw new InvalidArgumentError("before", "before must be a time in whole milliseconds since 1970");
  }
  return before;
}

/** How `cancelInvite` finds an invite: by its listed id, or by hashing the token. */
export type InviteRef = { by: "id"; id: string } | { by: "tokenHash"; tokenHash: string };

export function parseInviteRef(idOrToken: unknown): InviteRef {
  const v = typeof idOrToken === "string" ? idOrToken.toLowerCase() : idOrToken;
  if (typeof v === "string" && INVITE_ID.test(v)) return { by: "id", id: v };
  if (isKeyShape(v)) return { by: "tokenHash", tokenHash: hashInviteToken(v) };
  throw new InvalidArgumentError(
    "invite",
    "name the invite by the 12-character id shown by `unibus invite list`, or by its 64-character token",
  );
}

export interface ValidRegistration {
  signPub: string;
  kexPub: string;
  now: number;
}

export function validateRegistration(input: unknown): ValidRegistration {
  const fields = asObject(input, "registration", "a registration must be an object with signPub and kexPub");
  const signPub = validateSignPub(fields.signPub);
  const kexPub = validateKexPub(fields.kexPub);
  if (kexPub === null) {
    throw new InvalidArgumentError("kexPub", "kexPub is required: a registered user must be able to receive room keys");
  }
  if (fields.now !== undefined && (typeof fields.now !== "number" || !Number.isFinite(fields.now))) {
    throw new InvalidArgumentError("now", "now must be a finite number of milliseconds");
  }
  return { signPub, kexPub, now: fields.now === undefined ? Date.now() : (fields.now as number) };
}

/** 32 fresh random bytes as hex: a new invite token. */
export function newInviteToken(): string {
  return crypto.randomBytes(32).toString("hex");
}

/** What the store keeps instead of the token: sha256 of its lowercase hex, in hex. */
export function hashInviteToken(token: string): string {
  return crypto.createHash("sha256").update(token.toLowerCase(), "utf8").digest("hex");
}

export function inviteIdOf(tokenHash: string): string {
  return tokenHash.slice(0, 12);
}
