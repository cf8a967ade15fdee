/**
 * From the previous KV layout (one bucket per kind of record) to the current one (every
 * record in `<prefix>users`, kinds under key prefixes; kv-layout.ts). Run by each node's
 * store as it opens, before it answers anything; nodes of a cluster may run it at once.
 *
 * Why copy-then-delete is safe to run concurrently and again after a crash:
 *   - Each record is copied with "only if this key never had a value" (expected last
 *     subject sequence 0). A record already copied — by us before a crash, or by another
 *     node — is left alone, and so is one a node on the new layout has since changed or
 *     deleted (a delete leaves a marker, which the condition also sees): a late copier
 *     never brings an old value back.
 *   - The old buckets are deleted only once every one of them has been copied in full, so
 *     whoever deletes them has copied everything first. A node still reading one that
 *     another just deleted fails its open, and opens again (a cluster member retries), now
 *     finding nothing left to move.
 * Users already live in `<prefix>users` at their bare key, as before: nothing moves for them.
 *
 * Not covered: a node still running the previous version and writing the old buckets
 * while another has moved on. Upgrade every node of a cluster together (docs/clustering.md).
 */
import { JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream";
import type { Kvm } from "@nats-io/kv";
import type { Logger } from "../log/index.ts";
import { isCasFailure } from "./kv-cas.ts";
import { type BucketName, type Buckets, bucketName, LEGACY_SECTIONS, listEntries } from "./kv-layout.ts";

/** Copies in flight at once. */
const COPY_BATCH = 200;

/** JetStream's "stream not found". */
const STREAM_NOT_FOUND = 10059;

/** The sections of the previous layout that still have a bucket of their own. */
export async function legacySections(jsm: JetStreamManager, prefix: string): Promise<BucketName[]> {
  const found = await Promise.all(
    LEGACY_SECTIONS.map(async (b) => {
      try {
        await jsm.streams.info(`KV_${bucketName(prefix, b)}`);
        return true;
      } catch (err) {
        if (err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND) return false;
        throw err;
      }
    }),
  );
  return LEGACY_SECTIONS.filter((_, i) => found[i]);
}

/** Copies every live record of the old buckets into `target`'s sections, then deletes the old buckets; how many records it copied. */
export async function relayout(
  kvm: Kvm,
  jsm: JetStreamManager,
  prefix: string,
  sections: BucketName[],
  target: Buckets,
  logger: Logger,
): Promise<number> {
  let copied = 0;
  for (const name of sections) {
    const old = await kvm.open(bucketName(prefix, name), { allow_direct: false });
    const entries = await listEntries(old);
    // In batches, not one by one: a round trip per record would not fit an open's deadline at 10,000.
    for (let i = 0; i < entries.length; i += COPY_BATCH) {
      const done = await Promise.all(
        entries.slice(i, i + COPY_BATCH).map((e) =>
          target[name].put(e.key, e.value, { previousSeq: 0 }).then(
            () => true,
            (err: unknown) => {
              if (isCasFailure(err)) return false; // already there, or changed since: theirs is newer
              throw err;
            },
          ),
        ),
      );
      copied += done.filter(Boolean).length;
    }
  }
  for (const name of sections) {
    await jsm.streams.delete(`KV_${bucketName(prefix, name)}`).catch((err: unknown) => {
      if (!(err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND)) throw err;
    });
  }
  logger.info({ component: "store", backend: "kv", sections, copied }, "KV store moved to the one-bucket layout");
  return copied;
}
