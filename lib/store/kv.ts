/**
 * The Store over replicated JetStream KV buckets — the control plane of a cluster.
 *
 * One bucket, `<prefix>users` (prefix `unibus_` by default), one section per kind of
 * record (a key prefix; kv-layout.ts), so that every write waits on one Raft group:
 *   <signPub>                               → UserRec (User, + `deleting` during deleteUser)
 *   handles.<hex(handle)>                   → HandleClaim   (handle uniqueness)
 *   rooms.<roomId>                          → RoomRec (Room + its members + commit/lock state)
 *   subjects.<hex(subject)>                 → SubjectClaim  (subject uniqueness)
 *   memberof.<signPub>.<roomId>             → "1"   (reverse index for deleteUser; listRoomsFor's fallback)
 *   keys.<roomId>.<signPub>.<epoch>         → the sealed room key (every epoch kept)
 *   invites.<id12>.<rest of tokenHash>      → Invite
 *   invites.idx.id.<id12>                   → InviteIdIndex      (id uniqueness; cancel by id in one get)
 *   invites.idx.handle.<hex(handle)>        → InviteHandleIndex  (the handle's newest invite)
 * The code below sees each section as a bucket of its own (`this.#b.rooms`, ...); a store
 * of the previous layout, a bucket per section, is moved into the one bucket at open
 * (kv-relayout.ts), or read as it is by the admin CLI's binding.
 *
 * There are no multi-key transactions in KV, so every multi-key write has ONE commit
 * point — a single compare-and-swap on one record — and everything else is either
 * written before it (invisible until the commit makes it reachable) or cleaned up after
 * it (garbage that readers ignore):
 *   - addUser: claim the handle (create/CAS), then create the user record (commit).
 *     A claim whose user record does not exist is ignored once out of its in-flight window.
 *   - createRoom: create the room record `committed: false` (claims the id), claim the
 *     subject, write the owner's epoch-1 key and reverse-index entry, then CAS the
 *     record to `committed: true` (commit). Readers treat an uncommitted room as absent.
 *   - addMember / removeMember / rekey: members live inside the room record, so each is
 *     one CAS on it (commit). Keys and the reverse index are written before, under a
 *     short lock held in the record, so concurrent writers never overwrite each other's
 *     keys. Readers of the reverse index check membership in the room record; readers of
 *     keys ignore epochs above the room's epoch (left by an interrupted rekey).
 *   - transferRoom: the owner and both roles live inside the room record: one CAS.
 *     removeMember with a rekey writes the new epoch's keys first, like rekey, then one CAS.
 *   - deleteRoom: delete the room record (commit), then its keys, index entries and
 *     subject claim.
 *   - deleteUser: mark the user `deleting` (commit: it now reads as absent), remove it
 *     from each room record, delete its keys, index entries and handle claim, then its
 *     record. addMember re-checks the user after its commit and backs out if it raced.
 *   - createRoom / deleteUser / createInvite re-check after their write what they checked
 *     before it (owner still there; no room owned; no rival live invite for the handle) and
 *     back out if a racing write slipped in; of two racing writes at least one sees the other.
 *   - createInvite: claim the id (create), write the invite, then advance the handle's index
 *     by CAS (the commit): a racing creator whose swap landed first holds a live invite and
 *     ours is withdrawn. No call scans the bucket, so its cost does not grow with the invites.
 *   - consumeInvite: CAS the invite open → spent (the single-use guarantee: exactly one
 *     caller wins), then create the user; a handle lost meanwhile re-opens the token.
 *
 * Every operation is bounded by `timeoutMs` (default 3 s) and becomes a
 * `StoreUnavailableError` past it or on any NATS/JetStream error; the authorization
 * predicates never answer true from a failure. Retries after a lost CAS stay inside
 * the same deadline.
 *
 * listRoomsFor (the connect path) answers from an in-memory index fed by a watch on the
 * rooms bucket (kv-rooms-index.ts), after a barrier (a marker written to the bucket), so it
 * reflects every write acknowledged before the call; the reverse index is its fallback.
 *
 * `snapshot()` reads bucket by bucket in commit order and drops what was deleted while it
 * read (see there), so it is consistent while writers run. Known limits: an interrupted addMember may leave the key it wrote for a non-member at the current
 * epoch (served to members only, overwritten if that user is added later).
 */
import crypto from "node:crypto";
import { JetStreamApiError, jetstream } from "@nats-io/jetstream";
import { type KV, Kvm, KvWatchInclude } from "@nats-io/kv";
import { type Authenticator, connect, type NatsConnection } from "@nats-io/transport-node";
import {
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  StoreUnavailableError,
  UnibusError,
  UserExistsError,
} from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import { InviteRefusedError } from "./errors.ts";
import { isCasFailure } from "./kv-cas.ts";
import {
  type Buckets,
  bucketName,
  byString,
  controlBucketName,
  encodeJson,
  type HandleClaim,
  type InviteHandleIndex,
  type InviteIdIndex,
  type KvView,
  key,
  LEGACY_SECTIONS,
  listEntries,
  listKeys,
  live,
  type MemberEntry,
  memberOf,
  parseSealedKey,
  type RoomRec,
  Section,
  type SubjectClaim,
  sectionsOf,
  type UserRec,
} from "./kv-layout.ts";
import { bounded, bucketPrefixOf, Timeout } from "./kv-ops.ts";
import { legacySections, relayout } from "./kv-relayout.ts";
import {
  bucketSource,
  type Indexed,
  type IndexSource,
  RoomIndex,
  roomsSource,
  sequenceReader,
} from "./kv-rooms-index.ts";
import {
  type ConsumeDecision,
  checkAddMember,
  checkCancelInvite,
  checkCreateInvite,
  checkCreateRoom,
  checkDeleteUser,
  checkRekey,
  checkRemoveMember,
  checkTransferRoom,
  decideConsume,
  inviteIsLive,
  inviteIsSweepable,
  memberId,
} from "./rules.ts";
import type {
  Invite,
  Member,
  NewInvite,
  NewMember,
  NewRoom,
  NewUser,
  Registration,
  Rekey,
  Room,
  RoomRole,
  SealedKey,
  Snapshot,
  Store,
  User,
  UserChanges,
  UserWatch,
} from "./types.ts";
import {
  hashInviteToken,
  inviteIdOf,
  isKeyShape,
  isRoomIdShape,
  kexConflict,
  lookupKey,
  parseInviteRef,
  requiredKexPub,
  type ValidNewInvite,
  type ValidNewRoom,
  type ValidRegistration,
  type ValidRekey,
  validateEpoch,
  validateInviteToken,
  validateNewInvite,
  validateNewMember,
  validateNewRoom,
  validateNewUser,
  validateRegistration,
  validateRekey,
  validateRoomId,
  validateSweepBefore,
  validateUserChanges,
} from "./validate.ts";

export interface KvStoreOptions {
  /** An open connection to use (e.g. the bus' APP-account service connection); never closed by the store. */
  nc?: NatsConnection;
  /** Or: servers to connect to; the store then owns (and closes) its connection. */
  servers?: string | string[];
  /** PEM of the CA that signed the servers' certificates (TLS). */
  caPem?: string;
  /** How to authenticate, e.g. `nkeySigner(...)` from lib/auth/authenticator.ts. */
  authenticator?: Authenticator;
  /** Replication of every bucket, 1–5 (default 1). */
  replicas?: number;
  /** Bound on every operation, ms (default 3000). */
  timeoutMs?: number;
  /** Bound on opening (connect + create/bind buckets), ms (default 15000). */
  openTimeoutMs?: number;
  /** Bucket name prefix, `[A-Za-z0-9_-]` (default `unibus_`); tests use a random one per store. */
  bucketPrefix?: string;
  /** "file" (default) or "memory". */
  storage?: "file" | "memory";
  /**
   * Only bind to buckets that exist, never create them (the admin CLI: a missing bucket
   * means no bus keeps its store here, and creating one would split the allowlist).
   * `replicas` is then read from the buckets.
   */
  bind?: boolean;
  logger?: Logger;
}

const RETRY_MS = 15;

/** Opens (creating if needed) the buckets and returns the store. */
/** nats.js's own bound on dialling the store's connection (see openKvStore). */
const STORE_CONNECT_TIMEOUT_MS = 10_000;

export async function openKvStore(opts: KvStoreOptions): Promise<KvStore> {
  const logger = opts?.logger ?? silentLogger;
  const replicas = opts?.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw new InvalidArgumentError("replicas", "replicas must be a whole number from 1 to 5");
  }
  const timeoutMs = opts.timeoutMs ?? 3000;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) {
    throw new InvalidArgumentError("timeoutMs", "timeoutMs must be a positive whole number of milliseconds");
  }
  const prefix = bucketPrefixOf(opts.bucketPrefix);
  if (opts.nc === undefined && (opts.servers === undefined || opts.servers.length === 0)) {
    throw new InvalidArgumentError("servers", "the KV store needs a NATS connection (nc) or the servers to connect to");
  }
  const openTimeoutMs = opts.openTimeoutMs ?? 15000;
  let nc = opts.nc;
  const owned = nc === undefined;
  // `bounded` gives up on the opening but cannot stop it: whatever the abandoned attempt
  // makes afterwards (a connection, a store with a running rooms watch) would live on with
  // nobody to close it, keeping the process alive. So the store itself — the part with
  // timers — is made only once the opening has succeeded, and a connection of our own that
  // an abandoned attempt opens is closed when that attempt ends.
  const attempt = (async () => {
    nc ??= await connect({
      servers: opts.servers,
      name: "unibus-store",
      ...(opts.caPem ? { tls: { ca: opts.caPem } } : {}),
      ...(opts.authenticator ? { authenticator: opts.authenticator } : {}),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      // Not the (possibly short) opening bound: a nats.js connect that times out while its
      // socket is still dialling leaves that socket open once it connects, with no handle
      // for us to close (nats.js 3.4). Our own bound gives up sooner; the late connection
      // is then closed below.
      timeout: Math.max(openTimeoutMs, STORE_CONNECT_TIMEOUT_MS),
    });
    const js = jetstream(nc, { timeout: timeoutMs });
    const kvm = new Kvm(js);
    const jsm = await js.jetstreamManager();
    const storage = opts.storage === "memory" ? "memory" : "file";
    const name = controlBucketName(prefix);
    const kv = opts.bind
      ? await bindExisting(kvm, name)
      : await kvm.create(name, { replicas, history: 1, storage, allow_direct: false, timeout: timeoutMs });
    const legacy = await legacySections(jsm, prefix);
    let buckets = sectionsOf(kv);
    let index: IndexSource | undefined = bucketSource(kv, sequenceReader(jsm, name));
    if (legacy.length > 0 && opts.bind) {
      // A bus of the previous version keeps its store here: read it as it is, move nothing.
      buckets = await legacyBuckets(kvm, prefix, kv);
      index = undefined;
    } else if (legacy.length > 0) {
      await relayout(kvm, jsm, prefix, legacy, buckets, logger);
    }
    const actual = opts.bind ? (await kv.status()).replicas : replicas;
    const layout = opts.bind && legacy.length > 0 ? "bucket per kind" : "one bucket";
    return { conn: nc, buckets, index, actual, layout };
  })();
  try {
    const { conn, buckets, index, actual, layout } = await bounded(openTimeoutMs, () => attempt).catch(
      (err: unknown) => {
        // Whichever way the abandoned attempt ends, a connection it opened is ours to close.
        if (owned) void attempt.catch(() => {}).then(() => nc?.close().catch(() => {}));
        throw err;
      },
    );
    logger.info({ component: "store", backend: "kv", prefix, replicas: actual, layout }, "KV store open");
    // A bus's store (not the admin CLI's one-shot binding) loads the rooms index now, so
    // the first connects do not wait for it — nor for a meta leader to place its watch.
    const watchRooms = !opts.bind;
    return new KvStore(conn, owned, buckets, {
      timeoutMs,
      logger,
      replicas: actual,
      prefix,
      watchRooms,
      ...(index ? { index } : {}),
    });
  } catch (err) {
    if (owned && nc !== undefined && !nc.isClosed()) await nc.close().catch(() => {});
    if (err instanceof UnibusError) throw err;
    // debug: the caller gets the typed error and decides (a cluster node retries while its peers start).
    logger.debug({ err: (err as Error).message }, "could not open the KV store");
    throw new StoreUnavailableError(
      "the KV store could not be opened: NATS or JetStream did not answer; check that the bus is running and reachable",
      { cause: err },
    );
  }
}

/** The previous layout's buckets, bound as they are (users is `kv`, already open). */
async function legacyBuckets(kvm: Kvm, prefix: string, kv: KV): Promise<Buckets> {
  const opened = await Promise.all(LEGACY_SECTIONS.map((b) => bindExisting(kvm, bucketName(prefix, b))));
  return { users: kv, ...Object.fromEntries(LEGACY_SECTIONS.map((b, i) => [b, opened[i]!])) } as unknown as Buckets;
}

/** Binds to a bucket that must exist: its status is read once, so a missing one fails here, named. */
async function bindExisting(kvm: Kvm, name: string): Promise<KV> {
  const kv = await kvm.open(name, { allow_direct: false });
  try {
    await kv.status();
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === 10059) {
      throw new StoreUnavailableError(
        `there is no KV store here (bucket ${name} does not exist): is the bus running with --store kv, and is this the right bus?`,
      );
    }
    throw err;
  }
  return kv;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function parse<T>(value: Uint8Array): T {
  return JSON.parse(Buffer.from(value).toString("utf8")) as T;
}

function toUser(rec: UserRec): User {
  const { deleting: _d, ...u } = rec;
  return u;
}

interface Ctx {
  deadline: number;
}

/** What a room write wants done: `next` is the record to commit (null deletes the room). */
interface RoomPlan<T> {
  next: RoomRec | null;
  result: T;
  /** Written before the commit, under the room's lock. */
  before?: () => Promise<void>;
}

/** One bucket's replication: replicas asked for, and how many are current (the leader included). */
export interface BucketReplication {
  bucket: string;
  replicas: number;
  current: number;
}

export class KvStore implements Store {
  readonly backend = "kv" as const;
  readonly #nc: NatsConnection;
  readonly #owned: boolean;
  readonly #b: Buckets;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  readonly replicas: number;
  readonly bucketPrefix: string;
  #closed = false;
  readonly #watches = new Set<UserWatch>();
  /** Memberships from a watch on the rooms bucket, for listRoomsFor (started by its first call). */
  readonly #roomIndex: RoomIndex;

  constructor(
    nc: NatsConnection,
    owned: boolean,
    buckets: Buckets,
    options: {
      timeoutMs: number;
      logger: Logger;
      replicas: number;
      prefix: string;
      watchRooms?: boolean;
      /** What the index watches (default: the rooms bucket alone, as in the previous layout). */
      index?: IndexSource;
    },
  ) {
    this.#nc = nc;
    this.#owned = owned;
    this.#b = buckets;
    this.#timeoutMs = options.timeoutMs;
    this.#log = options.logger;
    this.replicas = options.replicas;
    this.bucketPrefix = options.prefix;
    this.#roomIndex = new RoomIndex(options.index ?? roomsSource(buckets.rooms), options.logger);
    if (options.watchRooms) this.#roomIndex.start();
  }

  /** For the snapshot importer (snapshot.ts) only: the raw buckets. */
  get buckets(): Buckets {
    if (this.#closed) throw new StoreUnavailableError("the store is closed");
    return this.#b;
  }

  get timeoutMs(): number {
    return this.#timeoutMs;
  }

  /** The replication state of each bucket (for the CLI to print after a write). */
  async replicationState(): Promise<BucketReplication[]> {
    return this.#run("replicationState", async () => {
      // The sections of one bucket share its status (asked once); the previous layout's buckets each have their own.
      const buckets = new Set(Object.values(this.#b).map((b) => (b instanceof Section ? b.bucket : b)));
      const all = await Promise.all([...buckets].map((b) => b.status()));
      return all.map((st) => {
        const cl = st.streamInfo.cluster;
        const current = (cl?.leader ? 1 : 0) + (cl?.replicas ?? []).filter((r) => r.current).length;
        return { bucket: st.bucket, replicas: st.replicas, current: cl ? current : 1 };
      });
    });
  }

  /**
   * Every method runs through here: closed store, deadline and unexpected errors become
   * `StoreUnavailableError` (callers deny on it); our own typed errors pass through.
   */
  #run<T>(op: string, fn: (ctx: Ctx) => Promise<T>, timeoutMs = this.#timeoutMs): Promise<T> {
    if (this.#closed) return Promise.reject(new StoreUnavailableError("the store is closed"));
    const ctx: Ctx = { deadline: Date.now() + timeoutMs };
    return bounded(timeoutMs, () => fn(ctx)).catch((err: unknown) => {
      if (err instanceof UnibusError) throw err;
      if (err instanceof Timeout) {
        this.#log.warn({ op, timeoutMs }, "KV store operation timed out");
        throw new StoreUnavailableError(
          `the store did not answer within ${timeoutMs} ms (NATS/JetStream unreachable or without quorum); retry later`,
          { cause: err },
        );
      }
      this.#log.error({ err, op }, "KV store operation failed");
      throw new StoreUnavailableError("the store could not answer; see the server log for the cause", { cause: err });
    });
  }

  /**
   * A read: tried again within its deadline when one attempt goes unanswered. A request
   * sent to a stream leader that just died gets no answer at all; retried every
   * READ_ATTEMPT_MS, a read reaches the new leader at most that long after its election
   * instead of failing after the whole `timeoutMs` (the callout then holds the connect and
   * asks again). Only for reads (and the rooms barrier, a marker written again harmlessly):
   * any other write that timed out may have landed.
   */
  #read<T>(op: string, fn: () => Promise<T>): Promise<T> {
    return this.#run(op, (ctx) => this.#attempts(ctx, fn));
  }

  /** `fn` (a read) in attempts of READ_ATTEMPT_MS until one is answered or the deadline passes. */
  async #attempts<T>(ctx: Ctx, fn: () => Promise<T>): Promise<T> {
    for (;;) {
      try {
        return await bounded(Math.min(KvStore.READ_ATTEMPT_MS, Math.max(1, ctx.deadline - Date.now())), fn);
      } catch (err) {
        if (!(err instanceof Timeout) || Date.now() >= ctx.deadline) throw err;
      }
    }
  }

  /** One attempt of a read (see #read). */
  static readonly READ_ATTEMPT_MS = 1000;

  #checkDeadline(ctx: Ctx): void {
    if (this.#closed) throw new StoreUnavailableError("the store is closed");
    if (Date.now() > ctx.deadline) throw new Timeout("deadline passed while retrying");
  }

  async #get<T>(kv: KvView, k: string): Promise<{ value: T; revision: number } | undefined> {
    const e = live(await kv.get(k));
    return e === null ? undefined : { value: parse<T>(e.value), revision: e.revision };
  }

  async #userRec(signPub: string): Promise<{ value: UserRec; revision: number } | undefined> {
    return this.#orIndexed(
      () => this.#get<UserRec>(this.#b.users, key.user(signPub)),
      (seq, waitMs) => this.#roomIndex.userAt(signPub, seq, waitMs),
    );
  }

  /**
   * A direct read, or — when JetStream refuses it (no meta leader: every node answers a
   * stream message get with "cluster not available" while the meta group elects, though
   * the stream's leader is alive) — the same record from the index's watch, once it has
   * applied a marker written now (kv-rooms-index.ts): as current as the direct read, and
   * needing only the stream's leader. No answer from either: the direct read's error.
   */
  async #orIndexed<T>(
    direct: () => Promise<Indexed<T> | undefined>,
    indexed: (seq: number, waitMs: number) => Promise<Indexed<T> | null | undefined>,
  ): Promise<Indexed<T> | undefined> {
    try {
      return await direct();
    } catch (err) {
      if (!(err instanceof JetStreamApiError) || this.#closed) throw err;
      this.#roomIndex.start();
      const seq = await this.#roomIndex.barrier();
      const found = await indexed(seq, KvStore.ROOM_INDEX_WAIT_MS);
      if (found === undefined) throw err;
      this.#log.debug({ component: "store", code: err.code }, "direct read refused; answered from the index");
      return found ?? undefined;
    }
  }

  /** A user that exists and is not being deleted. */
  async #user(signPub: string): Promise<User | undefined> {
    const r = await this.#userRec(signPub);
    return r === undefined || r.value.deleting ? undefined : toUser(r.value);
  }

  async #roomRec(roomId: string): Promise<{ value: RoomRec; revision: number } | undefined> {
    return this.#orIndexed(
      () => this.#get<RoomRec>(this.#b.rooms, key.room(roomId)),
      (seq, waitMs) => this.#roomIndex.roomAt(roomId, seq, waitMs),
    );
  }

  /** A committed room record. */
  async #room(roomId: string): Promise<RoomRec | undefined> {
    const r = await this.#roomRec(roomId);
    return r?.value.committed ? r.value : undefined;
  }

  async #requireRoom(roomId: string): Promise<RoomRec> {
    const rec = await this.#room(roomId);
    if (rec === undefined) throw new NotFoundError("room", roomId);
    return rec;
  }

  /** The in-flight window: a claim younger than this may belong to a writer about to commit. */
  get #inFlightMs(): number {
    return 2 * this.#timeoutMs;
  }

  /** Whether `handle` belongs to a user (or to an addUser that may still commit). */
  async #handleOwner(handle: string): Promise<{ taken: boolean; claim?: { value: HandleClaim; revision: number } }> {
    const claim = await this.#get<HandleClaim>(this.#b.handles, key.handle(handle));
    if (claim === undefined) return { taken: false };
    const owner = await this.#userRec(claim.value.signPub);
    // A fresh claim of an existing user is a rename in flight (updateUser): taken until it commits.
    const fresh = Date.now() - claim.value.at < this.#inFlightMs;
    if (owner !== undefined) return { taken: owner.value.handle === handle || fresh, claim };
    return { taken: fresh, claim };
  }

  /** Claims `handle` for `signPub`: true when claimed, false when it belongs to someone else. */
  async #claimHandle(handle: string, signPub: string, ctx: Ctx): Promise<boolean> {
    const k = key.handle(handle);
    for (;;) {
      this.#checkDeadline(ctx);
      const data = encodeJson({ signPub, at: Date.now() } satisfies HandleClaim);
      const cur = await this.#handleOwner(handle);
      if (cur.taken) return cur.claim?.value.signPub === signPub;
      try {
        if (cur.claim === undefined) await this.#b.handles.create(k, data);
        else await this.#b.handles.update(k, data, cur.claim.revision);
        return true;
      } catch (err) {
        if (!isCasFailure(err)) throw err;
      }
    }
  }

  /** Drops the handle claim if it is still `signPub`'s (best effort: a leftover claim is ignored anyway). */
  async #releaseHandle(handle: string, signPub: string): Promise<void> {
    const k = key.handle(handle);
    const claim = await this.#get<HandleClaim>(this.#b.handles, k);
    if (claim === undefined || claim.value.signPub !== signPub) return;
    await this.#b.handles.delete(k, { previousSeq: claim.revision }).catch((err: unknown) => {
      if (!isCasFailure(err)) throw err;
    });
  }

  async #subjectTaken(subject: string, exceptRoom?: string): Promise<{ taken: boolean; revision?: number }> {
    const claim = await this.#get<SubjectClaim>(this.#b.subjects, key.subject(subject));
    if (claim === undefined) return { taken: false };
    if (claim.value.roomId === exceptRoom) return { taken: false, revision: claim.revision };
    const owner = await this.#roomRec(claim.value.roomId);
    // An uncommitted owner counts while its creator may still commit.
    const taken =
      owner !== undefined &&
      owner.value.room.subject === subject &&
      (owner.value.committed || (owner.value.lock !== null && owner.value.lock.until > Date.now()));
    return { taken, revision: claim.revision };
  }

  // ---- users ----

  addUser(u: NewUser): Promise<User> {
    return this.#run("addUser", async (ctx) => {
      const v = validateNewUser(u);
      if ((await this.#userRec(v.signPub)) !== undefined) throw new UserExistsError(v.signPub);
      const handleTaken = () =>
        new ConflictError(`the handle "${v.handle}" is already taken by another user; choose another handle`);
      if ((await this.#handleOwner(v.handle)).taken) throw handleTaken();
      if (!(await this.#claimHandle(v.handle, v.signPub, ctx))) throw handleTaken();
      const user: User = { ...v, status: "active", createdAt: Date.now(), revokedAt: null };
      try {
        await this.#b.users.create(key.user(v.signPub), encodeJson(user));
      } catch (err) {
        if (!isCasFailure(err)) throw err;
        await this.#releaseHandle(v.handle, v.signPub);
        throw new UserExistsError(v.signPub);
      }
      return user;
    });
  }

  getUser(signPub: string): Promise<User> {
    return this.#read("getUser", async () => {
      const k = lookupKey(signPub);
      const user = await this.#user(k);
      if (user === undefined) throw new NotFoundError("user", k);
      return user;
    });
  }

  async #allUsers(): Promise<User[]> {
    return (await listEntries(this.#b.users))
      .map((e) => parse<UserRec>(e.value))
      .filter((u) => !u.deleting)
      .map(toUser);
  }

  listUsers(): Promise<User[]> {
    return this.#run("listUsers", async () =>
      (await this.#allUsers()).sort((a, b) => a.createdAt - b.createdAt || byString<User>((u) => u.handle)(a, b)),
    );
  }

  revokeUser(signPub: string): Promise<User> {
    return this.#run("revokeUser", async (ctx) => {
      const k = lookupKey(signPub);
      for (;;) {
        this.#checkDeadline(ctx);
        const cur = await this.#userRec(k);
        if (cur === undefined || cur.value.deleting) throw new NotFoundError("user", k);
        if (cur.value.status !== "active") throw new ConflictError(`user ${k} is already revoked`);
        // max(): a clock that stepped back must not make a user revoked before it existed.
        const next: User = {
          ...toUser(cur.value),
          status: "revoked",
          revokedAt: Math.max(Date.now(), cur.value.createdAt),
        };
        try {
          await this.#b.users.update(key.user(k), encodeJson(next), cur.revision);
          return next;
        } catch (err) {
          if (!isCasFailure(err)) throw err;
        }
      }
    });
  }

  setKexPub(signPub: string, kexPub: string): Promise<User> {
    return this.#run("setKexPub", async (ctx) => {
      const k = lookupKey(signPub);
      const kex = requiredKexPub(kexPub);
      for (;;) {
        this.#checkDeadline(ctx);
        const cur = await this.#userRec(k);
        if (cur === undefined || cur.value.deleting) throw new NotFoundError("user", k);
        const user = toUser(cur.value);
        if (user.kexPub !== null || user.status !== "active") throw new ConflictError(kexConflict(user));
        const next: User = { ...user, kexPub: kex };
        try {
          await this.#b.users.update(key.user(k), encodeJson(next), cur.revision);
          return next;
        } catch (err) {
          if (!isCasFailure(err)) throw err;
        }
      }
    });
  }

  reinstateUser(signPub: string): Promise<User> {
    return this.#run("reinstateUser", async (ctx) => {
      const k = lookupKey(signPub);
      for (;;) {
        this.#checkDeadline(ctx);
        const cur = await this.#userRec(k);
        if (cur === undefined || cur.value.deleting) throw new NotFoundError("user", k);
        if (cur.value.status === "active") throw new ConflictError(`user ${k} is already active`);
        const next: User = { ...toUser(cur.value), status: "active", revokedAt: null };
        try {
          await this.#b.users.update(key.user(k), encodeJson(next), cur.revision);
          return next;
        } catch (err) {
          if (!isCasFailure(err)) throw err;
        }
      }
    });
  }

  updateUser(signPub: string, changes: UserChanges): Promise<User> {
    return this.#run("updateUser", async (ctx) => {
      const k = lookupKey(signPub);
      const c = validateUserChanges(changes);
      for (;;) {
        this.#checkDeadline(ctx);
        const cur = await this.#userRec(k);
        if (cur === undefined || cur.value.deleting) throw new NotFoundError("user", k);
        const user = toUser(cur.value);
        const rename = c.handle !== undefined && c.handle !== user.handle;
        if (rename && !(await this.#claimHandle(c.handle!, k, ctx))) {
          throw new ConflictError(`the handle "${c.handle}" is already taken by another user; choose another handle`);
        }
        const next: User = { ...user, ...c };
        try {
          await this.#b.users.update(key.user(k), encodeJson(next), cur.revision);
        } catch (err) {
          if (!isCasFailure(err)) throw err;
          continue; // the claim stays ours: the next round finds it and keeps it
        }
        if (rename) await this.#releaseHandle(user.handle, k);
        return next;
      }
    });
  }

  /** The committed rooms `signPub` is a member of, with its role. */
  async #roomsOf(signPub: string): Promise<Array<{ rec: RoomRec; role: RoomRole }>> {
    const keys = await listKeys(this.#b.memberof, key.memberOfAll(signPub));
    const roomIds = [...new Set(keys.map((k) => k.slice(signPub.length + 1)))];
    const recs = await Promise.all(roomIds.map((id) => this.#room(id)));
    const out: Array<{ rec: RoomRec; role: RoomRole }> = [];
    for (const rec of recs) {
      const m = rec === undefined ? undefined : memberOf(rec, signPub);
      if (rec !== undefined && m !== undefined) out.push({ rec, role: m.role });
    }
    return out;
  }

  deleteUser(signPub: string): Promise<void> {
    return this.#run("deleteUser", async (ctx) => {
      const k = lookupKey(signPub);
      // Commit point: the mark. From here the user reads as absent everywhere.
      let rec: UserRec;
      for (;;) {
        this.#checkDeadline(ctx);
        const cur = await this.#userRec(k);
        const rooms = cur === undefined || cur.value.deleting ? [] : await this.#roomsOf(k);
        checkDeleteUser(k, {
          exists: cur !== undefined && !cur.value.deleting,
          ownedRooms: rooms
            .filter((r) => r.rec.room.ownerSignPub === k)
            .map((r) => r.rec.room.id)
            .sort(),
        });
        rec = { ...cur!.value, deleting: true };
        try {
          const markedRev = await this.#b.users.update(key.user(k), encodeJson(rec), cur!.revision);
          // A createRoom that read the owner before the mark re-checks after its commit; one
          // that committed before the mark is seen here. Either way no room is left ownerless.
          const owned = (await this.#roomsOf(k))
            .filter((r) => r.rec.room.ownerSignPub === k)
            .map((r) => r.rec.room.id)
            .sort();
          if (owned.length > 0) {
            await this.#b.users.update(key.user(k), encodeJson(toUser(rec)), markedRev).catch(() => {});
            checkDeleteUser(k, { exists: true, ownedRooms: owned });
          }
          break;
        } catch (err) {
          if (!isCasFailure(err)) throw err;
        }
      }
      await this.#purgeUser(k, rec.handle, ctx);
    });
  }

  /** Removes a (marked) user's memberships, keys, index entries, handle claim and record. */
  async #purgeUser(signPub: string, handle: string, ctx: Ctx): Promise<void> {
    for (const { rec } of await this.#roomsOf(signPub)) {
      await this.#mutateRoom(rec.room.id, ctx, async (cur) => {
        if (cur === undefined || memberOf(cur, signPub) === undefined) return { next: cur ?? null, result: undefined };
        return { next: { ...cur, members: cur.members.filter((m) => m.signPub !== signPub) }, result: undefined };
      }).catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
    }
    const keys = await listKeys(this.#b.keys, key.sealedBySigner(signPub));
    await Promise.all(keys.map((k) => this.#b.keys.delete(k)));
    const index = await listKeys(this.#b.memberof, key.memberOfAll(signPub));
    await Promise.all(index.map((k) => this.#b.memberof.delete(k)));
    await this.#releaseHandle(handle, signPub);
    await this.#b.users.delete(key.user(signPub));
  }

  isAuthorized(signPub: string): Promise<boolean> {
    return this.#read("isAuthorized", async () => {
      if (!isKeyShape(signPub)) return false;
      const user = await this.#user(signPub.toLowerCase());
      return user !== undefined && user.status === "active";
    });
  }

  hasAdmin(): Promise<boolean> {
    return this.#run("hasAdmin", async () =>
      (await this.#allUsers()).some((u) => u.role === "admin" && u.status === "active"),
    );
  }

  // ---- rooms ----

  /**
   * One write to a committed room: read it, let `plan` decide (it throws refusals, having
   * written nothing), write what must precede the commit under the room's lock, then
   * commit with a CAS on the record. A lost CAS starts over; a live lock held by another
   * writer is waited out (within the deadline).
   */
  async #mutateRoom<T>(roomId: string, ctx: Ctx, plan: (cur: RoomRec | undefined) => Promise<RoomPlan<T>>): Promise<T> {
    const k = key.room(roomId);
    for (;;) {
      this.#checkDeadline(ctx);
      const cur = await this.#roomRec(roomId);
      if (cur === undefined || !cur.value.committed) {
        return (await plan(undefined)).result; // plan throws NotFound; a no-op plan returns
      }
      if (cur.value.lock !== null && cur.value.lock.until > Date.now()) {
        await sleep(RETRY_MS);
        continue;
      }
      const committed: RoomRec = { ...cur.value, lock: null };
      const p = await plan(committed);
      try {
        let rev = cur.revision;
        if (p.before) {
          const lock = { tag: crypto.randomBytes(6).toString("hex"), until: ctx.deadline + this.#timeoutMs };
          rev = await this.#b.rooms.update(k, encodeJson({ ...committed, lock }), rev);
          await p.before();
        }
        if (p.next === null) await this.#b.rooms.delete(k, { previousSeq: rev });
        else await this.#b.rooms.update(k, encodeJson({ ...p.next, lock: null }), rev);
        return p.result;
      } catch (err) {
        if (!isCasFailure(err)) throw err;
      }
    }
  }

  createRoom(r: NewRoom): Promise<Room> {
    return this.#run("createRoom", async (ctx) => {
      const v = validateNewRoom(r);
      const existing = await this.#checkNewRoom(v);
      const now = Date.now();
      const room: Room = {
        id: v.id,
        subject: v.subject,
        ownerSignPub: v.ownerSignPub,
        encrypt: v.encrypt,
        persist: v.persist,
        signMsgs: v.signMsgs,
        epoch: 1,
        createdAt: now,
      };
      const members: MemberEntry[] = [{ signPub: v.ownerSignPub, role: "owner", addedAt: now }];
      const rev = await this.#claimRoomId(room, members, existing, ctx);
      const abandon = async () => {
        await this.#b.rooms.delete(key.room(v.id), { previousSeq: rev }).catch(() => {});
      };
      await this.#claimSubject(v.id, v.subject, now, abandon);
      await this.#commitNewRoom(v, room, members, rev, abandon);
      // The owner may have been marked for deletion after our check: back out (see deleteUser).
      if ((await this.#user(v.ownerSignPub)) === undefined) {
        await this.#mutateRoom(v.id, ctx, async (cur) => ({ next: null, result: cur })).catch(() => {});
        throw new NotFoundError("user", v.ownerSignPub);
      }
      return room;
    });
  }

  /** The refusals of createRoom, before it writes anything; the id's current record, if any. */
  async #checkNewRoom(v: ValidNewRoom): Promise<{ value: RoomRec; revision: number } | undefined> {
    const existing = await this.#roomRec(v.id);
    const idTaken =
      existing !== undefined &&
      (existing.value.committed || (existing.value.lock !== null && existing.value.lock.until > Date.now()));
    checkCreateRoom(v, {
      owner: await this.#user(v.ownerSignPub),
      idTaken,
      subjectTaken: (await this.#subjectTaken(v.subject)).taken,
    });
    return existing;
  }

  /** Claims the id with an uncommitted record (or takes over one abandoned by a crash); its revision. */
  async #claimRoomId(
    room: Room,
    members: MemberEntry[],
    existing: { revision: number } | undefined,
    ctx: Ctx,
  ): Promise<number> {
    const lock = { tag: crypto.randomBytes(6).toString("hex"), until: ctx.deadline + this.#timeoutMs };
    const rk = key.room(room.id);
    try {
      const data = encodeJson({ room, members, committed: false, lock } satisfies RoomRec);
      return existing === undefined
        ? await this.#b.rooms.create(rk, data)
        : await this.#b.rooms.update(rk, data, existing.revision);
    } catch (err) {
      if (!isCasFailure(err)) throw err;
      throw new ConflictError(`a room with id ${room.id} already exists`);
    }
  }

  /** Claims the subject for the room whose id we now hold; on failure abandons the id. */
  async #claimSubject(roomId: string, subject: string, now: number, abandon: () => Promise<void>): Promise<void> {
    const sk = key.subject(subject);
    try {
      // The id is ours now, so a claim naming it is a leftover of an earlier room with this id.
      const s = await this.#subjectTaken(subject, roomId);
      if (s.taken) throw new ConflictError(`another room already uses the subject ${subject}`);
      const data = encodeJson({ roomId, at: now } satisfies SubjectClaim);
      if (s.revision === undefined) await this.#b.subjects.create(sk, data);
      else await this.#b.subjects.update(sk, data, s.revision);
    } catch (err) {
      await abandon();
      if (isCasFailure(err)) throw new ConflictError(`another room already uses the subject ${subject}`);
      throw err;
    }
  }

  /**
   * We own the id: clears keys a crashed deleteRoom of an earlier room with this id may
   * have left, writes the owner's key and index entry, then commits the record.
   */
  async #commitNewRoom(
    v: ValidNewRoom,
    room: Room,
    members: MemberEntry[],
    rev: number,
    abandon: () => Promise<void>,
  ): Promise<void> {
    try {
      const stale = await listKeys(this.#b.keys, key.sealedRoom(v.id));
      await Promise.all(stale.map((k) => this.#b.keys.delete(k)));
      if (v.ownerSealedKey !== null) {
        await this.#b.keys.put(key.sealed(v.id, v.ownerSignPub, 1), v.ownerSealedKey);
      }
      await this.#b.memberof.put(key.memberOf(v.ownerSignPub, v.id), "1");
      await this.#b.rooms.update(
        key.room(v.id),
        encodeJson({ room, members, committed: true, lock: null } satisfies RoomRec),
        rev,
      );
    } catch (err) {
      // Fails harmlessly if the commit did land (the revision moved on).
      await abandon();
      throw err;
    }
  }

  getRoom(roomId: string): Promise<Room> {
    return this.#run("getRoom", async () => (await this.#requireRoom(validateRoomId(roomId))).room);
  }

  deleteRoom(roomId: string): Promise<void> {
    return this.#run("deleteRoom", async (ctx) => {
      const id = validateRoomId(roomId);
      const gone = await this.#mutateRoom(id, ctx, async (cur) => {
        if (cur === undefined) throw new NotFoundError("room", id);
        return { next: null, result: cur };
      });
      // Committed; the rest is garbage readers already ignore.
      const keys = await listKeys(this.#b.keys, key.sealedRoom(id));
      await Promise.all(keys.map((k) => this.#b.keys.delete(k)));
      await Promise.all(gone.members.map((m) => this.#b.memberof.delete(key.memberOf(m.signPub, id))));
      const sk = key.subject(gone.room.subject);
      const claim = await this.#get<SubjectClaim>(this.#b.subjects, sk);
      if (claim !== undefined && claim.value.roomId === id) {
        await this.#b.subjects.delete(sk, { previousSeq: claim.revision }).catch((err: unknown) => {
          if (!isCasFailure(err)) throw err;
        });
      }
    });
  }

  listMembers(roomId: string): Promise<Member[]> {
    return this.#run("listMembers", async () => {
      const rec = await this.#requireRoom(validateRoomId(roomId));
      return rec.members
        .map((m) => ({ roomId: rec.room.id, ...m }))
        .sort((a, b) => a.addedAt - b.addedAt || byString<Member>((m) => m.signPub)(a, b));
    });
  }

  getMember(roomId: string, signPub: string): Promise<Member> {
    return this.#run("getMember", async () => {
      const id = validateRoomId(roomId);
      const k = lookupKey(signPub);
      const m = memberOf(await this.#requireRoom(id), k);
      if (m === undefined) throw new NotFoundError("member", memberId(id, k));
      return m;
    });
  }

  isMember(roomId: string, signPub: string): Promise<boolean> {
    return this.#run("isMember", async () => {
      if (!isRoomIdShape(roomId) || !isKeyShape(signPub)) return false;
      const rec = await this.#room(roomId);
      return rec !== undefined && memberOf(rec, signPub.toLowerCase()) !== undefined;
    });
  }

  roomIfMember(roomId: string, signPub: string): Promise<Room | undefined> {
    return this.#run("roomIfMember", async () => {
      if (!isRoomIdShape(roomId) || !isKeyShape(signPub)) return undefined;
      // The room's record holds its members: one read answers both questions.
      const rec = await this.#room(roomId);
      return rec !== undefined && memberOf(rec, signPub.toLowerCase()) !== undefined ? rec.room : undefined;
    });
  }

  addMember(roomId: string, m: NewMember): Promise<Member> {
    return this.#run("addMember", async (ctx) => {
      const id = validateRoomId(roomId);
      const v = validateNewMember(m);
      const member = await this.#mutateRoom(id, ctx, async (cur) => {
        checkAddMember(id, v, {
          room: cur?.room,
          user: await this.#user(v.signPub),
          isMember: cur !== undefined && memberOf(cur, v.signPub) !== undefined,
        });
        const rec = cur!;
        const entry: MemberEntry = { signPub: v.signPub, role: v.role, addedAt: Date.now() };
        return {
          next: { ...rec, members: [...rec.members, entry] },
          result: { roomId: id, ...entry },
          before: async () => {
            if (v.sealedKey !== null) await this.#b.keys.put(key.sealed(id, v.signPub, rec.room.epoch), v.sealedKey);
            await this.#b.memberof.put(key.memberOf(v.signPub, id), "1");
          },
        };
      });
      // A deleteUser that marked the user after our check may have missed this room: back out.
      if ((await this.#user(v.signPub)) === undefined) {
        await this.#mutateRoom(id, ctx, async (cur) => ({
          next: cur === undefined ? null : { ...cur, members: cur.members.filter((x) => x.signPub !== v.signPub) },
          result: undefined,
        })).catch(() => {});
        throw new NotFoundError("user", v.signPub);
      }
      return member;
    });
  }

  removeMember(roomId: string, signPub: string, rekey?: Rekey): Promise<void> {
    return this.#run("removeMember", async (ctx) => {
      const id = validateRoomId(roomId);
      const k = lookupKey(signPub);
      const v = rekey === undefined ? undefined : validateRekey(rekey);
      await this.#mutateRoom(id, ctx, async (cur) => {
        checkRemoveMember(id, k, { room: cur?.room, member: cur === undefined ? undefined : memberOf(cur, k) });
        const next = { ...cur!, members: cur!.members.filter((x) => x.signPub !== k) };
        return v === undefined ? { next, result: undefined } : { ...this.#rekeyPlan(id, v, next), result: undefined };
      });
      // The index entry goes after the commit: a stale one is ignored by readers.
      await this.#b.memberof.delete(key.memberOf(k, id));
    });
  }

  transferRoom(roomId: string, toSignPub: string): Promise<Room> {
    return this.#run("transferRoom", async (ctx) => {
      const id = validateRoomId(roomId);
      const to = lookupKey(toSignPub);
      return this.#mutateRoom(id, ctx, async (cur) => {
        checkTransferRoom(id, to, {
          room: cur?.room,
          member: cur === undefined ? undefined : memberOf(cur, to),
          user: await this.#user(to),
        });
        const room: Room = { ...cur!.room, ownerSignPub: to };
        const members = cur!.members.map((m) => {
          const role: RoomRole = m.signPub === to ? "owner" : "member";
          return { ...m, role };
        });
        return { next: { ...cur!, room, members }, result: room };
      });
    });
  }

  rekey(roomId: string, r: Rekey): Promise<Room> {
    return this.#run("rekey", async (ctx) => {
      const id = validateRoomId(roomId);
      const v = validateRekey(r);
      return this.#mutateRoom(id, ctx, async (cur) => this.#rekeyPlan(id, v, cur));
    });
  }

  /** `cur` (already changed by the caller, e.g. a member removed) moved to the next epoch. */
  #rekeyPlan(id: string, v: ValidRekey, cur: RoomRec | undefined): RoomPlan<Room> {
    checkRekey(id, v, { room: cur?.room, members: cur === undefined ? [] : cur.members.map((x) => x.signPub) });
    const room: Room = { ...cur!.room, epoch: cur!.room.epoch + 1 };
    return {
      next: { ...cur!, room },
      result: room,
      // Keys of the new epoch are invisible until the commit raises the room's epoch.
      before: async () => {
        await Promise.all(v.sealedKeys.map((s) => this.#b.keys.put(key.sealed(id, s.signPub, room.epoch), s.sealed)));
      },
    };
  }

  getSealedKey(roomId: string, signPub: string, epoch?: number): Promise<SealedKey> {
    return this.#run("getSealedKey", async () => {
      const id = validateRoomId(roomId);
      const k = lookupKey(signPub);
      const at = epoch === undefined ? null : validateEpoch(epoch);
      const rec = await this.#requireRoom(id);
      const missing = () => new NotFoundError("sealed key", `${memberId(id, k)}${at === null ? "" : `@${at}`}`);
      let e = at;
      if (e === null) {
        // A member holds the current epoch's key (a rekey seals one to every member): one
        // get. Only a member added by an older epoch's key path falls back to a listing.
        const current = live(await this.#b.keys.get(key.sealed(id, k, rec.room.epoch)));
        if (current !== null) return { roomId: id, epoch: rec.room.epoch, signPub: k, sealed: current.string() };
        const epochs = (await listKeys(this.#b.keys, key.sealedOf(id, k)))
          .map(parseSealedKey)
          .filter((x) => x !== null && x.epoch <= rec.room.epoch)
          .map((x) => x!.epoch);
        if (epochs.length === 0) throw missing();
        e = Math.max(...epochs);
      }
      if (e > rec.room.epoch) throw missing();
      const entry = live(await this.#b.keys.get(key.sealed(id, k, e)));
      if (entry === null) throw missing();
      return { roomId: id, epoch: e, signPub: k, sealed: entry.string() };
    });
  }

  /** How long listRoomsFor waits for the rooms index to catch up before reading the records directly. */
  static readonly ROOM_INDEX_WAIT_MS = 250;

  listRoomsFor(signPub: string): Promise<Array<Room & { role: RoomRole }>> {
    return this.#run("listRoomsFor", async (ctx) => {
      const k = lookupKey(signPub);
      this.#roomIndex.start();
      // Every write acknowledged before this call is below the barrier's sequence.
      const seq = await this.#attempts(ctx, () => this.#roomIndex.barrier());
      const wait = Math.min(KvStore.ROOM_INDEX_WAIT_MS, ctx.deadline - Date.now());
      const indexed = await this.#roomIndex.roomsOf(k, seq, wait);
      return (indexed ?? (await this.#roomsOf(k)))
        .map(({ rec, role }) => ({ ...rec.room, role }))
        .sort((a, b) => a.createdAt - b.createdAt || byString<Room>((x) => x.id)(a, b));
    });
  }

  listRooms(): Promise<Room[]> {
    return this.#run("listRooms", async () =>
      (await listEntries(this.#b.rooms))
        .map((e) => parse<RoomRec>(e.value))
        .filter((r) => r.committed) // a room half-created by a crashed writer is not a room yet
        .map((r) => r.room)
        .sort((a, b) => a.createdAt - b.createdAt || byString<Room>((x) => x.id)(a, b)),
    );
  }

  // ---- invites ----

  async #allInvites(): Promise<Array<{ value: Invite; revision: number }>> {
    return (await listEntries(this.#b.invites, key.invitesAll)).map((e) => ({
      value: parse<Invite>(e.value),
      revision: e.revision,
    }));
  }

  createInvite(i: NewInvite): Promise<Invite> {
    return this.#run("createInvite", async (ctx) => {
      const v = validateNewInvite(i);
      const tokenHash = hashInviteToken(v.token);
      const now = Date.now();
      const id = inviteIdOf(tokenHash);
      // Gets by key and one filtered listing: the cost does not grow with the number of invites.
      const [byHash, byId, owner, index] = await Promise.all([
        this.#get<Invite>(this.#b.invites, key.invite(tokenHash)),
        // No listing fallback here: a token is refused by its own key above, and an id shared
        // with an older, unclaimed invite would take a 48-bit hash prefix collision.
        this.#inviteByIdClaim(id),
        this.#handleOwner(v.handle),
        this.#handleIndex(v.handle, now),
      ]);
      checkCreateInvite(v, {
        tokenUsed: byHash !== undefined || byId !== undefined,
        handleIsUser: owner.taken,
        handleHasOpenInvite: index.live,
      });
      await this.#claimInviteId(id, tokenHash);
      const invite: Invite = {
        id,
        tokenHash,
        handle: v.handle,
        role: v.role,
        createdBy: v.createdBy,
        createdAt: now,
        expiresAt: now + v.ttlMs,
        status: "open",
        spentBy: null,
        spentAt: null,
      };
      try {
        await this.#b.invites.create(key.invite(tokenHash), encodeJson(invite));
      } catch (err) {
        if (!isCasFailure(err)) throw err;
        throw new ConflictError("this invite token was used before; generate a new token");
      }
      await this.#indexInvite(v, tokenHash, ctx);
      return invite;
    });
  }

  /** The handle's index entry and whether the invite it names can still be consumed. */
  async #handleIndex(handle: string, now: number): Promise<{ live: boolean; revision?: number }> {
    const idx = await this.#get<InviteHandleIndex>(this.#b.invites, key.inviteOfHandle(handle));
    if (idx === undefined) return { live: false };
    const named = await this.#get<Invite>(this.#b.invites, key.invite(idx.value.tokenHash));
    const live = named !== undefined && named.value.handle === handle && inviteIsLive(named.value, now);
    return { live, revision: idx.revision };
  }

  /**
   * Points the handle's index at our fresh invite by compare-and-swap. A racing creator
   * whose swap landed first holds a live invite: ours is withdrawn, so at most one survives.
   */
  async #indexInvite(v: ValidNewInvite, tokenHash: string, ctx: Ctx): Promise<void> {
    const ik = key.invite(tokenHash);
    const xk = key.inviteOfHandle(v.handle);
    try {
      for (;;) {
        this.#checkDeadline(ctx);
        const index = await this.#handleIndex(v.handle, Date.now());
        if (index.live) {
          await this.#b.invites.delete(ik);
          checkCreateInvite(v, { tokenUsed: false, handleIsUser: false, handleHasOpenInvite: true });
        }
        const data = encodeJson({ tokenHash } satisfies InviteHandleIndex);
        try {
          if (index.revision === undefined) await this.#b.invites.create(xk, data);
          else await this.#b.invites.update(xk, data, index.revision);
          return;
        } catch (err) {
          if (!isCasFailure(err)) throw err;
        }
      }
    } catch (err) {
      // Unindexed, the invite would not block a second one for its handle: withdraw it.
      if (!(err instanceof ConflictError)) await this.#b.invites.delete(ik).catch(() => {});
      throw err;
    }
  }

  /** How many deletes of a sweep run at once, each batch within its own deadline. */
  static readonly SWEEP_BATCH = 200;
  /** The sweep's one listing may take this many operation timeouts. */
  static readonly SWEEP_LIST_FACTOR = 10;

  async sweepInvites(before: number): Promise<number> {
    // One listing of the whole bucket: invites and their index entries with revisions, no get per key.
    const doomed = await this.#run(
      "sweepInvites",
      async () => {
        const cut = validateSweepBefore(before);
        const now = Date.now();
        const all = await listEntries(this.#b.invites);
        const at = new Map(all.map((e) => [e.key, e]));
        const out: Array<{ key: string; revision: number }> = [];
        for (const e of all) {
          if (e.key.split(".").length !== 2) continue;
          const inv = parse<Invite>(e.value);
          if (!inviteIsSweepable(inv, cut, now)) continue;
          out.push({ key: e.key, revision: e.revision });
          // Index entries that still name this invite go with it.
          for (const xk of [key.inviteOfId(inv.id), key.inviteOfHandle(inv.handle)]) {
            const x = at.get(xk);
            if (x !== undefined && parse<{ tokenHash: string }>(x.value).tokenHash === inv.tokenHash) {
              out.push({ key: xk, revision: x.revision });
            }
          }
        }
        return out;
        // A background sweep over the whole bucket: bounded, but not by one request's deadline.
      },
      KvStore.SWEEP_LIST_FACTOR * this.#timeoutMs,
    );
    let removed = 0;
    for (let i = 0; i < doomed.length; i += KvStore.SWEEP_BATCH) {
      const batch = doomed.slice(i, i + KvStore.SWEEP_BATCH);
      removed += await this.#run("sweepInvites", async () => {
        const done = await Promise.all(batch.map((d) => this.#deleteAt(d.key, d.revision)));
        return batch.filter((d, j) => done[j] && d.key.split(".").length === 2).length;
      });
    }
    return removed;
  }

  /** Deletes `k` if it is still at `revision` (an invite re-opened meanwhile is kept); whether it did. */
  async #deleteAt(k: string, revision: number): Promise<boolean> {
    try {
      await this.#b.invites.delete(k, { previousSeq: revision });
      return true;
    } catch (err) {
      if (isCasFailure(err)) return false;
      throw err;
    }
  }

  listInvites(): Promise<Invite[]> {
    return this.#run("listInvites", async () =>
      (await this.#allInvites())
        .map((x) => x.value)
        .sort((a, b) => a.createdAt - b.createdAt || byString<Invite>((x) => x.id)(a, b)),
    );
  }

  /** The invite holding `id`, through its id claim (one get, no listing). */
  async #inviteByIdClaim(id: string): Promise<{ value: Invite; revision: number } | undefined> {
    const claim = await this.#get<InviteIdIndex>(this.#b.invites, key.inviteOfId(id));
    return claim === undefined ? undefined : this.#get<Invite>(this.#b.invites, key.invite(claim.value.tokenHash));
  }

  /** As #inviteByIdClaim; an invite made before id claims existed is found by a filtered listing (rare: cancel by id). */
  async #inviteById(id: string): Promise<{ value: Invite; revision: number } | undefined> {
    const claimed = await this.#inviteByIdClaim(id);
    if (claimed !== undefined) return claimed;
    const entries = await listEntries(this.#b.invites, key.inviteById(id));
    const e = entries[0];
    return e === undefined ? undefined : { value: parse<Invite>(e.value), revision: e.revision };
  }

  /** Claims `id` for `tokenHash`, taking over a claim whose invite is gone; ConflictError when another invite holds it. */
  async #claimInviteId(id: string, tokenHash: string): Promise<void> {
    const xk = key.inviteOfId(id);
    const data = encodeJson({ tokenHash } satisfies InviteIdIndex);
    const used = () => new ConflictError("this invite token was used before; generate a new token");
    try {
      await this.#b.invites.create(xk, data);
      return;
    } catch (err) {
      if (!isCasFailure(err)) throw err;
    }
    const claim = await this.#get<InviteIdIndex>(this.#b.invites, xk);
    if (claim === undefined || (await this.#get<Invite>(this.#b.invites, key.invite(claim.value.tokenHash)))) {
      throw used();
    }
    await this.#b.invites.update(xk, data, claim.revision).catch((err: unknown) => {
      throw isCasFailure(err) ? used() : err;
    });
  }

  cancelInvite(idOrToken: string): Promise<Invite> {
    return this.#run("cancelInvite", async (ctx) => {
      const ref = parseInviteRef(idOrToken);
      // A token is never echoed: a miss by token is named by the id it would have had.
      const shown = ref.by === "id" ? ref.id : inviteIdOf(ref.tokenHash);
      for (;;) {
        this.#checkDeadline(ctx);
        const cur =
          ref.by === "id"
            ? await this.#inviteById(ref.id)
            : await this.#get<Invite>(this.#b.invites, key.invite(ref.tokenHash));
        const invite = checkCancelInvite(shown, cur?.value);
        const next: Invite = { ...invite, status: "cancelled" };
        try {
          await this.#b.invites.update(key.invite(invite.tokenHash), encodeJson(next), cur!.revision);
          return next;
        } catch (err) {
          if (!isCasFailure(err)) throw err;
        }
      }
    });
  }

  consumeInvite(token: string, r: Registration): Promise<User> {
    return this.#run("consumeInvite", async (ctx) => {
      const tokenHash = hashInviteToken(validateInviteToken(token));
      const v = validateRegistration(r);
      const ik = key.invite(tokenHash);
      for (;;) {
        this.#checkDeadline(ctx);
        const spending = await this.#spendInvite(ik, v);
        if (spending === undefined) continue;
        // Committed: the token stays spent even though no user was made.
        if (spending.decision === "user_exists") throw new UserExistsError(v.signPub);
        return await this.#registerInvited(ik, spending.invite, spending.spentRev, v, ctx);
      }
    });
  }

  /**
   * One attempt at the single-use guarantee: only the caller whose CAS lands on the open
   * revision spends the invite. Undefined when it moved meanwhile and must be read again.
   */
  async #spendInvite(
    ik: string,
    v: ValidRegistration,
  ): Promise<{ invite: Invite; decision: ConsumeDecision; spentRev: number } | undefined> {
    const cur = await this.#get<Invite>(this.#b.invites, ik);
    const decision = await this.#decideConsume(ik, cur, v);
    if (decision === undefined) return undefined;
    const invite = cur!.value;
    const spent: Invite = { ...invite, status: "spent", spentBy: v.signPub, spentAt: Date.now() };
    try {
      return { invite, decision, spentRev: await this.#b.invites.update(ik, encodeJson(spent), cur!.revision) };
    } catch (err) {
      if (!isCasFailure(err)) throw err;
      return undefined; // re-read: it is spent or cancelled now, and decideConsume says so
    }
  }

  /** decideConsume on what we read; undefined when a racing registrant makes the answer stale. */
  async #decideConsume(
    ik: string,
    cur: { value: Invite; revision: number } | undefined,
    v: ValidRegistration,
  ): Promise<ConsumeDecision | undefined> {
    const invite = cur?.value;
    try {
      return decideConsume(invite, v.now, {
        userExists: (await this.#userRec(v.signPub)) !== undefined,
        handleTaken: invite !== undefined && (await this.#handleOwner(invite.handle)).taken,
      });
    } catch (err) {
      // A racing registrant spends the invite (CAS) before it claims the handle: if
      // the invite moved since we read it, the handle we saw taken is likely that
      // winner's, and the honest answer is "spent" — read it again.
      if (err instanceof InviteRefusedError && err.reason === "handle_taken") {
        const again = await this.#get<Invite>(this.#b.invites, ik);
        if (again?.revision !== cur?.revision) return undefined;
      }
      throw err;
    }
  }

  /** The invite is spent: claim its handle and create the user; a lost handle re-opens the token. */
  async #registerInvited(ik: string, invite: Invite, spentRev: number, v: ValidRegistration, ctx: Ctx): Promise<User> {
    if (!(await this.#claimHandle(invite.handle, v.signPub, ctx))) {
      await this.#b.invites.update(ik, encodeJson(invite), spentRev).catch(() => {});
      throw new InviteRefusedError("handle_taken");
    }
    const user: User = {
      signPub: v.signPub,
      kexPub: v.kexPub,
      handle: invite.handle,
      role: invite.role,
      status: "active",
      createdAt: Date.now(),
      revokedAt: null,
    };
    try {
      await this.#b.users.create(key.user(v.signPub), encodeJson(user));
    } catch (err) {
      if (!isCasFailure(err)) throw err;
      // Registered meanwhile by another path: like SQLite, the token stays spent.
      await this.#releaseHandle(invite.handle, v.signPub);
      throw new UserExistsError(v.signPub);
    }
    return user;
  }

  // ---- whole state ----

  /**
   * The whole state, consistent while writers run (an online backup reads it). KV has no
   * multi-bucket transactions, so the buckets are read in the order the commit rule makes
   * safe: invites, then the room records, then the users (the commit points, "t1"), then
   * the sealed keys, which every committed room's writes put in place before its commit.
   * Room and user records are then read once more: a room or user deleted meanwhile (its
   * keys may already be gone) is left out, with its memberships and keys. The result is
   * the state at t1 less what was deleted while the read ran; keys of epochs committed
   * after t1 are left out too. `timeoutMs` bounds the whole read (default: the store's).
   */
  snapshot(opts: { timeoutMs?: number } = {}): Promise<Snapshot> {
    return this.#run(
      "snapshot",
      async () => {
        const invites = await this.#allInvites();
        const roomRecs = (await listEntries(this.#b.rooms)).map((e) => parse<RoomRec>(e.value));
        const users = await this.#allUsers();
        const keyEntries = await listEntries(this.#b.keys);
        const [roomsNow, usersNow] = await Promise.all([listEntries(this.#b.rooms), this.#allUsers()]);
        const stillRooms = new Set(
          roomsNow.map((e) => parse<RoomRec>(e.value)).flatMap((r) => (r.committed ? [r.room.id] : [])),
        );
        const stillUsers = new Set(usersNow.map((u) => u.signPub));
        const gone = new Set(users.flatMap((u) => (stillUsers.has(u.signPub) ? [] : [u.signPub])));
        const kept = users.filter((u) => !gone.has(u.signPub));
        const rooms = roomRecs.filter((r) => r.committed && stillRooms.has(r.room.id));
        const epochOf = new Map(rooms.map((r) => [r.room.id, r.room.epoch]));
        const sealedKeys: SealedKey[] = [];
        for (const e of keyEntries) {
          const p = parseSealedKey(e.key);
          const roomEpoch = p === null ? undefined : epochOf.get(p.roomId);
          if (p === null || roomEpoch === undefined || p.epoch > roomEpoch || gone.has(p.signPub)) continue;
          sealedKeys.push({ roomId: p.roomId, epoch: p.epoch, signPub: p.signPub, sealed: e.string() });
        }
        return {
          version: 1,
          users: kept.sort(byString((u) => u.signPub)),
          rooms: rooms.map((r) => r.room).sort(byString((r) => r.id)),
          members: rooms
            .flatMap((r) => r.members.filter((m) => !gone.has(m.signPub)).map((m) => ({ roomId: r.room.id, ...m })))
            .sort((a, b) => byString<Member>((m) => m.roomId)(a, b) || byString<Member>((m) => m.signPub)(a, b)),
          sealedKeys: sealedKeys.sort(
            (a, b) =>
              byString<SealedKey>((k) => k.roomId)(a, b) ||
              a.epoch - b.epoch ||
              byString<SealedKey>((k) => k.signPub)(a, b),
          ),
          invites: invites.map((x) => x.value).sort(byString((x) => x.tokenHash)),
        };
      },
      opts.timeoutMs,
    );
  }

  /** Pause before a broken watch is made again (the cluster may be electing a leader). */
  static readonly REWATCH_MS = 250;

  watchUsers(onChange: (signPub: string | null) => void): UserWatch {
    let stopped = false;
    let iter: { stop(): void } | undefined;
    const watch: UserWatch = {
      stop: () => {
        stopped = true;
        iter?.stop();
        this.#watches.delete(watch);
      },
    };
    this.#watches.add(watch);
    void (async () => {
      for (let first = true; !stopped && !this.#closed; first = false) {
        // Changes while no watch ran may have been missed: say so once.
        if (!first) onChange(null);
        try {
          const it = await this.#b.users.watch({ include: KvWatchInclude.UpdatesOnly, headers_only: true });
          iter = it;
          if (stopped) it.stop();
          for await (const e of it) onChange(e.key);
        } catch (err) {
          this.#log.debug({ err: (err as Error).message }, "the users watch broke; watching again");
        }
        if (!stopped) await sleep(KvStore.REWATCH_MS);
      }
    })();
    return watch;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#watches]) w.stop();
    this.#roomIndex.stop();
    if (this.#owned && !this.#nc.isClosed()) {
      await this.#nc
        .close()
        .catch((err: unknown) => this.#log.warn({ err }, "closing the KV store's connection failed"));
    }
  }
}
