/**
 * A room in a browser page: the same surface as lib/client/room.ts for what a page needs
 * (publish, subscribe, history, blobs, members) and the same receive rules
 * (docs/protocol.md §7): checks in order, keys fetched once per epoch, refusals
 * remembered, frame-driven requests bounded by the same budget and roster code.
 */
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { ackTimeoutFor, type PublishAck, publishAcked } from "../client/ack.ts";
import {
  dropOf,
  FRAME_REQUEST_BURST,
  FRAME_REQUESTS_PER_SEC,
  inEpochRange,
  KEY_MISS_TTL_MS,
  KEY_MISSES_MAX,
  RequestBudget,
  Roster,
} from "../client/frame-policy.ts";
import type { DroppedFrame, RoomInfo, RoomMember, RoomMessage } from "../client/room.ts";
import { ControlPlaneError, HistoryUnavailableError, InvalidArgumentError } from "../errors.ts";
import { decryptBlob, encryptBlob } from "./blob.ts";
import type { BlobInfo, BrowserControl } from "./control.ts";
import { encodeFrame, openFrame, type ParsedFrame, parseFrame } from "./frame.ts";
import type { BrowserIdentity } from "./identity.ts";
import { openRoomKey, sealRoomKey } from "./seal.ts";

export type { DroppedFrame, RoomInfo, RoomMember, RoomMessage };

export interface BrowserSubscribeOptions {
  callback?: (m: RoomMessage) => void;
  onDrop?: (d: DroppedFrame) => void;
}

/** `publish` options in the browser: as the Node client's, without a flush of its own. */
export interface BrowserPublishOptions {
  /** Resolve once the room's stream has stored the message (persisted rooms only). */
  ack?: boolean;
  /** How long to wait for the stream's acknowledgement. Default 5000 ms. */
  timeoutMs?: number;
}

export class BrowserRoom {
  readonly id: string;
  readonly subject: string;
  readonly encrypt: boolean;
  readonly persist: boolean;
  readonly signMsgs: boolean;
  /** Frames dropped, by reason. */
  readonly dropped: Record<string, number> = {};
  #epoch: number;
  readonly #nc: NatsConnection;
  readonly #control: BrowserControl;
  readonly #identity: BrowserIdentity;
  readonly #keys = new Map<number, Promise<Uint8Array | undefined>>();
  /** Opened keys, for the frames that need no request. */
  readonly #ready = new Map<number, Uint8Array>();
  readonly #misses = new Map<number, number>();
  readonly #budget = new RequestBudget(FRAME_REQUEST_BURST, FRAME_REQUESTS_PER_SEC);
  readonly #roster = new Roster();
  readonly #subs = new Set<Subscription>();

  constructor(info: RoomInfo, deps: { nc: NatsConnection; control: BrowserControl; identity: BrowserIdentity }) {
    this.id = info.id;
    this.subject = info.subject;
    this.encrypt = info.encrypt;
    this.persist = info.persist;
    this.signMsgs = info.signMsgs;
    this.#epoch = info.epoch;
    this.#nc = deps.nc;
    this.#control = deps.control;
    this.#identity = deps.identity;
  }

  get epoch(): number {
    return this.#epoch;
  }

  rememberKey(epoch: number, key: Uint8Array): void {
    this.#ready.set(epoch, key);
    this.#keys.set(epoch, Promise.resolve(key));
  }

  /** The room key of `epoch`, fetched sealed to this identity once; undefined if it never held it. */
  keyFor(epoch: number): Promise<Uint8Array | undefined> {
    const until = this.#misses.get(epoch);
    if (until !== undefined && performance.now() < until) return Promise.resolve(undefined);
    let pending = this.#keys.get(epoch);
    if (!pending) {
      const path = `/v1/rooms/${this.id}/keys/${this.#identity.signPub}?epoch=${epoch}`;
      pending = this.#control
        .request<{ sealed: string }>("GET", path)
        .then(async (k) => {
          const key = await openRoomKey({ sealed: k.sealed, identity: this.#identity, roomId: this.id, epoch });
          this.#ready.set(epoch, key);
          if (epoch > this.#epoch) this.#epoch = epoch;
          return key;
        })
        .catch((err: unknown) => {
          this.#keys.delete(epoch);
          if (!(err instanceof ControlPlaneError && (err.status === 403 || err.status === 404))) throw err;
          if (epoch <= this.#epoch) {
            if (this.#misses.size >= KEY_MISSES_MAX) this.#misses.clear();
            this.#misses.set(epoch, performance.now() + KEY_MISS_TTL_MS);
          }
          return undefined;
        });
      this.#keys.set(epoch, pending);
    }
    return pending;
  }

  async refresh(): Promise<RoomInfo> {
    const info = await this.#control.request<RoomInfo>("GET", `/v1/rooms/${this.id}`);
    if (info.epoch > this.#epoch) this.#epoch = info.epoch;
    return info;
  }

  members(): Promise<RoomMember[]> {
    return this.#control.request<RoomMember[]>("GET", `/v1/rooms/${this.id}/members`);
  }

  /** Adds a registered user, sealing the current room key to its key-exchange key. */
  async addMember(signPub: string): Promise<RoomMember> {
    const body: Record<string, unknown> = { signPub: signPub.toLowerCase(), epoch: this.#epoch };
    if (this.encrypt) {
      const user = await this.#control.request<{ kexPub: string | null }>("GET", `/v1/users/${signPub}`);
      const roomKey = await this.keyFor(this.#epoch);
      if (!user.kexPub || !roomKey) throw new InvalidArgumentError("member", "no key to seal to this member");
      body.sealedKey = await sealRoomKey({
        roomKey,
        recipientKexPub: user.kexPub,
        roomId: this.id,
        epoch: this.#epoch,
      });
    }
    const added = await this.#control.request<RoomMember>("POST", `/v1/rooms/${this.id}/members`, body);
    this.#roster.add(added.signPub);
    return added;
  }

  /**
   * Encrypts (and signs, in signMsgs rooms) and publishes one message. With `{ ack: true }`
   * (persisted rooms only) it resolves once the room's stream has stored it, with its
   * sequence, checked as the Node client checks it (lib/client/ack.ts) and with the same
   * typed errors — except that a full disk, which nats-server 2.15 answers with silence,
   * shows as AckTimeoutError here: the page does not ask the bus's health.
   */
  async publish(data: Uint8Array | string): Promise<undefined>;
  async publish(data: Uint8Array | string, opts: BrowserPublishOptions & { ack: true }): Promise<PublishAck>;
  async publish(data: Uint8Array | string, opts?: BrowserPublishOptions): Promise<PublishAck | undefined>;
  async publish(data: Uint8Array | string, opts?: BrowserPublishOptions): Promise<PublishAck | undefined> {
    const timeoutMs = opts?.ack ? ackTimeoutFor(this, opts.timeoutMs) : 0;
    const epoch = this.#epoch;
    const roomKey = this.encrypt ? await this.keyFor(epoch) : undefined;
    if (this.encrypt && !roomKey) throw new InvalidArgumentError("room", `no room key for epoch ${epoch}`);
    const frame = await encodeFrame({
      roomId: this.id,
      epoch,
      sender: this.#identity,
      plaintext: data,
      ...(roomKey ? { roomKey } : {}),
      sign: this.signMsgs,
    });
    if (opts?.ack) return (await publishAcked(this.#nc, this, [frame], { timeoutMs }))[0]!;
    this.#nc.publish(this.subject, frame);
    return undefined;
  }

  /** Live messages in arrival order; bad frames are dropped and counted, never thrown. */
  subscribe(opts: BrowserSubscribeOptions = {}): AsyncIterable<RoomMessage> & { unsubscribe(): void } {
    const queue: RoomMessage[] = [];
    let wake: (() => void) | undefined;
    let done = false;
    let chain = Promise.resolve();
    const deliver = (m: RoomMessage | undefined) => {
      if (!m) return;
      if (opts.callback) opts.callback(m);
      else queue.push(m);
      wake?.();
    };
    const sub = this.#nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (err) {
          done = true; // refused by the broker: no longer a member
          return;
        }
        const data = msg.data;
        chain = chain.then(async () => deliver(await this.#open(data, opts.onDrop, true).catch(() => undefined)));
      },
    });
    this.#subs.add(sub);
    const unsubscribe = () => {
      if (!sub.isClosed()) sub.unsubscribe();
      done = true;
      wake?.();
    };
    void sub.closed.then(() => {
      done = true;
      wake?.();
    });
    return {
      unsubscribe,
      async *[Symbol.asyncIterator]() {
        try {
          while (true) {
            const next = queue.shift();
            if (next) yield next;
            else if (done) return;
            else await new Promise<void>((r) => (wake = r));
          }
        } finally {
          unsubscribe();
        }
      },
    };
  }

  /** The persisted history, oldest first (direct get, docs/protocol.md §3.4). */
  async *history(opts: { fromSeq?: number; onDrop?: (d: DroppedFrame) => void } = {}): AsyncIterable<RoomMessage> {
    if (!this.persist) throw new InvalidArgumentError("room", "this room does not keep history");
    let seq = opts.fromSeq ?? 1;
    while (true) {
      const reply = await this.#nc
        .request(`$JS.API.DIRECT.GET.ROOM_${this.id}`, JSON.stringify({ seq, next_by_subj: this.subject }), {
          timeout: 5000,
        })
        .catch((err: Error) => {
          throw /no responders/i.test(`${err.message} ${(err.cause as Error | undefined)?.message ?? ""}`)
            ? new HistoryUnavailableError(this.id, { cause: err })
            : err;
        });
      const status = reply.headers?.code ?? 0;
      if (status === 404 || status === 408) return;
      if (status >= 400) throw new InvalidArgumentError("room", `history read failed (${status})`);
      const at = Number(reply.headers?.get("Nats-Sequence"));
      const m = await this.#open(reply.data, opts.onDrop, false, at);
      if (m) yield m;
      seq = at + 1;
    }
  }

  /** Encrypts (encrypted rooms) and uploads a blob. */
  async putBlob(bytes: Uint8Array, opts: { mimetype: string }): Promise<BlobInfo> {
    const epoch = this.#epoch;
    const roomKey = this.encrypt ? await this.keyFor(epoch) : undefined;
    if (this.encrypt && !roomKey) throw new InvalidArgumentError("room", `no room key for epoch ${epoch}`);
    const body = roomKey ? await encryptBlob(bytes, { roomKey, roomId: this.id, epoch }) : bytes;
    return this.#control.putBlob(`/v1/rooms/${this.id}/blobs`, body, opts.mimetype);
  }

  /** Downloads, checks and decrypts a blob; CryptoError when it does not verify. */
  async getBlob(blobId: string): Promise<{ mimetype: string; data: Uint8Array }> {
    const got = await this.#control.getBlob(`/v1/rooms/${this.id}/blobs/${encodeURIComponent(blobId)}`);
    const data = this.encrypt
      ? await decryptBlob(got.bytes, { roomId: this.id, keyFor: (e) => this.keyFor(e) })
      : got.bytes;
    return { mimetype: got.mimetype, data };
  }

  close(): void {
    for (const sub of this.#subs) if (!sub.isClosed()) sub.unsubscribe();
    this.#subs.clear();
  }

  /** docs/protocol.md §7.1, in order; undefined (and counted) for a frame that is dropped. */
  async #open(
    bytes: Uint8Array,
    onDrop: ((d: DroppedFrame) => void) | undefined,
    live: boolean,
    seq?: number,
  ): Promise<RoomMessage | undefined> {
    const parsed = parseFrame(bytes);
    if (!parsed.ok) return this.#drop(dropOf(parsed), onDrop);
    const { epoch, sender } = parsed;
    // Everything that needs no request first; the key is handed over only for a signer
    // already known as a member (membership before decryption, as in the Node client).
    let memberChecked = false;
    const checked = await openFrame(
      parsed,
      this.#openOptions((e) => {
        if (!inEpochRange(e) || (parsed.signed && !this.#knownMember(sender, e))) return undefined;
        memberChecked = parsed.signed;
        return this.#ready.get(e);
      }),
    );
    if (!checked.ok && checked.reason !== "unknown-epoch") return this.#drop(dropOf(checked), onDrop);
    if (this.encrypt && !inEpochRange(epoch)) return this.#drop({ reason: "unknown-epoch", epoch, sender }, onDrop);
    if (parsed.signed && !memberChecked && !(await this.#isMember(sender, epoch))) {
      return this.#drop({ reason: "not-a-member", epoch, sender }, onDrop);
    }
    const opened = checked.ok ? checked : await this.#decrypt(parsed, live);
    if (!opened.ok) return this.#drop(dropOf(opened), onDrop);
    return {
      data: opened.plaintext,
      sender: opened.sender,
      epoch: opened.epoch,
      verified: opened.verified,
      receivedAt: Date.now(),
      ...(seq !== undefined ? { seq } : {}),
    };
  }

  async #decrypt(parsed: ParsedFrame, live: boolean) {
    const key = await this.#frameKey(parsed.epoch, live);
    return openFrame(
      parsed,
      this.#openOptions(() => key),
    );
  }

  #openOptions(roomKey: (epoch: number) => Uint8Array | undefined) {
    return { roomId: this.id, encrypted: this.encrypt, roomKey, requireSignature: this.signMsgs };
  }

  #knownMember(signPub: string, epoch: number): boolean {
    return signPub === this.#identity.signPub || this.#roster.knows(signPub, epoch, this.#epoch);
  }

  #isMember(signPub: string, epoch: number): Promise<boolean> {
    if (signPub === this.#identity.signPub) return Promise.resolve(true);
    return this.#roster.isMember(signPub, epoch, this.#epoch, () => this.members());
  }

  /** The key of a received frame's epoch, within the limits of docs/protocol.md §7.2. */
  async #frameKey(epoch: number, live: boolean): Promise<Uint8Array | undefined> {
    if (!this.#keys.has(epoch)) {
      if (epoch > this.#epoch) {
        if (!(await this.#spend(live))) return undefined;
        await this.refresh().catch(() => undefined);
        if (epoch > this.#epoch) return undefined;
      }
      if (!this.#keys.has(epoch) && !(await this.#spend(live))) return undefined;
    }
    return this.keyFor(epoch).catch(() => undefined);
  }

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
}
