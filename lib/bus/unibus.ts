/**
 * One single-node bus: nats-server (a child process) with TLS from the bus' own CA,
 * the auth callout, the store and the control plane, started in dependency order
 * and stopped in reverse. The handle is a small state machine; `stop()` is
 * idempotent and `await using` works.
 */
import { EventEmitter } from "node:events";
import path from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Admission } from "../auth/index.ts";
import {
  AuthCallout,
  ConnectionRegistry,
  DEFAULT_USER_LIMITS,
  Kicker,
  loadOrCreateServiceKeys,
  permissionsFor,
  type ServiceKeys,
} from "../auth/index.ts";
import type { AccessChange, ControlTimeouts, RateLimiterOptions } from "../control/index.ts";
import { BlobStore, type Blobs, ControlServer, checkCorsOrigins, HttpError } from "../control/index.ts";
import { parseSignPub } from "../crypto/index.ts";
import { InvalidArgumentError, NotFoundError, StateError, StorageFullError } from "../errors.ts";
import { createLogger, type Logger } from "../log/index.ts";
import { BusMetrics, instrumentStore } from "../metrics/index.ts";
import {
  type NatsClusterOptions,
  type NatsPorts,
  NatsServerProcess,
  type NatsSuperviseOptions,
  nodeStatus,
  resolveNatsServer,
  type Watchdog,
} from "../nats/index.ts";
import {
  type BucketReplication,
  chooseStoreBackend,
  createStoreHolder,
  type KvStore,
  openStore,
  type Role,
  type Room,
  type Store,
  type StoreBackend,
  type StoreHolder,
  type User,
} from "../store/index.ts";
import {
  type CaTrust,
  type CertificateAuthority,
  isLoopbackHost,
  isUnspecifiedHost,
  loadCaTrust,
  loadOrCreateCa,
  loadOrCreateServerCertificate,
  type ServerCertificate,
  urlHost,
} from "../tls/index.ts";
import { AccessWatch } from "./access-watch.ts";
import type { BusHandle, BusState, UnibusEvents } from "./handle.ts";
import { handOverLeaderships } from "./handover.ts";
import {
  exitReason,
  type HealthReport,
  isLive,
  LinkWatch,
  type NatsLife,
  natsAnswers,
  type PartName,
  reportOf,
} from "./health.ts";
import { holdAdmission, KV_AUTH_TIMEOUT_S, KV_DECISION_TIMEOUT_MS, KvOpening } from "./kv-opening.ts";
import { type BusLayout, busLayout, natsConfigFor, openDataDir, removeOwnedDir } from "./layout.ts";
import { type RouteReport, routeReport } from "./route-watch.ts";
import { StorageWatch } from "./storage-watch.ts";
import {
  checkRoomStorage,
  RetentionCeilingError,
  type RoomRetention,
  type RoomStorageLimits,
  RoomStreams,
  roomRetention,
  roomStorageOf,
  StorageBudgetError,
} from "./streams.ts";

export type { BusState } from "./handle.ts";

export interface StartUnibusOptions {
  /** Where the CA, keys, store and JetStream data live. Default: a fresh temp dir, removed on stop. */
  dataDir?: string;
  /** Bind address for NATS and the control plane. Default 127.0.0.1. */
  host?: string;
  /** Extra host names / addresses the server certificate must cover (for clients on other machines). */
  hostnames?: string[];
  /** Ports; -1 (NATS) or 0 (control) picks a free one. Defaults: random. */
  ports?: { nats?: number; control?: number; monitoring?: number; websocket?: number };
  /**
   * Control-plane store: "sqlite" (a file in the data dir; the default alone) or "kv"
   * (replicated JetStream KV buckets, `replicas` ways; the default with `cluster`). With "kv" the callout denies
   * and the control plane answers 503 until the buckets are open.
   */
  store?: StoreBackend;
  /** KV store tuning: bucket name prefix (default `unibus_`), per-operation bound (default 3000 ms). */
  kv?: { bucketPrefix?: string; timeoutMs?: number };
  /**
   * Restart nats-server when it ends on its own (crash, OOM kill), with backoff and a
   * budget; past the budget the bus is `failed` and emits `failed`. Default: on.
   */
  supervise?: NatsSuperviseOptions | boolean;
  /** Path of the nats-server binary; default: resolved (env, cache, PATH, download). */
  natsServer?: string;
  /** The node's server name. Default "unibus-1". */
  serverName?: string;
  logger?: Logger;
  /** Lifetime of user JWTs issued by the callout (seconds). */
  userJwtTtlSeconds?: number;
  /** Control-plane rate limits: per client address, and per signing key under `perIdentity` (default 50/s, burst 100). */
  rateLimit?: RateLimiterOptions & { perIdentity?: RateLimiterOptions };
  /** Control-plane handshake, header, request and body-rate deadlines and per-IP connection cap. */
  controlTimeouts?: ControlTimeouts;
  /** Limits of each persisted room's history (bytes, age, messages; the oldest go first). */
  retention?: RoomRetention;
  /**
   * The byte caps of all persisted rooms together stay within this budget (default 4 GiB),
   * so rooms can never take the JetStream space the control plane's KV buckets need.
   */
  roomStorageBytes?: number;
  /** nats-server's JetStream file-store limit for this node (`max_file_store`); default: the server's (75% of the disk). */
  jetstreamMaxFileBytes?: number;
  /**
   * Per-identity limits: connections at once (counted on the nodes that share this bus's
   * connection registry: one node, or every node of an in-process cluster; on a cluster of
   * machines each node counts its own), subscriptions per connection, largest message.
   */
  limits?: Partial<IdentityLimits>;
  /**
   * Blob limits: size cap (default 256 MiB), max age (default 30 days), GC interval (default
   * 10 min); on KV also `storageBytes`, the Object Store bucket's storage cap (default none;
   * an upload past it is refused with 507).
   */
  blobs?: { maxBytes?: number; maxAgeMs?: number; gcIntervalMs?: number; storageBytes?: number };
  /**
   * Origins whose pages may call the control plane from a browser (the browser client on
   * another origin). Each exactly `scheme://host[:port]`. Default none.
   */
  corsOrigins?: string[];
  /** Run as one member of a NATS cluster (routes with mutual TLS from this bus' CA). See docs/clustering.md. */
  cluster?: UnibusClusterOptions;
  /** JetStream replicas of room streams; default 1 (a cluster sets its own). */
  replicas?: number;
  /** Admitted-connection registry; nodes of one in-process cluster share one, so any node can kick any connection. */
  connections?: ConnectionRegistry;
}

/**
 * The operator's limits: what `unibus up` takes from the config chain and gives to one
 * bus or to every node of a cluster alike.
 */
export type OperatorOptions = Pick<
  StartUnibusOptions,
  | "userJwtTtlSeconds"
  | "rateLimit"
  | "controlTimeouts"
  | "limits"
  | "retention"
  | "roomStorageBytes"
  | "blobs"
  | "jetstreamMaxFileBytes"
>;

export interface IdentityLimits {
  /** Default 100. */
  connectionsPerIdentity: number;
  /** Default 1000. */
  subscriptionsPerConnection: number;
  /** Default 1 MiB. */
  maxPayloadBytes: number;
}

export const DEFAULT_IDENTITY_LIMITS: IdentityLimits = {
  connectionsPerIdentity: 100,
  subscriptionsPerConnection: DEFAULT_USER_LIMITS.subs,
  maxPayloadBytes: DEFAULT_USER_LIMITS.payload,
};

function checkLimits(given: Partial<IdentityLimits> = {}): IdentityLimits {
  const limits = { ...DEFAULT_IDENTITY_LIMITS, ...given };
  for (const [key, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new InvalidArgumentError(`limits.${key}`, `limits.${key}: a positive whole number; got ${value}`);
    }
  }
  if (limits.subscriptionsPerConnection < MIN_SUBSCRIPTIONS) {
    throw new InvalidArgumentError(
      "limits.subscriptionsPerConnection",
      `limits.subscriptionsPerConnection: at least ${MIN_SUBSCRIPTIONS} (the bus's own connections need a few); got ${limits.subscriptionsPerConnection}`,
    );
  }
  // The bus's own messages (user JWTs, JetStream and KV requests) travel under the same limit.
  if (limits.maxPayloadBytes < MIN_PAYLOAD_BYTES || limits.maxPayloadBytes > 64 * 1024 * 1024) {
    throw new InvalidArgumentError(
      "limits.maxPayloadBytes",
      `limits.maxPayloadBytes: from ${MIN_PAYLOAD_BYTES} (the bus's own messages need that much) to 64 MiB; got ${limits.maxPayloadBytes}`,
    );
  }
  return limits;
}

const MIN_PAYLOAD_BYTES = 256 * 1024;
/** The bus's own service connections hold a few subscriptions each (callout, kicker, KV watches). */
const MIN_SUBSCRIPTIONS = 32;

export interface UnibusClusterOptions {
  /** Shared by every node of the cluster. */
  name: string;
  /** Route listener bind address; default: the node's `host`. */
  host?: string;
  /** Route port; -1 (default) picks a free one. */
  port?: number;
  /**
   * Route URLs (`nats-route://host:6222`) of every node, this one included: the server skips its
   * own, but JetStream sizes its first meta group from how many routes there are.
   */
  routes?: string[];
  /** `host:port` the other nodes should dial; the route certificate covers its host. */
  advertise?: string;
}

/** What phase 1 of a start hands to the later phases. */
interface Prepared {
  layout: BusLayout;
  binary: string;
  ca: CertificateAuthority;
  /** The CAs this node accepts (two during a CA rotation), for routes, clients and its own services. */
  trust: CaTrust;
  keys: ServiceKeys;
  backend: StoreBackend;
}

interface Certificates {
  server: ServerCertificate;
  /** Present for a cluster member: the route listener's settings, its certificate included. */
  cluster?: NatsClusterOptions;
}

/** What every service connection of a node needs. */
interface ServiceParts {
  servers: string[];
  caPem: string;
  keys: ServiceKeys;
  logger: Logger;
}

export interface AddUserOptions {
  handle: string;
  role?: Role;
  kexPub?: string | null;
}

export class Unibus extends EventEmitter<UnibusEvents> implements BusHandle {
  #state: BusState = "new";
  readonly #opts: StartUnibusOptions;
  readonly #logger: Logger;
  #ownsDataDir = false;
  /** Removes our temp dir should this process die hard (stop() removes it otherwise). */
  #dirGuard?: Watchdog;
  #dataDir = "";
  #nats?: NatsServerProcess;
  #callout?: AuthCallout;
  #kicker?: Kicker;
  #streams?: RoomStreams;
  #access?: AccessWatch;
  /** Admitted connections by identity, for live revocation. */
  readonly connections: ConnectionRegistry;
  #control?: ControlServer;
  #store?: Store;
  #holder?: StoreHolder;
  /** Settles when the store is open (at once for SQLite; after the buckets exist for KV). */
  #storeReady: Promise<void> = Promise.resolve();
  #kv?: KvOpening;
  #keys?: ServiceKeys;
  /** The room-storage options, checked once at start. */
  #roomStorage: RoomStorageLimits = checkRoomStorage();
  readonly #links: Partial<Record<PartName, LinkWatch>> = {};
  #storage?: StorageWatch;
  #limits: IdentityLimits = DEFAULT_IDENTITY_LIMITS;
  #blobs?: Blobs;
  #natsUrl = "";
  #controlUrl = "";
  /** Every CA this node trusts (the bundle during a CA rotation), signing CA first. */
  #caPem = "";
  #caFile = "";
  /** The CA that signed this node's certificates: ends the control plane's chain, pinned by invites. */
  #signingCaPem = "";
  #caFingerprint = "";
  #monitorUrl = "";
  #wsUrl = "";
  #stopping?: Promise<void>;
  /** Prometheus metrics of this bus (served at the control plane's /metrics). */
  readonly metrics = new BusMetrics();

  constructor(opts: StartUnibusOptions = {}) {
    super();
    // Refused before anything starts, not once nats-server already runs.
    if (opts.corsOrigins !== undefined) checkCorsOrigins(opts.corsOrigins);
    this.#opts = opts;
    this.#logger = opts.logger ?? createLogger();
    this.connections = opts.connections ?? new ConnectionRegistry();
  }

  get state(): BusState {
    return this.#state;
  }
  get natsUrl(): string {
    return this.#natsUrl;
  }
  get controlUrl(): string {
    return this.#controlUrl;
  }
  get monitorUrl(): string {
    return this.#monitorUrl;
  }
  get natsUrls(): string[] {
    return this.#natsUrl ? [this.#natsUrl] : [];
  }
  /** `wss://host:port`: the websocket listener for browsers. */
  get wsUrl(): string {
    return this.#wsUrl;
  }
  get wsUrls(): string[] {
    return this.#wsUrl ? [this.#wsUrl] : [];
  }
  get controlUrls(): string[] {
    return this.#controlUrl ? [this.#controlUrl] : [];
  }
  get monitorUrls(): string[] {
    return this.#monitorUrl ? [this.#monitorUrl] : [];
  }
  get caPem(): string {
    return this.#caPem;
  }
  get caFile(): string {
    return this.#caFile;
  }
  get dataDir(): string {
    return this.#dataDir;
  }
  /** The control-plane store (host-trusted access). */
  get store(): Store {
    if (!this.#store) throw new StateError(["running"], this.#state, "store");
    return this.#store;
  }
  /**
   * The blob store (host-trusted access; `gc()` runs a collection now): files under
   * `<dataDir>/blobs` on SQLite, the replicated JetStream Object Store on KV.
   */
  get blobs(): Blobs {
    if (!this.#blobs) throw new StateError(["running"], this.#state, "blobs");
    return this.#blobs;
  }
  /** The ports nats-server listens on while it runs (client, monitoring, cluster route). */
  get natsPorts(): NatsPorts | undefined {
    return this.#nats?.ports;
  }
  get serverName(): string {
    return this.#opts.serverName ?? "unibus-1";
  }
  get #host(): string {
    return this.#opts.host ?? "127.0.0.1";
  }
  /** The store backend this bus runs on. */
  get storeBackend(): StoreBackend {
    return chooseStoreBackend(this.#opts.store, this.#opts.cluster !== undefined);
  }
  /** Each persisted room's retention ceiling and the budget of them all, as checked at start. */
  get roomStorage(): RoomStorageLimits {
    return this.#roomStorage;
  }
  /** Resolves once the store answers (the KV buckets exist); rejects if the bus stops first. */
  whenStoreReady(): Promise<void> {
    return this.#storeReady;
  }
  /** KV only: each bucket's replication (replicas asked for, replicas current). Undefined on SQLite or before open. */
  async storeReplication(): Promise<BucketReplication[] | undefined> {
    const current = this.#holder?.current;
    return current?.backend === "kv" ? (current as KvStore).replicationState() : undefined;
  }
  /**
   * A cluster member: the peers it is routed to against the peers it was planned with,
   * and why the missing ones are missing (route-watch.ts). Undefined for a bus alone, or
   * while its nats-server does not answer.
   */
  async routes(): Promise<RouteReport | undefined> {
    const member = this.#opts.cluster;
    if (!member || !this.#nats || !this.#monitorUrl) return undefined;
    const self = [member.host, member.advertise?.replace(/:\d+$/, "").replace(/^\[|\]$/g, ""), this.#host]
      .concat(this.#opts.hostnames ?? [])
      .filter((h): h is string => typeof h === "string" && h !== "");
    return routeReport(this.#monitorUrl, this.#nats.recentLog(), { self }).catch(() => undefined);
  }
  /** nats-server's process id (for tests and operators). */
  get natsPid(): number | undefined {
    return this.#nats?.pid;
  }

  #setState(state: BusState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.emit("state", state);
  }

  async start(): Promise<this> {
    if (this.#state !== "new") throw new StateError(["new"], this.#state, "start()");
    this.#setState("starting");
    const backend = this.storeBackend;
    if (backend !== "sqlite" && backend !== "kv") {
      this.#setState("failed");
      throw new InvalidArgumentError("store", `store: "sqlite" or "kv"; got ${JSON.stringify(backend)}`);
    }
    try {
      this.#limits = checkLimits(this.#opts.limits);
      checkBlobStorageBytes(this.#opts.blobs?.storageBytes);
      this.#roomStorage = roomStorageOf(this.#opts);
      const prepared = await this.#prepare(backend);
      const certs = await this.#certificates(prepared);
      await this.#startNats(prepared, certs);
      await this.#startServices(prepared, certs);
      this.#setState("running");
      this.#logger.info(
        { component: "bus", natsUrl: this.#natsUrl, controlUrl: this.#controlUrl, dataDir: this.#dataDir },
        "bus ready",
      );
      return this;
    } catch (err) {
      this.#setState("failed");
      await this.#teardown();
      throw err;
    }
  }

  /** Phase 1: the data dir, then the independent disk and process work at once (binary, CA, keys, store). */
  async #prepare(backend: StoreBackend): Promise<Prepared> {
    const { dir, owned, guard } = await openDataDir(this.#opts.dataDir, "unibus-", this.#logger);
    this.#dataDir = dir;
    this.#ownsDataDir = owned;
    this.#dirGuard = guard;
    const layout = busLayout(this.#dataDir, this.serverName);
    const log = this.#logger;
    // The binary lookup spawns `nats-server --version`; the CA, keys and store are disk work.
    const [binary, ca, keys, store] = await Promise.all([
      this.#opts.natsServer ? Promise.resolve({ path: this.#opts.natsServer }) : resolveNatsServer({ logger: log }),
      loadOrCreateCa(layout.tlsDir),
      loadOrCreateServiceKeys(this.#dataDir),
      backend === "sqlite" ? openStore({ backend: "sqlite", file: layout.storeFile, logger: log }) : undefined,
    ]);
    this.#holder = createStoreHolder(backend);
    if (store) await this.#holder.set(store);
    this.#store = instrumentStore(this.#holder.store, this.metrics);
    const trust = await loadCaTrust(layout.tlsDir, ca);
    this.#caPem = trust.pem;
    this.#caFile = trust.file;
    this.#signingCaPem = ca.certPem;
    this.#caFingerprint = ca.fingerprint;
    this.#keys = keys;
    return { layout, binary: binary.path, ca, trust, keys, backend };
  }

  /** Phase 2: the server certificate (every name a client dials) and, in a cluster, the route certificate. */
  async #certificates({ layout, ca, trust }: Prepared): Promise<Certificates> {
    const host = this.#host;
    const hosts = [
      ...new Set([
        "localhost",
        "127.0.0.1",
        "::1",
        ...(isUnspecifiedHost(host) ? [] : [host]),
        ...(this.#opts.hostnames ?? []),
      ]),
    ];
    const server = await loadOrCreateServerCertificate(layout.tlsDir, ca, { name: "server", hosts });
    const member = this.#opts.cluster;
    if (!member) return { server };
    const routeHost = member.host ?? host;
    const advertised = member.advertise ? [member.advertise.replace(/:\d+$/, "").replace(/^\[|\]$/g, "")] : [];
    // Routes are mutual TLS: one certificate serves as server and as client, and must name
    // every address a peer dials (the advertised one included).
    const route = await loadOrCreateServerCertificate(layout.tlsDir, ca, {
      name: "route",
      hosts: [...new Set([...hosts, ...(isUnspecifiedHost(routeHost) ? [] : [routeHost]), ...advertised])],
      usage: "peer",
    });
    const cluster: NatsClusterOptions = {
      name: member.name,
      host: routeHost,
      port: member.port ?? -1,
      routes: member.routes ?? [],
      ...(member.advertise ? { advertise: member.advertise } : {}),
      tls: { certFile: route.certFile, keyFile: route.keyFile, caFile: trust.file, timeout: 2 },
    };
    return { server, cluster };
  }

  /** Phase 3: nats-server as a child process; resolves once it serves clients. */
  async #startNats(
    { layout, binary, trust, keys, backend }: Prepared,
    { server, cluster }: Certificates,
  ): Promise<void> {
    const host = this.#host;
    this.#nats = new NatsServerProcess({
      binary,
      name: this.serverName,
      workDir: layout.natsDir,
      logger: this.#logger,
      supervise: this.#opts.supervise ?? true,
      config: natsConfigFor({
        serverName: this.serverName,
        host,
        port: this.#opts.ports?.nats ?? -1,
        monitoringPort: this.#opts.ports?.monitoring ?? -1,
        websocketPort: this.#opts.ports?.websocket ?? -1,
        layout,
        cert: server,
        caFile: trust.file,
        keys,
        ...(cluster ? { cluster } : {}),
        ...(backend === "kv" ? { authTimeoutSeconds: KV_AUTH_TIMEOUT_S } : {}),
        ...(this.#opts.jetstreamMaxFileBytes ? { maxFileBytes: this.#opts.jetstreamMaxFileBytes } : {}),
        connectionLimits: {
          maxPayload: this.#limits.maxPayloadBytes,
          maxSubscriptions: this.#limits.subscriptionsPerConnection,
        },
      }),
    });
    this.#watchNats(this.#nats);
    this.#storage = new StorageWatch({ dir: this.#dataDir, logger: this.#logger, heal: () => this.#reopenNats() });
    const ports = await this.#nats.start();
    // Peers of a cluster can route to this node before its services are up.
    this.emit("nats-ready", ports);
    this.#natsUrl = `tls://${urlHost(host)}:${ports.nats}`;
    this.#monitorUrl = ports.monitoring ? `http://127.0.0.1:${ports.monitoring}` : "";
    this.#wsUrl = ports.websocket ? `wss://${urlHost(host)}:${ports.websocket}` : "";
  }

  /**
   * Phase 4: the services on top of nats-server — the KV store's opening (in the
   * background for a cluster member, whose buckets need its peers), the auth callout,
   * blobs, the control plane, the kicker, room streams and the revocation sweep.
   */
  async #startServices({ layout, trust, keys, backend }: Prepared, { server }: Certificates): Promise<void> {
    const services = { servers: [this.#natsUrl], caPem: trust.pem, keys, logger: this.#logger };
    const clustered = this.#opts.cluster !== undefined;
    if (backend === "kv") this.#openKv(services, layout.storeFile, clustered);
    this.#callout = this.#makeCallout(services, backend);
    this.#blobs = await (await this.#makeBlobs(backend)).start();
    this.#control = this.#makeControlServer(server, backend);
    this.#kicker = new Kicker({ ...services, registry: this.connections, onKick: (n) => this.metrics.kicks.inc(n) });
    this.#streams = new RoomStreams({
      ...services,
      ...(this.#opts.replicas ? { replicas: this.#opts.replicas } : {}),
      ...this.#roomStorage,
    });
    const [, , , controlPort] = await Promise.all([
      this.#callout.start(),
      this.#kicker.start(),
      this.#streams.start(),
      this.#control.listen(),
      clustered ? undefined : this.#storeReady,
    ]);
    this.#watchLinks();
    if (!clustered) void this.#pruneStreams();
    this.#watchAccess(services.logger);
    this.#controlUrl = `https://${urlHost(this.#host)}:${controlPort}`;
  }

  /** Supervision's news, passed on; a node out of restart budget fails, loudly but never as an uncaught error. */
  #watchNats(nats: NatsServerProcess): void {
    nats.on("restarting", (event) => {
      // Its clients died with it; no disconnect event will say so.
      this.connections.forgetServer(this.serverName);
      this.metrics.natsRestarts.inc({ node: this.serverName });
      this.#recordExit();
      this.emit("nats-restarting", event);
    });
    nats.on("restarted", (event) => this.emit("nats-restarted", event));
    nats.on("storage-fault", (line) => this.#storage?.fault(line));
    nats.on("failed", (err) => {
      this.#recordExit();
      if (!this.#isUp()) return;
      this.#logger.error({ component: "bus", err: err.message }, "nats-server is down for good; the bus has failed");
      this.#setState("failed");
      this.emit("failed", err);
      if (this.listenerCount("error") > 0) this.emit("error", err);
    });
  }

  /** After a full disk: nats-server's stream stores keep failing until it reopens them. */
  async #reopenNats(): Promise<void> {
    if (!this.#isUp() || !this.#nats) return;
    this.connections.forgetServer(this.serverName); // its clients go with it; they reconnect
    await this.#nats.restart();
  }

  /** The last unexpected end as a metric: one series per node, its value the end's Unix time. */
  #recordExit(): void {
    const exit = this.#nats?.lastExit;
    if (!exit) return;
    const gauge = this.metrics.natsLastExit;
    gauge.reset();
    gauge.set({ node: this.serverName, reason: exitReason(exit).reason }, exit.at.getTime() / 1000);
  }

  /** Supervised restarts of this node's nats-server and how it last ended on its own. */
  get natsLife(): NatsLife {
    const exit = this.#nats?.lastExit;
    return { restarts: this.#nats?.restarts ?? 0, ...(exit ? { lastExit: exitReason(exit) } : {}) };
  }

  /**
   * Each part of this node as observed now: nats-server (running and answering its
   * monitoring endpoint), the service connections, the store. `ok` only while the bus is
   * running and every part is up — what `/healthz` and `/readyz` answer.
   */
  async health(): Promise<HealthReport> {
    const link = (w: LinkWatch | undefined) => w?.up === true;
    const parts: Partial<Record<PartName, boolean>> = {
      nats: this.#nats?.state === "running" && (await natsAnswers(this.#monitorUrl)),
      callout: link(this.#links.callout),
      kicker: link(this.#links.kicker),
      streams: link(this.#links.streams),
      store: this.#holder?.current !== undefined,
    };
    if (this.#storage) parts.storage = await this.#storage.ok();
    if (this.#kv) parts.replay = link(this.#links.replay);
    // A member cut off from a majority of its cluster serves nothing replicated; one
    // missing a peer but still in a majority is fine (a rolling restart of another node).
    const routes = await this.routes();
    if (this.#opts.cluster) parts.routes = routes?.quorum === true;
    for (const [name, up] of Object.entries(parts)) this.metrics.partUp.set({ part: name }, up ? 1 : 0);
    return { ...reportOf(parts, this.#state === "running"), ...(routes ? { routes } : {}) };
  }

  #openKv(services: ServiceParts, sqliteFile: string, clustered: boolean): void {
    this.#kv = new KvOpening({
      ...services,
      holder: this.#holder!,
      replicas: this.#opts.replicas ?? 1,
      ...(this.#opts.kv?.bucketPrefix ? { bucketPrefix: this.#opts.kv.bucketPrefix } : {}),
      ...(this.#opts.kv?.timeoutMs ? { timeoutMs: this.#opts.kv.timeoutMs } : {}),
      ...(this.#opts.blobs?.storageBytes ? { blobStorageBytes: this.#opts.blobs.storageBytes } : {}),
      sqliteFile,
      isUp: () => this.#isUp(),
    });
    this.#storeReady = this.#kv.open({ retry: clustered });
    this.#storeReady.catch(() => {}); // observed by start() or whenStoreReady()
  }

  #watchLinks(): void {
    const watch = (name: PartName, nc: NatsConnection | undefined) => {
      if (nc) this.#links[name] = new LinkWatch(nc);
    };
    watch("callout", this.#callout?.connection);
    watch("kicker", this.#kicker?.connection);
    watch("streams", this.#streams?.connection);
    // The KV store's connection exists once its opening began (at once: it connects first).
    const watchReplay = () => {
      const replay = this.#kv?.connection;
      if (replay) this.#links.replay = new LinkWatch(replay);
    };
    this.#storeReady.then(watchReplay, watchReplay);
  }

  /**
   * On KV, blobs live in the Object Store opened with the KV buckets, so any node serves
   * any blob; on SQLite (one node) they stay files in the data dir.
   */
  async #makeBlobs(backend: StoreBackend): Promise<Blobs> {
    const { storageBytes: _capOfTheBucket, ...limits } = this.#opts.blobs ?? {};
    const common = { store: this.store, logger: this.#logger, ...limits };
    if (backend !== "kv") return new BlobStore({ dir: path.join(this.#dataDir, "blobs"), ...common });
    const { ObjectBlobStore } = await import("../control/blob-objects.ts"); // a SQLite bus never loads it
    return new ObjectBlobStore({ bucket: () => this.#kv?.blobBucket, ...common });
  }

  #makeCallout(services: ServiceParts, backend: StoreBackend): AuthCallout {
    const decide = (signPub: string) => this.#decide(signPub);
    return new AuthCallout({
      ...services,
      admit: backend === "kv" ? holdAdmission(decide, () => this.#state === "running") : decide,
      ...(backend === "kv" ? { decisionTimeoutMs: KV_DECISION_TIMEOUT_MS } : {}),
      onDecision: (d) => {
        if (d.connection) this.connections.add(d.connection);
        this.metrics.calloutDecisions.inc({ result: d.allowed ? "admit" : "deny", reason: d.reason });
        this.metrics.calloutLatency.observe(d.latencyMs / 1000);
      },
      ...(this.#opts.userJwtTtlSeconds ? { userJwtTtlSeconds: this.#opts.userJwtTtlSeconds } : {}),
      limits: { subs: this.#limits.subscriptionsPerConnection, payload: this.#limits.maxPayloadBytes },
    });
  }

  #makeControlServer(cert: { certPem: string; keyPem: string }, backend: StoreBackend): ControlServer {
    return new ControlServer({
      blobs: this.blobs,
      host: this.#host,
      port: this.#opts.ports?.control ?? 0,
      // The chain ends in the bus CA: an invitee holding only its fingerprint reads it from
      // the handshake (lib/tls/pin.ts) and checks it before sending anything.
      certPem: `${cert.certPem.trimEnd()}\n${this.#signingCaPem}`,
      keyPem: cert.keyPem,
      logger: this.#logger,
      health: async () => {
        const report = await this.health();
        const detail = {
          parts: report.parts,
          ...(report.down ? { down: report.down } : {}),
          ...(report.routes ? { routes: report.routes } : {}),
        };
        return { ok: report.ok, detail: { ...detail, node: this.serverName, nats: this.natsLife } };
      },
      live: () => ({ ok: isLive(this.#state), detail: { state: this.#state, node: this.serverName } }),
      metrics: this.metrics,
      beforeScrape: () => this.#refreshLiveMetrics(),
      deps: {
        store: this.store,
        publicBind: !isLoopbackHost(this.#host),
        onAccessChange: (change) => this.#onAccessChange(change),
        reserveRoomStorage: (asked) => this.#reserveRoomStorage(asked),
        caFingerprint: this.#caFingerprint,
        nodeReport: async () => {
          const [health, node] = await Promise.all([this.health(), nodeStatus(this.#monitorUrl)]);
          return { health, node };
        },
      },
      ...controlLimits(this.#opts),
      ...(this.#opts.corsOrigins ? { corsOrigins: this.#opts.corsOrigins } : {}),
      ...(backend === "kv" && this.#kv ? { nonces: this.#kv.nonces } : {}),
    });
  }

  /** Adds an identity to the allowlist (host-trusted: no signature needed). */
  async addUser(signPub: string, opts: AddUserOptions): Promise<User> {
    if (this.#state !== "running") throw new StateError(["running"], this.#state, "addUser()");
    return this.store.addUser({
      signPub: parseSignPub(signPub),
      handle: opts.handle,
      role: opts.role ?? "member",
      kexPub: opts.kexPub ?? null,
    });
  }

  /**
   * Stops every service, then nats-server; idempotent. A cluster member first hands its
   * JetStream leaderships over (see handover.ts) unless `handOver: false` — pointless when
   * the whole cluster is going down.
   */
  async stop(opts: { handOver?: boolean } = {}): Promise<void> {
    if (this.#state === "stopped") return;
    if (this.#state === "new") return this.#setState("stopped");
    this.#stopping ??= (async () => {
      const handOver = opts.handOver !== false && this.#state === "running" && this.#opts.cluster !== undefined;
      this.#setState("stopping");
      if (handOver) await this.#handOver();
      await this.#teardown();
      this.#setState("stopped");
    })();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /**
   * A crash, for failover tests: SIGKILL nats-server (no lame duck, no goodbye to its
   * routes), then drop the services. Files stay; a new node on the same data dir and
   * ports picks up where this one died.
   */
  async kill(): Promise<void> {
    if (this.#state === "new" || this.#state === "stopped") return this.stop();
    await this.#nats?.kill();
    await this.stop();
  }

  /** A cluster member leaving on purpose gives its JetStream leaderships away first (see handover.ts). */
  async #handOver(): Promise<void> {
    const app = this.#streams?.connection;
    if (!app || !this.#keys || this.#nats?.state !== "running") return;
    try {
      const result = await handOverLeaderships({
        serverName: this.serverName,
        monitorUrl: this.#monitorUrl,
        app,
        servers: [this.#natsUrl],
        caPem: this.#caPem,
        keys: this.#keys,
        logger: this.#logger,
      });
      this.emit("handover", result);
    } catch (err) {
      this.#logger.warn({ component: "bus", err: (err as Error).message }, "leadership handover failed");
    }
  }

  #isUp(): boolean {
    return this.#state === "starting" || this.#state === "running";
  }

  async #decide(signPub: string): Promise<Admission> {
    const store = this.#store;
    if (!store) return { allowed: false, reason: "store not open" };
    let user: User;
    try {
      user = await store.getUser(signPub);
    } catch (err) {
      if (err instanceof NotFoundError) return { allowed: false, reason: "not on the allowlist" };
      throw err;
    }
    if (user.status !== "active") return { allowed: false, reason: `user is ${user.status}` };
    const max = this.#limits.connectionsPerIdentity;
    if (this.connections.count(signPub) >= max) {
      return { allowed: false, reason: `over the limit of ${max} connections per identity` };
    }
    const rooms = await store.listRoomsFor(user.signPub);
    return { allowed: true, name: user.handle, permissions: permissionsFor(user.signPub, rooms) };
  }

  /** Rooms deleted while the bus was down (the CLI edits a stopped bus' store) leave streams: drop them. */
  async #pruneStreams(): Promise<void> {
    const isRoom = (id: string) =>
      this.store.getRoom(id).then(
        () => true,
        (err: unknown) => !(err instanceof NotFoundError), // unsure: keep
      );
    try {
      const gone = await this.#streams?.prune(isRoom);
      if (gone?.length) this.#logger.info({ component: "streams", rooms: gone }, "streams of deleted rooms removed");
    } catch (err) {
      // A bus stopped while its first prune ran (a test, a quick `up` then Ctrl-C) closed
      // the connection under it: nothing is wrong, and the next start prunes again.
      const level = this.#stopping === undefined ? "warn" : "debug";
      this.#logger[level]({ component: "streams", err: (err as Error).message }, "pruning room streams failed");
    }
  }

  /** The retention a new persisted room gets, within the ceiling and the budget; refusals as the control plane answers them. */
  async #reserveRoomStorage(asked?: RoomRetention): Promise<RoomRetention | undefined> {
    try {
      const retention = roomRetention(asked, this.roomStorage.retention);
      await this.#streams?.checkBudget(retention.maxBytes);
      return retention;
    } catch (err) {
      if (err instanceof StorageBudgetError) throw new HttpError(507, err.message, { code: "STORAGE_BUDGET" });
      if (err instanceof RetentionCeilingError) {
        throw new HttpError(400, err.message, { code: "RETENTION_ABOVE_CEILING" });
      }
      throw err;
    }
  }

  /**
   * A change in who may touch what: make it true on live connections before the
   * control plane answers. Gaining a room and losing one both need the connection to
   * re-authenticate (its permissions live in its user JWT); the client reconnects.
   */
  async #onAccessChange(change: AccessChange): Promise<void> {
    this.emit("access-change", change);
    if (change.type === "room-deleted") return this.#afterRoomDeleted(change.roomId, change.members);
    if (change.type === "room-created" && change.persist && this.#streams) return this.#persistedRoomCreated(change);
    await this.#kick(change.signPub, change.type);
  }

  /**
   * A persisted room must keep its first message, so the answer waits for its stream.
   * The owner's re-admission (kick, reconnect, callout) does not need to wait for it:
   * both run side by side, and the answer — which createRoom waits for as well as the
   * reconnect — comes once both are done. When JetStream refuses the stream the room is
   * taken back, and the owner is kicked again: a re-admission in between may already
   * hold the room's subject.
   */
  async #persistedRoomCreated(change: Extract<AccessChange, { type: "room-created" }>): Promise<void> {
    const kicked = this.#kick(change.signPub, change.type);
    try {
      await this.#ensureStream({ id: change.roomId, subject: change.subject }, change.retention);
    } catch (err) {
      await kicked;
      await this.#kick(change.signPub, "room-taken-back");
      throw err;
    }
    await kicked;
  }

  /**
   * A persisted room's stream, or no room: when JetStream refuses the stream (out of
   * space), the room just written to the store is taken back, so no room is left whose
   * history would silently go nowhere, and the creator hears 507 STORAGE_FULL. The
   * budget was checked before the room was stored (`reserveRoomStorage`).
   */
  async #ensureStream(room: Pick<Room, "id" | "subject">, retention?: RoomRetention): Promise<void> {
    try {
      await this.#streams?.ensure(room, retention, { reserved: true });
    } catch (err) {
      await this.store.deleteRoom(room.id).catch((e: unknown) => {
        this.#logger.error(
          { component: "streams", room: room.id, err: (e as Error).message },
          "taking back a room failed",
        );
      });
      if (err instanceof StorageFullError) throw new HttpError(507, err.message, { code: "STORAGE_FULL" });
      throw err;
    }
  }

  async #kick(signPub: string, reason: string): Promise<void> {
    try {
      await this.#kicker?.kickIdentity(signPub, reason);
    } catch (err) {
      // The change is committed; the user JWT's expiry bounds how long old rights last.
      this.#logger.error({ component: "auth", err: (err as Error).message, user: signPub }, "kick failed");
    }
  }

  /**
   * A room left the store: every former member is kicked (it comes back without the
   * subject), then its history and blobs go. Before the control plane answers, so a
   * 204 means the room is gone on the wire too. A failed clean-up is logged: blobs are
   * then found by the collector ("room-gone"); a stream left behind is capped like any
   * room's and nobody can read it (no member holds the room's subject any more).
   */
  async #afterRoomDeleted(roomId: string, members: string[]): Promise<void> {
    await Promise.all(members.map((m) => this.#kick(m, "room-deleted")));
    const log = (what: string) => (err: unknown) =>
      this.#logger.error(
        { component: "bus", roomId, err: (err as Error).message },
        `deleting the room's ${what} failed`,
      );
    await Promise.all([
      this.#streams?.remove(roomId).catch(log("history")),
      this.#blobs?.deleteRoomBlobs(roomId).catch(log("blobs")),
    ]);
  }

  /** Live revocation from the store's users watch, once the store is open (a cluster member opens it in the background). */
  #watchAccess(logger: Logger): void {
    const kicker = this.#kicker;
    this.#access = new AccessWatch({
      connections: this.connections,
      kick: (signPub, reason) => kicker?.kickIdentity(signPub, reason) ?? Promise.resolve(),
      logger,
    });
    const access = this.#access;
    this.#storeReady.then(
      () => {
        const store = this.#holder?.current;
        if (store && this.#isUp() && this.#access === access) access.start(store);
      },
      () => {}, // a store that never opens is reported by health; there is nothing to watch
    );
  }

  async #refreshLiveMetrics(): Promise<void> {
    await this.health(); // sets the parts' up gauges
    if (!this.#monitorUrl) return;
    const res = await fetch(`${this.#monitorUrl}/connz?acc=APP&limit=1`, { signal: AbortSignal.timeout(1000) });
    const connz = (await res.json()) as { total?: number };
    // Users live in APP; the bus' own stream-manager connection there is not a client.
    if (typeof connz.total === "number") this.metrics.connections.set(Math.max(0, connz.total - 1));
  }

  async #teardown(): Promise<void> {
    const log = this.#logger;
    const step = async (what: string, fn: () => Promise<void> | undefined) => {
      try {
        await fn();
      } catch (err) {
        log.warn({ component: "bus", err: (err as Error).message }, `stopping ${what} failed`);
      }
    };
    this.#access?.stop();
    this.#access = undefined;
    this.#storage?.stop();
    // Transfers are cut first: their partial files are discarded, not left half-written.
    await step("blob store", () => this.#blobs?.close());
    await step("control plane", () => this.#control?.close());
    await step("auth callout", () => this.#callout?.stop());
    await step("kicker", () => this.#kicker?.stop());
    await step("room streams", () => this.#streams?.stop());
    await step("store", () => this.#store?.close());
    await step("replay store", () => this.#kv?.close());
    this.#store = undefined;
    this.#kv = undefined;
    await step("nats-server", () => this.#nats?.stop());
    // A temp dir of ours goes after a failed start too: the error carries the server's output.
    if (this.#ownsDataDir) await step("temp dir", () => removeOwnedDir(this.#dataDir, this.#dirGuard));
  }
}

export async function startUnibus(opts: StartUnibusOptions = {}): Promise<Unibus> {
  return new Unibus(opts).start();
}

/** The control plane's operator limits, as `ControlServer` takes them. */
function controlLimits(opts: StartUnibusOptions) {
  const { perIdentity, ...perIp } = opts.rateLimit ?? {};
  return {
    rateLimit: perIp,
    ...(perIdentity ? { identityRateLimit: perIdentity } : {}),
    ...(opts.controlTimeouts ? { timeouts: opts.controlTimeouts } : {}),
  };
}

/** `blobs.storageBytes`: unset, or a positive whole number of bytes. */
function checkBlobStorageBytes(n: number | undefined): void {
  if (n !== undefined && (!Number.isSafeInteger(n) || n <= 0)) {
    throw new InvalidArgumentError("blobs.storageBytes", "blobs.storageBytes must be a positive whole number of bytes");
  }
}
