/**
 * Where each node of a cluster on one machine listens and how the routes reach it:
 * option checks, the per-node port plan (base + i, or random), route URLs, and the
 * learning of free route ports before any node starts.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { InvalidArgumentError, NatsStartError } from "../errors.ts";
import type { Logger } from "../log/index.ts";
import { NatsServerProcess } from "../nats/index.ts";
import type { StoreBackend } from "../store/index.ts";
import { urlHost } from "../tls/index.ts";
import type { OperatorOptions, StartUnibusOptions } from "./unibus.ts";

export interface StartClusterOptions {
  /** How many nodes; 2-9, default 3. */
  nodes?: number;
  /** Root shared by the nodes (CA, service keys, store; per-node nats and JetStream dirs). Default: a temp dir removed on stop(). */
  dataDir?: string;
  /**
   * Control-plane store: "kv" (default: replicated JetStream KV buckets, survives losing a
   * minority of nodes) or "sqlite" (one file shared by the nodes; this machine only).
   */
  store?: StoreBackend;
  /** JetStream replicas of what the cluster keeps (room streams and the KV buckets). Default min(3, nodes). */
  replicas?: number;
  /** Cluster name shared by the nodes; default "unibus". */
  name?: string;
  /** Bind address of every listener; default 127.0.0.1. */
  host?: string;
  /** Extra host names / addresses the certificates must cover. */
  hostnames?: string[];
  /**
   * First port of each kind; node i listens on base + i. Unset: random ports (tests).
   * With `cluster` set the routes are known up front and every node starts at once.
   */
  ports?: Partial<NodePorts>;
  /** Path of nats-server; default: resolved once for all nodes. */
  natsServer?: string;
  logger?: Logger;
  /** How long to wait for the meta group to form; default 20000 ms. */
  readyTimeoutMs?: number;
  /** Passed to every node as is. */
  node?: OperatorOptions & Pick<StartUnibusOptions, "kv" | "corsOrigins">;
}

export interface NodePorts {
  nats: number;
  control: number;
  monitoring: number;
  cluster: number;
  /** The websocket listener for browsers. */
  websocket: number;
}

/** One node's name and ports; a port learned at start replaces a random one, so a restart comes back there. */
export interface NodeSpec {
  name: string;
  ports: NodePorts;
  /** The nats-server this node was last restarted on, when not the cluster's (an upgrade under way). */
  natsServer?: string;
}

/** What the options come to, checked. */
export interface ClusterPlan {
  size: number;
  replicas: number;
  store: StoreBackend;
  name: string;
  host: string;
  readyTimeoutMs: number;
  nodes: NodeSpec[];
}

export const MAX_NODES = 9;

/** The value meaning "pick a free port" for each kind of listener. */
const RANDOM_PORT: NodePorts = { nats: -1, control: 0, monitoring: -1, cluster: -1, websocket: -1 };

/** Checks the options and lays out every node; throws InvalidArgumentError naming the option. */
export function planCluster(opts: StartClusterOptions): ClusterPlan {
  const size = checkSize(opts.nodes);
  const store = opts.store ?? "kv";
  if (store !== "sqlite" && store !== "kv")
    throw new InvalidArgumentError("store", `store: "sqlite" or "kv"; got ${JSON.stringify(store)}`);
  const replicas = opts.replicas ?? Math.min(3, size);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > Math.min(5, size)) {
    throw new InvalidArgumentError(
      "replicas",
      `replicas: JetStream replicates 1-5 ways and at most once per node (${size} nodes); got ${JSON.stringify(opts.replicas)}`,
    );
  }
  checkBasePorts(opts.ports ?? {}, size);
  return {
    size,
    replicas,
    store,
    name: opts.name ?? "unibus",
    host: opts.host ?? "127.0.0.1",
    readyTimeoutMs: opts.readyTimeoutMs ?? 20_000,
    nodes: Array.from({ length: size }, (_, i) => ({
      name: `unibus-${i + 1}`,
      ports: portsOfNode(opts.ports ?? {}, i),
    })),
  };
}

function checkSize(nodes: number | undefined): number {
  const size = nodes ?? 3;
  if (!Number.isInteger(size) || size < 2 || size > MAX_NODES) {
    throw new InvalidArgumentError(
      "nodes",
      `nodes: a cluster needs 2-${MAX_NODES} nodes (3 or 5 survive losing 1 or 2); got ${JSON.stringify(nodes)}. For one node use startUnibus()`,
    );
  }
  return size;
}

function checkBasePorts(base: Partial<NodePorts>, size: number): void {
  for (const kind of Object.keys(base) as (keyof NodePorts)[]) {
    const first = base[kind];
    const random = RANDOM_PORT[kind];
    if (first === undefined || first === random) continue;
    if (!Number.isInteger(first) || first < 1 || first + size - 1 > 65535) {
      throw new InvalidArgumentError(
        `ports.${kind}`,
        `ports.${kind}: a first port such that every node's (port + i) is 1-65535, or ${random} for random; got ${JSON.stringify(first)}`,
      );
    }
  }
}

/** Node i listens on each base port + i; a kind without a base stays random. */
function portsOfNode(base: Partial<NodePorts>, i: number): NodePorts {
  const port = (kind: keyof NodePorts) => {
    const first = base[kind];
    return first === undefined || first === RANDOM_PORT[kind] ? RANDOM_PORT[kind] : first + i;
  };
  return {
    nats: port("nats"),
    control: port("control"),
    monitoring: port("monitoring"),
    cluster: port("cluster"),
    websocket: port("websocket"),
  };
}

/**
 * Every node's route URL, the caller's own included: the server ignores its own route,
 * but JetStream sizes its first meta group from the number of routes. Without the self
 * route, three nodes expect two peers, and two that meet first can form a meta group of
 * two that the third only follows (seen: cluster_size 2 for 15 s and more).
 */
export function routeUrls(plan: ClusterPlan): string[] {
  return plan.nodes
    .filter((s) => s.ports.cluster > 0)
    .map((s) => `nats-route://${urlHost(plan.host)}:${s.ports.cluster}`);
}

export function hasRandomRoutePorts(plan: ClusterPlan): boolean {
  return plan.nodes.some((s) => s.ports.cluster === -1);
}

/** True for the start failure that a fresh set of learned route ports can cure. */
export function isRoutePortTaken(err: unknown): boolean {
  return err instanceof NatsStartError && err.reason === "port_in_use";
}

/**
 * Fills in each random route port with one the kernel just gave a bare, route-only
 * nats-server on port -1 (no JetStream, ~20 ms), stopped at once: a JetStream cluster
 * node refuses to start without configured routes, so its random route port cannot be
 * learned from the real node. Another process could take the port in between; the
 * caller retries on `port_in_use` (isRoutePortTaken) after `forgetRoutePorts`.
 */
export async function learnRoutePorts(plan: ClusterPlan, binary: string, scratchDir: string): Promise<void> {
  const todo = plan.nodes.filter((s) => s.ports.cluster === -1);
  const ports = await learnFreeRoutePorts({ binary, count: todo.length, host: plan.host, dir: scratchDir });
  todo.forEach((s, i) => {
    s.ports.cluster = ports[i]!;
  });
}

export function forgetRoutePorts(plan: ClusterPlan): void {
  for (const s of plan.nodes) s.ports.cluster = -1;
}

/** `count` route ports free just now on `host` (see learnRoutePorts); `dir` is scratch space, cleaned up. */
export async function learnFreeRoutePorts(probe: {
  binary: string;
  count: number;
  host: string;
  dir: string;
}): Promise<number[]> {
  return Promise.all(
    Array.from({ length: probe.count }, (_, i) => probeRoutePort(probe.binary, probe.host, probe.dir, i)),
  );
}

async function probeRoutePort(binary: string, host: string, scratchDir: string, i: number): Promise<number> {
  const workDir = path.join(scratchDir, `route-port-${process.pid}-${i}`);
  const probe = new NatsServerProcess({
    binary,
    workDir,
    config: {
      serverName: `route-port-${i}`,
      host: "127.0.0.1",
      port: -1,
      cluster: { name: "unibus-port-probe", host, port: -1, routes: [] },
    },
  });
  try {
    const ports = await probe.start();
    if (!ports.cluster) {
      throw new NatsStartError("bad_config", "nats-server wrote no cluster port to its ports file", probe.recentLog());
    }
    return ports.cluster;
  } finally {
    await probe.stop();
    await fs.rm(workDir, { recursive: true, force: true });
  }
}
