/**
 * The control plane: its HTTPS server, the blob store behind its blob routes, the
 * nonce stores that stop replays, and the wire rules a client shares with it.
 */
export type { BlobBucket, ObjectBlobStore, ObjectBlobStoreOptions } from "./blob-objects.ts";
export { BlobStore, type BlobStoreOptions, type Blobs } from "./blobs.ts";
export { HttpError } from "./http-error.ts";
export type { ControlTimeouts, RateLimiterOptions } from "./limits.ts";
export { NonceCache, type NonceStore, type NonceVerdict } from "./nonce-cache.ts";
export type { KvNonceStore, KvNonceStoreOptions } from "./nonce-kv.ts";
export { parseTtl, registrationProofMessage } from "./protocol.ts";
export type { AccessChange, NodeReport } from "./routes.ts";
export { ControlServer, type ControlServerOptions } from "./server.ts";

import type { KvNonceStore, KvNonceStoreOptions } from "./nonce-kv.ts";

// The replicated nonce store (and the JetStream client it needs) loads only when asked
// for: a bus on SQLite never pays for it.

/** Opens (creating if needed) the replicated nonce bucket (see nonce-kv.ts). */
export async function openKvNonceStore(opts: KvNonceStoreOptions): Promise<KvNonceStore> {
  return (await import("./nonce-kv.ts")).openKvNonceStore(opts);
}
export { answerCors, checkCorsOrigins } from "./cors.ts";
