/**
 * How a client bounds the requests that received frames cause and decides who was a
 * member (docs/protocol.md §7.2, §7.3). Free of Node APIs: the Node client (room.ts) and
 * the browser build (lib/browser) apply the same rules with the same code.
 */
import type { FrameFailure } from "../crypto/frame.ts";
import type { DroppedFrame, RoomMember } from "./room.ts";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Epochs the control plane accepts: no key exists outside 1..2^31. */
export const EPOCH_MAX = 2 ** 31;
/** Key and room requests that received frames cause: this many at once, then this many a second. */
export const FRAME_REQUEST_BURST = 8;
export const FRAME_REQUESTS_PER_SEC = 1;
/** A key refused to us (we were not a member then) is not asked for again for this long. */
export const KEY_MISS_TTL_MS = 10 * 60_000;
export const KEY_MISSES_MAX = 1024;
/** The member list is re-read when older than this or than the newest epoch we know... */
const ROSTER_TTL_MS = 60_000;
/** ...but never more often than this, whatever the frames claim. */
const ROSTER_MIN_INTERVAL_MS = 1_000;
/** Former members remembered; beyond it they are forgotten (their old frames then drop). */
const FORMER_MEMBERS_MAX = 10_000;

export function inEpochRange(epoch: number): boolean {
  return epoch >= 1 && epoch <= EPOCH_MAX;
}

export function dropOf(failure: FrameFailure): DroppedFrame {
  return {
    reason: failure.reason,
    ...(failure.epoch !== undefined ? { epoch: failure.epoch } : {}),
    ...(failure.sender ? { sender: failure.sender } : {}),
  };
}

/** A token bucket: `burst` requests at once, then `perSec` a second. */
export class RequestBudget {
  readonly #burst: number;
  readonly #perSec: number;
  #tokens: number;
  #at = performance.now();

  constructor(burst: number, perSec: number) {
    this.#burst = burst;
    this.#perSec = perSec;
    this.#tokens = burst;
  }

  take(): boolean {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) * this.#perSec) / 1000);
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Resolves once a token is taken. */
  async acquire(): Promise<void> {
    while (!this.take()) await sleep(Math.ceil(((1 - this.#tokens) * 1000) / this.#perSec));
  }
}

/**
 * Who may sign frames in a room, as far as this client can tell (docs/protocol.md
 * §7.3): the newest member list it read, plus keys it saw in earlier lists, each with
 * the newest epoch this client knew while that key was listed. The control plane lists
 * only current members, so that is all a client can know of past epochs.
 */
export class Roster {
  #current = new Set<string>();
  readonly #former = new Map<string, number>();
  #listedAt = Number.NEGATIVE_INFINITY;
  #listedEpoch = 0;
  #triedAt = Number.NEGATIVE_INFINITY;
  #pending: Promise<void> | undefined;

  /** Without a request: a list that is still fresh says `signPub` was a member at `epoch`. */
  knows(signPub: string, epoch: number, roomEpoch: number): boolean {
    const fresh = performance.now() - this.#listedAt < ROSTER_TTL_MS && this.#listedEpoch >= roomEpoch;
    return fresh && this.#holds(signPub, epoch);
  }

  /** Re-reads the list when the answer is not known fresh, at most once per interval; else decides on what it holds. */
  async isMember(
    signPub: string,
    epoch: number,
    roomEpoch: number,
    list: () => Promise<RoomMember[]>,
  ): Promise<boolean> {
    if (this.knows(signPub, epoch, roomEpoch)) return true;
    if (!this.#pending && performance.now() - this.#triedAt >= ROSTER_MIN_INTERVAL_MS) {
      this.#pending = this.#reread(roomEpoch, list).finally(() => {
        this.#pending = undefined;
      });
    }
    if (this.#pending) await this.#pending;
    return this.#holds(signPub, epoch);
  }

  /** This client added a member. */
  add(signPub: string): void {
    this.#current.add(signPub);
    this.#former.delete(signPub);
  }

  /** This client removed a member, at `epoch` (the rekey that follows starts the next). */
  remove(signPub: string, epoch: number): void {
    if (this.#current.delete(signPub)) this.#former.set(signPub, epoch);
  }

  #holds(signPub: string, epoch: number): boolean {
    return this.#current.has(signPub) || (this.#former.get(signPub) ?? 0) >= epoch;
  }

  async #reread(roomEpoch: number, list: () => Promise<RoomMember[]>): Promise<void> {
    const started = performance.now();
    this.#triedAt = started;
    let members: RoomMember[];
    try {
      members = await list();
    } catch {
      return; // keep what we hold: strangers stay strangers, and the next try waits its turn
    }
    const next = new Set(members.map((m) => m.signPub.toLowerCase()));
    for (const gone of this.#current) {
      if (!next.has(gone)) this.#former.set(gone, Math.max(this.#former.get(gone) ?? 0, this.#listedEpoch));
    }
    for (const signPub of next) this.#former.delete(signPub);
    if (this.#former.size > FORMER_MEMBERS_MAX) this.#former.clear();
    this.#current = next;
    this.#listedAt = started;
    this.#listedEpoch = roomEpoch;
  }
}
