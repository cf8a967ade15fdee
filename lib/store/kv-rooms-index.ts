/**
 * Who is in which room, kept in memory from a watch on the `rooms` bucket, so that
 * `listRoomsFor` — on the connect path, through the auth callout — is a map lookup and
 * not a temporary consumer plus a get per room (1,000 rooms: ~270 ms p50 before).
 *
 * Why a watch and not a persisted per-identity index: the room record is the single
 * commit point of every membership change (kv.ts), and KV has no multi-key write, so a
 * second persisted record could only be written before or after that commit — a window
 * in which it would grant a room its member has already left. Derived from the room
 * records themselves, the index cannot disagree with them, and needs no migration.
 *
 * Staleness can only deny: each answer waits until the watch has applied a marker written
 * to the bucket for the call (one replicated write, `barrier`), so every write acknowledged
 * before the call is reflected, and a node without a quorum grants nothing. A watch that does not catch up within the
 * wait gives no answer, and the caller reads the records directly instead.
 *
 * In the one-bucket layout the same watch also keeps the users and every room record with
 * its revision, for the store to read when a direct read is refused because the cluster has
 * no JetStream meta leader: nats-server answers a stream message get (`STREAM.MSG.GET`) with
 * "JetStream cluster not available" on every node while the meta group elects (seen: 4-9 s
 * after the meta leader is SIGKILLed), although the stream's own leader is alive. A publish
 * (the marker) and a running watch do not involve the meta group, so the answer stays
 * available. For the same reason the marker is all a call costs: the stream's identity
 * (which tells a recreated bucket) is read in the background, never on a caller's path.
 */
import type { JetStreamManager, MsgRequest } from "@nats-io/jetstream";
import type { Logger } from "../log/index.ts";
import { type KvView, memberOf, type RoomRec, sectionPrefix, type UserRec } from "./kv-layout.ts";
import { bounded } from "./kv-ops.ts";
import type { RoomRole } from "./types.ts";

/** The barrier's marker key in the rooms section: its dot keeps it out of the room ids' shape (`[A-Za-z0-9_-]`). */
export const BARRIER_KEY = "_unibus.barrier";

/** One change of a key, from the watch or read by sequence. */
export interface Change {
  key: string;
  operation: "PUT" | "DEL" | "PURGE";
  value: Uint8Array;
  revision: number;
}

/** What the index watches, and how it tells the records apart. */
export interface IndexSource {
  /** Watched (all of it: one filter, so that every stream sequence is a change the index sees), and where the marker goes. */
  kv: KvView;
  /** Whether users are indexed too (the one-bucket layout). */
  users: boolean;
  barrierKey: string;
  /** A key's record: a room's id, a user's key, or null (not indexed). */
  kind(key: string): { room: string } | { user: string } | null;
  /**
   * The bucket's first change at or after stream sequence `seq` (null: none), read without
   * a consumer: how the index catches up while its watch is broken and cannot be made again.
   */
  next?: (seq: number) => Promise<Change | null>;
}

/** Reads a bucket's stream by sequence (STREAM.MSG.GET with next_by_subj: the stream leader answers, no consumer). */
export function sequenceReader(jsm: JetStreamManager, bucket: string): (seq: number) => Promise<Change | null> {
  const prefix = `$KV.${bucket}.`;
  return async (seq) => {
    // next_by_subj is in the server's API (2.10+), not in the client's request type.
    const query = { seq, next_by_subj: `${prefix}>` } as unknown as MsgRequest;
    const m = await jsm.streams.getMessage(`KV_${bucket}`, query);
    if (m === null) return null;
    const op = m.header?.get("KV-Operation");
    const operation = op === "DEL" || op === "PURGE" ? op : "PUT";
    return { key: m.subject.slice(prefix.length), operation, value: m.data, revision: m.seq };
  };
}

/**
 * The one-bucket layout: users (one-token keys) and the rooms section, from one watch on the
 * whole bucket whose other keys are skipped. Not a watch filtered to those two: then the
 * sequences it skips include other sections' writes, and a gap in what it delivers would no
 * longer tell a change removed from the stream (which leaves the index behind) — see `#seq`.
 */
export function bucketSource(kv: KvView, next?: (seq: number) => Promise<Change | null>): IndexSource {
  const rooms = sectionPrefix("rooms");
  return {
    kv,
    users: true,
    barrierKey: `${rooms}${BARRIER_KEY}`,
    kind: (k) => (k.startsWith(rooms) ? { room: k.slice(rooms.length) } : k.includes(".") ? null : { user: k }),
    ...(next ? { next } : {}),
  };
}

/** Rooms only, from a bucket (or section) that holds nothing else: the previous layout's rooms bucket. */
export function roomsSource(kv: KvView): IndexSource {
  return { kv, users: false, barrierKey: BARRIER_KEY, kind: (k) => ({ room: k }) };
}

/** A record as the index holds it: its value and the revision to compare-and-swap against. */
export interface Indexed<T> {
  value: T;
  revision: number;
}
/** The record when it is a committed room (listRoomsFor grants only those). */
function committed(rec: RoomRec | undefined): RoomRec | undefined {
  return rec?.committed ? rec : undefined;
}

/** Readers of the whole bucket (the snapshot) see `{}`: not a committed room. */
const EMPTY = new TextEncoder().encode("{}");

interface Waiter {
  seq: number;
  resolve: (caughtUp: boolean) => void;
}

export class RoomIndex {
  /** Pause before a broken watch is made again (the cluster may be electing a leader). */
  static readonly REWATCH_MS = 250;

  /** Bound on one read of the catch-up by sequence. */
  static readonly CATCH_UP_READ_MS = 500;

  /** Bound on a whole catch-up: it reads to the end of the stream, which steady writes keep moving. */
  static readonly CATCH_UP_MS = 3000;

  /** How often the stream's identity is read (in the background) to notice a recreated bucket. */
  static readonly CREATED_CHECK_MS = 5000;

  readonly #src: IndexSource;
  readonly #log: Logger;
  /** Every room record, committed or not (the store's fallback reads need both). */
  readonly #entries = new Map<string, Indexed<RoomRec>>();
  readonly #users = new Map<string, Indexed<UserRec>>();
  /** The committed rooms each key is a member of, for listRoomsFor. */
  readonly #byMember = new Map<string, Set<string>>();
  #waiters: Waiter[] = [];
  /**
   * How far the index is complete: for every key, the index holds its last change at or
   * below `#seq`, or a later one. Not the highest revision seen: the bucket keeps one
   * revision per key, so a change overwritten before a reader (the watch's consumer, the
   * catch-up) reached it is gone from the stream, and the reader only meets the key again
   * at its later revision. A room whose member was added at 60 and renamed at 90 is, to a
   * reader that has got to 70, still at its value before 60 — or absent, while loading.
   * So `#seq` only moves (`#advance`) to a change that follows it directly (`#seq + 1`:
   * nothing between could have been missed), or to where a reader found nothing more to
   * read (`#reachedEnd`): every change then in the stream has been applied. 0: nothing yet.
   */
  #seq = 0;
  #started = false;
  #stopped = false;
  #iter: { stop(): void } | undefined;
  /** The stream's identity as last seen (#checkCreated): a new one means a new stream. */
  #created: string | undefined;
  /** Bumped by #restart: entries of an older watch are no longer applied. */
  #generation = 0;

  #createdCheckedAt = 0;
  /** The catch-up by sequence in progress, and how far it must go. */
  #catching: Promise<void> | undefined;
  #catchTarget = 0;
  /** The last revision applied per indexed key (deletions included): an older change, from the watch after a catch-up, is skipped. */
  readonly #revs = new Map<string, number>();
  /** The highest sequence a marker was acknowledged at (in the current stream). */
  #acked = 0;

  constructor(src: IndexSource, log: Logger) {
    this.#src = src;
    this.#log = log;
  }

  /** Whether the index holds users (the one-bucket layout) as well as rooms. */
  get hasUsers(): boolean {
    return this.#src.users;
  }

  /** Starts the watch (once; later calls do nothing). */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    void this.#watchLoop();
  }

  stop(): void {
    this.#stopped = true;
    this.#iter?.stop();
    this.#release(false);
  }

  /**
   * A sequence number every write acknowledged before this call is at or below: that of a
   * marker written to the bucket now. A write, not a read of the stream's state, because a
   * write needs a quorum: a leader cut off from its peers still answers reads (until it
   * notices, up to ~10 s) with state a majority elsewhere may have changed — a removed
   * member would pass. Without a quorum the marker fails and nothing is granted.
   *
   * A bucket made anew (restored, recreated) starts its sequence over: what the index holds
   * is then dropped and the watch made again, or old rooms would pass for current ones.
   */
  async barrier(): Promise<number> {
    // A marker sent after another was acknowledged at sequence n lands above n in the same
    // stream: a lower sequence means the stream started over. (Not compared with what the
    // watch applied: writes after the marker may well be applied before its ack arrives.)
    const before = this.#acked;
    const seq = await this.#src.kv.put(this.#src.barrierKey, EMPTY);
    if (seq < before) this.#restart();
    this.#acked = Math.max(this.#acked, seq);
    this.#checkCreated();
    return seq;
  }

  /**
   * A stream recreated and grown past the old sequence meanwhile is told by its identity,
   * read now and then in the background: STREAM.INFO needs the meta group on every node but
   * the stream leader, so it stays off the caller's path. The identity is the stream's RAFT
   * group in a cluster — not its creation time, which each replica records for itself (the
   * three of a cluster differ by milliseconds, so whichever node answered looked like a new
   * stream: the index dropped everything and reloaded, every few seconds) — and the creation
   * time on a single server, which has no group.
   */
  #checkCreated(): void {
    const now = Date.now();
    if (now - this.#createdCheckedAt < RoomIndex.CREATED_CHECK_MS) return;
    this.#createdCheckedAt = now;
    this.#src.kv.status().then(
      (status) => {
        const info = status.streamInfo;
        const id = info.cluster?.raft_group ?? (info.cluster?.replicas?.length ? undefined : `created ${info.created}`);
        // A replica that does not report its group (an older server, mid-upgrade) tells nothing.
        if (id === undefined) return;
        if (this.#created !== undefined && id !== this.#created) this.#restart();
        this.#created = id;
      },
      (err: unknown) => this.#log.debug({ err: (err as Error).message }, "could not read the bucket's identity"),
    );
  }

  /** A user's record as of stream sequence `seq` or later (null: none); undefined when the watch does not reach `seq` within `waitMs`. */
  async userAt(signPub: string, seq: number, waitMs: number): Promise<Indexed<UserRec> | null | undefined> {
    if (!this.hasUsers || !(await this.#caughtUp(seq, waitMs))) return undefined;
    return this.#users.get(signPub) ?? null;
  }

  /** A room's record (committed or not) as of stream sequence `seq` or later; as userAt. */
  async roomAt(roomId: string, seq: number, waitMs: number): Promise<Indexed<RoomRec> | null | undefined> {
    if (!(await this.#caughtUp(seq, waitMs))) return undefined;
    return this.#entries.get(roomId) ?? null;
  }

  /**
   * The committed rooms `signPub` is a member of, as of stream sequence `seq` or later;
   * undefined when the watch does not reach `seq` within `waitMs`.
   */
  async roomsOf(
    signPub: string,
    seq: number,
    waitMs: number,
  ): Promise<Array<{ rec: RoomRec; role: RoomRole }> | undefined> {
    if (!(await this.#caughtUp(seq, waitMs))) return undefined;
    const out: Array<{ rec: RoomRec; role: RoomRole }> = [];
    for (const id of this.#byMember.get(signPub) ?? []) {
      const rec = committed(this.#entries.get(id)?.value);
      const m = rec === undefined ? undefined : memberOf(rec, signPub);
      if (rec !== undefined && m !== undefined) out.push({ rec, role: m.role });
    }
    return out;
  }

  /** Whether the index reaches `seq`: from the watch within `waitMs`, or else by reading the stream up to it. */
  async #caughtUp(seq: number, waitMs: number): Promise<boolean> {
    return (await this.#reach(seq, waitMs)) || (await this.#catchUp(seq));
  }

  /**
   * Reads the changes the watch has not delivered, by sequence, up to `target`. A watch
   * whose consumer lived on a node that died stays silent until a new consumer is placed,
   * which needs the meta leader — if that node was it, 4-9 s. Reading by sequence needs
   * only the stream's leader. One loop at a time serves every caller (the highest target).
   */
  async #catchUp(target: number): Promise<boolean> {
    const next = this.#src.next;
    if (next === undefined || this.#stopped || !this.#started) return false;
    this.#catchTarget = Math.max(this.#catchTarget, target);
    this.#catching ??= this.#catchLoop(next).finally(() => {
      this.#catching = undefined;
    });
    await this.#catching.catch((err: unknown) =>
      this.#log.debug({ err: (err as Error).message }, "the rooms index could not catch up by sequence"),
    );
    return this.#seq >= target;
  }

  /**
   * Reads every change after `#seq`, in sequence order. A change read right after `#seq`
   * advances it; one after a gap (changes overwritten since, so gone from the stream) does
   * not, until the read finds nothing more: then every change in the stream is applied.
   */
  async #catchLoop(next: (seq: number) => Promise<Change | null>): Promise<void> {
    const generation = this.#generation;
    const until = performance.now() + RoomIndex.CATCH_UP_MS;
    let cursor = this.#seq + 1;
    let last = 0;
    while (this.#seq < this.#catchTarget && generation === this.#generation && !this.#stopped) {
      if (performance.now() > until) throw new Error("the catch-up did not reach the end of the stream in time");
      // The watch may have moved `#seq` on: what is below it needs no reading.
      cursor = Math.max(cursor, this.#seq + 1);
      // Bounded: a read sent to a leader that just died gets no answer, and every caller waits on this loop.
      const c = await bounded(RoomIndex.CATCH_UP_READ_MS, () => next(cursor));
      if (generation !== this.#generation) return;
      if (c === null) {
        // Read from a complete point to the end: complete up to the last change read.
        if (last > 0) this.#reachedEnd(last);
        return;
      }
      this.#apply(c);
      cursor = c.revision + 1;
      last = c.revision;
    }
  }

  #reach(seq: number, waitMs: number): Promise<boolean> {
    if (this.#stopped || !this.#started) return Promise.resolve(false);
    // `#seq` is how far the index is complete (never just how far a reader got).
    if (this.#seq >= seq) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w: Waiter = { seq, resolve };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((x) => x !== w);
        resolve(false);
      }, waitMs);
      w.resolve = (ok) => {
        clearTimeout(timer);
        resolve(ok);
      };
      this.#waiters.push(w);
    });
  }

  /**
   * Watches the bucket, and watches again when a watch breaks — keeping what it holds and
   * `#seq`: the new watch delivers every key's last value (deletions as delete markers,
   * which the store never removes) in sequence order, so applied on top, each key is at its
   * old value or a newer one, and `#seq` stays true. It moves on as the new watch's changes
   * follow it directly, or when the watch has delivered everything pending (`delta` 0) — not
   * before: its first delivery skips every overwritten change. A broken watch that cannot be
   * made again (no meta leader to place its consumer) thus costs nothing until a key changes.
   */
  async #watchLoop(): Promise<void> {
    while (!this.#stopped) {
      const generation = this.#generation;
      try {
        const it = await this.#src.kv.watch();
        this.#iter = it;
        if (this.#stopped || generation !== this.#generation) it.stop();
        for await (const e of it) {
          if (generation !== this.#generation) break;
          this.#apply(e);
          // Nothing pending after it: every change in the stream has been delivered.
          if (e.delta === 0) this.#reachedEnd(e.revision);
        }
      } catch (err) {
        this.#log.debug({ err: (err as Error).message }, "the rooms watch broke; watching again");
      }
      if (!this.#stopped && generation === this.#generation) {
        await new Promise((r) => setTimeout(r, RoomIndex.REWATCH_MS));
      }
    }
  }

  /** Forgets everything and makes the watch again (the bucket is a new stream). */
  #restart(): void {
    this.#generation++;
    this.#entries.clear();
    this.#users.clear();
    this.#revs.clear();
    this.#byMember.clear();
    this.#seq = 0;
    this.#acked = 0;
    this.#release(false);
    this.#iter?.stop();
  }

  #apply(e: Change): void {
    const kind = e.key === this.#src.barrierKey ? null : this.#src.kind(e.key);
    // Applied already, or older than what was (from the watch after a catch-up): skipped.
    if (kind !== null && (this.#revs.get(e.key) ?? 0) < e.revision) {
      this.#revs.set(e.key, e.revision);
      if ("user" in kind) this.#applyUser(kind.user, e);
      else this.#applyRoom(kind.room, e);
    }
    // Only the change right after `#seq`: after a gap, what was skipped may be a change this key or another lost.
    if (e.revision === this.#seq + 1) this.#advance(e.revision);
  }

  #parse<T>(e: Change, what: string): T | undefined {
    if (e.operation !== "PUT") return undefined;
    try {
      return JSON.parse(Buffer.from(e.value).toString("utf8")) as T;
    } catch {
      this.#log.warn({ component: "store", key: e.key }, `unreadable ${what} record ignored by the index`);
      return undefined;
    }
  }

  #applyUser(signPub: string, e: Change): void {
    const rec = this.#parse<UserRec>(e, "user");
    if (rec === undefined) this.#users.delete(signPub);
    else this.#users.set(signPub, { value: rec, revision: e.revision });
  }

  #applyRoom(id: string, e: Change): void {
    const old = committed(this.#entries.get(id)?.value);
    const parsed = this.#parse<RoomRec>(e, "room");
    if (parsed === undefined) this.#entries.delete(id);
    else this.#entries.set(id, { value: parsed, revision: e.revision });
    const rec = committed(parsed);
    for (const m of old?.members ?? []) {
      const set = this.#byMember.get(m.signPub);
      set?.delete(id);
      if (set?.size === 0) this.#byMember.delete(m.signPub);
    }
    for (const m of rec?.members ?? []) {
      const set = this.#byMember.get(m.signPub) ?? new Set<string>();
      set.add(id);
      this.#byMember.set(m.signPub, set);
    }
  }

  /** A reader read, from a point at or below `#seq`, everything in the stream up to `revision`. */
  #reachedEnd(revision: number): void {
    if (revision > this.#seq) this.#advance(revision);
  }

  #advance(revision: number): void {
    this.#seq = revision;
    this.#release(true);
  }

  /** Wakes the waiters the watch has caught up with (all of them, answered `ok`, on a reset/stop). */
  #release(ok: boolean): void {
    if (this.#waiters.length === 0) return;
    const ready = ok ? this.#waiters.filter((w) => w.seq <= this.#seq) : this.#waiters;
    this.#waiters = ok ? this.#waiters.filter((w) => w.seq > this.#seq) : [];
    for (const w of ready) w.resolve(ok);
  }
}
