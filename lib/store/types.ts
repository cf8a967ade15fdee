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
 * - Every write that touches more than one row (a room with its owner and first key,
 *   a rekey, consuming an invite, deleting a user) is one transaction: it happens
 *   whole or not at all, and a refused call writes nothing.
 * - Room ids and subjects are case-sensitive (NATS subjects are); keys are not.
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

/** An operator's edit of a user (`updateUser`): at least one field, each checked as at `addUser`. */
export interface UserChanges {
  role?: Role;
  handle?: string;
  kexPub?: string;
}

/** A room has exactly one owner, its creator; everyone else it admits is a member. */
export type RoomRole = "owner" | "member";

export interface Room {
  /** Assigned by the control plane: 1–64 characters of `[A-Za-z0-9_-]`. */
  id: string;
  /**
   * The NATS subject the room's messages travel on: dot-separated tokens of
   * `[A-Za-z0-9_-]`, never a wildcard, never under `$…` or `_INBOX`. Unique.
   */
  subject: string;
  ownerSignPub: string;
  /** End-to-end encrypted: every member holds a sealed room key for every epoch it was present at. */
  encrypt: boolean;
  /** Messages are kept by JetStream. */
  persist: boolean;
  /** Members drop frames without a valid Ed25519 signature. */
  signMsgs: boolean;
  /** The current key epoch: 1 at creation, +1 per rekey. Cleartext rooms stay at 1. */
  epoch: number;
  createdAt: number;
}

export interface NewRoom {
  id: string;
  subject: string;
  ownerSignPub: string;
  encrypt: boolean;
  persist: boolean;
  signMsgs: boolean;
  /**
   * The epoch-1 room key sealed to the owner's kexPub (base64url, opaque to the store).
   * Required when `encrypt`; must be absent (undefined or null) for a cleartext room,
   * which has no key.
   */
  ownerSealedKey?: string | null;
}

export interface Member {
  roomId: string;
  signPub: string;
  role: RoomRole;
  addedAt: number;
}

export interface NewMember {
  signPub: string;
  /** Only "member": the owner is set at creation. Defaults to "member". */
  role?: RoomRole;
  /** The current epoch's room key sealed to this member (encrypted rooms only, like `NewRoom.ownerSealedKey`). */
  sealedKey?: string | null;
  /**
   * The epoch `sealedKey` was made for. Required for an encrypted room and must equal
   * the room's current epoch (else `ConflictError`: someone rekeyed meanwhile); for a
   * cleartext room it may be omitted.
   */
  epoch?: number;
}

/** One member's copy of one epoch's room key. */
export interface SealedKey {
  roomId: string;
  epoch: number;
  signPub: string;
  /** base64url (no padding), 1–4096 characters; opaque to the store. */
  sealed: string;
}

export interface Rekey {
  /** The epoch the caller believes is current; a mismatch means someone else rekeyed first. */
  fromEpoch: number;
  /** The new epoch's key sealed to exactly every current member (owner included), each once. */
  sealedKeys: Array<{ signPub: string; sealed: string }>;
}

/** A running `watchUsers`; `stop()` ends it (closing the store ends it too). */
export interface UserWatch {
  stop(): void;
}

export type InviteStatus = "open" | "spent" | "cancelled";

/**
 * A single-use registration token. The store never holds the token itself, only its
 * SHA-256, so a copy of the database cannot be used to register. An open invite whose
 * `expiresAt` has passed is expired: it can still be cancelled, never consumed.
 */
export interface Invite {
  /** The first 12 hex characters of `tokenHash`: what `invite list` shows and `invite cancel` takes. */
  id: string;
  /** sha256 of the token's lowercase hex, as 64 lowercase hex characters. */
  tokenHash: string;
  /** The handle the new user will get (lowercase). */
  handle: string;
  /** The role the new user will get. */
  role: Role;
  /** Who made it: an admin's signPub, or a label such as "host" for the host-trusted CLI. Lowercase. */
  createdBy: string;
  createdAt: number;
  expiresAt: number;
  status: InviteStatus;
  /** The signPub that spent it (the new user, or an already-registered key that tried). */
  spentBy: string | null;
  spentAt: number | null;
}

export interface NewInvite {
  /** 32 random bytes as 64 hex characters (any case); see `newInviteToken()`. Only its hash is stored. */
  token: string;
  handle: string;
  role: Role;
  /** 1–64 characters of `[A-Za-z0-9._:@-]`, starting with a letter or digit. */
  createdBy: string;
  /** Lifetime in ms: a positive integer up to 365 days; default 7 days. */
  ttlMs?: number;
}

export interface Registration {
  signPub: string;
  /** Required: a registered user must be able to receive room keys. */
  kexPub: string;
  /** The time the expiry is judged against (ms); defaults to `Date.now()`. For tests and replays. */
  now?: number;
}

/**
 * The whole state, for export and for the migration to the KV backend. Each array is
 * in a fixed order (below), so two snapshots of the same state are deep-equal.
 */
export interface Snapshot {
  /** Format version of this structure, bumped on any incompatible change. */
  version: 1;
  /** By `signPub`. */
  users: User[];
  /** By `id`. */
  rooms: Room[];
  /** By `roomId`, then `signPub`. */
  members: Member[];
  /** Every epoch's keys, removed members' included: by `roomId`, `epoch`, then `signPub`. */
  sealedKeys: SealedKey[];
  /** Every invite, spent and cancelled included: by `tokenHash`. */
  invites: Invite[];
}

export type StoreBackend = "sqlite" | "kv";
/** What an operator may ask for: a backend, or "auto" to let the topology decide. */
export type StoreChoice = StoreBackend | "auto";

/**
 * The one place "auto" is decided: SQLite for a bus alone (one file, nothing to
 * replicate), replicated KV for any member of a cluster (a file cannot follow a node).
 */
export function chooseStoreBackend(choice: StoreChoice | undefined, clustered: boolean): StoreBackend {
  if (choice === undefined || choice === "auto") return clustered ? "kv" : "sqlite";
  return choice;
}

/**
 * Every method is async and every error typed (`lib/errors.ts`, plus
 * `InviteRefusedError` from `./errors.ts`). Besides the errors listed per method, any
 * method may throw `StoreUnavailableError`. Input is validated before anything is
 * read or written (`InvalidArgumentError` naming the field).
 */
export interface Store {
  readonly backend: StoreBackend;

  // ---- users ----

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
  /**
   * Marks the user revoked and stamps `revokedAt`. `NotFoundError`; `ConflictError` when
   * already revoked. Memberships and keys stay (revocation is what the record says about
   * the key; the control plane refuses revoked signers before any room route), but a
   * revoked user cannot be added to a room, create one or register again.
   */
  revokeUser(signPub: string): Promise<User>;
  /**
   * Registers the key-exchange key of a user that has none yet (an identity added by
   * its signing key alone), so encrypted rooms can seal keys to it. Set once: a key is
   * never replaced here, since a swapped kexPub would let whoever swapped it read every
   * key sealed from then on (rotation is a new identity; see docs/security.md).
   * `InvalidArgumentError` (`signPub`, `kexPub`); `NotFoundError`; `ConflictError` when
   * the user already has a kexPub or is revoked.
   */
  setKexPub(signPub: string, kexPub: string): Promise<User>;

  /**
   * Makes a revoked user active again and clears `revokedAt`; nothing else changes.
   * `NotFoundError`; `ConflictError` when the user is already active.
   */
  reinstateUser(signPub: string): Promise<User>;
  /**
   * The operator's edit (host-trusted, never a control-plane route): a new role, handle or
   * key-exchange key. Unlike `setKexPub` this replaces an existing kexPub — the way back
   * for a user who lost theirs; whoever can write the store could read the keys sealed to
   * it from then on anyway. Revoked users may be edited too; status is `reinstateUser`'s.
   * `InvalidArgumentError` (`changes`, `role`, `handle`, `kexPub`); `NotFoundError`;
   * `ConflictError` when the new handle belongs to another user.
   */
  updateUser(signPub: string, changes: UserChanges): Promise<User>;
  /**
   * Removes the user entirely, in one transaction with all of its memberships and
   * sealed keys (every epoch). `NotFoundError` when absent; `ConflictError` naming the
   * rooms when the user owns any — a room is never left without its owner, so delete
   * those rooms first (`deleteRoom`). Invites keep their `createdBy` / `spentBy` as history.
   */
  deleteUser(signPub: string): Promise<void>;
  /** True only for an existing, active user. A malformed key is false. */
  isAuthorized(signPub: string): Promise<boolean>;
  /** True when at least one active admin exists. */
  hasAdmin(): Promise<boolean>;
  /**
   * Calls `onChange` soon after users change, whoever wrote (another process on the same
   * state included): with the user's key when the backend knows it (KV: a watch on the
   * users bucket), or with null for "users changed: check the ones you hold" (SQLite: a
   * cheap poll of the database's change counter catches other processes' writes; this
   * store's own writes name the key). After store trouble the watch resumes by itself
   * and reports null once, since changes meanwhile may have been missed.
   */
  watchUsers(onChange: (signPub: string | null) => void): UserWatch;

  // ---- rooms ----

  /**
   * Creates a room at epoch 1 with its owner as the only member (role "owner") and, for
   * an encrypted room, the owner's epoch-1 key — one transaction.
   * `InvalidArgumentError` (field `id`, `subject`, `ownerSignPub`, `encrypt`, `persist`,
   * `signMsgs`, `ownerSealedKey` or `room`); `NotFoundError("user")` when the owner is
   * unknown; `ConflictError` when the id or the subject is taken, the owner is revoked,
   * or the room is encrypted and the owner has no kexPub to seal to.
   */
  createRoom(r: NewRoom): Promise<Room>;
  /** `InvalidArgumentError("roomId")` for a malformed id; `NotFoundError("room", id)`. */
  getRoom(roomId: string): Promise<Room>;
  /**
   * Deletes the room with its memberships and every epoch's keys, in one transaction.
   * `InvalidArgumentError("roomId")`; `NotFoundError("room", id)`.
   */
  deleteRoom(roomId: string): Promise<void>;
  /** The members, ordered by `addedAt`, then `signPub`. `InvalidArgumentError("roomId")`; `NotFoundError("room")`. */
  listMembers(roomId: string): Promise<Member[]>;
  /**
   * `InvalidArgumentError` (`roomId`, `signPub`); `NotFoundError("room")`;
   * `NotFoundError("member", "<roomId>/<signPub>")`.
   */
  getMember(roomId: string, signPub: string): Promise<Member>;
  /**
   * Membership only (the caller checks `isAuthorized` separately). False for a malformed
   * id or key, an unknown room or a non-member — never a throw for those; a store that
   * cannot answer throws `StoreUnavailableError` and the caller denies.
   */
  isMember(roomId: string, signPub: string): Promise<boolean>;
  /**
   * The room when `signPub` is a member of it, else undefined — `isMember` and
   * `getRoom` in one read (a member's every request to a room needs both). Undefined,
   * never a throw, for a malformed id or key, an unknown room or a non-member, so the
   * caller answers all of them alike; a store that cannot answer throws
   * `StoreUnavailableError`.
   */
  roomIfMember(roomId: string, signPub: string): Promise<Room | undefined>;
  /**
   * Adds a member and, for an encrypted room, its key for the current epoch — one
   * transaction. `InvalidArgumentError` (`roomId`, `signPub`, `role` — "owner" is refused,
   * a room has one owner —, `member`, `epoch`, and `sealedKey` when it is malformed,
   * missing for an encrypted room or given for a cleartext one); `NotFoundError` for the
   * room or the user; `ConflictError` when already a member, when the user is revoked,
   * when `epoch` is not the room's current epoch, or when the room is encrypted and the
   * user has no kexPub.
   */
  addMember(roomId: string, m: NewMember): Promise<Member>;
  /**
   * Removes a member. Its sealed keys for past epochs are kept: it legitimately held
   * them, the key route serves keys to members only, and the owner's rekey (the next
   * call after a removal) makes sure it never gets the next one. With `rekey`, the room
   * also moves to epoch `fromEpoch + 1` in the same transaction, with keys for exactly
   * the members that remain (how a member leaves an encrypted room: it never holds the
   * next key, and the room is never at an epoch a non-member holds). `InvalidArgumentError`
   * (also `fromEpoch`, `sealedKeys`); `NotFoundError` for the room or the member;
   * `ConflictError` for the owner, and for a `rekey` refused as `rekey()` refuses it.
   */
  removeMember(roomId: string, signPub: string, rekey?: Rekey): Promise<void>;
  /**
   * Hands the room to another current member: `ownerSignPub` becomes `toSignPub`, whose
   * role becomes "owner", and the previous owner stays on as a "member" — one
   * transaction; keys and epoch are untouched (the new owner already holds them).
   * `InvalidArgumentError` (`roomId`, `signPub`); `NotFoundError("room")`;
   * `NotFoundError("member", "<roomId>/<signPub>")` when `toSignPub` is not a member;
   * `ConflictError` when it already owns the room or is revoked.
   */
  transferRoom(roomId: string, toSignPub: string): Promise<Room>;
  /**
   * Moves an encrypted room to epoch `fromEpoch + 1` with a key for exactly every
   * current member — one transaction. `InvalidArgumentError` (`roomId`, `fromEpoch`,
   * `sealedKeys` — not an array, a malformed entry, a key listed twice);
   * `NotFoundError("room")`; `ConflictError` when the room is cleartext, when
   * `fromEpoch` is not current (someone else rekeyed first: fetch the room and retry),
   * or when the keys do not cover exactly the members (the message lists the missing
   * and the extra keys).
   */
  rekey(roomId: string, r: Rekey): Promise<Room>;
  /**
   * A member's copy of the room key at `epoch`, or at the newest epoch it has a key
   * for when `epoch` is omitted. Authorization (is the caller that member?) is the
   * caller's job. `InvalidArgumentError` (`roomId`, `signPub`, `epoch`);
   * `NotFoundError("room")`; `NotFoundError("sealed key", "<roomId>/<signPub>[@epoch]")`.
   */
  getSealedKey(roomId: string, signPub: string, epoch?: number): Promise<SealedKey>;
  /**
   * The rooms `signPub` belongs to, with its role, ordered by the room's `createdAt`,
   * then `id`. `[]` for a user with none, and for an unknown key.
   * `InvalidArgumentError("signPub")` for a malformed key.
   */
  listRoomsFor(signPub: string): Promise<Array<Room & { role: RoomRole }>>;
  /** Every room on the bus, ordered by `createdAt`, then `id` (the admin's view). */
  listRooms(): Promise<Room[]>;

  // ---- invites ----

  /**
   * Records a new open invite (only the token's hash). `InvalidArgumentError` (`token`,
   * `handle`, `role`, `createdBy`, `ttlMs`, `invite`); `ConflictError` when the handle
   * belongs to a user or to another open, unexpired invite, or when the token was used
   * for an invite before.
   */
  createInvite(i: NewInvite): Promise<Invite>;
  /** Every invite, ordered by `createdAt`, then `id`. */
  listInvites(): Promise<Invite[]>;
  /**
   * Cancels an open invite (expired ones included), found by its 12-hex `id` or its
   * 64-hex token. `InvalidArgumentError("invite")` for anything else;
   * `NotFoundError("invite", id)`; `ConflictError` when already spent or cancelled.
   */
  cancelInvite(idOrToken: string): Promise<Invite>;
  /**
   * Registers a new active user with the invite's handle and role, and spends the
   * invite — atomically, so one token makes at most one user however many callers race.
   * `InvalidArgumentError` (`token`, `signPub`, `kexPub`, `now`, `registration`) with the
   * token untouched; `InviteRefusedError` (a `ConflictError` with `reason`) for an
   * unknown, spent, cancelled or expired token (expired when `now >= expiresAt`, or
   * when either is not a finite number) and for a handle taken since the invite was
   * made (token left open); `UserExistsError` when `signPub` is already registered —
   * and the token is spent, so it cannot be retried with another key.
   */
  consumeInvite(token: string, r: Registration): Promise<User>;
  /**
   * Removes the invites made before `before` (ms since the epoch) that can no longer be
   * consumed — spent, cancelled or expired — and returns how many went. Their tokens then
   * read as unknown. `InvalidArgumentError("before")` for anything but a whole, non-negative ms.
   */
  sweepInvites(before: number): Promise<number>;

  // ---- whole state ----

  /** A consistent copy of the whole state (see `Snapshot`). */
  snapshot(): Promise<Snapshot>;

  /** Releases the backend. Idempotent; every other method then throws `StoreUnavailableError`. */
  close(): Promise<void>;
}
