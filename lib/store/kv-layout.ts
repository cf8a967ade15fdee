import type { KvEntry, KvStatus, KvWatchEntry, KvWatchOptions } from "@nats-io/kv";
import type { Invite, Member, Room, RoomRole, User } from "./types.ts";

/**
 * How the KV backend lays its state out over JetStream KV. Shared by the store (kv.ts)
 * and the snapshot importer (snapshot.ts), which writes records as they are.
 *
 * One bucket, `<prefix>users`, holds every record, each kind under its own key prefix
 * (a "section"): users at their bare signing key, everything else at `<section>.<key>`.
 * One bucket is one Raft group: a write that touches several records (a user and its
 * handle claim; a room, its subject claim, keys and index entries) then waits for one
 * leader, so a SIGKILLed leader costs one election, not the slowest of several. Per-key
 * compare-and-swap is unchanged (it checks the subject's last sequence, not the stream's).
 *
 * Before this layout each section was a bucket of its own (`<prefix>rooms`, ...): the
 * store moves such data into the one bucket when it opens (kv-relayout.ts).
 *
 * KV keys allow `[-/_=.a-zA-Z0-9]` and `.` separates tokens (a filter matches whole
 * tokens). Signing keys (lowercase hex), room ids (`[A-Za-z0-9_-]`), epochs (decimal)
 * and invite hashes (hex) are valid tokens as they are; handles and subjects may
 * contain dots or end in one, so they are hex-encoded.
 */

export const BUCKETS = ["users", "handles", "rooms", "subjects", "memberof", "keys", "invites"] as const;
export type BucketName = (typeof BUCKETS)[number];
export type Buckets = Record<BucketName, KvView>;

/** The sections that were buckets of their own in the previous layout (users was, and stays, the bucket). */
export const LEGACY_SECTIONS = BUCKETS.filter((b) => b !== "users");

export const DEFAULT_BUCKET_PREFIX = "unibus_";

/** A bucket name: the stream behind it is `KV_<name>`, so only `[A-Za-z0-9_-]`. */
export function bucketName(prefix: string, name: BucketName): string {
  return `${prefix}${name}`;
}

/** The one bucket of the current layout. */
export function controlBucketName(prefix: string): string {
  return bucketName(prefix, "users");
}

/** An iterator the store reads to its end or stops (nats.js' QueuedIterator is one). */
export interface Stoppable<T> extends AsyncIterable<T> {
  stop(): void;
}

/**
 * What the store uses of a KV bucket: a real bucket (the previous layout) satisfies it,
 * and so does a `Section` of the one bucket.
 */
export interface KvView {
  get(k: string): Promise<KvEntry | null>;
  create(k: string, data: Uint8Array | string): Promise<number>;
  update(k: string, data: Uint8Array | string, version: number): Promise<number>;
  put(k: string, data: Uint8Array | string, opts?: { previousSeq?: number }): Promise<number>;
  delete(k: string, opts?: { previousSeq?: number }): Promise<void>;
  keys(filter?: string | string[]): Promise<Stoppable<string>>;
  history(opts?: { key?: string | string[] }): Promise<Stoppable<KvEntry>>;
  watch(opts?: KvWatchOptions): Promise<Stoppable<KvWatchEntry>>;
  status(): Promise<KvStatus>;
}

/** Where each kind of record lives in the one bucket: users bare (one token), the rest under `<section>.`. */
export function sectionPrefix(name: BucketName): string {
  return name === "users" ? "" : `${name}.`;
}

/**
 * One section of the bucket, seen as a bucket: keys go in with the section's prefix and
 * come out without it, and "everything" means the section's filter. Users are every
 * one-token key (`*`): every other section's keys have two tokens or more.
 */
export class Section implements KvView {
  /** The bucket this section is part of. */
  readonly bucket: KvView;
  readonly #kv: KvView;
  readonly #prefix: string;
  readonly #all: string;

  constructor(kv: KvView, name: BucketName) {
    this.bucket = kv;
    this.#kv = kv;
    this.#prefix = sectionPrefix(name);
    this.#all = name === "users" ? "*" : `${this.#prefix}>`;
  }

  #in = (k: string): string => this.#prefix + k;
  #filter = (f: string | string[] | undefined): string | string[] =>
    f === undefined ? this.#all : Array.isArray(f) ? f.map(this.#in) : this.#in(f);
  #out = <E extends KvEntry>(e: E): E => {
    const key = e.key.slice(this.#prefix.length);
    // Not a spread: json() and string() live on the entry's prototype.
    return Object.create(e, { key: { value: key, enumerable: true } }) as E;
  };

  async get(k: string): Promise<KvEntry | null> {
    const e = await this.#kv.get(this.#in(k));
    return e === null ? null : this.#out(e);
  }
  create(k: string, data: Uint8Array | string): Promise<number> {
    return this.#kv.create(this.#in(k), data);
  }
  update(k: string, data: Uint8Array | string, version: number): Promise<number> {
    return this.#kv.update(this.#in(k), data, version);
  }
  put(k: string, data: Uint8Array | string, opts?: { previousSeq?: number }): Promise<number> {
    return this.#kv.put(this.#in(k), data, opts);
  }
  delete(k: string, opts?: { previousSeq?: number }): Promise<void> {
    return this.#kv.delete(this.#in(k), opts);
  }
  async keys(filter?: string | string[]): Promise<Stoppable<string>> {
    const n = this.#prefix.length;
    return mapped(await this.#kv.keys(this.#filter(filter)), (k) => k.slice(n));
  }
  async history(opts?: { key?: string | string[] }): Promise<Stoppable<KvEntry>> {
    return mapped(await this.#kv.history({ ...opts, key: this.#filter(opts?.key) }), this.#out);
  }
  async watch(opts?: KvWatchOptions): Promise<Stoppable<KvWatchEntry>> {
    return mapped(await this.#kv.watch({ ...opts, key: this.#filter(opts?.key) }), this.#out);
  }
  status(): Promise<KvStatus> {
    return this.#kv.status();
  }
}

function mapped<A, B>(it: Stoppable<A>, f: (a: A) => B): Stoppable<B> {
  return {
    stop: () => it.stop(),
    async *[Symbol.asyncIterator]() {
      for await (const a of it) yield f(a);
    },
  };
}

/** Every section of the one bucket. */
export function sectionsOf(kv: KvView): Buckets {
  return Object.fromEntries(BUCKETS.map((b) => [b, new Section(kv, b)])) as unknown as Buckets;
}

export const hexOf = (s: string): string => Buffer.from(s, "utf8").toString("hex");

export const key = {
  user: (signPub: string) => signPub,
  handle: (handle: string) => hexOf(handle),
  room: (roomId: string) => roomId,
  subject: (subject: string) => hexOf(subject),
  memberOf: (signPub: string, roomId: string) => `${signPub}.${roomId}`,
  memberOfAll: (signPub: string) => `${signPub}.*`,
  sealed: (roomId: string, signPub: string, epoch: number) => `${roomId}.${signPub}.${epoch}`,
  sealedOf: (roomId: string, signPub: string) => `${roomId}.${signPub}.*`,
  sealedRoom: (roomId: string) => `${roomId}.>`,
  sealedBySigner: (signPub: string) => `*.${signPub}.*`,
  // id (12 hex) as its own token, so `cancelInvite(id)` finds the invite with a filter.
  invite: (tokenHash: string) => `${tokenHash.slice(0, 12)}.${tokenHash.slice(12)}`,
  inviteById: (id: string) => `${id}.*`,
  // Invites are two tokens; the index entries three, so `invitesAll` never lists them.
  invitesAll: "*.*",
  inviteOfHandle: (handle: string) => `idx.handle.${hexOf(handle)}`,
  inviteOfId: (id: string) => `idx.id.${id}`,
};

/**
 * `invites` idx.id.<id>: the tokenHash holding an invite id, claimed with `kv.create`
 * before the invite is written, so two tokens never share an id and `cancelInvite(id)`
 * is one get. A claim whose invite is gone (swept, or its writer died) may be taken over.
 */
export interface InviteIdIndex {
  tokenHash: string;
}

/**
 * `invites` idx.handle.<hex(handle)>: the tokenHash of the handle's newest invite, so
 * createInvite checks "an open invite for this handle" with one get instead of a scan.
 * It is advanced by compare-and-swap after the invite is written, which also orders two
 * racing creators: the one whose swap lands first keeps its invite, the other withdraws.
 */
export interface InviteHandleIndex {
  tokenHash: string;
}

/** `users`: the User, plus a mark while `deleteUser` is cleaning up (then the user reads as absent). */
export type UserRec = User & { deleting?: true };

/**
 * `handles` / `subjects`: a uniqueness claim, made with `kv.create` before the owning
 * record is written. A claim counts only while its owner record exists with the same
 * handle/subject, or while it is younger than the in-flight window (its writer may
 * still be about to commit); anything else is left over from an interrupted write and
 * may be taken over by compare-and-swap.
 */
export interface HandleClaim {
  signPub: string;
  at: number;
}
export interface SubjectClaim {
  roomId: string;
  at: number;
}

export type MemberEntry = Omit<Member, "roomId">;

/**
 * `rooms`: the room with its member list. Keeping members inside the room record makes
 * the record the single commit point of every room write: add/remove member and rekey
 * are one compare-and-swap on it, so a reader never sees a half-applied change.
 * `committed: false` is a room still being created (readers treat it as absent).
 * `lock` serialises writers that must write sealed keys before the commit, so two of
 * them never overwrite each other's keys; a lock older than `until` was abandoned.
 */
export interface RoomRec {
  room: Room;
  members: MemberEntry[];
  committed: boolean;
  lock: { tag: string; until: number } | null;
}

export function memberOf(rec: RoomRec, signPub: string): Member | undefined {
  const m = rec.members.find((x) => x.signPub === signPub);
  return m === undefined ? undefined : { roomId: rec.room.id, ...m };
}

export function roomWithRole(rec: RoomRec, role: RoomRole): Room & { role: RoomRole } {
  return { ...rec.room, role };
}

export function parseSealedKey(k: string): { roomId: string; signPub: string; epoch: number } | null {
  const parts = k.split(".");
  if (parts.length !== 3) return null;
  const epoch = Number(parts[2]);
  if (!Number.isSafeInteger(epoch) || epoch < 1) return null;
  return { roomId: parts[0]!, signPub: parts[1]!, epoch };
}

export type { Invite };

const enc = new TextEncoder();
export const encodeJson = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v));

/** A live entry (not a delete or purge marker), or null. */
export function live(e: KvEntry | null): KvEntry | null {
  return e !== null && e.operation === "PUT" ? e : null;
}

/** Every key of a bucket (optionally filtered), deleted ones excluded. */
export async function listKeys(kv: KvView, filter?: string | string[]): Promise<string[]> {
  const out: string[] = [];
  const it = await kv.keys(filter);
  for await (const k of it) out.push(k);
  return out;
}

/**
 * Every live entry under `filter`, values included, from one ordered consumer (the
 * bucket keeps one revision per key): a get per key would cost a round trip each,
 * which at ten thousand keys no longer fits an operation's deadline.
 */
export async function listEntries(kv: KvView, filter?: string | string[]): Promise<KvEntry[]> {
  const last = new Map<string, KvEntry>();
  const it = await kv.history(filter === undefined ? {} : { key: filter });
  for await (const e of it) last.set(e.key, e); // in stream order: a later revision wins
  return [...last.values()].filter((e) => e.operation === "PUT");
}

export const byString =
  <T>(f: (x: T) => string) =>
  (a: T, b: T): number => {
    const x = f(a);
    const y = f(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };
