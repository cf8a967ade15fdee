import { InvalidArgumentError } from "../errors.ts";
import type { Logger } from "../log/index.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { Store } from "./types.ts";

export { openSqliteStore, type SqliteStoreOptions } from "./sqlite.ts";
export type { NewUser, Role, Store, StoreBackend, User, UserStatus } from "./types.ts";
export {
  HANDLE_MAX,
  isKeyShape,
  normalizeKey,
  validateHandle,
  validateKexPub,
  validateRole,
  validateSignPub,
} from "./validate.ts";

export interface SqliteOpenOptions {
  backend: "sqlite";
  /** Path of the database file; created 0600 (and its directory 0700) when missing. */
  file: string;
  logger?: Logger;
}

/** Grows a branch per backend (the JetStream KV backend comes next). */
export type OpenStoreOptions = SqliteOpenOptions;

/** The one entry point for the rest of unibus: picks the backend and opens it. */
export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  switch (opts?.backend) {
    case "sqlite":
      return openSqliteStore(opts.file, { logger: opts.logger });
    default:
      throw new InvalidArgumentError(
        "backend",
        `unknown store backend ${JSON.stringify((opts as { backend?: unknown } | undefined)?.backend)}; use "sqlite"`,
      );
  }
}
