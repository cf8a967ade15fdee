/**
 * Client-side blob encryption: a stream of fixed-size chunks, each sealed with
 * ChaCha20-Poly1305 under a per-blob key derived from the room key, so a blob of any
 * size is encrypted and verified in bounded memory.
 *
 *   header  = "UBB1" | epoch (u32 BE) | chunkSize (u32 BE) | salt (16)        (28 bytes)
 *   key     = HKDF-SHA256(ikm = room key, salt, info = "unibus-blob-v1" | len(room id) | room id | epoch)
 *   chunk i = AEAD(key, nonce = i (u88 BE) | final (1 byte: 1 on the last chunk, else 0),
 *                  aad = header, plaintext[i*chunkSize .. +chunkSize]) — ciphertext | 16-byte tag
 *
 * The final flag makes truncation at a chunk boundary detectable; the chunk index in
 * the nonce makes reordering detectable; the header in the AAD binds epoch and size.
 * An empty blob is one empty final chunk.
 */
import crypto from "node:crypto";
import { CryptoError, roomIdBytes } from "./room-key.ts";

const MAGIC = Buffer.from("UBB1", "ascii");
export const BLOB_HEADER_BYTES = 4 + 4 + 4 + 16;
export const BLOB_CHUNK_BYTES = 64 * 1024;
const TAG = 16;
const INFO = Buffer.from("unibus-blob-v1", "ascii");

function blobKey(roomKey: Uint8Array, roomId: string, epoch: number, salt: Uint8Array): Buffer {
  const room = roomIdBytes(roomId);
  const e = Buffer.alloc(4);
  e.writeUInt32BE(epoch);
  const info = Buffer.concat([INFO, Buffer.from([room.length]), room, e]);
  return Buffer.from(crypto.hkdfSync("sha256", roomKey, salt, info, 32));
}

function nonce(index: number, final: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUIntBE(index, 5, 6); // chunk indices stay far below 2^48
  n[11] = final ? 1 : 0;
  return n;
}

function seal(key: Buffer, header: Buffer, index: number, final: boolean, plain: Uint8Array): Buffer {
  const c = crypto.createCipheriv("chacha20-poly1305", key, nonce(index, final), { authTagLength: TAG });
  c.setAAD(header, { plaintextLength: plain.length });
  return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
}

function open(key: Buffer, header: Buffer, index: number, final: boolean, sealed: Buffer): Buffer | undefined {
  if (sealed.length < TAG) return undefined;
  const d = crypto.createDecipheriv("chacha20-poly1305", key, nonce(index, final), { authTagLength: TAG });
  d.setAAD(header, { plaintextLength: sealed.length - TAG });
  d.setAuthTag(sealed.subarray(sealed.length - TAG));
  try {
    return Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG)), d.final()]);
  } catch {
    return undefined;
  }
}

/** Re-chunks any byte stream into pieces of exactly `size` bytes (the last may be shorter). */
async function* rechunk(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  size: number,
): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let have = 0;
  for await (const piece of source) {
    let buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    while (buf.length > 0) {
      const take = Math.min(size - have, buf.length);
      pending.push(buf.subarray(0, take));
      have += take;
      buf = buf.subarray(take);
      if (have === size) {
        yield Buffer.concat(pending, size);
        pending = [];
        have = 0;
      }
    }
  }
  yield Buffer.concat(pending, have);
}

/** Encrypts a stream of plaintext into the blob format, chunk by chunk. */
export async function* encryptBlob(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  opts: { roomKey: Uint8Array; roomId: string; epoch: number; chunkBytes?: number },
): AsyncGenerator<Buffer> {
  const chunkBytes = opts.chunkBytes ?? BLOB_CHUNK_BYTES;
  const salt = crypto.randomBytes(16);
  const header = Buffer.alloc(BLOB_HEADER_BYTES);
  MAGIC.copy(header, 0);
  header.writeUInt32BE(opts.epoch, 4);
  header.writeUInt32BE(chunkBytes, 8);
  salt.copy(header, 12);
  const key = blobKey(opts.roomKey, opts.roomId, opts.epoch, salt);
  yield header;
  // One chunk of look-ahead tells us which chunk is the last: rechunk always ends
  // with the (possibly empty) remainder.
  let index = 0;
  let previous: Buffer | undefined;
  for await (const chunk of rechunk(source, chunkBytes)) {
    if (previous !== undefined) {
      if (chunk.length === 0) break; // an exact multiple: previous is the last chunk
      yield seal(key, header, index++, false, previous);
    }
    previous = chunk;
  }
  yield seal(key, header, index, true, previous ?? Buffer.alloc(0));
}

/** The epoch a blob was encrypted under (read from its header). */
export function blobEpoch(header: Uint8Array): number | undefined {
  if (header.length < BLOB_HEADER_BYTES || !MAGIC.equals(Buffer.from(header.subarray(0, 4)))) return undefined;
  return Buffer.from(header.buffer, header.byteOffset, header.byteLength).readUInt32BE(4);
}

/**
 * Decrypts a blob stream. `keyFor(epoch)` supplies the room key of the epoch in the
 * header. Throws CryptoError on a wrong key, a tampered, reordered or truncated stream.
 */
export async function* decryptBlob(
  source: AsyncIterable<Uint8Array>,
  opts: { roomId: string; keyFor: (epoch: number) => Promise<Uint8Array | undefined> },
): AsyncGenerator<Buffer> {
  let header: Buffer | undefined;
  let key: Buffer | undefined;
  let frameBytes = 0;
  let index = 0;
  let buffered: Buffer[] = [];
  let have = 0;
  let ready: Buffer | undefined; // a complete sealed chunk, held back until we know it is not the last
  const bad = (why: string) => new CryptoError("undecryptable", `blob ${why}`);
  for await (const piece of source) {
    buffered.push(Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength));
    have += piece.byteLength;
    if (!header) {
      if (have < BLOB_HEADER_BYTES) continue;
      const all = Buffer.concat(buffered, have);
      header = Buffer.from(all.subarray(0, BLOB_HEADER_BYTES));
      const epoch = blobEpoch(header);
      if (epoch === undefined) throw new CryptoError("malformed", "not a unibus blob");
      const chunkBytes = header.readUInt32BE(8);
      if (chunkBytes < 1 || chunkBytes > 16 * 1024 * 1024) throw new CryptoError("malformed", "bad blob chunk size");
      const roomKey = await opts.keyFor(epoch);
      if (!roomKey) throw bad(`was encrypted under epoch ${epoch}, whose key you never held`);
      key = blobKey(roomKey, opts.roomId, epoch, header.subarray(12, 28));
      frameBytes = chunkBytes + TAG;
      buffered = [all.subarray(BLOB_HEADER_BYTES)];
      have -= BLOB_HEADER_BYTES;
    }
    while (have >= frameBytes) {
      const all = Buffer.concat(buffered, have);
      const frame = all.subarray(0, frameBytes);
      buffered = [all.subarray(frameBytes)];
      have -= frameBytes;
      if (ready) {
        const plain = open(key!, header, index++, false, ready);
        if (!plain) throw bad("chunk failed verification (tampered or reordered)");
        yield plain;
      }
      ready = Buffer.from(frame);
    }
  }
  if (!header || !key) throw new CryptoError("malformed", "blob is shorter than its header");
  // The last sealed chunk is either the short remainder, or (exact multiple) the held-back frame.
  const rest = Buffer.concat(buffered, have);
  if (rest.length > 0) {
    if (ready) {
      const plain = open(key, header, index++, false, ready);
      if (!plain) throw bad("chunk failed verification (tampered or reordered)");
      yield plain;
    }
    ready = rest;
  }
  if (!ready) throw bad("is truncated");
  const last = open(key, header, index, true, ready);
  if (!last) throw bad("final chunk failed verification (tampered or truncated)");
  yield last;
}
