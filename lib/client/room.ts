/**
 * A room as a bot author sees it: publish bytes, iterate messages, manage members.
 * Keys never leave the client unsealed: the room key of each epoch is fetched sealed
 * to this identity, opened here, and cached per epoch.
 *
 * Received frames are checked in the order of docs/protocol.md §7: everything that
 * needs no request first (structure, mode, signature), then the signer's membership,
 * then the key. Any member can publish frames at any epoch, so the requests frames
 * cause are bounded: a key is fetched once per epoch, a refusal is remembered, and
 * frame-driven requests spend from a small per-room budget.
 */
import crypto from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  clearFrameHeader,
  decryptBlob,
  encodeFrame,
  encryptBlob,
  FRAME_HEADER_BYTES,
  type FrameFailureReason,
  type Identity,
  newRoomKey,
  type OpenedFrame,
  type OpenFrameResult,
  openClearFrame,
  openFrame,
  openRoomKey,
  type ParsedFrame,
  parseFrame,
  payloadBytes,
  sealRoomKey,
  writeClearFrame,
} from "../crypto/index.ts";
import { ControlPlaneError, HistoryUnavailableError, InvalidArgumentError } from "../errors.ts";
import { ackTimeoutFor, type PublishAck, publishAcked } from "./ack.ts";
import type { BlobInfo, ControlClient } from "./control.ts";
import {
  dropOf,
  FRAME_REQUEST_BURST,
  FRAME_REQUESTS_PER_SEC,
  inEpochRange,
  KEY_MISS_TTL_MS,
  KEY_MISSES_MAX,
  RequestBudget,
  Roster,
} from "./frame-policy.ts";
import { type Outbox, outboxOf } from "./outbox.ts";

export type { PublishAck } from "./ack.ts";

/** How `publish` and `publishMany` send. */
export interface PublishOptions {
  /**
   * Resolve only once the room's stream has stored the message (persisted rooms only;
   * elsewhere InvalidArgumentError: there is nothing to acknowledge). Default false:
   * resolve once the frame is queued on the connection.
   */
  ack?: boolean;
  /** How long to wait for the stream's acknowledgement. Default 5000 ms. */
  timeoutMs?: number;
}

async function* plainChunks(input: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for await (const chunk of input) yield chunk;
}

/** What the control plane says about a room. */
export interface RoomInfo {
  id: string;
  subject: string;
  ownerSignPub: string;
  encrypt: boolean;
  persist: boolean;
  signMsgs: boolean;
  epoch: number;
  createdAt: number;
  /** A persisted room's history limits, in the answer to its creation. */
  retention?: RoomRetention;
}

/** What a persisted room keeps: past any of these the oldest messages go. */
export interface RoomRetention {
  maxBytes?: number;
  maxAgeMs?: number;
  maxMsgs?: number;
}

export interface RoomMember {
  roomId: string;
  signPub: string;
  role: "owner" | "member";
  addedAt: number;
}

export interface RoomMessage {
  data: Uint8Array;
  /** Sender's Ed25519 public key (hex): proven when `verified`, else a room-key holder's claim. */
  sender: string;
  epoch: number;
  /** Signed by a member of the room at `epoch`: a valid signature by `sender`, who is a member. */
  verified: boolean;
  receivedAt: number;
  /** Stream sequence, for messages read from history. */
  seq?: number;
}

/**
 * A frame that was dropped, and why (never thrown, never delivered). The reasons are
 * those of docs/protocol.md §7.1: the frame's own (`FrameFailureReason`), or
 * `not-a-member` for a valid signature by a key that is not a member of that epoch.
 */
export interface DroppedFrame {
  /** `slow-consumer`: a local decision, not the frame's fault — the reader fell `maxPending` frames behind. */
  reason: FrameFailureReason | "not-a-member" | "slow-consumer";
  epoch?: number;
  sender?: string;
}

export interface SubscribeOptions {
  /** Callback form: called for each message instead of the async iterator. */
  callback?: (m: RoomMessage) => void;
  /** Told about each frame that could not be verified or decrypted, or was dropped for a slow reader. */
  onDrop?: (d: DroppedFrame) => void;
  /**
   * Frames received but not yet taken by the reader (being opened, or waiting in the
   * iterator) before newly arriving ones are dropped as `slow-consumer` — the reader's
   * memory stays bounded however fast the room is. Default 10,000.
   */
  maxPending?: number;
}

export const DEFAULT_MAX_PENDING = 10_000;

/**
 * One subscription's delivery: frames admitted but not yet taken by the reader (being
 * opened, or queued for the iterator) stay within `maxPending` — the bound of the
 * subscription's memory; the caller drops the rest.
 */
class LiveFeed {
  readonly #max: number;
  readonly #callback: ((m: RoomMessage) => void) | undefined;
  readonly #queue: RoomMessage[] = [];
  #pending = 0;
  #done = false;
  #wake: (() => void) | undefined;

  constructor(max: number, callback?: (m: RoomMessage) => void) {
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new InvalidArgumentError("maxPending", `maxPending: a positive whole number; got ${max}`);
    }
    this.#max = max;
    this.#callback = callback;
  }

  /** True (and counted) when one more frame fits; false when the reader is too far behind. */
  admit(): boolean {
    if (this.#pending >= this.#max) return false;
    this.#pending++;
    return true;
  }

  /** An admitted frame, opened (undefined when it was dropped). */
  deliver(m: RoomMessage | undefined): void {
    if (!m || this.#callback) this.#pending--;
    if (!m) return;
    if (!this.#callback) {
      this.#queue.push(m);
      this.#wake?.();
      return;
    }
    try {
      this.#callback(m);
    } catch (err) {
      // The caller's own bug: surface it as its own, and keep delivering the next frames.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  end(): void {
    this.#done = true;
    this.#wake?.();
  }

  async *messages(): AsyncGenerator<RoomMessage> {
    while (true) {
      const next = this.#queue.shift();
      if (next) {
        this.#pending--;
        yield next;
        continue;
      }
      if (this.#done) return;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
  }
}

/** Who to add or remove: a signing key (hex or `U…`), or anything carrying `signPub`. */
export type MemberRef = string | { signPub: string };

function refKey(m: MemberRef): string {
  return (typeof m === "string" ? m : m.signPub).toLowerCase();
}

export class Room {
  readonly id: string;
  readonly subject: string;
  readonly encrypt: boolean;
  readonly persist: boolean;
  readonly signMsgs: boolean;
  /** The history limits the bus granted, on a persisted room this client created; undefined otherwise. */
  readonly retention?: RoomRetention;
  #owner: string;
  #epoch: number;
  readonly #nc: NatsConnection;
  readonly #outbox: Outbox;
  readonly #control: ControlClient;
  readonly #identity: Identity;
  /** epoch → opened room key; a promise so concurrent frames fetch once. */
  readonly #keys = new Map<number, Promise<Uint8Array | undefined>>();
  readonly #ready = new Map<number, Uint8Array>();
  /** epoch → when to ask again: keys the control plane refused us. */
  readonly #misses = new Map<number, number>();
  readonly #budget = new RequestBudget(FRAME_REQUEST_BURST, FRAME_REQUESTS_PER_SEC);
  readonly #roster = new Roster();
  #discovering: Promise<void> | undefined;
  readonly #subs = new Set<Subscription>();
  /** Cleartext unsigned rooms: the header of this client's frames and the epoch it is for. */
  #clearHeader: Buffer | undefined;
  #clearHeaderEpoch = -1;
  /** What opening a frame needs of this room; one object, as the receive path reads it per frame. */
  readonly #rules: { roomId: string; encrypted: boolean; requireSignature: boolean };
  /** Frames dropped, by reason. */
  readonly dropped: Record<string, number> = {};

  constructor(info: RoomInfo, deps: { nc: NatsConnection; control: ControlClient; identity: Identity }) {
    this.id = info.id;
    this.subject = info.subject;
    this.encrypt = info.encrypt;
    this.persist = info.persist;
    this.signMsgs = info.signMsgs;
    if (info.retention) this.retention = { ...info.retention };
    this.#owner = info.ownerSignPub;
    this.#epoch = info.epoch;
    this.#nc = deps.nc;
    this.#outbox = outboxOf(deps.nc);
    this.#control = deps.control;
    this.#identity = deps.identity;
    this.#rules = { roomId: this.id, encrypted: this.encrypt, requireSignature: this.signMsgs };
  }

  /** The owner's signing key, as this client last saw it (a transfer moves it). */
  get ownerSignPub(): string {
    return this.#owner;
  }

  /** The newest epoch this client knows of. */
  get epoch(): number {
    return this.#epoch;
  }

  /** Remembers a key this client made itself (creation, rekey). */
  rememberKey(epoch: number, key: Uint8Array): void {
    this.#ready.set(epoch, key);
    this.#keys.set(epoch, Promise.resolve(key));
  }

  /** The room key of `epoch` (fetched sealed to us once, then cached); undefined if we never held it. */
  async keyFor(epoch: number): Promise<Uint8Array | undefined> {
    if (this.#missed(epoch)) return undefined;
    let pending = this.#keys.get(epoch);
    if (!pending) {
      pending = this.#control
        .request<{ sealed: string }>("GET", `/v1/rooms/${this.id}/keys/${this.#identity.signPub}?epoch=${epoch}`)
        .then((k) => {
          const key = openRoomKey({ sealed: k.sealed, identity: this.#identity, roomId: this.id, epoch });
          this.#ready.set(epoch, key);
          if (epoch > this.#epoch) this.#epoch = epoch; // someone rekeyed: follow
          return key;
        })
        .catch((err: unknown) => {
          this.#keys.delete(epoch);
          if (err instanceof ControlPlaneError && (err.status === 403 || err.status === 404)) {
            // Not a member then: that answer never changes for an epoch we know exists. A
            // newer one may appear with the next rekey, so its miss is not kept.
            if (epoch <= this.#epoch) this.#rememberMiss(epoch);
            return undefined;
          }
          throw err;
        });
      this.#keys.set(epoch, pending);
    }
    return pending;
  }

  #missed(epoch: number): boolean {
    const until = this.#misses.get(epoch);
    if (until === undefined) return false;
    if (performance.now() < until) return true;
    this.#misses.delete(epoch);
    return false;
  }

  #rememberMiss(epoch: number): void {
    // Only epochs up to the room's own can be refused, so this bound is a backstop.
    if (this.#misses.size >= KEY_MISSES_MAX) this.#misses.clear();
    this.#misses.set(epoch, performance.now() + KEY_MISS_TTL_MS);
  }

  /** Re-reads the room (epoch included) from the control plane. */
  async refresh(): Promise<RoomInfo> {
    const info = await this.#control.request<RoomInfo>("GET", `/v1/rooms/${this.id}`);
    if (info.epoch > this.#epoch) this.#epoch = info.epoch;
    this.#owner = info.ownerSignPub;
    return info;
  }

  async members(): Promise<RoomMember[]> {
    return this.#control.request<RoomMember[]>("GET", `/v1/rooms/${this.id}/members`);
  }

  /** Adds a registered user: looks up its key-exchange key and seals the current room key to it. */
  async addMember(user: MemberRef): Promise<RoomMember> {
    const signPub = refKey(user);
    for (let attempt = 0; ; attempt++) {
      const body: Record<string, unknown> = { signPub, epoch: this.#epoch };
      if (this.encrypt) body.sealedKey = await this.#sealTo(signPub, this.#epoch);
      try {
        const added = await this.#control.request<RoomMember>("POST", `/v1/rooms/${this.id}/members`, body);
        this.#roster.add(added.signPub);
        return added;
      } catch (err) {
        // Someone rekeyed meanwhile: seal the newer key and try once more.
        if (attempt === 0 && err instanceof ControlPlaneError && err.status === 409 && /epoch/i.test(err.message)) {
          await this.refresh();
          continue;
        }
        throw err;
      }
    }
  }

  /** Removes a member and moves the room to a new epoch whose key the removed member never gets. */
  async removeMember(user: MemberRef): Promise<void> {
    if (refKey(user) === this.#identity.signPub) return this.leave();
    await this.#control.request("DELETE", `/v1/rooms/${this.id}/members/${refKey(user)}`);
    this.#roster.remove(refKey(user), this.#epoch);
    if (this.encrypt && refKey(user) !== this.#identity.signPub) await this.rekey();
  }

  /**
   * Leaves the room (the owner cannot: transfer it or delete it first). In an encrypted
   * room the leaver itself makes the next epoch's key, seals it to every member that
   * stays and hands it over with the leave, in one step: the room is never at an epoch
   * whose key a non-member holds, and the leaver forgets the new key at once. Its
   * connection is re-admitted without the room's subject.
   */
  async leave(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let body: Record<string, unknown> = {};
      if (this.encrypt) {
        await this.refresh();
        const stay = (await this.members()).filter((m) => m.signPub !== this.#identity.signPub);
        const key = newRoomKey();
        const from = this.#epoch;
        const sealedKeys = await Promise.all(
          stay.map(async (m) => ({ signPub: m.signPub, sealed: await this.#sealTo(m.signPub, from + 1, key) })),
        );
        key.fill(0);
        body = { fromEpoch: from, sealedKeys };
      }
      try {
        await this.#control.request("POST", `/v1/rooms/${this.id}/leave`, body);
        this.close();
        return;
      } catch (err) {
        // a rekey or a membership change raced the leave: seal again once
        if (this.encrypt && attempt === 0 && err instanceof ControlPlaneError && err.status === 409) continue;
        throw err;
      }
    }
  }

  /** Hands the room to another current member (the owner or an admin); this client stays a member. */
  async transferTo(user: MemberRef): Promise<RoomInfo> {
    const info = await this.#control.request<RoomInfo>("POST", `/v1/rooms/${this.id}/transfer`, { to: refKey(user) });
    this.#owner = info.ownerSignPub;
    return info;
  }

  /**
   * Deletes the room for everyone (the owner or an admin): its history, keys and blobs
   * go, and every member's connection is re-admitted without its subject.
   */
  async delete(): Promise<void> {
    await this.#control.request("DELETE", `/v1/rooms/${this.id}`);
    this.close();
  }

  /** A fresh key for epoch + 1, sealed to every current member, committed atomically. */
  async rekey(): Promise<number> {
    if (!this.encrypt) throw new InvalidArgumentError("room", "a cleartext room has no key to rotate");
    for (let attempt = 0; ; attempt++) {
      await this.refresh();
      const from = this.#epoch;
      const key = newRoomKey();
      const members = await this.members();
      const sealedKeys = await Promise.all(
        members.map(async (m) => ({ signPub: m.signPub, sealed: await this.#sealTo(m.signPub, from + 1, key) })),
      );
      try {
        const room = await this.#control.request<RoomInfo>("POST", `/v1/rooms/${this.id}/rekey`, {
          fromEpoch: from,
          sealedKeys,
        });
        this.rememberKey(room.epoch, key);
        this.#epoch = room.epoch;
        return room.epoch;
      } catch (err) {
        // lost a race with another rekey or a membership change: start over once
        if (attempt === 0 && err instanceof ControlPlaneError && err.status === 409) continue;
        throw err;
      }
    }
  }

  async #sealTo(signPub: string, epoch: number, key?: Uint8Array): Promise<string> {
    const user = await this.#control.request<{ kexPub: string | null }>("GET", `/v1/users/${signPub}`);
    if (!user.kexPub)
      throw new InvalidArgumentError(
        "member",
        `user ${signPub} has no key-exchange key; it cannot join encrypted rooms`,
      );
    const roomKey = key ?? (await this.keyFor(epoch));
    if (!roomKey) throw new InvalidArgumentError("room", `this client holds no key for epoch ${epoch}`);
    return sealRoomKey({ roomKey, recipientKexPub: user.kexPub, roomId: this.id, epoch });
  }

  /**
   * Encrypts (and signs, in signMsgs rooms) and publishes one message. Resolves once the
   * frame is queued on the connection: frames published in one turn of the event loop
   * leave together (`flush()` waits until the server has them). Throws
   * InvalidArgumentError for a message larger than the server takes.
   *
   * With `{ ack: true }` (persisted rooms only) it resolves once the room's stream has
   * stored the message, with its stream sequence, and rejects with a typed error when
   * it did not: StorageFullError (JetStream has no space left), AckTimeoutError (no
   * answer in `timeoutMs`: maybe stored), PublishRefusedError (not a member any more,
   * or the stream refused it), HistoryUnavailableError (the room's stream is missing),
   * AckMismatchError (the answer did not come from the stream). See lib/client/ack.ts.
   */
  publish(data: Uint8Array | string): Promise<undefined>;
  publish(data: Uint8Array | string, opts: PublishOptions & { ack: true }): Promise<PublishAck>;
  publish(data: Uint8Array | string, opts?: PublishOptions): Promise<PublishAck | undefined>;
  publish(data: Uint8Array | string, opts?: PublishOptions): Promise<PublishAck | undefined> {
    if (opts?.ack) return this.#publishAcked([data], false, opts).then((acks) => acks[0]!);
    return this.#publish([data], false);
  }

  /**
   * Publishes several messages in order with one key lookup. If any item is not bytes
   * or text, or would make a frame larger than the server takes, it throws
   * InvalidArgumentError and sends none of them. An empty list sends nothing.
   *
   * With `{ ack: true }` it resolves once the room's stream has stored every item, with
   * their sequences in order. It is not atomic: each item is stored or not on its own
   * (a batch is sent at once and JetStream stores it in order). On failure it rejects
   * with the typed error of the first item not confirmed, whose `stored` is that item's
   * index: every item before it is stored, it and those after it are not known to be.
   */
  publishMany(items: ReadonlyArray<Uint8Array | string>): Promise<undefined>;
  publishMany(items: ReadonlyArray<Uint8Array | string>, opts: PublishOptions & { ack: true }): Promise<PublishAck[]>;
  publishMany(items: ReadonlyArray<Uint8Array | string>, opts?: PublishOptions): Promise<PublishAck[] | undefined>;
  publishMany(items: ReadonlyArray<Uint8Array | string>, opts?: PublishOptions): Promise<PublishAck[] | undefined> {
    if (!Array.isArray(items)) {
      return Promise.reject(new InvalidArgumentError("items", "publishMany takes an array of Uint8Array or string"));
    }
    if (opts?.ack) return this.#publishAcked(items, true, opts);
    return this.#publish(items, true);
  }

  /** Resolves once the server has received everything this connection published so far. */
  flush(): Promise<void> {
    return this.#outbox.flush();
  }

  /** Frames for `items` at the current epoch, queued at once while the room key is at hand. */
  #publish(items: ReadonlyArray<Uint8Array | string>, many: boolean): Promise<undefined> {
    const epoch = this.#epoch;
    if (!this.encrypt && !this.signMsgs) {
      try {
        if (this.#publishClear(items, epoch, many)) return SENT;
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const roomKey = this.#ready.get(epoch);
    if (this.encrypt && !roomKey) return this.#publishAfterKey(items, epoch, many);
    try {
      const frames = this.#frames(items, epoch, roomKey, many);
      if (frames.length === 1) this.#outbox.pushOne(this.subject, frames[0]!);
      else this.#outbox.push(this.subject, frames);
      return SENT;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async #publishAcked(
    items: ReadonlyArray<Uint8Array | string>,
    many: boolean,
    opts: PublishOptions,
  ): Promise<PublishAck[]> {
    const timeoutMs = ackTimeoutFor(this, opts.timeoutMs);
    const epoch = this.#epoch;
    const roomKey = this.encrypt ? await this.keyFor(epoch) : undefined;
    if (this.encrypt && !roomKey) {
      throw new InvalidArgumentError("room", `no room key for epoch ${epoch}; are you still a member?`);
    }
    const frames = this.#frames(items, epoch, roomKey, many);
    // What this connection published before goes first: the room sees the order of the calls.
    this.#outbox.drain();
    return publishAcked(this.#nc, this, frames, { timeoutMs, storageFull: () => this.#control.storageFull() });
  }

  async #publishAfterKey(items: ReadonlyArray<Uint8Array | string>, epoch: number, many: boolean): Promise<undefined> {
    const roomKey = await this.keyFor(epoch);
    if (!roomKey) throw new InvalidArgumentError("room", `no room key for epoch ${epoch}; are you still a member?`);
    this.#outbox.push(this.subject, this.#frames(items, epoch, roomKey, many));
    return undefined;
  }

  /**
   * A cleartext unsigned room's frames, written straight into the connection's outbox:
   * every item checked first (type, size), then each frame written in place. False when
   * the connection has no such outbox (the caller then builds the frames).
   */
  #publishClear(items: ReadonlyArray<Uint8Array | string>, epoch: number, many: boolean): boolean {
    if (this.#clearHeaderEpoch !== epoch) {
      this.#clearHeader = clearFrameHeader(epoch, this.#identity);
      this.#clearHeaderEpoch = epoch;
    }
    const header = this.#clearHeader!;
    if (!many) return this.#writeClear(header, items[0]!, this.#clearSize(items[0], 0, false));
    const sizes = items.map((item, i) => this.#clearSize(item, i, true));
    for (let i = 0; i < items.length; i++) {
      if (!this.#writeClear(header, items[i]!, sizes[i]!)) return false; // the first one: nothing was queued
    }
    return true;
  }

  /** The frame size of a checked item (InvalidArgumentError for one that is not bytes or text, or too large). */
  #clearSize(item: unknown, i: number, many: boolean): number {
    this.#checkItem(item, i, many);
    const size = FRAME_HEADER_BYTES + payloadBytes(item as Uint8Array | string);
    this.#checkSize(size, i, many);
    return size;
  }

  /** Queues one checked cleartext frame, written in place; false when the outbox cannot (nothing queued). */
  #writeClear(header: Buffer, item: Uint8Array | string, size: number): boolean {
    const at = this.#outbox.reserve(this.subject, size);
    if (at < 0) return false;
    writeClearFrame(this.#outbox.buffer, at, header, item, size - FRAME_HEADER_BYTES);
    return true;
  }

  /** Throws InvalidArgumentError for an item that is not bytes or text. */
  #checkItem(item: unknown, i: number, many: boolean): void {
    if (typeof item !== "string" && !(item instanceof Uint8Array)) {
      throw new InvalidArgumentError(
        many ? "items" : "data",
        `${many ? `item ${i}` : "the message"} is not a Uint8Array or a string${many ? "; nothing was sent" : ""}`,
      );
    }
  }

  /** Throws InvalidArgumentError for a frame larger than the server takes. */
  #checkSize(frameSize: number, i: number, many: boolean): void {
    const max = this.#nc.info?.max_payload ?? Number.POSITIVE_INFINITY;
    if (frameSize > max) {
      throw new InvalidArgumentError(
        many ? "items" : "data",
        `${many ? `item ${i}` : "the message"} makes a ${frameSize}-byte frame; the server takes at most ${max} bytes${many ? "; nothing was sent" : ""}`,
      );
    }
  }

  /** Every item's frame, each checked against the server's payload limit before any is queued. */
  #frames(
    items: ReadonlyArray<Uint8Array | string>,
    epoch: number,
    roomKey: Uint8Array | undefined,
    many: boolean,
  ): Uint8Array[] {
    return items.map((item, i) => {
      this.#checkItem(item, i, many);
      const frame = encodeFrame(
        roomKey
          ? { roomId: this.id, epoch, sender: this.#identity, plaintext: item, roomKey, sign: this.signMsgs }
          : { roomId: this.id, epoch, sender: this.#identity, plaintext: item, sign: this.signMsgs },
      );
      this.#checkSize(frame.length, i, many);
      return frame;
    });
  }

  /**
   * Opens one received frame; undefined (and counted) when it must be dropped. `live`
   * frames never wait for the request budget (the subscription must keep flowing);
   * history reads, which the reader paces, do.
   */
  async #open(
    bytes: Uint8Array,
    onDrop: ((d: DroppedFrame) => void) | undefined,
    live: boolean,
    seq?: number,
  ): Promise<RoomMessage | undefined> {
    const now = this.#openNow(bytes, onDrop, seq);
    return now instanceof FrameWaiting ? this.#openLater(now, onDrop, live, seq) : now;
  }

  /**
   * The part of opening that needs no request: the message, undefined for a drop, or
   * the frame with what it still waits for (the signer's membership, the epoch's key).
   * Most frames end here, synchronously.
   */
  #openNow(
    bytes: Uint8Array,
    onDrop: ((d: DroppedFrame) => void) | undefined,
    seq?: number,
  ): RoomMessage | undefined | FrameWaiting {
    const clear = openClearFrame(bytes, this.#rules);
    if (clear) return roomMessage(clear, seq);
    const parsed = parseFrame(bytes);
    if (!parsed.ok) return this.#drop(dropOf(parsed), onDrop);
    const { result, memberChecked } = this.#openKnown(parsed);
    if (!result.ok && (result.reason !== "unknown-epoch" || !inEpochRange(parsed.epoch))) {
      return this.#drop(dropOf(result), onDrop);
    }
    const memberKnown = !parsed.signed || memberChecked || this.#knownMember(parsed.sender, parsed.epoch);
    if (result.ok && memberKnown) return roomMessage(result, seq);
    return new FrameWaiting(parsed, result, memberKnown);
  }

  /** The rest of opening: the membership and key requests a frame needs, in the order of §7. */
  async #openLater(
    w: FrameWaiting,
    onDrop: ((d: DroppedFrame) => void) | undefined,
    live: boolean,
    seq?: number,
  ): Promise<RoomMessage | undefined> {
    const { epoch, sender } = w.parsed;
    if (!w.memberKnown && !(await this.#isMember(sender, epoch))) {
      return this.#drop({ reason: "not-a-member", epoch, sender }, onDrop);
    }
    let opened = w.opened;
    if (!opened.ok) {
      // Every check before the key passed: only now may this frame cost a request.
      const roomKey = await this.#frameKey(epoch, live);
      if (!roomKey) return this.#drop({ reason: "unknown-epoch", epoch, sender }, onDrop);
      opened = openFrame(w.parsed, this.#openOptions(roomKey));
      if (!opened.ok) return this.#drop(dropOf(opened), onDrop);
    }
    return roomMessage(opened, seq);
  }

  /**
   * Opens a frame with what this client already holds, without a request. openFrame asks
   * for the key only after the signature verified; the key is handed over only when the
   * signer is already known as a member (so membership is checked before decryption),
   * else the result is `unknown-epoch` and the caller goes on.
   */
  #openKnown(parsed: ParsedFrame): { result: OpenFrameResult; memberChecked: boolean } {
    let memberChecked = false;
    const result = openFrame(
      parsed,
      this.#openOptions((epoch) => {
        if (!inEpochRange(epoch)) return undefined;
        if (parsed.signed && !this.#knownMember(parsed.sender, epoch)) return undefined;
        memberChecked = parsed.signed;
        return this.#ready.get(epoch);
      }),
    );
    return { result, memberChecked };
  }

  #openOptions(roomKey: Uint8Array | ((epoch: number) => Uint8Array | undefined)) {
    return { ...this.#rules, roomKey };
  }

  #knownMember(signPub: string, epoch: number): boolean {
    return signPub === this.#identity.signPub || this.#roster.knows(signPub, epoch, this.#epoch);
  }

  /** Whether `signPub` was a member at `epoch`, re-reading the member list when needed (and allowed). */
  async #isMember(signPub: string, epoch: number): Promise<boolean> {
    if (signPub === this.#identity.signPub) return true;
    return this.#roster.isMember(signPub, epoch, this.#epoch, () => this.members());
  }

  /** The key of a received frame's epoch, within the limits of docs/protocol.md §7.2. */
  async #frameKey(epoch: number, live: boolean): Promise<Uint8Array | undefined> {
    if (!inEpochRange(epoch)) return undefined;
    const ready = this.#ready.get(epoch);
    if (ready) return ready;
    if (this.#missed(epoch)) return undefined;
    if (epoch > this.#epoch && !(await this.#discover(epoch, live))) return undefined;
    if (!this.#keys.has(epoch) && !(await this.#spend(live))) return undefined;
    return this.keyFor(epoch).catch(() => undefined);
  }

  /** Whether `epoch` exists: a newer epoch than we know is checked with the room, one read at a time. */
  async #discover(epoch: number, live: boolean): Promise<boolean> {
    let pending = this.#discovering;
    if (!pending) {
      if (!(await this.#spend(live))) return false;
      pending = this.#discovering ??= this.refresh()
        .then(
          () => undefined,
          () => undefined,
        )
        .finally(() => {
          this.#discovering = undefined;
        });
    }
    await pending;
    return epoch <= this.#epoch;
  }

  /** One request from the frame budget: taken at once or not at all when live, waited for otherwise. */
  async #spend(live: boolean): Promise<boolean> {
    if (live) return this.#budget.take();
    await this.#budget.acquire();
    return true;
  }

  #drop(d: DroppedFrame, onDrop?: (d: DroppedFrame) => void): undefined {
    this.dropped[d.reason] = (this.dropped[d.reason] ?? 0) + 1;
    onDrop?.(d);
    return undefined;
  }

  /**
   * Live messages, in order. `for await (const m of room.subscribe())`, or pass a
   * callback. Frames that fail verification or decryption are dropped and counted, as are
   * frames past `maxPending` for a reader that falls behind.
   */
  subscribe(opts: SubscribeOptions = {}): AsyncIterable<RoomMessage> & { unsubscribe(): void } {
    const feed = new LiveFeed(opts.maxPending ?? DEFAULT_MAX_PENDING, opts.callback);
    const onDrop = opts.onDrop;
    // Frames are delivered in arrival order. One that waits for a request (a key, the
    // member list) queues itself and every later frame behind it on a promise chain;
    // while none waits, frames are opened and delivered right here, without a promise.
    let chain = Promise.resolve();
    let waiting = 0;
    const later = (open: () => Promise<RoomMessage | undefined>) => {
      waiting++;
      chain = chain.then(async () => {
        try {
          feed.deliver(await open().catch(() => undefined));
        } finally {
          waiting--;
        }
      });
    };
    const sub = this.#nc.subscribe(this.subject, {
      callback: (err: Error | null, msg: Msg) => {
        if (err) return feed.end(); // refused by the broker: no longer a member
        if (!feed.admit()) return void this.#drop({ reason: "slow-consumer" }, onDrop);
        const data = msg.data;
        if (waiting > 0) return later(() => this.#open(data, onDrop, true));
        let now: RoomMessage | undefined | FrameWaiting;
        try {
          now = this.#openNow(data, onDrop);
        } catch {
          now = undefined;
        }
        if (now instanceof FrameWaiting) later(() => this.#openLater(now, onDrop, true));
        else feed.deliver(now);
      },
    });
    this.#subs.add(sub);
    void sub.closed.then(() => {
      this.#subs.delete(sub);
      feed.end();
    });
    const unsubscribe = () => {
      if (!sub.isClosed()) sub.unsubscribe();
      feed.end();
    };
    return {
      unsubscribe,
      async *[Symbol.asyncIterator]() {
        try {
          yield* feed.messages();
        } finally {
          unsubscribe();
        }
      },
    };
  }

  /**
   * The persisted history, oldest first, decrypted across every epoch this identity
   * was a member of (frames from other epochs are dropped and counted).
   */
  async *history(opts: { fromSeq?: number; onDrop?: (d: DroppedFrame) => void } = {}): AsyncIterable<RoomMessage> {
    if (!this.persist)
      throw new InvalidArgumentError("room", "this room does not keep history (create it with persist: true)");
    const api = `$JS.API.DIRECT.GET.ROOM_${this.id}`;
    let seq = opts.fromSeq ?? 1;
    while (true) {
      const reply = await this.#nc
        .request(api, JSON.stringify({ seq, next_by_subj: this.subject }), { timeout: 5000 })
        .catch((err: Error) => {
          // No one answers the room's direct-get subject: its stream does not exist.
          throw /no responders/i.test(`${err.message} ${(err.cause as Error | undefined)?.message ?? ""}`)
            ? new HistoryUnavailableError(this.id, { cause: err })
            : err;
        });
      const status = reply.headers?.code ?? 0;
      if (status === 404 || status === 408) return; // no more messages
      if (status >= 400)
        throw new InvalidArgumentError("room", `history read failed (${status} ${reply.headers?.description ?? ""})`);
      const at = Number(reply.headers?.get("Nats-Sequence"));
      const m = await this.#open(reply.data, opts.onDrop, false, at);
      if (m) yield m;
      seq = at + 1;
    }
  }

  /**
   * Encrypts a blob with the current room key (chunked, bounded memory) and uploads
   * it. The ciphertext is staged in a private temp file first: the upload's signature
   * covers its SHA-256, which must be known before the first byte is sent.
   */
  async putBlob(source: Uint8Array | AsyncIterable<Uint8Array>, opts: { mimetype: string }): Promise<BlobInfo> {
    const epoch = this.#epoch;
    const roomKey = this.encrypt ? await this.keyFor(epoch) : undefined;
    if (this.encrypt && !roomKey) throw new InvalidArgumentError("room", `no room key for epoch ${epoch}`);
    const input = source instanceof Uint8Array ? [source] : source;
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-blob-"));
    const file = path.join(dir, "blob");
    try {
      const hash = crypto.createHash("sha256");
      let size = 0;
      const out = await fs.open(file, "wx", 0o600);
      try {
        const body = roomKey ? encryptBlob(input, { roomKey, roomId: this.id, epoch }) : plainChunks(input);
        for await (const chunk of body) {
          hash.update(chunk);
          size += chunk.length;
          await out.write(chunk);
        }
      } finally {
        await out.close();
      }
      const sha256 = hash.digest("hex");
      return await this.#control.putBlob(`/v1/rooms/${this.id}/blobs`, createReadStream(file), {
        sha256,
        size,
        mimetype: opts.mimetype,
      });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Downloads and decrypts a blob as a stream of plaintext chunks. Each chunk is
   * verified before it is yielded; tampering or truncation throws CryptoError.
   */
  async getBlob(blobId: string): Promise<{ mimetype: string; size: number; data: AsyncIterable<Uint8Array> }> {
    const download = await this.#control.getBlob(`/v1/rooms/${this.id}/blobs/${encodeURIComponent(blobId)}`);
    const data: AsyncIterable<Uint8Array> = this.encrypt
      ? decryptBlob(download.stream, { roomId: this.id, keyFor: (epoch) => this.keyFor(epoch) })
      : download.stream;
    return { mimetype: download.mimetype, size: download.size, data };
  }

  /** Hands what this client published to the connection, and stops this room's subscriptions. */
  close(): void {
    this.#outbox.drain();
    for (const sub of this.#subs) if (!sub.isClosed()) sub.unsubscribe();
    this.#subs.clear();
  }
}

/** What `publish` returns once the frame is handed to the connection: nothing left to wait for. */
const SENT: Promise<undefined> = Promise.resolve(undefined);

/** A received frame that passed every check needing no request, and what it still waits for. */
class FrameWaiting {
  readonly parsed: ParsedFrame;
  readonly opened: OpenFrameResult;
  readonly memberKnown: boolean;
  constructor(parsed: ParsedFrame, opened: OpenFrameResult, memberKnown: boolean) {
    this.parsed = parsed;
    this.opened = opened;
    this.memberKnown = memberKnown;
  }
}

// nats.js hands over every message of one socket read in one synchronous run: they share
// one reading of the clock (taken again after the run), which costs less than one per frame.
let clockNow = 0;
function receivedNow(): number {
  if (clockNow === 0) {
    clockNow = Date.now();
    queueMicrotask(() => {
      clockNow = 0;
    });
  }
  return clockNow;
}

function roomMessage(opened: OpenedFrame, seq: number | undefined): RoomMessage {
  const m: RoomMessage = {
    data: opened.plaintext,
    sender: opened.sender,
    epoch: opened.epoch,
    verified: opened.verified,
    receivedAt: receivedNow(),
  };
  if (seq !== undefined) m.seq = seq;
  return m;
}
