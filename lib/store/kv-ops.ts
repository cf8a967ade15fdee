/**
 * What every user of JetStream KV here shares — the KV store (kv.ts), the replicated
 * nonce store (lib/control/nonce-kv.ts) and the bus: the deadline on each operation
 * and the bucket prefix rule. Free of NATS modules, so the store's index can export it
 * without loading them (the lost-CAS test, which needs them, is in kv-cas.ts).
 */
import { InvalidArgumentError } from "../errors.ts";
import { DEFAULT_BUCKET_PREFIX } from "./kv-layout.ts";

/**
 * A deadline passed (see `bounded`). Deliberately not a `UnibusError`: callers let
 * their typed errors through untouched, and a deadline must never escape as one — it
 * always becomes the caller's own `StoreUnavailableError`, even where a catch forgets it.
 */
export class Timeout extends Error {}

/** Runs `fn` with a deadline; past it, rejects with `Timeout` (the work itself cannot be cancelled and is abandoned). */
export function bounded<T>(ms: number, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    fn(),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Timeout(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const BUCKET_PREFIX = /^[A-Za-z0-9_-]{1,48}$/;

/** The bucket name prefix to use: the default, or a given one that is valid; `InvalidArgumentError` otherwise. */
export function bucketPrefixOf(given: unknown): string {
  const prefix = given ?? DEFAULT_BUCKET_PREFIX;
  if (typeof prefix !== "string" || !BUCKET_PREFIX.test(prefix)) {
    throw new InvalidArgumentError(
      "bucketPrefix",
      'bucketPrefix must be 1 to 48 characters of letters, digits, "_" or "-"',
    );
  }
  return prefix;
}
