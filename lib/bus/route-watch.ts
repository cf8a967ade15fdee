/**
 * Is a cluster member routed to its peers, and if not, why? Read from what nats-server
 * itself knows: `/routez` (the peers it is routed to), `/varz` (the configured route
 * URLs, its own route port), `/jsz` (the size JetStream planned the cluster with) and its
 * recent log lines (why a route failed). Seen on nats-server 2.10 when a peer's route
 * certificate comes from another CA:
 *   "127.0.0.1:41805 - rid:56 - TLS route handshake error: tls: failed to verify certificate:
 *    x509: certificate signed by unknown authority (CN=route SHA-256: …)"   (we dialled it)
 *   "127.0.0.1:59130 - rid:87 - TLS route handshake error: remote error: tls: bad certificate"
 *    (it dialled us, from an ephemeral port)
 * and when nothing listens: "Error trying to connect to route (attempt 1): dial tcp
 * 127.0.0.1:37655: connect: connection refused". A route to itself (the same list on every
 * machine names each node too) shows as "Route connection created" then "Duplicate Route".
 */
import { lookup } from "node:dns/promises";
import { LEVEL } from "../nats/output.ts";

/** Why a route is down, in the words an operator acts on. */
export type RouteErrorKind = "tls" | "refused" | "timeout" | "unreachable" | "dns" | "other";

export interface RouteError {
  kind: RouteErrorKind;
  /** nats-server's own words, without the certificate fingerprint. */
  error: string;
}

/** A configured peer this node is not routed to, and the last error nats-server logged for it. */
export interface MissingRoute extends Partial<RouteError> {
  /** host:port as configured. */
  url: string;
}

export interface RouteReport {
  /** Peers the cluster was planned with (JetStream's cluster size less this node; else the route list less itself). */
  planned: number;
  /** Distinct peers this node is routed to now, by server name. */
  connected: string[];
  /** With the peers it is routed to, this node is a majority of the planned cluster. */
  quorum: boolean;
  /** Configured peers without a live route (empty when every planned peer is routed). */
  missing: MissingRoute[];
  /** Errors of routes peers opened to this node (their ephemeral ports say nothing, the error does). */
  inbound?: RouteError[];
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});

async function getJson(url: string, timeoutMs: number): Promise<Json> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) {
    await res.body?.cancel();
    return {};
  }
  return obj(await res.json());
}

/** What a node's monitoring endpoint says of its cluster: route port, configured routes, live routes, meta group. */
export interface ClusterView {
  name: string;
  /** The node's own cluster (route) port. */
  port: number;
  /** Configured route URLs (host:port), the node's own among them where it is listed. */
  urls: string[];
  routez: Json;
  jsz: Json;
}

/** The node's cluster as its monitoring endpoint shows it; undefined when it is not clustered. */
export async function clusterView(monitorUrl: string, timeoutMs: number): Promise<ClusterView | undefined> {
  const base = monitorUrl.replace(/\/+$/, "");
  const [varz, routez, jsz] = await Promise.all([
    getJson(`${base}/varz`, timeoutMs),
    getJson(`${base}/routez`, timeoutMs),
    getJson(`${base}/jsz`, timeoutMs).catch(() => ({}) as Json),
  ]);
  const cluster = obj(varz.cluster);
  const port = cluster.cluster_port;
  if (typeof port !== "number" || port <= 0) return undefined;
  const urls = Array.isArray(cluster.urls) ? cluster.urls.filter((u): u is string => typeof u === "string") : [];
  const name = typeof varz.server_name === "string" ? varz.server_name : base;
  return { name, port, urls, routez, jsz };
}

/** The kind of a route error, from nats-server's (Go's) wording. */
export function routeErrorKind(text: string): RouteErrorKind {
  if (/x509|certificate|\btls\b|handshake/i.test(text)) return "tls";
  if (/connection refused/i.test(text)) return "refused";
  if (/i\/o timeout|timed out|deadline exceeded/i.test(text)) return "timeout";
  if (/no route to host|network is unreachable/i.test(text)) return "unreachable";
  if (/no such host|server misbehaving/i.test(text)) return "dns";
  return "other";
}

/** What to do about a route error of `kind`. */
export function routeErrorFix(kind: RouteErrorKind | undefined): string {
  switch (kind) {
    case "tls":
      return "the nodes do not trust each other's route certificates: give every node the same CA (tls/ca.pem and ca-key.pem), remove its tls/route*.pem, then restart it (docs/operations.md, cluster maintenance)";
    case "refused":
    case "timeout":
    case "unreachable":
      return "nothing answers on that route port: start that node, or check --route and the firewall";
    case "dns":
      return "the route's host name does not resolve: fix --route or DNS";
    default:
      return "check that node's route port and certificates; `unibus status` and `unibus doctor` on it show its side";
  }
}

const OUTBOUND = /^Error trying to connect to route(?: \(attempt \d+\))?: dial tcp (\S+): (.*)$/;
const PER_ROUTE = /^(\S+:\d+) - rid:\d+ - (.*)$/;

/**
 * The last word nats-server's log has on each route address: an error, or undefined when
 * the last line about it was a route made. Errors of routes dialled in from an ephemeral
 * port (not a configured address) are collected apart, latest first, once per text.
 */
export function routeErrorsInLog(
  lines: readonly string[],
  configured: ReadonlySet<string>,
): { byAddress: Map<string, RouteError | undefined>; inbound: RouteError[] } {
  const byAddress = new Map<string, RouteError | undefined>();
  const inbound = new Map<string, RouteError>();
  for (const line of lines) {
    const msg = line.replace(LEVEL, "");
    const out = OUTBOUND.exec(msg);
    if (out) {
      byAddress.set(out[1]!, { kind: routeErrorKind(out[2]!), error: out[2]! });
      continue;
    }
    const per = PER_ROUTE.exec(msg);
    if (!per) continue;
    const [, address, text] = per as unknown as [string, string, string];
    if (text.startsWith("Route connection created")) {
      byAddress.set(address, undefined);
    } else if (/route handshake error|route.*error/i.test(text)) {
      const error = { kind: routeErrorKind(text), error: shorten(text) };
      if (configured.has(address)) byAddress.set(address, error);
      else {
        inbound.delete(error.error);
        inbound.set(error.error, error);
      }
    }
  }
  return { byAddress, inbound: [...inbound.values()].reverse() };
}

/** Drops what changes on every attempt (the certificate's fingerprint) and the handshake's prefix. */
function shorten(text: string): string {
  return text
    .replace(/\s*\(CN=[^)]*\)/, "")
    .replace(/^TLS route handshake error: /, "TLS: ")
    .trim();
}

function isLocalHost(host: string): boolean {
  return /^(127\.|localhost$|::1$|0\.0\.0\.0$|::$)/.test(host);
}

function splitHostPort(hostPort: string): { host: string; port: number } {
  const at = hostPort.lastIndexOf(":");
  return { host: hostPort.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(hostPort.slice(at + 1)) };
}

/** Every address a configured route may show up as in the log: itself and what its host resolves to. */
async function addressesOf(hostPort: string): Promise<string[]> {
  const { host, port } = splitHostPort(hostPort);
  if (/^[\d.]+$|:/.test(host)) return [hostPort];
  const resolved = await lookup(host, { all: true }).catch(() => []);
  return [hostPort, ...resolved.map((a) => (a.family === 6 ? `[${a.address}]:${port}` : `${a.address}:${port}`))];
}

/**
 * This node's routes as a report; undefined when it is not clustered (no route port) or
 * its monitoring endpoint does not answer. `log` is nats-server's recent output.
 */
export async function routeReport(
  monitorUrl: string,
  log: readonly string[],
  opts: { timeoutMs?: number; self?: readonly string[] } = {},
): Promise<RouteReport | undefined> {
  const view = await clusterView(monitorUrl, opts.timeoutMs ?? 1000);
  if (view === undefined) return undefined;
  const { port, urls, routez, jsz } = view;
  const self = new Set(opts.self ?? []);
  const isSelf = (u: string) => {
    const { host, port: p } = splitHostPort(u);
    return p === port && (isLocalHost(host) || self.has(host));
  };
  const peers = [...new Set(urls.filter((u) => !isSelf(u)))];
  const names = Array.isArray(routez.routes) ? routez.routes.map((r) => obj(r).remote_name) : [];
  const connected = [...new Set(names.filter((n): n is string => typeof n === "string" && n !== ""))].sort();
  // JetStream sizes the cluster from the route list and knows when a route names the node itself.
  const size = obj(jsz.meta_cluster).cluster_size;
  const planned = typeof size === "number" && size > 1 ? size - 1 : peers.length;
  const quorum = connected.length + 1 > (planned + 1) / 2;
  if (connected.length >= planned) return { planned, connected, quorum, missing: [] };
  const aliases = new Map(await Promise.all(peers.map(async (p) => [p, await addressesOf(p)] as const)));
  const { missing, inbound } = missingPeers(aliases, log, planned - connected.length);
  return { planned, connected, quorum, missing, ...(inbound.length ? { inbound } : {}) };
}

/**
 * Which configured peers (each with the addresses it may show up as in the log) are the
 * `count` missing ones, and why, from nats-server's recent `log`.
 */
export function missingPeers(
  aliases: ReadonlyMap<string, readonly string[]>,
  log: readonly string[],
  count: number,
): { missing: MissingRoute[]; inbound: RouteError[] } {
  const { byAddress, inbound } = routeErrorsInLog(log, new Set([...aliases.values()].flat()));
  const failing: MissingRoute[] = [];
  const unknown: MissingRoute[] = [];
  for (const [url, addresses] of aliases) {
    const seen = addresses.filter((a) => byAddress.has(a)).map((a) => byAddress.get(a));
    // The last line about a peer was a route made: it is one of the connected ones.
    if (seen.length > 0 && seen.every((e) => e === undefined)) continue;
    const error = seen.find((e) => e !== undefined);
    if (error) failing.push({ url, ...error });
    else unknown.push({ url });
  }
  // The log is a window: a peer routed long ago has no line left in it. When the failing
  // routes account for every missing peer, the silent ones are the connected ones.
  return { missing: failing.length >= count ? failing : [...failing, ...unknown], inbound };
}

/** One line: how many peers, which are missing and why; "" when every planned peer is routed. */
export function describeRoutes(r: RouteReport): string {
  if (r.connected.length >= r.planned) return "";
  const head = `routed to ${r.connected.length} of ${r.planned} peer(s)${r.connected.length ? ` (${r.connected.join(", ")})` : ""}`;
  const why = r.missing.map((m) => `${m.url}: ${m.error ?? "no route yet"}`);
  if (r.inbound?.length) why.push(`peers dialling in: ${r.inbound.map((e) => e.error).join("; ")}`);
  return why.length ? `${head}; ${why.join("; ")}` : head;
}

/** The kind that explains a report best: TLS first (it never heals by waiting), then the first one named. */
export function mainRouteError(r: RouteReport): RouteErrorKind | undefined {
  const kinds = [...r.missing.map((m) => m.kind), ...(r.inbound ?? []).map((e) => e.kind)].filter(
    (k): k is RouteErrorKind => k !== undefined,
  );
  return kinds.includes("tls") ? "tls" : kinds[0];
}
