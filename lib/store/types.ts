/**
 * The control plane's state, behind one interface with two backends (SQLite now,
 * JetStream KV later). Both backends behave identically — same validation, same
 * errors, same ordering — which `test/store/suite.ts` proves by running one suite
 * against each.
 *
 * Conventions every backend keeps:
 * - Keys (`signPub`, `kexPub`) are raw 32-byte public keys as hex. Input may be any
 *   case; the store normalises to lowercase at its boundary, so every lookup is
 *   case-insensitive and every returned key is lowercase.
 * - Handles are unique, case-insensitively: they are lowercased on the way in, and a
 *   second user with the same handle is a `ConflictError` naming the handle.
 * - A lookup (`getUser`, `revokeUser`, `deleteUser`) with a key that is not 64 hex
 *   characters is an `InvalidArgumentError` (field `signPub`); a well-formed key that
 *   is not on the allowlist is a `NotFoundError("user", key)`.
 * - `isAuthorized` and `hasAdmin` fail closed: a malformed key is simply not
 *   authorized (false, no throw), and a store that cannot answer throws
 *   `StoreUnavailableError` — never `true`.
 * - Any unexpected backend failure (I/O, corruption, closed store) is a
 *   `StoreUnavailableError` with a generic message; the detail is in `cause` and the log.
 * - Timestamps are milliseconds since the epoch.
 */

export type Role = "admin" | "member";
export type UserStatus = "active" | "revoked";

export interface User {
  /** Ed25519 public key, 64 lowercase hex characters. The user's identity. */
  signPub: string;
  /** X25519 public key (64 lowercase hex), used to seal room keys; null until registered. */
  kexPub: string | null;
  /** Lowercase, unique, 1–64 chars of `[a-z0-9._-]`, starting with a letter or digit. */
  handle: string;
  role: Role;
  status: UserStatus;
  createdAt: number;
  revokedAt: number | null;
}

export interface NewUser {
  signPub: string;
  kexPub?: string | null;
  handle: string;
  role: Role;
}

export type StoreBackend = "sqlite" | "kv";

export interface Store {
  readonly backend: StoreBackend;
  /**
   * Adds an active user. `InvalidArgumentError` (field `signPub`, `kexPub`, `handle` or
   * `role`) for bad input, with nothing written; `UserExistsError` when the signing key
   * is already present (any case); `ConflictError` when the handle is taken.
   */
  addUser(u: NewUser): Promise<User>;
  /** `NotFoundError("user", signPub)` when absent. */
  getUser(signPub: string): Promise<User>;
  /** Every user, revoked ones included, ordered by `createdAt`, then `handle`. */
  listUsers(): Promise<User[]>;
  /** Marks the user revoked and stamps `revokedAt`. `NotFoundError`; `ConflictError` when already revoked. */
  revokeUser(signPub: string): Promise<User>;
  /** Removes the user entirely. `NotFoundError` when absent. */
  deleteUser(signPub: string): Promise<void>;
  /** True only for an existing, active user. A malformed key is false. */
  isAuthorized(signPub: string): Promise<boolean>;
  /** True when at least one active admin exists. */
  hasAdmin(): Promise<boolean>;
  /** Releases the backend. Idempotent; every other method then throws `StoreUnavailableError`. */
  close(): Promise<void>;
}
