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
 */
import type { KV, KvEntry } from "@nats-io/kv";
import type { Logger } from "../log/index.ts";
import { memberOf, type RoomRec } from "./kv-layout.ts";
import type { RoomRole } from "./types.ts";

/** The barrier's marker key: its dot keeps it out of the room ids' shape (`[A-Za-z0-9_-]`). */
export const BARRIER_KEY = "_unibus.barrier";
/** Readers of the whole bucket (the snapshot) see `{}`: not a committed room. */
const EMPTY = new TextEncoder().encode("{}");

interface Waiter {
  seq: number;
  resolve: (caughtUp: boolean) => void;
}

export class RoomIndex {
  /** Pause before a broken watch is made again (the cluster may be electing a leader). */
  static readonly REWATCH_MS = 250;

  readonly #kv: KV;
  readonly #log: Logger;
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

  constructor(kv: KV, log: Logger) {
    this.#kv = kv;
    this.#log = log;
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
    const [seq, status] = await Promise.all([this.#kv.put(BARRIER_KEY, EMPTY), this.#kv.status()]);
    const created = status.streamInfo.created;
    if (this.#created !== undefined && created !== this.#created) this.#restart();
    this.#created = created;
    return seq;
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
    if (!(await this.#reach(seq, waitMs))) return undefined;
    const out: Array<{ rec: RoomRec; role: RoomRole }> = [];
    for (const id of this.#byMember.get(signPub) ?? []) {
      const rec = this.#rooms.get(id);
      const m = rec === undefined ? undefined : memberOf(rec, signPub);
      if (rec !== undefined && m !== undefined) out.push({ rec, role: m.role });
    }
    return out;
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
        const it = await this.#kv.watch();
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
    this.#byMember.clear();
    this.#seq = 0;
    this.#release(false);
    this.#iter?.stop();
  }

  #apply(e: KvEntry): void {
    if (e.key === BARRIER_KEY) {
      this.#advance(e.revision);
      return;
    }
    const old = this.#rooms.get(e.key);
    let rec: RoomRec | undefined;
    if (e.operation === "PUT") {
      try {
        const parsed = JSON.parse(Buffer.from(e.value).toString("utf8")) as RoomRec;
        if (parsed.committed) rec = parsed;
      } catch {
        this.#log.warn({ component: "store", room: e.key }, "unreadable room record ignored by the rooms index");
      }
    }
    for (const m of old?.members ?? []) {
      const set = this.#byMember.get(m.signPub);
      set?.delete(e.key);
      if (set?.size === 0) this.#byMember.delete(m.signPub);
    }
    if (rec === undefined) this.#rooms.delete(e.key);
    else {
      this.#rooms.set(e.key, rec);
      for (const m of rec.members) {
        const set = this.#byMember.get(m.signPub) ?? new Set<string>();
        set.add(e.key);
        this.#byMember.set(m.signPub, set);
      }
    }
    this.#advance(e.revision);
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
