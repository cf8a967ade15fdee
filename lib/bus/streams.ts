/**
 * JetStream streams that keep persisted rooms' history: one per room, capturing the
 * room's subject, ciphertext only. Created by the bus' own APP-account service user;
 * members read them through direct get only (see permissionsFor).
 */
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { nkeySigner } from "../auth/authenticator.ts";
import { roomStreamName } from "../auth/permissions.ts";
import type { ServiceKeys } from "../auth/service-keys.ts";
import { StateError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import type { Room } from "../store/index.ts";

export class RoomStreams {
  readonly #opts: { servers: string[]; caPem?: string; keys: ServiceKeys; logger?: Logger; replicas?: number };
  #nc?: NatsConnection;
  #jsm?: JetStreamManager;

  constructor(opts: { servers: string[]; caPem?: string; keys: ServiceKeys; logger?: Logger; replicas?: number }) {
    this.#opts = opts;
  }

  /** The service connection (for health), once started. */
  get connection(): NatsConnection | undefined {
    return this.#nc;
  }

  async start(): Promise<void> {
    const { keys, servers, caPem } = this.#opts;
    this.#nc = await connect({
      servers,
      name: "unibus-streams",
      ...(caPem ? { tls: { ca: caPem } } : {}),
      authenticator: nkeySigner(keys.app.publicKey, (d) => keys.app.sign(d)),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
    });
    // No API check at start — a cluster node comes up before JetStream has a meta
    // leader (its peers may not be up yet); ensure() meets JetStream when a room needs it.
    this.#jsm = await jetstreamManager(this.#nc, { checkAPI: false });
  }

  /** Creates the room's stream if it does not exist (idempotent). */
  async ensure(room: Pick<Room, "id" | "subject">): Promise<void> {
    const jsm = this.#jsm;
    if (!jsm) throw new StateError(["running"], "stopped", "RoomStreams.ensure()");
    const name = roomStreamName(room.id);
    try {
      await jsm.streams.info(name);
      return;
    } catch {
      // not there yet
    }
    await jsm.streams.add({
      name,
      subjects: [room.subject],
      allow_direct: true,
      num_replicas: this.#opts.replicas ?? 1,
    });
    (this.#opts.logger ?? silentLogger).info({ component: "streams", stream: name }, "room stream created");
  }

  async stop(): Promise<void> {
    const nc = this.#nc;
    this.#nc = undefined;
    if (nc && !nc.isClosed()) await nc.close();
  }
}
