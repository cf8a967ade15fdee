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
 * available. For the same reason the marker is all a call costs: the stream's creation time
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
  /** Watched, and where the marker goes. */
  kv: KvView;
  /** The watch's filter (undefined: everything). */
  watch?: string[];
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

/** The one-bucket layout: users (one-token keys) and the rooms section, from one watch on the bucket. */
export function bucketSource(kv: KvView, next?: (seq: number) => Promise<Change | null>): IndexSource {
  const rooms = sectionPrefix("rooms");
  return {
    kv,
    watch: ["*", `${rooms}>`],
    barrierKey: `${rooms}${BARRIER_KEY}`,
    kind: (k) => (k.startsWith(rooms) ? { room: k.slice(rooms.length) } : k.includes(".") ? null : { user: k }),
    ...(next ? { next } : {}),
  };
}

/** Rooms only, from a bucket (or section) that holds nothing else: the previous layout's rooms bucket. */
export function roomsSource(kv: KvView): IndexSource {
  return { kv, barrierKey: BARRIER_KEY, kind: (k) => ({ room: k }) };
}

/** A record as the index holds it: its value and the revision to compare-and-swap against. */
export interface Indexed<T> {
  value: T;
  revision: number;
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

  /** How often the stream's creation time is read (in the background) to notice a recreated bucket. */
  static readonly CREATED_CHECK_MS = 5000;

  readonly #src: IndexSource;
  readonly #log: Logger;
  /** Every room record, committed or not (the store's fallback reads need both). */
  readonly #entries = new Map<string, Indexed<RoomRec>>();
  readonly #users = new Map<string, Indexed<UserRec>>();
  /** The committed ones, for listRoomsFor. */
  readonly #rooms = new Map<string, RoomRec>();
  readonly #byMember = new Map<string, Set<string>>();
  #waiters: Waiter[] = [];
  /** The stream sequence of the last entry applied; 0 while (re)loading from scratch. */
  #seq = 0;
  #started = false;
  #stopped = false;
  #iter: { stop(): void } | undefined;
  /** The stream's creation time as last seen: a new one means a new stream. */
  #created: string | undefined;
  /** Bumped by #restart: entries of an older watch are no longer applied. */
  #generation = 0;

  #createdCheckedAt = 0;
  /** The catch-up by sequence in progress, and how far it must go. */
  #catching: Promise<void> | undefined;
  #catchTarget = 0;
  /** The last revision applied per key (deletions included): an older change, from the watch after a catch-up, is skipped. */
  readonly #revs = new Map<string, number>();
  /** The highest sequence a marker was acknowledged at (in the current stream). */
  #acked = 0;

  constructor(src: IndexSource, log: Logger) {
    this.#src = src;
    this.#log = log;
  }

  /** Whether the index holds users (the one-bucket layout) as well as rooms. */
  get hasUsers(): boolean {
    return this.#src.watch !== undefined;
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
   * A stream recreated and grown past the old sequence meanwhile is told by its creation
   * time, read now and then in the background: STREAM.INFO needs the meta group on every
   * node but the stream leader, so it stays off the caller's path.
   */
  #checkCreated(): void {
    const now = Date.now();
    if (now - this.#createdCheckedAt < RoomIndex.CREATED_CHECK_MS) return;
    this.#createdCheckedAt = now;
    this.#src.kv.status().then(
      (status) => {
        const created = status.streamInfo.created;
        if (this.#created !== undefined && created !== this.#created) this.#restart();
        this.#created = created;
      },
      (err: unknown) => this.#log.debug({ err: (err as Error).message }, "could not read the bucket's creation time"),
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
      const rec = this.#rooms.get(id);
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

  async #catchLoop(next: (seq: number) => Promise<Change | null>): Promise<void> {
    const generation = this.#generation;
    while (this.#seq < this.#catchTarget && generation === this.#generation && !this.#stopped) {
      // Bounded: a read sent to a leader that just died gets no answer, and every caller waits on this loop.
      const c = await bounded(RoomIndex.CATCH_UP_READ_MS, () => next(this.#seq + 1));
      if (c === null || generation !== this.#generation) return;
      this.#apply(c);
      this.#advance(c.revision); // even when skipped as old: the next read starts past it
    }
  }

  #reach(seq: number, waitMs: number): Promise<boolean> {
    if (this.#stopped || !this.#started) return Promise.resolve(false);
    // While (re)loading, a room not delivered yet is missing — which only denies — and a
    // room delivered is at its latest value, so the index is as current as `#seq` says.
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
   * Watches the bucket, and watches again when a watch breaks — keeping what it holds: the
   * new watch delivers every room's last value (deletions as delete markers) in sequence
   * order, so applied on top, each room is at its old value or a newer one, and `#seq`
   * stays true. A broken watch that cannot be made again (no meta leader to place its
   * consumer) thus costs nothing until a room changes.
   */
  async #watchLoop(): Promise<void> {
    while (!this.#stopped) {
      const generation = this.#generation;
      try {
        const it = await this.#src.kv.watch(this.#src.watch === undefined ? {} : { key: this.#src.watch });
        this.#iter = it;
        if (this.#stopped || generation !== this.#generation) it.stop();
        for await (const e of it) {
          if (generation !== this.#generation) break;
          this.#apply(e);
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
    this.#rooms.clear();
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
    if ((this.#revs.get(e.key) ?? 0) >= e.revision) return; // applied already, or older than what was
    this.#revs.set(e.key, e.revision);
    const kind = e.key === this.#src.barrierKey ? null : this.#src.kind(e.key);
    if (kind !== null && "user" in kind) this.#applyUser(kind.user, e);
    else if (kind !== null) this.#applyRoom(kind.room, e);
    this.#advance(e.revision);
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
    const old = this.#rooms.get(id);
    const parsed = this.#parse<RoomRec>(e, "room");
    if (parsed === undefined) this.#entries.delete(id);
    else this.#entries.set(id, { value: parsed, revision: e.revision });
    const rec = parsed?.committed ? parsed : undefined;
    for (const m of old?.members ?? []) {
      const set = this.#byMember.get(m.signPub);
      set?.delete(id);
      if (set?.size === 0) this.#byMember.delete(m.signPub);
    }
    if (rec === undefined) this.#rooms.delete(id);
    else {
      this.#rooms.set(id, rec);
      for (const m of rec.members) {
        const set = this.#byMember.get(m.signPub) ?? new Set<string>();
        set.add(id);
        this.#byMember.set(m.signPub, set);
      }
    }
  }

  #advance(revision: number): void {
    this.#seq = Math.max(this.#seq, revision);
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
