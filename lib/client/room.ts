/**
 * A room as a bot author sees it: publish bytes, iterate messages, manage members.
 * Keys never leave the client unsealed: the room key of each epoch is fetched sealed
 * to this identity, opened here, and cached per epoch.
 */
import crypto from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { decryptBlob, encryptBlob } from "../crypto/blob.ts";
import { encodeFrame, type FrameFailureReason, frameEpoch, openFrame } from "../crypto/frame.ts";
import type { Identity } from "../crypto/identity.ts";
import { newRoomKey } from "../crypto/room-key.ts";
import { openRoomKey, sealRoomKey } from "../crypto/seal.ts";
import { ControlPlaneError, InvalidArgumentError } from "../errors.ts";
import type { BlobInfo, ControlClient } from "./control.ts";

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
  /** The frame carried a valid signature by `sender`. */
  verified: boolean;
  receivedAt: number;
  /** Stream sequence, for messages read from history. */
  seq?: number;
}

/** A frame that was dropped, and why (never thrown, never delivered). */
export interface DroppedFrame {
  reason: FrameFailureReason | "key-unavailable";
  epoch?: number;
  sender?: string;
}

export interface SubscribeOptions {
  /** Callback form: called for each message instead of the async iterator. */
  callback?: (m: RoomMessage) => void;
  /** Told about each frame that could not be verified or decrypted. */
  onDrop?: (d: DroppedFrame) => void;
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
  readonly ownerSignPub: string;
  #epoch: number;
  readonly #nc: NatsConnection;
  readonly #control: ControlClient;
  readonly #identity: Identity;
  /** epoch → opened room key; a promise so concurrent frames fetch once. */
  readonly #keys = new Map<number, Promise<Uint8Array | undefined>>();
  readonly #ready = new Map<number, Uint8Array>();
  readonly #subs = new Set<Subscription>();
  /** Frames dropped, by reason. */
  readonly dropped: Record<string, number> = {};

  constructor(info: RoomInfo, deps: { nc: NatsConnection; control: ControlClient; identity: Identity }) {
    this.id = info.id;
    this.subject = info.subject;
    this.encrypt = info.encrypt;
    this.persist = info.persist;
    this.signMsgs = info.signMsgs;
    this.ownerSignPub = info.ownerSignPub;
    this.#epoch = info.epoch;
    this.#nc = deps.nc;
    this.#control = deps.control;
    this.#identity = deps.identity;
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
    let pending = this.#keys.get(epoch);
    if (!pending) {
      pending = this.#control
        .request<{ sealed: string }>("GET", `/v1/rooms/${this.id}/keys/${this.#identity.signPub}?epoch=${epoch}`)
        .then((k) => {
          const key = openRoomKey({ sealed: k.sealed, identity: this.#identity, roomId: this.id, epoch });
          this.#ready.set(epoch, key);
          return key;
        })
        .catch((err: unknown) => {
          // Not a member then (403), or no such epoch: remember the miss briefly only.
          this.#keys.delete(epoch);
          if (err instanceof ControlPlaneError && (err.status === 403 || err.status === 404)) return undefined;
          throw err;
        });
      this.#keys.set(epoch, pending);
    }
    return pending;
  }

  /** Re-reads the room (epoch included) from the control plane. */
  async refresh(): Promise<RoomInfo> {
    const info = await this.#control.request<RoomInfo>("GET", `/v1/rooms/${this.id}`);
    if (info.epoch > this.#epoch) this.#epoch = info.epoch;
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
        return await this.#control.request<RoomMember>("POST", `/v1/rooms/${this.id}/members`, body);
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
    await this.#control.request("DELETE", `/v1/rooms/${this.id}/members/${refKey(user)}`);
    if (this.encrypt && refKey(user) !== this.#identity.signPub) await this.rekey();
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

  /** Encrypts (and signs, in signMsgs rooms) and publishes one message. */
  async publish(data: Uint8Array | string): Promise<void> {
    const epoch = this.#epoch;
    const roomKey = this.encrypt ? (this.#ready.get(epoch) ?? (await this.keyFor(epoch))) : undefined;
    if (this.encrypt && !roomKey)
      throw new InvalidArgumentError("room", `no room key for epoch ${epoch}; are you still a member?`);
    const frame = encodeFrame({
      roomId: this.id,
      epoch,
      sender: this.#identity,
      plaintext: data,
      ...(roomKey ? { roomKey } : {}),
      sign: this.signMsgs,
    });
    this.#nc.publish(this.subject, frame);
  }

  /** Opens one received frame; undefined (and counted) when it must be dropped. */
  async #open(bytes: Uint8Array, onDrop?: (d: DroppedFrame) => void, seq?: number): Promise<RoomMessage | undefined> {
    let roomKey: Uint8Array | undefined;
    if (this.encrypt) {
      const epoch = frameEpoch(bytes);
      if (epoch !== undefined) {
        roomKey = this.#ready.get(epoch) ?? (await this.keyFor(epoch).catch(() => undefined));
        if (epoch > this.#epoch && roomKey) this.#epoch = epoch; // someone rekeyed: follow
        if (!roomKey) return this.#drop({ reason: "key-unavailable", epoch }, onDrop);
      }
    }
    const opened = openFrame(bytes, {
      roomId: this.id,
      encrypted: this.encrypt,
      ...(roomKey ? { roomKey } : {}),
      requireSignature: this.signMsgs,
    });
    if (!opened.ok) {
      return this.#drop(
        {
          reason: opened.reason,
          ...(opened.epoch !== undefined ? { epoch: opened.epoch } : {}),
          ...(opened.sender ? { sender: opened.sender } : {}),
        },
        onDrop,
      );
    }
    return {
      data: opened.plaintext,
      sender: opened.sender,
      epoch: opened.epoch,
      verified: opened.verified,
      receivedAt: Date.now(),
      ...(seq !== undefined ? { seq } : {}),
    };
  }

  #drop(d: DroppedFrame, onDrop?: (d: DroppedFrame) => void): undefined {
    this.dropped[d.reason] = (this.dropped[d.reason] ?? 0) + 1;
    onDrop?.(d);
    return undefined;
  }

  /**
   * Live messages, in order. `for await (const m of room.subscribe())`, or pass a
   * callback. Frames that fail verification or decryption are dropped and counted.
   */
  subscribe(opts: SubscribeOptions = {}): AsyncIterable<RoomMessage> & { unsubscribe(): void } {
    const queue: RoomMessage[] = [];
    let wake: (() => void) | undefined;
    let done = false;
    // Frames are opened in arrival order, even when one waits for a key fetch.
    let chain = Promise.resolve();
    const sub = this.#nc.subscribe(this.subject, {
      callback: (err: Error | null, msg: Msg) => {
        if (err) {
          done = true; // refused by the broker: no longer a member
          wake?.();
          return;
        }
        const data = msg.data;
        chain = chain.then(async () => {
          const m = await this.#open(data, opts.onDrop);
          if (!m) return;
          if (opts.callback) opts.callback(m);
          else {
            queue.push(m);
            wake?.();
          }
        });
      },
    });
    this.#subs.add(sub);
    void sub.closed.then(() => {
      done = true;
      this.#subs.delete(sub);
      wake?.();
    });
    const unsubscribe = () => {
      if (!sub.isClosed()) sub.unsubscribe();
      done = true;
      wake?.();
    };
    return {
      unsubscribe,
      async *[Symbol.asyncIterator]() {
        try {
          while (true) {
            const next = queue.shift();
            if (next) {
              yield next;
              continue;
            }
            if (done) return;
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            wake = undefined;
          }
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
      const reply = await this.#nc.request(api, JSON.stringify({ seq, next_by_subj: this.subject }), { timeout: 5000 });
      const status = reply.headers?.code ?? 0;
      if (status === 404 || status === 408) return; // no more messages
      if (status >= 400)
        throw new InvalidArgumentError("room", `history read failed (${status} ${reply.headers?.description ?? ""})`);
      const at = Number(reply.headers?.get("Nats-Sequence"));
      const m = await this.#open(reply.data, opts.onDrop, at);
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

  /** Stops this room's subscriptions. */
  close(): void {
    for (const sub of this.#subs) if (!sub.isClosed()) sub.unsubscribe();
    this.#subs.clear();
  }
}
