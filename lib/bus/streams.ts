/**
 * JetStream streams that keep persisted rooms' history: one per room, capturing the
 * room's subject, ciphertext only. Created by the bus' own APP-account service user;
 * members read them through direct get only (see permissionsFor).
 *
 * Every room stream is capped (bytes, age, messages; the oldest go first), and the caps
 * of all room streams together stay within a budget: since no stream can outgrow its
 * cap, the rooms together can never take more than the budget, and the rest of the
 * JetStream store stays for the control plane's KV and nonce buckets — whatever one
 * member (or one runaway bot) publishes.
 */
import {
  DiscardPolicy,
  JetStreamApiError,
  type JetStreamManager,
  jetstreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { ServiceKeys } from "../auth/index.ts";
import { connectAsService, roomStreamName } from "../auth/index.ts";
import { InvalidArgumentError, StateError, StorageFullError, UnibusError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import type { Room } from "../store/index.ts";

/** Limits of one persisted room's history. */
export interface RoomRetention {
  /** Bytes kept; the oldest messages are discarded beyond it. Default 64 MiB. */
  maxBytes?: number;
  /** How long a message is kept. Default 90 days. */
  maxAgeMs?: number;
  /** Messages kept. Default 1,000,000. */
  maxMsgs?: number;
}

export interface RoomStorageOptions {
  /** Every persisted room's limits: the ceiling a room may choose under at `createRoom`, and what it gets otherwise. */
  retention?: RoomRetention;
  /** The sum of all room streams' byte caps may not exceed this. Default 4 GiB. */
  budgetBytes?: number;
}

export const DEFAULT_RETENTION: Required<RoomRetention> = {
  maxBytes: 64 * 1024 * 1024,
  maxAgeMs: 90 * 86_400_000,
  maxMsgs: 1_000_000,
};
export const DEFAULT_ROOM_BUDGET_BYTES = 4 * 1024 * 1024 * 1024;

/** The persisted rooms' storage budget is spent: no new persisted room until rooms are deleted or the budget raised. */
export class StorageBudgetError extends UnibusError {
  constructor(message: string) {
    super("STORAGE_BUDGET", message);
  }
}

/**
 * What one room takes from the budget: its byte cap, but never less than 1 MiB (or the
 * ceiling, when that is smaller). Every stream costs JetStream more than its bytes (its
 * state, in a cluster a raft group), so rooms asking for a few bytes each must not buy
 * an unbounded number of streams: the budget also bounds how many there are.
 */
export function reservedBytes(maxBytes: number | undefined, ceiling: Required<RoomRetention>): number {
  const cap = maxBytes !== undefined && maxBytes > 0 ? maxBytes : ceiling.maxBytes;
  return Math.max(cap, Math.min(MIN_RESERVED_BYTES, ceiling.maxBytes));
}

export const MIN_RESERVED_BYTES = 1024 * 1024;

/** A room asked for more history than the bus allows: `field` is above its `ceiling`. */
export class RetentionCeilingError extends UnibusError {
  readonly field: keyof RoomRetention;
  readonly asked: number;
  readonly ceiling: number;
  constructor(field: keyof RoomRetention, asked: number, ceiling: number) {
    super(
      "RETENTION_ABOVE_CEILING",
      `retention.${field} ${asked} is above this bus's ceiling of ${ceiling}; ask for at most ${ceiling}, or leave it out to get the ceiling`,
    );
    this.field = field;
    this.asked = asked;
    this.ceiling = ceiling;
  }
}

/**
 * The retention a room gets: what it asked for, each limit at most the bus's ceiling,
 * the ceiling for what it left out. Throws RetentionCeilingError for a limit above the
 * ceiling (never silently lowered: the room's owner must know what it keeps) and
 * InvalidArgumentError for one that is not a positive whole number.
 */
export function roomRetention(
  asked: RoomRetention | undefined,
  ceiling: Required<RoomRetention>,
): Required<RoomRetention> {
  const out = { ...ceiling };
  for (const field of Object.keys(ceiling) as (keyof RoomRetention)[]) {
    const value = asked?.[field];
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new InvalidArgumentError(`retention.${field}`, `retention.${field}: a positive whole number; got ${value}`);
    }
    if (value > ceiling[field]) throw new RetentionCeilingError(field, value, ceiling[field]);
    out[field] = value;
  }
  return out;
}

/** JetStream's "insufficient storage resources available". */
const INSUFFICIENT_RESOURCES = 10047;
/** JetStream API error: a stream of that name exists with another configuration. */
const STREAM_NAME_IN_USE = 10058;

/**
 * Turns JetStream's out-of-space answer to a stream creation into StorageFullError
 * (the control plane answers 507 STORAGE_FULL); anything else passes.
 */
export function asStorageFull(err: unknown): unknown {
  if (!(err instanceof JetStreamApiError) || err.code !== INSUFFICIENT_RESOURCES) return err;
  return new StorageFullError(
    "JetStream has no storage left for this room's history (its disk or jetstreamMaxFileBytes is full); free space or delete persisted rooms, then try again",
    { cause: err },
  );
}

/** Checks the options; InvalidArgumentError names the bad one. */
export function checkRoomStorage(opts: RoomStorageOptions = {}): RoomStorageLimits {
  const retention = { ...DEFAULT_RETENTION, ...opts.retention };
  for (const [key, value] of Object.entries(retention)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new InvalidArgumentError(`retention.${key}`, `retention.${key}: a positive whole number; got ${value}`);
    }
  }
  const budgetBytes = opts.budgetBytes ?? DEFAULT_ROOM_BUDGET_BYTES;
  if (!Number.isSafeInteger(budgetBytes) || budgetBytes < retention.maxBytes) {
    throw new InvalidArgumentError(
      "roomStorage.budgetBytes",
      `roomStorage.budgetBytes: at least one room's cap (${retention.maxBytes} bytes); got ${budgetBytes}`,
    );
  }
  return { retention, budgetBytes };
}

/** The checked limits of persisted rooms: each room's ceiling and the budget of them all. */
export interface RoomStorageLimits {
  retention: Required<RoomRetention>;
  budgetBytes: number;
}

/** `startUnibus`'s `retention` and `roomStorageBytes`, checked (see checkRoomStorage). */
export function roomStorageOf(opts: { retention?: RoomRetention; roomStorageBytes?: number }): RoomStorageLimits {
  return checkRoomStorage({
    ...(opts.retention ? { retention: opts.retention } : {}),
    ...(opts.roomStorageBytes ? { budgetBytes: opts.roomStorageBytes } : {}),
  });
}

export interface RoomStreamsOptions extends RoomStorageOptions {
  servers: string[];
  caPem?: string;
  keys: ServiceKeys;
  logger?: Logger;
  replicas?: number;
}

export class RoomStreams {
  readonly #opts: RoomStreamsOptions;
  readonly #limits: ReturnType<typeof checkRoomStorage>;
  #nc?: NatsConnection;
  #jsm?: JetStreamManager;

  constructor(opts: RoomStreamsOptions) {
    this.#opts = opts;
    this.#limits = checkRoomStorage(opts);
  }

  /** The service connection (for health), once started. */
  get connection(): NatsConnection | undefined {
    return this.#nc;
  }

  get limits(): RoomStorageLimits {
    return this.#limits;
  }

  async start(): Promise<void> {
    const { keys, servers, caPem } = this.#opts;
    this.#nc = await connectAsService({ servers, ...(caPem ? { caPem } : {}), key: keys.app, name: "unibus-streams" });
    // No API check at start: a cluster node comes up before JetStream has a meta leader
    // (its peers may not be up yet); ensure() meets JetStream when a room needs it.
    this.#jsm = await jetstreamManager(this.#nc, { checkAPI: false });
  }

  /**
   * Creates the room's stream if it does not exist (idempotent), capped by `retention`
   * (the room's choice, see `roomRetention`; default the bus's ceiling). Throws
   * StorageBudgetError when the caps of every room stream would exceed the budget. A
   * stream made before streams were capped gets its caps now.
   *
   * `reserved`: the caller has just checked the budget for this room (createRoom does,
   * before the room is stored). The stream is then added at once — one JetStream request
   * instead of a lookup, a second listing of every stream and the add, all on the path
   * of each persisted createRoom (and the listing grows with the rooms) — and looked up
   * only when a stream of that name is already there.
   */
  async ensure(
    room: Pick<Room, "id" | "subject">,
    retention?: RoomRetention,
    opts: { reserved?: boolean } = {},
  ): Promise<void> {
    const jsm = this.#manager("RoomStreams.ensure()");
    const name = roomStreamName(room.id);
    const chosen = roomRetention(retention, this.#limits.retention);
    const config = { name, subjects: [room.subject], allow_direct: true, num_replicas: this.#opts.replicas ?? 1 };
    if (!opts.reserved) {
      if (await this.#capExisting(name, chosen)) return;
      await this.checkBudget(chosen.maxBytes);
    }
    try {
      // JetStream answers an add of an identical stream with the stream: idempotent
      await jsm.streams.add({ ...config, ...caps(chosen) });
    } catch (err) {
      if (
        err instanceof JetStreamApiError &&
        err.code === STREAM_NAME_IN_USE &&
        (await this.#capExisting(name, chosen))
      )
        return;
      throw asStorageFull(err);
    }
    (this.#opts.logger ?? silentLogger).info({ component: "streams", stream: name }, "room stream created");
  }

  /** True when stream `name` exists (given caps now if it had none), false when there is none. */
  async #capExisting(name: string, chosen: Required<RoomRetention>): Promise<boolean> {
    const jsm = this.#manager("RoomStreams.ensure()");
    const existing = await jsm.streams.info(name).catch(() => undefined);
    if (!existing) return false;
    if (!isCapped(existing.config)) await jsm.streams.update(name, { ...existing.config, ...caps(chosen) });
    return true;
  }

  /**
   * Deletes the room's stream with its history (a deleted room keeps nothing). True when
   * a stream was deleted, false when the room had none (a cleartext or unpersisted room,
   * or a second call): idempotent, so a retried room deletion finishes the job.
   */
  async remove(roomId: string): Promise<boolean> {
    const jsm = this.#manager("RoomStreams.remove()");
    const name = roomStreamName(roomId);
    try {
      await jsm.streams.delete(name);
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === 10059) return false; // stream not found
      throw err;
    }
    (this.#opts.logger ?? silentLogger).info({ component: "streams", stream: name }, "room stream deleted");
    return true;
  }

  /**
   * Deletes the streams of rooms that no longer exist (deleted while the bus was down,
   * or whose removal failed). `isRoom` answers true when it cannot tell: kept, never
   * guessed away. Answers the ids whose streams went.
   */
  async prune(isRoom: (roomId: string) => Promise<boolean>): Promise<string[]> {
    const jsm = this.#manager("RoomStreams.prune()");
    const gone: string[] = [];
    for await (const s of jsm.streams.list()) {
      const id = s.config.name.startsWith("ROOM_") ? s.config.name.slice("ROOM_".length) : undefined;
      if (id !== undefined && !(await isRoom(id)) && (await this.remove(id))) gone.push(id);
    }
    return gone;
  }

  /** Bytes reserved by every room stream's cap, and bytes stored in them now. */
  async usage(): Promise<{ reservedBytes: number; storedBytes: number; rooms: number; budgetBytes: number }> {
    const jsm = this.#manager("RoomStreams.usage()");
    let reserved = 0;
    let storedBytes = 0;
    let rooms = 0;
    for await (const s of jsm.streams.list()) {
      if (!s.config.name.startsWith("ROOM_")) continue;
      rooms++;
      reserved += reservedBytes(s.config.max_bytes, this.#limits.retention);
      storedBytes += s.state.bytes;
    }
    return { reservedBytes: reserved, storedBytes, rooms, budgetBytes: this.#limits.budgetBytes };
  }

  async stop(): Promise<void> {
    const nc = this.#nc;
    this.#nc = undefined;
    if (nc && !nc.isClosed()) await nc.close();
  }

  /** Throws StorageBudgetError unless the budget can take one more room capped at `maxBytes` (default: the ceiling). */
  async checkBudget(maxBytes = this.#limits.retention.maxBytes): Promise<void> {
    const { reservedBytes: reserved, rooms, budgetBytes } = await this.usage();
    const cap = reservedBytes(maxBytes, this.#limits.retention);
    if (reserved + cap > budgetBytes) {
      throw new StorageBudgetError(
        `the persisted rooms' storage budget is spent (${rooms} rooms reserve ${reserved} of ${budgetBytes} bytes; this room needs ${cap}); delete a persisted room, ask for a smaller retention.maxBytes, create this one without persistence, or raise the budget (roomStorageBytes)`,
      );
    }
  }

  #manager(what: string): JetStreamManager {
    if (!this.#jsm) throw new StateError(["running"], "stopped", what);
    return this.#jsm;
  }
}

function caps(r: Required<RoomRetention>): Pick<StreamConfig, "max_bytes" | "max_age" | "max_msgs" | "discard"> {
  // JetStream counts age in nanoseconds.
  return { max_bytes: r.maxBytes, max_age: r.maxAgeMs * 1_000_000, max_msgs: r.maxMsgs, discard: DiscardPolicy.Old };
}

function isCapped(config: StreamConfig): boolean {
  return config.max_bytes > 0 && config.max_age > 0 && config.max_msgs > 0;
}
