/**
 * One single-node bus: nats-server (a child process) with TLS from the bus' own CA,
 * the auth callout, the store and the control plane, started in dependency order
 * and stopped in reverse. The handle is a small state machine; `stop()` is
 * idempotent and `await using` works.
 */
import { EventEmitter } from "node:events";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Admission, type Admit, AuthCallout } from "../auth/callout.ts";
import { ConnectionRegistry, Kicker } from "../auth/kick.ts";
import { permissionsFor } from "../auth/permissions.ts";
import { connectAsService } from "../auth/service-connection.ts";
import type { ServiceKeys } from "../auth/service-keys.ts";
import { loadOrCreateServiceKeys } from "../auth/service-keys.ts";
import type { AuthMode } from "../control/auth.ts";
// blobs
import { BlobStore } from "../control/blobs.ts";
import type { RateLimiterOptions } from "../control/limits.ts";
import type { NonceStore } from "../control/nonce-cache.ts";
import type { AccessChange } from "../control/routes.ts";
import { ControlServer } from "../control/server.ts";
import { parseSignPub } from "../crypto/identity.ts";
import { InvalidArgumentError, NotFoundError, StateError, StoreUnavailableError } from "../errors.ts";
import { createLogger, type Logger } from "../log/index.ts";
import { BusMetrics, instrumentStore } from "../metrics/index.ts";
import type { NatsClusterOptions } from "../nats/config.ts"; // cluster
import { type NatsPorts, NatsServerProcess, resolveNatsServer } from "../nats/index.ts";
import { createStoreHolder, type StoreHolder } from "../store/holder.ts";
import {
  type BucketReplication,
  type KvStore,
  openStore,
  type Role,
  type Store,
  type StoreBackend,
  type User,
} from "../store/index.ts";
import { isLoopbackHost, isUnspecifiedHost, loadOrCreateCa, loadOrCreateServerCertificate } from "../tls/index.ts";
import { busLayout, natsConfigFor } from "./layout.ts";
import { RoomStreams } from "./streams.ts";

/**
 * On KV, a replicated bucket whose leader died answers nothing until its peers elect a
 * new one (seconds). A connection attempt meanwhile is held — the callout retries the
 * store for up to ADMIT_HOLD_MS, inside a server auth timeout raised to match — rather than
 * denied: nats.js gives up for good after two denials from one server, so denying would
 * turn every failover into dead clients. Whatever the store says in the end decides;
 * nothing is admitted without it.
 */
const ADMIT_HOLD_MS = 7000;
const KV_AUTH_TIMEOUT_S = 10;

export type BusState = "new" | "starting" | "running" | "stopping" | "stopped" | "failed";

export interface StartUnibusOptions {
  /** Where the CA, keys, store and JetStream data live. Default: a fresh temp dir, removed on stop. */
  dataDir?: string;
  /** Bind address for NATS and the control plane. Default 127.0.0.1. */
  host?: string;
  /** Extra host names / addresses the server certificate must cover (for clients on other machines). */
  hostnames?: string[];
  /** Ports; -1 (NATS) or 0 (control) picks a free one. Defaults: random. */
  ports?: { nats?: number; control?: number; monitoring?: number };
  /**
   * Control-plane store: "sqlite" (a file in the data dir; the default alone) or "kv"
   * (replicated JetStream KV buckets, `replicas` ways; the default with `cluster`). With "kv" the callout denies
   * and the control plane answers 503 until the buckets are open.
   */
  store?: StoreBackend;
  /** KV store tuning: bucket name prefix (default `unibus_`), per-operation bound (default 3000 ms). */
  kv?: { bucketPrefix?: string; timeoutMs?: number };
  /** Path of the nats-server binary; default: resolved (env, cache, PATH, download). */
  natsServer?: string;
  /** The node's server name. Default "unibus-1". */
  serverName?: string;
  logger?: Logger;
  /** Lifetime of user JWTs issued by the callout (seconds). */
  userJwtTtlSeconds?: number;
  /** Control-plane request authentication: enforce (default), soft (log, let through) or off. */
  authMode?: AuthMode;
  /** Control-plane per-IP rate limit. */
  rateLimit?: RateLimiterOptions;
  // ---- blobs ----
  /** Blob limits: size cap (default 256 MiB), max age (default 30 days), GC interval (default 10 min). */
  blobs?: { maxBytes?: number; maxAgeMs?: number; gcIntervalMs?: number };
  // ---- end blobs ----
  // ---- cluster ----
  /** Run as one member of a NATS cluster (routes with mutual TLS from this bus' CA). See docs/clustering.md. */
  cluster?: UnibusClusterOptions;
  /** JetStream replicas of room streams; default 1 (a cluster sets its own). */
  replicas?: number;
  /** Admitted-connection registry; nodes of one in-process cluster share one, so any node can kick any connection. */
  connections?: ConnectionRegistry;
  // ---- end cluster ----
}

// ---- cluster ----
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
// ---- end cluster ----

export interface AddUserOptions {
  handle: string;
  role?: Role;
  kexPub?: string | null;
}

export class Unibus extends EventEmitter {
  #state: BusState = "new";
  readonly #opts: StartUnibusOptions;
  readonly #logger: Logger;
  #ownsDataDir = false;
  #dataDir = "";
  #nats?: NatsServerProcess;
  #callout?: AuthCallout;
  #kicker?: Kicker;
  #streams?: RoomStreams;
  #sweep?: NodeJS.Timeout;
  #sweeping = false;
  /** Admitted connections by identity, for live revocation. */
  readonly connections: ConnectionRegistry;
  #control?: ControlServer;
  #store?: Store;
  #holder?: StoreHolder;
  /** Settles when the store is open (at once for SQLite; after the buckets exist for KV). */
  #storeReady: Promise<void> = Promise.resolve();
  #storeConn?: NatsConnection;
  #kvNonces?: NonceStore & { close(): Promise<void> };
  #blobs?: BlobStore; // blobs
  #natsUrl = "";
  #controlUrl = "";
  #caPem = "";
  #caFile = "";
  #monitorUrl = "";
  #stopping?: Promise<void>;
  /** Prometheus metrics of this bus (served at the control plane's /metrics). */
  readonly metrics = new BusMetrics();

  constructor(opts: StartUnibusOptions = {}) {
    super();
    this.#opts = opts;
    this.#logger = opts.logger ?? createLogger();
    this.connections = opts.connections ?? new ConnectionRegistry(); // cluster
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
  // ---- blobs ----
  /** The blob store under `<dataDir>/blobs` (host-trusted access; `gc()` runs a collection now). */
  get blobs(): BlobStore {
    if (!this.#blobs) throw new StateError(["running"], this.#state, "blobs");
    return this.#blobs;
  }
  // ---- end blobs ----
  // ---- cluster ----
  /** The ports nats-server listens on while it runs (client, monitoring, cluster route). */
  get natsPorts(): NatsPorts | undefined {
    return this.#nats?.ports;
  }
  get serverName(): string {
    return this.#opts.serverName ?? "unibus-1";
  }
  /** The store backend this bus runs on. */
  get storeBackend(): StoreBackend {
    return this.#opts.store ?? (this.#opts.cluster ? "kv" : "sqlite");
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
  // ---- end cluster ----
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
    const log = this.#logger;
    const host = this.#opts.host ?? "127.0.0.1";
    const serverName = this.#opts.serverName ?? "unibus-1";
    const backend = this.storeBackend;
    if (backend !== "sqlite" && backend !== "kv") {
      this.#setState("failed");
      throw new InvalidArgumentError("store", `store: "sqlite" or "kv"; got ${JSON.stringify(backend)}`);
    }
    try {
      if (this.#opts.dataDir) {
        this.#dataDir = path.resolve(this.#opts.dataDir);
        await fs.mkdir(this.#dataDir, { recursive: true, mode: 0o700 });
      } else {
        this.#dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-"));
        this.#ownsDataDir = true;
      }
      const layout = busLayout(this.#dataDir, serverName);
      // Independent start-up work runs concurrently: the binary lookup spawns
      // `nats-server --version`, the CA/certificate and key files are disk work.
      const [binary, ca, keys, store] = await Promise.all([
        this.#opts.natsServer ? Promise.resolve({ path: this.#opts.natsServer }) : resolveNatsServer({ logger: log }),
        loadOrCreateCa(layout.tlsDir),
        loadOrCreateServiceKeys(this.#dataDir),
        backend === "sqlite" ? openStore({ backend: "sqlite", file: layout.storeFile, logger: log }) : undefined,
      ]);
      this.#holder = createStoreHolder(backend);
      if (store) await this.#holder.set(store);
      this.#store = instrumentStore(this.#holder.store, this.metrics);
      this.#caPem = ca.certPem;
      this.#caFile = ca.certFile;
      const hosts = [
        ...new Set([
          "localhost",
          "127.0.0.1",
          "::1",
          ...(isUnspecifiedHost(host) ? [] : [host]),
          ...(this.#opts.hostnames ?? []),
        ]),
      ];
      const cert = await loadOrCreateServerCertificate(layout.tlsDir, ca, { name: "server", hosts });
      // ---- cluster ----
      const clusterOpts = this.#opts.cluster;
      let cluster: NatsClusterOptions | undefined;
      if (clusterOpts) {
        const routeHost = clusterOpts.host ?? host;
        const advertised = clusterOpts.advertise
          ? [clusterOpts.advertise.replace(/:\d+$/, "").replace(/^\[|\]$/g, "")]
          : [];
        // Routes are mutual TLS: one certificate serves as server and as client, and must name
        // every address a peer dials (the advertised one included).
        const routeCert = await loadOrCreateServerCertificate(layout.tlsDir, ca, {
          name: "route",
          hosts: [...new Set([...hosts, ...(isUnspecifiedHost(routeHost) ? [] : [routeHost]), ...advertised])],
          usage: "peer",
        });
        cluster = {
          name: clusterOpts.name,
          host: routeHost,
          port: clusterOpts.port ?? -1,
          routes: clusterOpts.routes ?? [],
          ...(clusterOpts.advertise ? { advertise: clusterOpts.advertise } : {}),
          tls: { certFile: routeCert.certFile, keyFile: routeCert.keyFile, caFile: ca.certFile, timeout: 2 },
        };
      }
      // ---- end cluster ----

      this.#nats = new NatsServerProcess({
        binary: binary.path,
        name: serverName,
        workDir: layout.natsDir,
        logger: log,
        config: natsConfigFor({
          serverName,
          host,
          port: this.#opts.ports?.nats ?? -1,
          monitoringPort: this.#opts.ports?.monitoring ?? -1,
          layout,
          cert,
          caFile: ca.certFile,
          keys,
          ...(cluster ? { cluster } : {}), // cluster
          ...(backend === "kv" ? { authTimeoutSeconds: KV_AUTH_TIMEOUT_S } : {}),
        }),
      });
      const ports = await this.#nats.start();
      this.emit("nats-ready", ports); // cluster: peers can route to this node before its services are up
      const clientHost = isUnspecifiedHost(host) ? "127.0.0.1" : host;
      this.#natsUrl = `tls://${urlHost(clientHost)}:${ports.nats}`;
      this.#monitorUrl = ports.monitoring ? `http://127.0.0.1:${ports.monitoring}` : "";
      if (backend === "kv") {
        // A cluster member opens in the background: its buckets need the meta group, which
        // needs the other nodes, which may be starting just now. Alone, start() waits for it.
        this.#storeReady = this.#openKv(keys, ca.certPem, { retry: clusterOpts !== undefined });
        this.#storeReady.catch(() => {}); // observed by start() or whenStoreReady()
      }

      this.#callout = new AuthCallout({
        servers: [this.#natsUrl],
        caPem: ca.certPem,
        keys,
        admit: this.#admit,
        ...(backend === "kv" ? { decisionTimeoutMs: ADMIT_HOLD_MS + 1500 } : {}),
        logger: log,
        onDecision: (d) => {
          if (d.connection) this.connections.add(d.connection);
          this.metrics.calloutDecisions.inc({ result: d.allowed ? "admit" : "deny", reason: d.reason });
          this.metrics.calloutLatency.observe(d.latencyMs / 1000);
        },
        ...(this.#opts.userJwtTtlSeconds ? { userJwtTtlSeconds: this.#opts.userJwtTtlSeconds } : {}),
      });
      // ---- blobs ----
      this.#blobs = await new BlobStore({
        dir: path.join(this.#dataDir, "blobs"),
        store: this.#store,
        logger: log,
        ...this.#opts.blobs,
      }).start();
      // ---- end blobs ----
      this.#control = new ControlServer({
        blobs: this.#blobs, // blobs
        host,
        port: this.#opts.ports?.control ?? 0,
        certPem: cert.certPem,
        keyPem: cert.keyPem,
        logger: log,
        health: async () => ({ ok: this.#state === "running" && this.#holder?.current !== undefined }),
        metrics: this.metrics,
        beforeScrape: () => this.#refreshLiveMetrics(),
        deps: {
          store: this.#store,
          publicBind: !isLoopbackHost(host),
          onAccessChange: (change) => this.#onAccessChange(change),
        },
        ...(this.#opts.authMode ? { authMode: this.#opts.authMode } : {}),
        ...(this.#opts.rateLimit ? { rateLimit: this.#opts.rateLimit } : {}),
        ...(backend === "kv" ? { nonces: this.#replicatedNonces } : {}),
      });
      this.#kicker = new Kicker({
        servers: [this.#natsUrl],
        caPem: ca.certPem,
        keys,
        registry: this.connections,
        logger: log,
        onKick: (n) => this.metrics.kicks.inc(n),
      });
      this.#streams = new RoomStreams({
        servers: [this.#natsUrl],
        caPem: ca.certPem,
        keys,
        logger: log,
        ...(this.#opts.replicas ? { replicas: this.#opts.replicas } : {}), // cluster
      });
      const [, , , controlPort] = await Promise.all([
        this.#callout.start(),
        this.#kicker.start(),
        this.#streams.start(),
        this.#control.listen(),
        clusterOpts ? undefined : this.#storeReady,
      ]);
      this.#sweep = setInterval(() => void this.#sweepRevoked(), 250);
      this.#sweep.unref();
      this.#controlUrl = `https://${urlHost(clientHost)}:${controlPort}`;
      this.#setState("running");
      log.info(
        { component: "bus", natsUrl: this.#natsUrl, controlUrl: this.#controlUrl, dataDir: this.#dataDir },
        "bus ready",
      );
      return this;
    } catch (err) {
      this.#setState("failed");
      await this.#teardown({ keepFiles: true });
      throw err;
    }
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

  async stop(): Promise<void> {
    if (this.#state === "stopped") return;
    if (this.#state === "new") return this.#setState("stopped");
    this.#stopping ??= (async () => {
      this.#setState("stopping");
      await this.#teardown({ keepFiles: false });
      this.#setState("stopped");
    })();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  // ---- cluster ----
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
  // ---- end cluster ----

  /**
   * Opens the KV store and the replicated nonce bucket on one APP-account service
   * connection. With `retry` (a cluster member) it tries until it succeeds or the bus stops.
   */
  async #openKv(keys: ServiceKeys, caPem: string, { retry }: { retry: boolean }): Promise<void> {
    const log = this.#logger;
    const replicas = this.#opts.replicas ?? 1;
    const prefix = this.#opts.kv?.bucketPrefix;
    const { openKvNonceStore } = await import("../control/nonce-kv.ts"); // a SQLite bus never loads it
    const nc = await connectAsService({ servers: [this.#natsUrl], caPem, key: keys.app, name: "unibus-store" });
    this.#storeConn = nc;
    for (let attempt = 1; ; attempt++) {
      // Until the meta group has formed JetStream leaves API requests unanswered: a create
      // sent then waits out its whole timeout. So first wait (cheaply) until JetStream answers.
      if (retry && !(await jetStreamAnswers(nc))) {
        if (!this.#isUp()) throw new StoreUnavailableError("the bus stopped before its KV store opened");
        continue;
      }
      // Even then a replicated create is now and then left unanswered (seen: 1 start in 3,
      // racing the same create from the other nodes) while a retry at once succeeds; so
      // attempts start short (1 s) and lengthen only if they keep failing (slow machine).
      const openTimeoutMs = retry ? Math.min(1000 * Math.ceil(attempt / 3), 5000) : 5000;
      const [store, nonces] = await Promise.allSettled([
        openStore({
          backend: "kv",
          nc,
          replicas,
          logger: log,
          openTimeoutMs,
          ...(prefix ? { bucketPrefix: prefix } : {}),
          ...(this.#opts.kv?.timeoutMs ? { timeoutMs: this.#opts.kv.timeoutMs } : {}),
        }),
        openKvNonceStore({ nc, replicas, logger: log, openTimeoutMs, ...(prefix ? { bucketPrefix: prefix } : {}) }),
      ]);
      const stopping = !this.#isUp();
      if (store.status === "fulfilled" && nonces.status === "fulfilled" && !stopping) {
        this.#kvNonces = nonces.value;
        await this.#holder?.set(store.value);
        log.info({ component: "bus", replicas, attempts: attempt }, "KV store open");
        void this.#warnIfUnmigrated(store.value);
        return;
      }
      if (store.status === "fulfilled") await store.value.close();
      if (nonces.status === "fulfilled") await nonces.value.close();
      if (stopping) throw new StoreUnavailableError("the bus stopped before its KV store opened");
      const err = store.status === "rejected" ? store.reason : (nonces as PromiseRejectedResult).reason;
      if (!retry) throw err;
      if (attempt % 10 === 0) {
        log.warn(
          { component: "bus", attempt, err: (err as Error).message },
          "KV store not open yet (waiting for JetStream); denying connections meanwhile",
        );
      }
      await sleep(100);
    }
  }

  #isUp(): boolean {
    return this.#state === "starting" || this.#state === "running";
  }

  /** A SQLite store beside an empty KV allowlist is almost surely a migration not yet run. */
  async #warnIfUnmigrated(kv: Store): Promise<void> {
    const file = busLayout(this.#dataDir, this.serverName).storeFile;
    // The listing reads the whole allowlist: only when there is a SQLite file at all.
    if (!(await fs.stat(file).catch(() => undefined))) return;
    if ((await kv.listUsers().catch(() => [1])).length === 0) {
      this.#logger.warn(
        { component: "bus", file },
        "this data dir has a SQLite store but the KV store has no users: run `unibus migrate-to-kv` to carry them over",
      );
    }
  }

  /** Until the KV nonce bucket is open, every signed request is refused (503), never let through unremembered. */
  readonly #replicatedNonces: NonceStore = {
    checkAndRemember: (key, ttlMs) =>
      this.#kvNonces
        ? this.#kvNonces.checkAndRemember(key, ttlMs)
        : Promise.reject(new StoreUnavailableError("the replay store is still opening")),
  };

  readonly #admit: Admit = async (signPub) => {
    if (this.storeBackend !== "kv") return this.#decide(signPub);
    const deadline = Date.now() + ADMIT_HOLD_MS;
    for (;;) {
      try {
        return await this.#decide(signPub);
      } catch (err) {
        if (!(err instanceof StoreUnavailableError) || Date.now() > deadline || this.#state !== "running") throw err;
        await sleep(250);
      }
    }
  };

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
    const rooms = await store.listRoomsFor(user.signPub);
    return { allowed: true, name: user.handle, permissions: permissionsFor(user.signPub, rooms) };
  }

  /**
   * A change in who may touch what: make it true on live connections before the
   * control plane answers. Gaining a room and losing one both need the connection to
   * re-authenticate (its permissions live in its user JWT); the client reconnects.
   */
  async #onAccessChange(change: AccessChange): Promise<void> {
    this.emit("access-change", change);
    if (change.type === "room-created") {
      const room = await this.store.getRoom(change.roomId);
      // Before answering: a persisted room must keep its first message.
      if (room.persist) await this.#streams?.ensure(room);
    }
    try {
      await this.#kicker?.kickIdentity(change.signPub, change.type);
    } catch (err) {
      // The change is committed; the user JWT's expiry bounds how long old rights last.
      this.#logger.error({ component: "auth", err: (err as Error).message, user: change.signPub }, "kick failed");
    }
  }

  /**
   * Allowlist edits that bypass the control plane (the host-trusted CLI writes the
   * store directly) are caught here: a connected identity that is no longer
   * authorized is kicked, and the callout refuses it from then on.
   */
  async #sweepRevoked(): Promise<void> {
    const store = this.#store;
    // One sweep at a time: on KV without quorum a check waits for the store's timeout.
    if (!store || this.#state !== "running" || this.#sweeping) return;
    this.#sweeping = true;
    try {
      for (const signPub of this.connections.identities()) {
        let ok: boolean;
        try {
          ok = await store.isAuthorized(signPub);
        } catch {
          return; // store trouble: new connections are denied by the callout; do not storm live ones
        }
        if (!ok) await this.#kicker?.kickIdentity(signPub, "no longer authorized").catch(() => {});
      }
    } finally {
      this.#sweeping = false;
    }
  }

  async #refreshLiveMetrics(): Promise<void> {
    if (!this.#monitorUrl) return;
    const res = await fetch(`${this.#monitorUrl}/connz?acc=APP&limit=1`, { signal: AbortSignal.timeout(1000) });
    const connz = (await res.json()) as { total?: number };
    // Users live in APP; the bus' own stream-manager connection there is not a client.
    if (typeof connz.total === "number") this.metrics.connections.set(Math.max(0, connz.total - 1));
  }

  async #teardown({ keepFiles }: { keepFiles: boolean }): Promise<void> {
    const log = this.#logger;
    const step = async (what: string, fn: () => Promise<void> | undefined) => {
      try {
        await fn();
      } catch (err) {
        log.warn({ component: "bus", err: (err as Error).message }, `stopping ${what} failed`);
      }
    };
    clearInterval(this.#sweep);
    await step("blob store", () => this.#blobs?.close()); // blobs: cut transfers first, their partial files are discarded
    await step("control plane", () => this.#control?.close());
    await step("auth callout", () => this.#callout?.stop());
    await step("kicker", () => this.#kicker?.stop());
    await step("room streams", () => this.#streams?.stop());
    await step("store", () => this.#store?.close());
    await step("replay store", () => this.#kvNonces?.close());
    await step("store connection", () => this.#storeConn?.close());
    this.#store = undefined;
    this.#kvNonces = undefined;
    await step("nats-server", () => this.#nats?.stop());
    if (this.#ownsDataDir && !keepFiles) {
      await step("temp dir", () => fs.rm(this.#dataDir, { recursive: true, force: true }));
    } else if (this.#ownsDataDir) {
      log.warn({ component: "bus", dataDir: this.#dataDir }, "start failed; its files are kept for investigation");
    }
  }
}

/** True once JetStream answers an account-info request (it has a meta leader); false after 250 ms of silence. */
async function jetStreamAnswers(nc: NatsConnection): Promise<boolean> {
  try {
    await (await jetstreamManager(nc, { timeout: 250, checkAPI: false })).getAccountInfo();
    return true;
  } catch {
    await sleep(50);
    return false;
  }
}

export async function startUnibus(opts: StartUnibusOptions = {}): Promise<Unibus> {
  return new Unibus(opts).start();
}

function urlHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}
