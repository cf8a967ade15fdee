/**
 * Frames a connection's rooms publish, handed to nats.js together once per turn of the
 * event loop. nats.js writes its buffer to the socket on the first microtask after a
 * publish, so a bot that awaits each `room.publish()` made one socket write (one TLS
 * record) per message, which halved what the connection carries (measured: 256 B
 * frames, ~10 µs of CPU per message pipelined, ~21 µs with an await between publishes).
 * Collected here, a loop of awaited publishes leaves in one write, as a loop of
 * synchronous `nc.publish` calls does. One outbox per connection, so frames to
 * different rooms keep their order.
 *
 * The outbox writes each frame as the NATS `PUB <subject> <size>\r\n<frame>\r\n` command
 * nats.js would write for it, straight into one buffer, and hands that buffer to nats.js's
 * protocol as a single command once per turn, or as soon as it holds 32 KiB (nats.js's own
 * inline-flush threshold, so memory stays bounded in a long synchronous burst). Per
 * frame that saves what `nc.publish` costs on top of the bytes: a template string and its
 * UTF-8 encoding, a subject check by regular expression, three buffer entries joined
 * again at flush (measured with bench/hotpath.ts). A cleartext frame is even written in
 * place (`reserve`), so its payload is copied once, as raw nats.js copies it.
 *
 * A connection whose protocol handler does not have that shape (another nats.js) gets
 * the frames through `nc.publish`, one call each, as before.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { StateError } from "../errors.ts";

// setImmediate runs right after the I/O of this turn; browsers have no setImmediate.
const nextTurn: (f: () => void) => void =
  typeof globalThis.setImmediate === "function" ? (f) => void globalThis.setImmediate(f) : (f) => void setTimeout(f, 0);

/** Queued bytes that are handed to nats.js at once rather than at the end of the turn. */
export const HANDOFF_BYTES = 32 * 1024;
/** Commands are written into slabs of this size; a larger one gets a buffer of its own. */
const SLAB_BYTES = 128 * 1024;
const CRLF_0 = 0x0d;
const CRLF_1 = 0x0a;

/** The part of nats.js's ProtocolHandler (nats-core lib/protocol.js) the outbox writes to. */
interface Protocol {
  sendCommand(cmd: Uint8Array): void;
  noMorePublishing: boolean;
  outMsgs: number;
  outBytes: number;
}

function protocolOf(nc: NatsConnection): Protocol | undefined {
  const p = (nc as unknown as { protocol?: Partial<Protocol> }).protocol;
  return p && typeof p.sendCommand === "function" && typeof p.outMsgs === "number" && typeof p.outBytes === "number"
    ? (p as Protocol)
    : undefined;
}

const prefixes = new Map<string, Buffer>();
/** `PUB <subject> ` as bytes, kept per subject (a process publishes to few rooms). */
function pubPrefix(subject: string): Buffer {
  let p = prefixes.get(subject);
  if (p === undefined) {
    if (prefixes.size >= 1024) prefixes.clear();
    p = Buffer.from(`PUB ${subject} `, "utf8");
    prefixes.set(subject, p);
  }
  return p;
}

/** Writes `n` (a non-negative integer) in decimal at `at`; returns the offset after it. */
function writeDecimal(buf: Buffer, at: number, n: number): number {
  let end = at + 1;
  for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) end++;
  for (let i = end - 1; i >= at; i--) {
    buf[i] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
  return end;
}

/** Bytes of `PUB <subject> <size>\r\n<frame>\r\n` beyond the prefix. */
function commandTail(size: number): number {
  let d = 1;
  for (let rest = size; rest >= 10; rest = Math.floor(rest / 10)) d++;
  return d + 2 + size + 2;
}

export class Outbox {
  readonly #nc: NatsConnection;
  readonly #protocol: Protocol | undefined;
  /** Direct mode: commands are written into `#slab`; those in [#start, #end) are not handed over yet. */
  #slab: Buffer = Buffer.alloc(0);
  #start = 0;
  #end = 0;
  #msgs = 0;
  #payloadBytes = 0;
  /** Fallback mode: frames waiting for `nc.publish`. */
  #subjects: string[] = [];
  #frames: Uint8Array[] = [];
  #scheduled = false;

  constructor(nc: NatsConnection) {
    this.#nc = nc;
    this.#protocol = protocolOf(nc);
  }

  /** Queues frames for `subject`; throws StateError when the connection is closed (nothing queued). */
  push(subject: string, frames: readonly Uint8Array[]): void {
    this.#checkOpen();
    for (const frame of frames) this.#reserve(subject, frame.length, frame);
  }

  /** Queues one frame for `subject`; throws StateError when the connection is closed (nothing queued). */
  pushOne(subject: string, frame: Uint8Array): void {
    this.#checkOpen();
    this.#reserve(subject, frame.length, frame);
  }

  /**
   * Makes room for a frame of `size` bytes for `subject`, queued already, and returns the
   * offset in `buffer` where the caller writes exactly `size` bytes, before anything else
   * touches the outbox. -1 when this connection has no direct mode: the caller then
   * builds the frame and uses `pushOne`. Throws StateError when closed (nothing queued).
   */
  reserve(subject: string, size: number): number {
    if (!this.#protocol) return -1;
    this.#checkOpen();
    return this.#reserve(subject, size, undefined);
  }

  /** The buffer `reserve` points into. */
  get buffer(): Buffer {
    return this.#slab;
  }

  #checkOpen(): void {
    if (this.#nc.isClosed()) throw new StateError(["open"], "closed", "publishing to a room");
  }

  /** Writes the command around a frame of `size` bytes (copying `frame` when given); returns where the frame goes. */
  #reserve(subject: string, size: number, frame: Uint8Array | undefined): number {
    if (!this.#protocol) {
      this.#subjects.push(subject);
      this.#frames.push(frame!);
      this.#schedule();
      return 0;
    }
    // Every command queued before this one is complete (a reserved frame is written before
    // the outbox is touched again), so this is where a long burst is handed over.
    if (this.#end - this.#start >= HANDOFF_BYTES) this.drain();
    const prefix = pubPrefix(subject);
    const len = prefix.length + commandTail(size);
    if (this.#end + len > this.#slab.length) this.#newSlab(len);
    const buf = this.#slab;
    let at = this.#end;
    buf.set(prefix, at);
    at += prefix.length;
    at = writeDecimal(buf, at, size);
    buf[at++] = CRLF_0;
    buf[at++] = CRLF_1;
    const frameAt = at;
    if (frame) buf.set(frame, at);
    at += size;
    buf[at++] = CRLF_0;
    buf[at++] = CRLF_1;
    this.#end = at;
    this.#msgs++;
    this.#payloadBytes += size;
    this.#schedule();
    return frameAt;
  }

  /** A new slab for a command of `len` bytes, after handing over what the old one holds. */
  #newSlab(len: number): void {
    this.drain();
    this.#slab = Buffer.allocUnsafe(Math.max(SLAB_BYTES, len));
    this.#start = 0;
    this.#end = 0;
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    nextTurn(() => {
      this.#scheduled = false;
      this.drain();
    });
  }

  /** Hands every queued frame to nats.js now (before a flush or a close). */
  drain(): void {
    if (this.#protocol) {
      this.#handOver(this.#protocol);
      return;
    }
    const subjects = this.#subjects;
    const frames = this.#frames;
    if (frames.length === 0) return;
    this.#subjects = [];
    this.#frames = [];
    if (this.#nc.isClosed()) return; // closed by its owner meanwhile, as nats.js drops its own buffer then
    for (let i = 0; i < frames.length; i++) {
      try {
        this.#nc.publish(subjects[i]!, frames[i]!);
      } catch {
        // Sizes were checked when queued; what is left (the connection closing under us) loses
        // the frame as nats.js loses its own unsent buffer, and must not stop the ones after it.
      }
    }
  }

  #handOver(protocol: Protocol): void {
    if (this.#end === this.#start) return;
    const commands = this.#slab.subarray(this.#start, this.#end);
    const msgs = this.#msgs;
    const bytes = this.#payloadBytes;
    // What is handed over is never written again: the next commands go after it.
    this.#start = this.#end;
    this.#msgs = 0;
    this.#payloadBytes = 0;
    // Closed, or draining (nats.js refuses publishes then): lost as nats.js loses its own unsent buffer.
    if (this.#nc.isClosed() || protocol.noMorePublishing) return;
    protocol.outMsgs += msgs;
    protocol.outBytes += bytes;
    protocol.sendCommand(commands);
  }

  /** Resolves once the server has received every frame queued so far. */
  async flush(): Promise<void> {
    this.drain();
    await this.#nc.flush();
  }
}

const outboxes = new WeakMap<NatsConnection, Outbox>();

/** The one outbox of a connection. */
export function outboxOf(nc: NatsConnection): Outbox {
  let box = outboxes.get(nc);
  if (!box) {
    box = new Outbox(nc);
    outboxes.set(nc, box);
  }
  return box;
}
