/**
 * JetStream's answer to a lost compare-and-swap, shared by the KV store (kv.ts) and the
 * replicated nonce store (lib/control/nonce-kv.ts). Apart from kv-ops.ts because it
 * loads the JetStream client: the store's index must not, or every SQLite user would
 * pay for it.
 */
import { JetStreamApiError } from "@nats-io/jetstream";

/** A lost compare-and-swap (a create of a key that exists included): JetStream's "wrong last sequence". */
export function isCasFailure(err: unknown): boolean {
  return err instanceof JetStreamApiError && (err.code === 10071 || err.code === 10164);
}
