import { InvalidArgumentError } from "../errors.ts";
import type { Logger } from "../log/index.ts";
import type { KvStore, KvStoreOptions } from "./kv.ts";
import type { ImportProgress } from "./snapshot.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { Snapshot, Store } from "./types.ts";

export { type InviteRefusal, InviteRefusedError } from "./errors.ts";
export { createStoreHolder, type StoreHolder } from "./holder.ts";
export type { BucketReplication, KvStore, KvStoreOptions } from "./kv.ts";
export { bounded, bucketPrefixOf, Timeout } from "./kv-ops.ts";
export type { ImportProgress } from "./snapshot.ts";
export { copySqliteFile, openSqliteStore, type SqliteStoreOptions } from "./sqlite.ts";
export type {
  Invite,
  InviteStatus,
  Member,
  NewInvite,
  NewMember,
  NewRoom,
  NewUser,
  Registration,
  Rekey,
  Role,
  Room,
  RoomRole,
  SealedKey,
  Snapshot,
  Store,
  StoreBackend,
  StoreChoice,
  User,
  UserChanges,
  UserStatus,
  UserWatch,
} from "./types.ts";
export { chooseStoreBackend } from "./types.ts";
export {
  DEFAULT_INVITE_TTL_MS,
  HANDLE_MAX,
  hashInviteToken,
  inviteIdOf,
  isKeyShape,
  isRoomIdShape,
  MAX_INVITE_TTL_MS,
  newInviteToken,
  normalizeKey,
  validateHandle,
  validateKexPub,
  validateRole,
  validateRoomId,
  validateSignPub,
  validateSubject,
} from "./validate.ts";

export interface SqliteOpenOptions {
  backend: "sqlite";
  /** Path of the database file; created 0600 (and its directory 0700) when missing. */
  file: string;
  logger?: Logger;
}

/** JetStream KV: pass an open connection (`nc`, not closed by the store) or `servers` (+ `caPem`, `authenticator`). */
export interface KvOpenOptions extends KvStoreOptions {
  backend: "kv";
}

export type OpenStoreOptions = SqliteOpenOptions | KvOpenOptions;

/** The one entry point for the rest of unibus: picks the backend and opens it. */
export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  switch (opts?.backend) {
    case "sqlite":
      return openSqliteStore(opts.file, { logger: opts.logger });
    case "kv": {
      const { backend: _b, ...kv } = opts;
      return openKvStore(kv);
    }
    default:
      throw new InvalidArgumentError(
        "backend",
        `unknown store backend ${JSON.stringify((opts as { backend?: unknown } | undefined)?.backend)}; use "sqlite" or "kv"`,
      );
  }
}

// The KV backend (and its NATS client modules) loads only when asked for: a single
// node on SQLite, and every CLI command that edits it, never pays for it.

/** Opens the JetStream KV store (see lib/store/kv.ts). */
export async function openKvStore(opts: KvStoreOptions): Promise<KvStore> {
  return (await import("./kv.ts")).openKvStore(opts);
}

/** Writes a snapshot into a KV store as it is (see lib/store/snapshot.ts). */
export async function importSnapshot(
  kv: KvStore,
  snapshot: Snapshot,
  opts: { onProgress?: (p: ImportProgress) => void } = {},
): Promise<void> {
  return (await import("./snapshot.ts")).importSnapshot(kv, snapshot, opts);
}
