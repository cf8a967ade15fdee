/**
 * Encrypted blobs (`UBB1`, docs/protocol.md §8.1) in a browser, whole in memory: a page
 * holds the file it uploads or shows anyway. Same bytes as lib/crypto/blob.ts (blobs.json).
 */
import { CryptoError } from "../errors.ts";
import { concat, randomBytes, readU32be, u32be, utf8 } from "./bytes.ts";
import { checkEpoch, checkRoomKey, roomIdBytes } from "./frame.ts";
import { AEAD_TAG_BYTES, aeadOpen, aeadSeal, hkdf32 } from "./primitives.ts";

const MAGIC = utf8("UBB1");
const HEADER_BYTES = 28;
export const DEFAULT_CHUNK_SIZE = 65536;
const MAX_CHUNK_SIZE = 16 * 1024 * 1024;

function blobKey(roomKey: Uint8Array, salt: Uint8Array, roomId: string, epoch: number): Promise<Uint8Array> {
  const room = roomIdBytes(roomId);
  return hkdf32(roomKey, salt, concat(utf8("unibus-blob-v1"), Uint8Array.of(room.length), room, u32be(epoch)));
}

/** 5 zero bytes || u48be(index) || u8(final). */
function chunkNonce(index: number, final: boolean): Uint8Array {
  const nonce = new Uint8Array(12);
  const view = new DataView(nonce.buffer);
  view.setUint16(5, Math.floor(index / 2 ** 32));
  view.setUint32(7, index >>> 0);
  nonce[11] = final ? 1 : 0;
  return nonce;
}

export async function encryptBlob(
  plaintext: Uint8Array,
  opts: { roomKey: Uint8Array; roomId: string; epoch: number; chunkSize?: number; salt?: Uint8Array },
): Promise<Uint8Array> {
  checkRoomKey(opts.roomKey);
  checkEpoch(opts.epoch);
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const salt = opts.salt ?? randomBytes(16);
  const header = concat(MAGIC, u32be(opts.epoch), u32be(chunkSize), salt);
  const key = await blobKey(opts.roomKey, salt, opts.roomId, opts.epoch);
  const count = Math.max(1, Math.ceil(plaintext.length / chunkSize));
  const parts: Uint8Array[] = [header];
  for (let i = 0; i < count; i++) {
    const chunk = plaintext.subarray(i * chunkSize, (i + 1) * chunkSize);
    parts.push(aeadSeal(key, chunkNonce(i, i === count - 1), chunk, header));
  }
  return concat(...parts);
}

/**
 * Decrypts a whole blob; CryptoError("malformed") for a bad header, ("undecryptable") for
 * any chunk that does not verify, a missing final chunk or bytes after it.
 */
export async function decryptBlob(
  blob: Uint8Array,
  opts: { roomId: string; keyFor: (epoch: number) => Promise<Uint8Array | undefined> },
): Promise<Uint8Array> {
  if (blob.length < HEADER_BYTES || MAGIC.some((b, i) => blob[i] !== b)) {
    throw new CryptoError("malformed", "not an encrypted unibus blob (UBB1)");
  }
  const epoch = readU32be(blob, 4);
  const chunkSize = readU32be(blob, 8);
  if (chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) throw new CryptoError("malformed", "blob chunk size out of range");
  const header = blob.subarray(0, HEADER_BYTES);
  const roomKey = await opts.keyFor(epoch);
  if (!roomKey) throw new CryptoError("undecryptable", `no room key for the blob's epoch ${epoch}`);
  const key = await blobKey(roomKey, header.subarray(12), opts.roomId, epoch);
  const sealedSize = chunkSize + AEAD_TAG_BYTES;
  const out: Uint8Array[] = [];
  for (let at = HEADER_BYTES, i = 0; ; i++, at += sealedSize) {
    const sealed = blob.subarray(at, at + sealedSize);
    const final = at + sealedSize >= blob.length;
    const plain = aeadOpen(key, chunkNonce(i, final), sealed, header);
    if (!plain) throw new CryptoError("undecryptable", `blob chunk ${i} does not verify`);
    out.push(plain);
    if (final) return concat(...out);
  }
}
