/**
 * `unibus up`: resolve the settings, start one bus or a cluster of them behind one
 * `BusHandle`, write the run file, say where to connect, and stop cleanly on a signal.
 */
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import {
  type BusHandle,
  type OperatorOptions,
  type StartClusterOptions,
  type StartUnibusOptions,
  startCluster,
  startUnibus,
  Unibus,
  UnibusCluster,
} from "../../bus/index.ts";
import { describeRoutes, mainRouteError, type RouteReport, routeErrorFix } from "../../bus/route-watch.ts";
import { describeConfig, type ResolvedConfig, type UnibusConfig } from "../../config/index.ts";
import { createLogger, type Logger } from "../../log/index.ts";
import { removeRunInfo, runInfoOf, runningPid, writeRunInfo } from "../../ops/run-file.ts";
import { chooseStoreBackend } from "../../store/index.ts";
import { CliError, printJson } from "../output.ts";
import { configOption, resolveCommandConfig, settingOptions } from "../settings.ts";

interface UpOptions {
  json?: boolean;
  printConfig?: boolean;
}

/** What the signal handler stops: nothing until the start returns. */
interface Running {
  bus?: BusHandle;
}

export function upCommand(program: Command): void {
  const up = program
    .command("up")
    .description("start a bus: nats-server with TLS, the auth callout and the control plane");
  configOption(settingOptions(up))
    .option("--print-config", "print the effective configuration (and where each value came from), then exit")
    .option("--json", "print one JSON line when ready; logs as JSON on stderr")
    .action(runUp);
}

async function runUp(opts: UpOptions, cmd: Command): Promise<void> {
  const resolved = resolveCommandConfig(cmd);
  if (opts.printConfig) return printConfig(resolved);
  const cfg = resolved.config;
  const json = opts.json === true;
  const { logger, readyLevel } = upLogger(cfg, json);
  const dataDir = path.resolve(cfg.dataDir);
  await refuseIfRunning(dataDir);
  const running: Running = {};
  stopOnSignals(running, dataDir, json);
  const bus = await startBus(cfg, dataDir, logger);
  running.bus = bus;
  exitWhenFailed(bus, dataDir);
  const member = bus instanceof Unibus && isMember(cfg);
  const routes = member ? await waitForRoutes(bus, cfg.routeWaitSeconds * 1000) : undefined;
  logger.level = readyLevel;
  if (member && !allRouted(routes)) {
    const reason = degradedReason(bus, routes);
    await writeRunInfo(dataDir, { ...runInfoOf(bus), readiness: { state: "degraded", since: now(), reason } });
    if (json) printJson({ ...readyLine(bus), event: "degraded", reason, ...(routes ? { routes } : {}) });
    else process.stdout.write(`${degradedText(bus, reason, routes)}\n`);
    void sayReadyOnceJoined(bus, dataDir, json);
    return;
  }
  await writeRunInfo(dataDir, {
    ...runInfoOf(bus),
    ...(member ? { readiness: { state: "ready", since: now() } } : {}),
  });
  if (json) printJson(readyLine(bus));
  else process.stdout.write(`${await readyText(bus)}\n`);
}

const now = () => new Date().toISOString();

/** One bus with routes or a cluster name: a member of a cluster of machines. */
function isMember(cfg: UnibusConfig): boolean {
  return cfg.routes.length > 0 || cfg.clusterName !== undefined;
}

function allRouted(r: RouteReport | undefined): r is RouteReport {
  return r !== undefined && r.connected.length >= r.planned;
}

/** Polls a member's routes until every planned peer is routed or `waitMs` is over; the last view (undefined: no answer). */
async function waitForRoutes(bus: Unibus, waitMs: number): Promise<RouteReport | undefined> {
  const deadline = performance.now() + waitMs;
  for (;;) {
    const report = await bus.routes();
    if (allRouted(report) || performance.now() >= deadline || bus.state !== "running") return report;
    await sleep(ROUTE_POLL_MS);
  }
}

const ROUTE_POLL_MS = 250;
/** After `degraded`, how often `up` looks again; the line `ready` follows within that of the last peer joining. */
const REJOIN_POLL_MS = 1000;

function degradedReason(bus: Unibus, routes: RouteReport | undefined): string {
  if (!routes) return `node ${bus.serverName}: its nats-server's monitoring endpoint does not say how it is routed`;
  const majority = routes.quorum
    ? "it is in a majority and serves"
    : "cut off from a majority: the replicated store and room history do not answer here";
  return `node ${bus.serverName} is ${describeRoutes(routes)} (${majority})`;
}

function degradedText(bus: Unibus, reason: string, routes: RouteReport | undefined): string {
  const fix = routes ? routeErrorFix(mainRouteError(routes)) : "see `unibus doctor`";
  return [
    `unibus is DEGRADED: ${reason}`,
    `  fix:           ${fix}`,
    `  NATS:          ${bus.natsUrls[0]}`,
    `  control plane: ${bus.controlUrls[0]}`,
    `  data dir:      ${bus.dataDir}`,
    "",
    "It keeps running and prints `unibus is up` once every peer is routed; `unibus status` shows it meanwhile.",
  ].join("\n");
}

/** A degraded member keeps looking; once every peer is routed it says `ready` and updates the run file. */
async function sayReadyOnceJoined(bus: Unibus, dataDir: string, json: boolean): Promise<void> {
  for (;;) {
    await sleep(REJOIN_POLL_MS);
    if (bus.state !== "running") return;
    if (!allRouted(await bus.routes())) continue;
    // The line matters more than the file: a run file that cannot be rewritten keeps saying degraded.
    await writeRunInfo(dataDir, { ...runInfoOf(bus), readiness: { state: "ready", since: now() } }).catch(
      (err: Error) => process.stderr.write(`unibus: could not update the run file: ${err.message}\n`),
    );
    if (json) printJson(readyLine(bus));
    else process.stdout.write(`${await readyText(bus)}\n`);
    return;
  }
}

/**
 * A node whose nats-server is out of its restart budget cannot heal: `up` says why, with
 * the server's last output, stops what is left and exits non-zero so a process manager
 * (systemd's Restart=on-failure) takes over.
 */
function exitWhenFailed(bus: BusHandle, dataDir: string): void {
  const nodes = bus instanceof Unibus ? [bus] : ((bus as { nodes?: readonly Unibus[] }).nodes ?? []);
  for (const node of nodes) {
    node.once("failed", (err) => {
      process.stderr.write(`unibus: ${err.message}\n`);
      void bus
        .stop()
        .finally(() => removeRunInfo(dataDir).catch(() => {}))
        .finally(() => process.exit(1));
    });
  }
}

function printConfig(resolved: ResolvedConfig): void {
  printJson({ ...(resolved.file ? { file: resolved.file } : {}), settings: describeConfig(resolved) });
}

/**
 * JSON mode is for machines: JSON lines at the asked level from the start. Text mode is
 * for people: one readable line per event (`--log-format json` keeps JSON lines), at
 * the asked level (info by default) once the bus is ready. Before that only debug and
 * trace speak, when asked for: a failed start is one line, the error naming its cause.
 */
function upLogger(cfg: UnibusConfig, json: boolean): { logger: Logger; readyLevel: string } {
  const readyLevel = cfg.logLevel;
  const verbose = readyLevel === "debug" || readyLevel === "trace";
  const startLevel = json || verbose ? readyLevel : "silent";
  const format = json || cfg.logFormat === "json" ? "json" : "pretty";
  return { logger: createLogger({ level: startLevel, format }), readyLevel };
}

/** Two buses on one data dir would fight over the store and the ports. */
async function refuseIfRunning(dataDir: string): Promise<void> {
  const pid = await runningPid(dataDir);
  if (pid === undefined) return;
  throw new CliError(`a bus is already running on ${dataDir} (pid ${pid}); stop it first or use another --data-dir`);
}

/**
 * Installed before the start so that a signal during it still exits cleanly. A signal
 * can arrive twice (a process-group kill plus the launcher forwarding it); stopping is
 * bounded by the children's stop timeouts, so the second is ignored.
 */
function stopOnSignals(running: Running, dataDir: string, json: boolean): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    if (!json) process.stderr.write(`\nunibus: ${signal} received, stopping…\n`);
    await running.bus?.stop();
    await removeRunInfo(dataDir);
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

/** `--cluster n`: n nodes on this machine; otherwise one bus, a cluster member when it has routes or a cluster name. */
function startBus(cfg: UnibusConfig, dataDir: string, logger: Logger): Promise<BusHandle> {
  return cfg.cluster !== undefined
    ? startCluster(clusterOptions(cfg, cfg.cluster, dataDir, logger))
    : startUnibus(nodeOptions(cfg, dataDir, logger));
}

function clusterOptions(cfg: UnibusConfig, nodes: number, dataDir: string, logger: Logger): StartClusterOptions {
  if (cfg.routes.length > 0 || cfg.serverName !== undefined || cfg.clusterAdvertise !== undefined) {
    throw new CliError(
      "--cluster starts every node on this machine; --route, --server-name and --cluster-advertise are for one node of a cluster of machines (see docs/clustering.md)",
    );
  }
  return {
    nodes,
    dataDir,
    host: cfg.host,
    hostnames: cfg.hostnames,
    ports: {
      nats: cfg.natsPort,
      control: cfg.controlPort,
      monitoring: cfg.monitorPort,
      cluster: cfg.clusterPort,
      websocket: cfg.wsPort,
    },
    ...(cfg.clusterName !== undefined ? { name: cfg.clusterName } : {}),
    ...(cfg.replicas !== undefined ? { replicas: cfg.replicas } : {}),
    store: chooseStoreBackend(cfg.store, true),
    node: { ...operatorOptions(cfg), corsOrigins: cfg.corsOrigins },
    logger,
  };
}

function nodeOptions(cfg: UnibusConfig, dataDir: string, logger: Logger): StartUnibusOptions {
  const member = isMember(cfg);
  return {
    ...(member ? memberOptions(cfg) : {}),
    store: chooseStoreBackend(cfg.store, member),
    ...(cfg.serverName !== undefined ? { serverName: cfg.serverName } : {}),
    dataDir,
    host: cfg.host,
    hostnames: cfg.hostnames,
    ports: { nats: cfg.natsPort, control: cfg.controlPort, monitoring: cfg.monitorPort, websocket: cfg.wsPort },
    ...operatorOptions(cfg),
    corsOrigins: cfg.corsOrigins,
    logger,
  };
}

/** The operator's limits (lifetimes, rates, deadlines, caps), the same for one bus and every node of a cluster. */
export function operatorOptions(cfg: UnibusConfig): OperatorOptions {
  if (cfg.roomStorageBytes < cfg.roomMaxBytes) {
    throw new CliError(
      `roomStorageBytes (${cfg.roomStorageBytes}) must be at least roomMaxBytes (${cfg.roomMaxBytes}): the budget has to hold one room at its cap`,
    );
  }
  return {
    userJwtTtlSeconds: cfg.userJwtTtlSeconds,
    rateLimit: {
      ratePerSec: cfg.rateLimitPerSec,
      burst: cfg.rateLimitBurst,
      perIdentity: { ratePerSec: cfg.identityRateLimitPerSec, burst: cfg.identityRateLimitBurst },
    },
    controlTimeouts: {
      handshakeMs: cfg.handshakeTimeoutMs,
      headersMs: cfg.headersTimeoutMs,
      requestMs: cfg.requestTimeoutMs,
      minBodyBytesPerSec: cfg.minBodyBytesPerSec,
      bodyGraceMs: cfg.bodyGraceMs,
      maxConnectionsPerIp: cfg.maxConnectionsPerIp,
    },
    limits: {
      connectionsPerIdentity: cfg.connectionsPerIdentity,
      subscriptionsPerConnection: cfg.subscriptionsPerConnection,
      maxPayloadBytes: cfg.maxPayloadBytes,
    },
    retention: { maxBytes: cfg.roomMaxBytes, maxAgeMs: cfg.roomMaxAgeSeconds * 1000, maxMsgs: cfg.roomMaxMsgs },
    roomStorageBytes: cfg.roomStorageBytes,
    blobs: {
      maxBytes: cfg.blobMaxBytes,
      maxAgeMs: cfg.blobMaxAgeSeconds * 1000,
      gcIntervalMs: cfg.blobGcIntervalSeconds * 1000,
      ...(cfg.blobStorageBytes !== undefined ? { storageBytes: cfg.blobStorageBytes } : {}),
    },
    ...(cfg.jetstreamMaxFileBytes !== undefined ? { jetstreamMaxFileBytes: cfg.jetstreamMaxFileBytes } : {}),
  };
}

/** One node of a cluster of machines: its routes to the others, and how they reach it. */
function memberOptions(cfg: UnibusConfig): Pick<StartUnibusOptions, "cluster" | "replicas"> {
  return {
    cluster: {
      name: cfg.clusterName ?? "unibus",
      port: cfg.clusterPort,
      routes: cfg.routes,
      ...(cfg.clusterAdvertise !== undefined ? { advertise: cfg.clusterAdvertise } : {}),
    },
    ...(cfg.replicas !== undefined ? { replicas: cfg.replicas } : {}),
  };
}

/** The one line `up --json` prints when ready; tools and tests parse exactly these keys. */
function readyLine(bus: BusHandle) {
  return {
    event: "ready",
    natsUrls: bus.natsUrls,
    wsUrls: bus.wsUrls,
    controlUrls: bus.controlUrls,
    caFile: bus.caFile,
    dataDir: bus.dataDir,
    store: bus.storeBackend,
  };
}

/** Where to connect and what to trust; a cluster lists its nodes, a bus without an admin says how to add one. */
async function readyText(bus: BusHandle): Promise<string> {
  const lines =
    bus instanceof UnibusCluster
      ? [`unibus is up: a cluster of ${bus.nodes.length} nodes (${bus.name}).`, ...nodeLines(bus)]
      : [
          "unibus is up.",
          `  NATS:          ${bus.natsUrls[0]}`,
          `  websocket:     ${bus.wsUrls[0]}   (browsers)`,
          `  control plane: ${bus.controlUrls[0]}`,
        ];
  lines.push(`  CA file:       ${bus.caFile}   (clients trust this CA)`, `  data dir:      ${bus.dataDir}`);
  if (bus instanceof Unibus) lines.push(...(await firstAdminHint(bus)));
  const failover = bus.natsUrls.length > 1 ? "Clients: pass every NATS URL so they fail over. " : "";
  lines.push("", `${failover}Press Ctrl-C to stop.`);
  return lines.join("\n");
}

function nodeLines(cluster: UnibusCluster): string[] {
  return cluster.nodes.map(
    (n, i) =>
      `  ${n.serverName}: NATS ${cluster.natsUrls[i]}  websocket ${cluster.wsUrls[i]}  control plane ${cluster.controlUrls[i]}`,
  );
}

async function firstAdminHint(bus: Unibus): Promise<string[]> {
  // A cluster member's KV store may still wait for its peers: no hint then, rather than a wrong one.
  const hasAdmin = await bus.store.hasAdmin().catch(() => undefined);
  if (hasAdmin !== false) return [];
  const rel = path.relative(process.cwd(), bus.dataDir) || ".";
  return [
    "",
    "No admin yet. Create your identity and add it as the first admin:",
    "  npx unibus identity new --out me.json",
    `  npx unibus user add --identity me.json --handle you --role admin --data-dir ${rel}${bus.storeBackend === "kv" ? " --store kv" : ""}`,
  ];
}
