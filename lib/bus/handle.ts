/**
 * What a single bus and a cluster both offer, so the CLI (`up`, `status`), tools and
 * tests treat one node and many alike: where to connect, what to trust, where the
 * files are, which store backend, one lifecycle and one stop.
 */
import type { AccessChange } from "../control/index.ts";
import type { NatsPorts, NatsRestartedEvent, NatsRestartingEvent } from "../nats/index.ts";
import type { StoreBackend } from "../store/index.ts";
import type { HandoverResult } from "./handover.ts";
import type { RoomStorageLimits } from "./streams.ts";

/**
 * `new` → `starting` → `running` → `stopping` → `stopped`; `failed` when a start
 * did not complete (everything it had started is stopped again, files kept).
 */
export type BusState = "new" | "starting" | "running" | "stopping" | "stopped" | "failed";

export interface BusHandle extends AsyncDisposable {
  readonly state: BusState;
  /** `tls://host:port` of every nats-server (one for a single bus). */
  readonly natsUrls: readonly string[];
  /** `wss://host:port` of every nats-server's websocket listener (browsers; same TLS, login and permissions). */
  readonly wsUrls: readonly string[];
  /** `https://host:port` of every control plane. */
  readonly controlUrls: readonly string[];
  /** `http://127.0.0.1:port` of every nats-server's monitoring endpoint ("" where disabled). */
  readonly monitorUrls: readonly string[];
  /** The bus CA, as PEM and as the file clients can be pointed at. */
  readonly caPem: string;
  readonly caFile: string;
  readonly dataDir: string;
  /** The control-plane store backend in use. (`Unibus.store` is the store itself.) */
  readonly storeBackend: StoreBackend;
  /** Each persisted room's retention ceiling and the budget of them all. */
  readonly roomStorage: RoomStorageLimits;
  /** Stops every child and service; idempotent. */
  stop(): Promise<void>;
}

/** Events both shapes emit. */
export interface BusHandleEvents {
  /** Every state change, in order. */
  state: [state: BusState];
}

/** A single bus's events: its state, its nats-server's ports, and every access change it enforced. */
export interface UnibusEvents extends BusHandleEvents {
  /** nats-server is listening (a cluster learns each node's ports from it). */
  "nats-ready": [ports: NatsPorts];
  /** A membership or allowlist change the control plane made; live connections were told. */
  "access-change": [change: AccessChange];
  /** nats-server ended on its own; it starts again after `delayMs` (supervision). */
  "nats-restarting": [event: NatsRestartingEvent];
  /** A supervised restart of nats-server is ready; service connections and clients reconnect on their own. */
  "nats-restarted": [event: NatsRestartedEvent];
  /**
   * The node failed for good (nats-server out of its restart budget): the state is `failed`.
   * Also emitted as `"error"` when that event has listeners — never as an uncaught one.
   */
  failed: [error: Error];
  /** A cluster member stopping on purpose handed its JetStream leaderships over (see handover.ts). */
  handover: [result: HandoverResult];
  error: [error: Error];
}

/** A cluster's events: its own state, and each node's as it changes. */
export interface ClusterEvents extends BusHandleEvents {
  "node-state": [index: number, state: BusState];
}
