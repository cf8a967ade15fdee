/**
 * Acknowledged publishing into a persisted room: each frame goes out as a request on
 * the room's subject, which the room's JetStream stream answers with a PubAck once it
 * has stored the frame (`{"stream":"ROOM_<id>","seq":n}`) or with its error. Live
 * subscribers receive the very same frame as with a plain publish.
 *
 * A PubAck is not signed, and the request's reply subject reaches every subscriber of
 * the room, each of which may answer it once (members reply to requests they receive:
 * docs/protocol.md §3). So an answer is taken as a claim and checked: the frame is read
 * back by direct get at the sequence it names — a subject only the stream answers —
 * and must be byte for byte the one sent. Only then does the publish resolve.
 *
 * JetStream's answers become typed errors here, once (see `ackError`). Shared by the
 * Node and the browser client: it needs nothing of a connection but `request`.
 */
import {
  AckMismatchError,
  AckTimeoutError,
  HistoryUnavailableError,
  InvalidArgumentError,
  PublishRefusedError,
  StateError,
  StorageFullError,
} from "../errors.ts";

/** What an acknowledged publish resolves with, per message: where the room's stream keeps it. */
export interface PublishAck {
  /** The stream sequence of the message: `history({ fromSeq: seq })` starts at it. */
  seq: number;
}

/** The part of a nats.js connection (Node or browser) that acknowledged publishing uses. */
export interface AckConnection {
  isClosed(): boolean;
  request(
    subject: string,
    payload: Uint8Array | string,
    opts: { timeout: number },
  ): Promise<{ data: Uint8Array; headers?: { code: number; get(key: string): string } }>;
}

/** How long an acknowledgement (and the read-back that checks it) may take, by default. */
export const DEFAULT_ACK_TIMEOUT_MS = 5000;

/**
 * The ack timeout an acknowledged publish into `room` waits, once the call is known to
 * make sense: a room without history has nothing to acknowledge, and the timeout must be
 * a positive whole number of milliseconds (InvalidArgumentError otherwise). Node and
 * browser rooms check the same way, before anything is sent.
 */
export function ackTimeoutFor(room: { id: string; persist: boolean }, timeoutMs = DEFAULT_ACK_TIMEOUT_MS): number {
  if (!room.persist) {
    throw new InvalidArgumentError(
      "ack",
      `room ${room.id} keeps no history (it was created without persist: true): there is nothing to acknowledge; publish without { ack: true }`,
    );
  }
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) {
    throw new InvalidArgumentError("timeoutMs", `timeoutMs: a positive whole number of milliseconds; got ${timeoutMs}`);
  }
  return timeoutMs;
}

/**
 * JetStream's answers that mean "no space": 10047 insufficient storage resources (the
 * stream cannot reserve its bytes), 10023 insufficient resources (JetStream's limits),
 * and a store that failed to write; the words are matched too, since a failed write
 * comes as a generic store error (10077) carrying the operating system's message.
 */
const STORAGE_FULL_CODES = new Set([10023, 10047]);
const STORAGE_FULL_WORDS = /no space left|insufficient (storage )?resources|disk full|storage resources exceeded/i;

interface PubAckBody {
  stream?: unknown;
  seq?: unknown;
  error?: { code?: number; err_code?: number; description?: string };
}

/**
 * Publishes `frames` in order on `subject` and resolves once the room's stream has
 * stored each (checked as described above), with their sequences. Every frame is sent
 * before any answer is awaited, so a batch costs about two round trips. Rejects with
 * the typed error of the first frame not confirmed; its `stored` is that frame's index.
 */
export async function publishAcked(
  nc: AckConnection,
  room: { id: string; subject: string },
  frames: readonly Uint8Array[],
  opts: { timeoutMs: number; storageFull?: () => Promise<boolean> },
): Promise<PublishAck[]> {
  try {
    return await publishChecked(nc, room, frames, opts.timeoutMs);
  } catch (err) {
    // A stream whose write failed for lack of space does not answer at all (nats-server
    // 2.15 logs "JetStream failed to store a msg" and sends no PubAck): the silence is
    // told apart from a slow bus by asking the bus whether its storage is full.
    if (err instanceof AckTimeoutError && opts.storageFull && (await opts.storageFull())) {
      throw new StorageFullError(
        `no acknowledgement within ${err.timeoutMs} ms while the bus reports its storage full (health names \`storage\`): the message was not stored; retry once the operator has freed space`,
        { stored: err.stored, cause: err },
      );
    }
    throw err;
  }
}

async function publishChecked(
  nc: AckConnection,
  room: { id: string; subject: string },
  frames: readonly Uint8Array[],
  timeoutMs: number,
): Promise<PublishAck[]> {
  if (nc.isClosed()) throw new StateError(["open"], "closed", "publishing to a room");
  const answers = frames.map((frame) => nc.request(room.subject, frame, { timeout: timeoutMs }));
  const claims = await Promise.allSettled(answers);
  const stream = `ROOM_${room.id}`;
  const seqs: (number | Error)[] = claims.map((c, i) =>
    c.status === "rejected" ? ackError(c.reason, room.id, timeoutMs, i) : claimedSeq(c.value.data, stream, i),
  );
  // Read back every claimed frame at once; a claim that fails the check is no ack.
  const checks = await Promise.allSettled(
    seqs.map((seq, i) => (typeof seq === "number" ? holds(nc, stream, room.subject, seq, frames[i]!, timeoutMs) : seq)),
  );
  const out: PublishAck[] = [];
  for (let i = 0; i < frames.length; i++) {
    const check = checks[i]!;
    const seq = seqs[i]!;
    if (seq instanceof Error) throw seq;
    if (check.status === "rejected") throw ackError(check.reason, room.id, timeoutMs, i);
    if (check.value !== true) throw new AckMismatchError(seq, { stored: i });
    out.push({ seq });
  }
  return out;
}

/** The sequence a PubAck claims, or the typed error of a JetStream refusal. */
function claimedSeq(data: Uint8Array, stream: string, index: number): number | Error {
  let body: PubAckBody;
  try {
    body = JSON.parse(new TextDecoder().decode(data)) as PubAckBody;
  } catch {
    return new AckMismatchError(undefined, { stored: index });
  }
  if (body?.error) return streamError(body.error, index);
  if (body?.stream !== stream || !Number.isSafeInteger(body.seq) || (body.seq as number) < 1) {
    return new AckMismatchError(undefined, { stored: index });
  }
  return body.seq as number;
}

function streamError(e: NonNullable<PubAckBody["error"]>, index: number): Error {
  const words = String(e.description ?? "").slice(0, 300);
  const errCode = typeof e.err_code === "number" ? e.err_code : undefined;
  if ((errCode !== undefined && STORAGE_FULL_CODES.has(errCode)) || STORAGE_FULL_WORDS.test(words)) {
    // The server's words name its files: they stay in the cause, out of the message.
    return new StorageFullError(
      "the room's stream could not store the message: JetStream has no storage left; nothing was stored — retry once the operator has freed space",
      { stored: index, cause: new Error(words) },
    );
  }
  return new PublishRefusedError("stream", `the room's stream refused the message (${errCode ?? e.code}: ${words})`, {
    stored: index,
    ...(errCode !== undefined ? { errCode } : {}),
  });
}

/** How often a read-back that finds no message at the acknowledged sequence asks again. */
const READ_BACK_ATTEMPTS = 4;

/**
 * Whether the stream holds exactly `frame` at `seq` on `subject` (direct get answers
 * only from the stream). In a cluster any replica answers a direct get, and one may not
 * have applied the message yet when the leader's PubAck arrives: a 404 is asked again,
 * briefly, before it counts.
 */
async function holds(
  nc: AckConnection,
  stream: string,
  subject: string,
  seq: number,
  frame: Uint8Array,
  timeoutMs: number,
): Promise<boolean> {
  let reply: Awaited<ReturnType<AckConnection["request"]>>;
  for (let attempt = 1; ; attempt++) {
    reply = await nc.request(`$JS.API.DIRECT.GET.${stream}`, JSON.stringify({ seq }), { timeout: timeoutMs });
    if ((reply.headers?.code ?? 0) < 400) break;
    if (attempt === READ_BACK_ATTEMPTS) return false; // 404: no such message (any more)
    await new Promise((resolve) => setTimeout(resolve, 25 * attempt));
  }
  if (reply.headers?.get("Nats-Subject") !== subject) return false;
  const data = reply.data;
  if (data.length !== frame.length) return false;
  for (let i = 0; i < data.length; i++) if (data[i] !== frame[i]) return false;
  return true;
}

/** nats.js's request failures, as the typed errors of an acknowledged publish. */
function ackError(err: unknown, roomId: string, timeoutMs: number, index: number): Error {
  const names: string[] = [];
  let words = "";
  for (let e = err as Error | undefined, depth = 0; e && depth < 5; e = e.cause as Error | undefined, depth++) {
    names.push(e.name);
    words += ` ${e.message}`;
  }
  if (names.includes("TimeoutError")) return new AckTimeoutError(timeoutMs, { stored: index, cause: err });
  if (names.includes("NoResponders") || /no responders/i.test(words)) {
    // No one listens on the room's subject (or on its stream's direct get): no stream.
    return new HistoryUnavailableError(roomId, { cause: err });
  }
  if (names.includes("PermissionViolationError") || /permissions violation/i.test(words)) {
    return new PublishRefusedError(
      "permission",
      `the bus refused this publish into room ${roomId}: this connection may not publish there (is the identity still a member?); nothing was stored`,
      { stored: index, cause: err },
    );
  }
  if (names.includes("ClosedConnectionError") || /connection (closed|disconnected)/i.test(words)) {
    return new StateError(["open"], "closed", "an acknowledged publish");
  }
  return err instanceof Error ? err : new Error(String(err));
}
