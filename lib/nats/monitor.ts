/**
 * What nats-server's monitoring endpoint says about a node: health, identity, ports,
 * connections, the JetStream meta group and the replication of the bus' KV buckets.
 * Read by `unibus status` (lib/ops) and by the control plane's admin status route.
 */

/** Per request to the monitoring endpoint. */
export const MONITOR_TIMEOUT_MS = 3000;

export interface ReplicaStatus {
  name: string;
  current: boolean;
  /** Operations behind the leader, when the server reports it. */
  lag?: number;
  /** Nanoseconds since the peer was last heard from. */
  active?: number;
  offline?: boolean;
}

export interface KvBucketStatus {
  bucket: string;
  stream: string;
  replicas: number;
  leader?: string;
  /** The followers as the stream's leader sees them; empty on a single node. Each bucket is reported once, by the node that leads it. */
  followers: ReplicaStatus[];
  messages?: number;
}

export interface NodeStatus {
  monitorUrl: string;
  reachable: boolean;
  healthy: boolean;
  /** /healthz's status string, or why it could not be read. */
  health: string;
  name?: string;
  serverId?: string;
  version?: string;
  ports?: { client?: number; monitoring?: number; cluster?: number };
  /** Every connection on the node (/connz total), the bus' own service connections included. */
  connections?: number;
  jetstream?: {
    enabled: boolean;
    /** Present when JetStream runs clustered; `peers` only on the meta leader (the others do not track them). */
    meta?: { cluster?: string; leader?: string; size?: number; peers: ReplicaStatus[] };
    streams?: number;
  };
  kv: KvBucketStatus[];
}

async function getJson(url: string, timeoutMs: number): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

/** JSON from a monitoring endpoint, read defensively: a missing or mistyped field is undefined, never a throw. */
export type Json = Record<string, unknown>;
export const asObject = (v: unknown): Json => (v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});
export const asNumber = (v: unknown): number | undefined =>
  typeof v === "number" && Number.isFinite(v) ? v : undefined;
export const asString = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
export const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

function replicaOf(v: unknown): ReplicaStatus {
  const r = asObject(v);
  const lag = asNumber(r.lag);
  const active = asNumber(r.active);
  return {
    name: asString(r.name) ?? "?",
    current: r.current === true,
    ...(lag !== undefined ? { lag } : {}),
    ...(active !== undefined ? { active } : {}),
    ...(r.offline === true ? { offline: true } : {}),
  };
}

/** One node as its monitoring endpoint reports it; an unreachable node is a result, never an error. */
export async function nodeStatus(monitorUrl: string, timeoutMs = MONITOR_TIMEOUT_MS): Promise<NodeStatus> {
  const base = monitorUrl.replace(/\/+$/, "");
  const node: NodeStatus = { monitorUrl, reachable: false, healthy: false, health: "unknown", kv: [] };
  try {
    const h = await getJson(`${base}/healthz`, timeoutMs);
    const body = asObject(h.body);
    node.reachable = true;
    node.healthy = h.status === 200;
    node.health = [asString(body.status) ?? `HTTP ${h.status}`, asString(body.error)].filter(Boolean).join(": ");
  } catch (err) {
    node.health = describeFetchError(err);
    return node;
  }
  const [varz, connz, jsz] = await Promise.all([
    getJson(`${base}/varz`, timeoutMs).catch(() => undefined),
    getJson(`${base}/connz?limit=1`, timeoutMs).catch(() => undefined),
    getJson(`${base}/jsz?accounts=true&streams=true&config=true`, timeoutMs).catch(() => undefined),
  ]);
  if (varz) Object.assign(node, identityOf(asObject(varz.body), base));
  if (connz) node.connections = asNumber(asObject(connz.body).total);
  if (jsz && jsz.status === 200) {
    const j = asObject(jsz.body);
    node.jetstream = jetStreamOf(j);
    node.kv = kvBucketsOf(j, node.name);
  }
  return node;
}

/** Name, id, version and ports from /varz. */
function identityOf(v: Json, base: string): Pick<NodeStatus, "name" | "serverId" | "version" | "ports"> {
  const cluster = asNumber(asObject(v.cluster).cluster_port) ?? asNumber(asObject(v.cluster).port);
  // /varz echoes the configured http_port (-1 when random); the URL we reached is the truth.
  const monitoring = Number(new URL(base).port) || asNumber(v.http_port);
  return {
    name: asString(v.server_name),
    serverId: asString(v.server_id),
    version: asString(v.version),
    ports: {
      ...(asNumber(v.port) !== undefined ? { client: asNumber(v.port) } : {}),
      ...(monitoring !== undefined ? { monitoring } : {}),
      ...(cluster ? { cluster } : {}),
    },
  };
}

/** JetStream from /jsz: on or off, its stream count and, when clustered, the meta group. */
function jetStreamOf(j: Json): NonNullable<NodeStatus["jetstream"]> {
  const meta = asObject(j.meta_cluster);
  const clustered = Object.keys(meta).length > 0 && (asNumber(meta.cluster_size) ?? 0) > 1;
  return {
    enabled: j.disabled !== true,
    ...(asNumber(j.streams) !== undefined ? { streams: asNumber(j.streams) } : {}),
    ...(clustered
      ? {
          meta: {
            ...(asString(meta.name) ? { cluster: asString(meta.name) } : {}),
            ...(asString(meta.leader) ? { leader: asString(meta.leader) } : {}),
            ...(asNumber(meta.cluster_size) !== undefined ? { size: asNumber(meta.cluster_size) } : {}),
            peers: asArray(meta.replicas).map(replicaOf),
          },
        }
      : {}),
  };
}

/** The bus' KV buckets this node leads (or all of them, unclustered), from /jsz's stream details. */
function kvBucketsOf(j: Json, nodeName: string | undefined): KvBucketStatus[] {
  const buckets: KvBucketStatus[] = [];
  for (const account of asArray(j.account_details)) {
    for (const s of asArray(asObject(account).stream_detail)) {
      const stream = asObject(s);
      const name = asString(stream.name);
      if (!name?.startsWith("KV_unibus_")) continue;
      const cluster = asObject(stream.cluster);
      // Only the stream's leader knows its followers' lag; the others' views list peers
      // they do not track as not current. Each bucket is reported by its leader.
      const leader = asString(cluster.leader);
      if (leader && nodeName && leader !== nodeName) continue;
      const messages = asNumber(asObject(stream.state).messages);
      buckets.push({
        bucket: name.slice("KV_".length),
        stream: name,
        replicas: asNumber(asObject(stream.config).num_replicas) ?? 1,
        ...(leader ? { leader } : {}),
        followers: asArray(cluster.replicas).map(replicaOf),
        ...(messages !== undefined ? { messages } : {}),
      });
    }
  }
  return buckets;
}

export function describeFetchError(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === "TimeoutError" || e?.name === "AbortError") return "timed out";
  const cause = e?.cause?.code ?? e?.cause?.message;
  return cause ? String(cause) : (e?.message ?? String(err));
}
