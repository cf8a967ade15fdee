/**
 * The NATS "nkey" text encoding of Ed25519 keys (`U…` users, `A…` accounts, `N…`
 * servers, `S…` seeds): base32 (RFC 4648, no padding) over a prefix byte, the raw
 * key and a CRC-16/XMODEM. `@nats-io/nkeys` does not export this codec and signs
 * with tweetnacl (~14 ms an operation here), so we encode ourselves and sign with
 * node:crypto.
 */
import { InvalidArgumentError } from "../errors.ts";

export const Prefix = {
  seed: 18 << 3, // 'S'
  private: 15 << 3, // 'P'
  operator: 14 << 3, // 'O'
  server: 13 << 3, // 'N'
  cluster: 2 << 3, // 'C'
  account: 0, // 'A'
  user: 20 << 3, // 'U'
  curve: 23 << 3, // 'X'
} as const;

export type KeyKind = "user" | "account" | "server" | "operator" | "cluster" | "curve";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

export function base32Encode(bytes: Uint8Array): string {
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

export function base32Decode(text: string): Uint8Array | undefined {
  const out = new Uint8Array(Math.floor((text.length * 5) / 8));
  let buffer = 0;
  let bits = 0;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    const v = code < 128 ? DECODE[code]! : -1;
    if (v < 0) return undefined;
    buffer = ((buffer << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out[n++] = (buffer >>> (bits - 8)) & 0xff;
      bits -= 8;
    }
  }
  return out;
}

const CRC_TABLE = new Uint16Array(256);
for (let i = 0; i < 256; i++) {
  let crc = i << 8;
  for (let j = 0; j < 8; j++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  CRC_TABLE[i] = crc;
}

export function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const b of bytes) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >>> 8) ^ b) & 0xff]!;
  return crc;
}

function withChecksum(body: Uint8Array): string {
  const out = new Uint8Array(body.length + 2);
  out.set(body);
  const crc = crc16(body);
  out[body.length] = crc & 0xff;
  out[body.length + 1] = crc >>> 8;
  return base32Encode(out);
}

function checked(text: string): Uint8Array | undefined {
  const raw = base32Decode(text);
  if (!raw || raw.length < 3) return undefined;
  const body = raw.subarray(0, raw.length - 2);
  const crc = raw[raw.length - 2]! | (raw[raw.length - 1]! << 8);
  return crc16(body) === crc ? body : undefined;
}

/** Raw 32-byte public key → `U…`, `A…`, `N…`. */
export function encodePublicKey(kind: KeyKind, raw: Uint8Array): string {
  if (raw.length !== 32) throw new InvalidArgumentError("key", "a public key is 32 bytes");
  const body = new Uint8Array(33);
  body[0] = Prefix[kind];
  body.set(raw, 1);
  return withChecksum(body);
}

/** `U…` (etc.) → raw 32 bytes; undefined for anything malformed or of another kind. */
export function decodePublicKey(kind: KeyKind, text: string): Uint8Array | undefined {
  if (typeof text !== "string" || text.length !== 56) return undefined;
  const body = checked(text);
  if (body?.length !== 33 || body[0] !== Prefix[kind]) return undefined;
  return body.subarray(1);
}

/** Raw 32-byte seed → `SU…`, `SA…`: two prefix bytes pack 'S' and the key kind. */
export function encodeSeed(kind: KeyKind, raw: Uint8Array): string {
  if (raw.length !== 32) throw new InvalidArgumentError("seed", "a seed is 32 bytes");
  const body = new Uint8Array(34);
  const p = Prefix[kind];
  body[0] = Prefix.seed | (p >> 5);
  body[1] = (p & 31) << 3;
  body.set(raw, 2);
  return withChecksum(body);
}

export function decodeSeed(kind: KeyKind, text: string): Uint8Array | undefined {
  if (typeof text !== "string" || text.length !== 58) return undefined;
  const body = checked(text);
  if (body?.length !== 34) return undefined;
  const p = Prefix[kind];
  if (body[0] !== (Prefix.seed | (p >> 5)) || body[1] !== (p & 31) << 3) return undefined;
  return body.subarray(2);
}
