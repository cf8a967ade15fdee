/**
 * `unibus status`: what a running bus looks like from its data dir — every node's
 * monitoring endpoint (health, version, ports, connections, JetStream meta group, KV
 * replication) plus the control plane and the store's counts. Read-only throughout.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { Agent, request } from "undici";
import { busLayout } from "../bus/layout.ts";
import { describeRoutes, mainRouteError, type RouteReport, routeErrorFix } from "../bus/route-watch.ts";
import {
  asArray,
  asNumber,
  asObject,
  asString,
  describeFetchError,
  type Json,
  MONITOR_TIMEOUT_MS,
  type NodeStatus,
  nodeStatus,
  type ReplicaStatus,
} from "../nats/index.ts";
import { openStore, type StoreBackend } from "../store/index.ts";
import { countsOf, type KvStatus, kvStatus, type StoreCounts, type StreamReplication } from "./kv-status.ts";
import {
  MISSING_STREAMS_FIX,
  missingStreamsText,
  type RoomStorageStatus,
  roomStorageStatus,
  roomStorageText,
  roomsWithoutStream,
} from "./room-streams.ts";
import { type Readiness, readRunInfo } from "./run-file.ts";

export type { KvBucketStatus, NodeStatus, ReplicaStatus } from "../nats/index.ts";
export type { StoreCounts, StreamReplication } from "./kv-status.ts";

export interface ControlStatus {
  url: string;
  healthy: boolean;
  health: string;
  /** The node behind this control plane, as its /healthz names it. */
  node?: string;
  /** The parts its /healthz reports down (nats, callout, kicker, streams, store, replay). */
  down?: string[];
  /** Supervised restarts of that node's nats-server since the bus started. */
  restarts?: number;
  /** How that node's nats-server last ended on its own. */
  lastExit?: { at: string; reason: string };
  /** A cluster member's routes as that node sees them (peers planned, routed, missing and why). */
  routes?: RouteReport;
}

export type BusState = "healthy" | "degraded" | "not-running";

export interface BusStatus {
  state: BusState;
  dataDir: string;
  pid?: number;
  /** The unibus release the running bus reported in its run file (each node's nats-server version is under `nodes`). */
  unibusVersion?: string;
  natsUrls: string[];
  nodes: NodeStatus[];
  control: ControlStatus[];
  /** The control-plane store backend; KV's buckets show under each node's JetStream. */
  store?: StoreBackend;
  /** The store's counts (KV: read from the replicated buckets through any node). */
  counts?: StoreCounts;
  /** KV: every stream's replication as its leader reports it (the KV buckets, blobs and rooms' history). */
  streams?: StreamReplication[];
  /** A cluster member: what `up` last said (ready, or degraded and why). */
  readiness?: Readiness;
  /** Persisted rooms' history against the retention ceiling and the storage budget (absent when JetStream does not answer). */
  roomStorage?: RoomStorageStatus;
  /** Human-readable reasons for "degraded" (or "not-running"). */
  problems: string[];
  /**
   * Problems that follow from a route problem above (no meta leader, replicas not current,
   * the store not answering): listed apart so the cause is not lost among its effects.
   */
  derived?: string[];
}

export interface StatusOptions {
  dataDir: string;
  /** Per request. Default 3 s. */
  timeoutMs?: number;
}

/** Collects the status of the bus whose data dir is `opts.dataDir`. Never throws for an unhealthy bus. */
export async function collectStatus(opts: StatusOptions): Promise<BusStatus> {
  const dataDir = path.resolve(opts.dataDir);
  const timeoutMs = opts.timeoutMs ?? MONITOR_TIMEOUT_MS;
  const run = await readRunInfo(dataDir);
  if (!run) {
    return {
      state: "not-running",
      dataDir,
      natsUrls: [],
      nodes: [],
      control: [],
      problems: [`no bus is running on ${dataDir}`],
    };
  }
  const ca = await fs.readFile(run.caFile, "utf8").catch(() => undefined);
  const [nodes, control, sqliteCounts, kv] = await Promise.all([
    Promise.all(run.monitorUrls.map((u) => nodeStatus(u, timeoutMs))),
    Promise.all(run.controlUrls.map((u) => controlStatus(u, ca, timeoutMs))),
    // A KV bus may have a SQLite file left from before its migration: never count that one.
    run.store === "sqlite" ? storeCounts(dataDir).catch(() => undefined) : undefined,
    run.store === "kv" ? kvStatus(dataDir, run, timeoutMs) : undefined,
  ]);
  const found = problemsOf(nodes, control, kv);
  const missing = await roomsWithoutStream(dataDir, run, timeoutMs).catch(() => undefined);
  if (missing?.length) found.problems.push(`${missingStreamsText(missing)}; ${MISSING_STREAMS_FIX}`);
  if (run.monitorUrls.length === 0) found.problems.push("the run file lists no monitoring endpoint");
  const roomStorage = await roomStorageStatus(run, timeoutMs);
  const counts = sqliteCounts ?? kv?.counts;
  const problems = found.problems;
  return {
    state: problems.length ? "degraded" : "healthy",
    dataDir,
    pid: run.pid,
    ...(run.unibusVersion ? { unibusVersion: run.unibusVersion } : {}),
    natsUrls: run.natsUrls,
    store: run.store,
    ...(run.readiness ? { readiness: run.readiness } : {}),
    nodes,
    control,
    ...(counts ? { counts } : {}),
    ...(kv?.streams ? { streams: kv.streams } : {}),
    ...(roomStorage ? { roomStorage } : {}),
    problems,
    ...(found.derived.length ? { derived: found.derived } : {}),
  };
}

/** 0 healthy, 1 degraded, 3 not running. */
export function statusExitCode(s: BusStatus): number {
  return s.state === "healthy" ? 0 : s.state === "degraded" ? 1 : 3;
}

/**
 * What is wrong, each thing once. A node cut off from its peers makes every replicated
 * thing look broken (no meta leader, replicas not current, the store silent); its route
 * problem is then said in one line, with the fix, and those effects go to `derived`.
 */
function problemsOf(
  nodes: NodeStatus[],
  control: ControlStatus[],
  kv: KvStatus | undefined,
): { problems: string[]; derived: string[] } {
  const problems: string[] = [];
  const effects: string[] = [];
  const routeProblems = control.flatMap((c) => routeProblem(c) ?? []);
  for (const n of nodes) {
    const label = n.name ?? n.monitorUrl;
    if (!n.reachable) problems.push(`node ${label} is unreachable (${n.health})`);
    // nats-server's /healthz is unhealthy while JetStream has no meta leader: an effect when routes are down.
    else if (!n.healthy)
      (/jetstream|meta/i.test(n.health) ? effects : problems).push(`node ${label} is unhealthy (${n.health})`);
    const meta = n.jetstream?.meta;
    if (meta && !meta.leader) effects.push(`node ${label} sees no JetStream meta leader`);
    // Only the meta leader tracks its peers; since nats-server 2.11 the followers list them
    // too, each other as never current — judging from them would cry wolf.
    const leads = meta?.leader !== undefined && meta.leader === n.name;
    for (const p of leads ? meta.peers : []) {
      if (!p.current || p.offline) effects.push(`JetStream peer ${p.name} is not current (seen from ${label})`);
    }
    // Without the API's view (below), each node's monitoring endpoint reports the buckets it leads.
    for (const b of kv?.streams ? [] : n.kv) effects.push(...replicaProblems(b));
  }
  for (const st of kv?.streams ?? []) effects.push(...replicaProblems(st));
  if (kv?.error) effects.push(`the replicated store does not answer from here: ${kv.error}`);
  for (const c of control) {
    // A member whose only down part is its routes: the route line says it all.
    const down = (c.down ?? []).filter((d) => !(routeProblem(c) && d === "routes"));
    if (!c.healthy && (down.length > 0 || !routeProblem(c))) {
      const why = `control plane ${c.url} is unhealthy (${c.health}${down.length ? `; down: ${down.join(", ")}` : ""})`;
      // The store and its replay wait on a majority, and nats-server's own health on a meta
      // leader: effects of a route problem too (a node not answering at all is said above).
      const effect = ["store", "replay", "routes", ...(routeProblem(c) ? ["nats"] : [])];
      (down.every((d) => effect.includes(d)) ? effects : problems).push(why);
    }
  }
  // Several nodes report the same cluster-wide facts; say each once.
  const once = (xs: string[]) => [...new Set(xs)];
  if (routeProblems.length === 0) return { problems: once([...problems, ...effects]), derived: [] };
  return { problems: once([...routeProblems, ...problems]), derived: once(effects) };
}

/** One line for a member that is not routed to every planned peer: how many, why, and the fix. */
function routeProblem(c: ControlStatus): string | undefined {
  const r = c.routes;
  const text = r && describeRoutes(r);
  if (!r || !text) return undefined;
  const cut = r.quorum ? "" : " — cut off from a majority of the cluster";
  return `node ${c.node ?? c.url} is ${text}${cut}; fix: ${routeErrorFix(mainRouteError(r))}`;
}

function replicaProblems(s: {
  stream: string;
  bucket?: string;
  replicas: number;
  leader?: string;
  followers: ReplicaStatus[];
}): string[] {
  const what = s.bucket ? `KV bucket ${s.bucket}` : `stream ${s.stream}`;
  const out = s.followers
    .filter((f) => !f.current || f.offline)
    .map((f) => `${what}: replica ${f.name} is not current${lagText(f.lag)}`);
  if (s.replicas > 1 && !s.leader) out.push(`${what} has no leader`);
  return out;
}

function lagText(lag: number | undefined): string {
  return lag ? ` (lag ${lag})` : "";
}

async function controlStatus(url: string, ca: string | undefined, timeoutMs: number): Promise<ControlStatus> {
  const agent = new Agent({ connect: ca ? { ca } : {} });
  try {
    const res = await request(`${url.replace(/\/+$/, "")}/healthz`, {
      dispatcher: agent,
      signal: AbortSignal.timeout(timeoutMs),
    });
    let body: Json = {};
    try {
      body = asObject(JSON.parse(await res.body.text()));
    } catch {}
    const health = asString(body.status) ?? `HTTP ${res.statusCode}`;
    return { url, healthy: res.statusCode === 200, health, ...lifeOf(body) };
  } catch (err) {
    return { url, healthy: false, health: describeFetchError(err) };
  } finally {
    await agent.close().catch(() => {});
  }
}

/** The node, its down parts, routes, restarts and last exit from a control plane's /healthz body. */
function lifeOf(body: Json): Pick<ControlStatus, "node" | "down" | "restarts" | "lastExit" | "routes"> {
  const nats = asObject(body.nats);
  const exit = asObject(nats.lastExit);
  const down = asArray(body.down).filter((d): d is string => typeof d === "string");
  const at = asString(exit.at);
  const reason = asString(exit.reason);
  return {
    ...(asString(body.node) ? { node: asString(body.node) } : {}),
    ...(down.length ? { down } : {}),
    ...(asNumber(nats.restarts) !== undefined ? { restarts: asNumber(nats.restarts) } : {}),
    ...(at && reason ? { lastExit: { at, reason } } : {}),
    ...(isRouteReport(body.routes) ? { routes: body.routes } : {}),
  };
}

/** Read back from another process: only the shape the text and the problems rely on. */
function isRouteReport(v: unknown): v is RouteReport {
  const r = asObject(v);
  return (
    typeof r.planned === "number" &&
    typeof r.quorum === "boolean" &&
    Array.isArray(r.connected) &&
    r.connected.every((c) => typeof c === "string") &&
    Array.isArray(r.missing) &&
    r.missing.every((m) => typeof asObject(m).url === "string")
  );
}

async function storeCounts(dataDir: string): Promise<StoreCounts | undefined> {
  const file = busLayout(dataDir, "").storeFile;
  try {
    await fs.access(file);
  } catch {
    return undefined;
  }
  const store = await openStore({ backend: "sqlite", file });
  try {
    return await countsOf(store);
  } finally {
    await store.close();
  }
}

/** A node's supervised restarts and last unexpected end, as its control plane reports them. */
function restartLines(c: ControlStatus | undefined): string[] {
  if (c?.restarts === undefined) return [];
  const last = c.lastExit ? ` (last exit: ${c.lastExit.reason} at ${c.lastExit.at})` : "";
  return [`  restarts:    ${c.restarts}${last}`];
}

/** Readable lines, in the spirit of `nats server report`. */
export function formatStatus(s: BusStatus): string {
  if (s.state === "not-running") return `unibus: not running (${s.dataDir})`;
  const lines = [
    `unibus: ${s.state.toUpperCase()}  (pid ${s.pid}, data dir ${s.dataDir})`,
    ...(s.unibusVersion ? [`  version:       unibus ${s.unibusVersion}`] : []),
    ...s.natsUrls.map((u) => `  NATS:          ${u}`),
    ...s.control.map((c) => `  control plane: ${c.url}  ${c.healthy ? "ok" : `UNHEALTHY (${c.health})`}`),
    ...(s.store ? [`  store:         ${s.store === "kv" ? "replicated JetStream KV" : "SQLite"}`] : []),
    ...(s.readiness ? [`  up said:       ${s.readiness.state} at ${s.readiness.since}`] : []),
    "",
  ];
  for (const [i, n] of s.nodes.entries()) {
    const head = `node ${n.name ?? "?"}  ${n.healthy ? "ok" : n.reachable ? "UNHEALTHY" : "UNREACHABLE"}`;
    lines.push(head);
    if (!n.reachable || !n.healthy) lines.push(`  health:      ${n.health}`);
    lines.push(`  monitor:     ${n.monitorUrl}`);
    if (n.version) lines.push(`  version:     nats-server ${n.version}`);
    if (n.ports) {
      const p = n.ports;
      const parts = [
        p.client !== undefined ? `client ${p.client}` : "",
        p.monitoring !== undefined ? `monitor ${p.monitoring}` : "",
        p.cluster !== undefined ? `cluster ${p.cluster}` : "",
      ].filter(Boolean);
      lines.push(`  ports:       ${parts.join(", ")}`);
    }
    if (n.connections !== undefined) lines.push(`  connections: ${n.connections} (the bus' own included)`);
    // An unreachable node has no name: its control plane is the one at the same place in the run file.
    lines.push(...restartLines(s.control.find((c) => c.node !== undefined && c.node === n.name) ?? s.control[i]));
    if (n.jetstream) {
      const js = n.jetstream;
      if (!js.enabled) lines.push("  jetstream:   disabled");
      else if (!js.meta) lines.push(`  jetstream:   standalone, ${js.streams ?? 0} stream(s)`);
      else {
        lines.push(
          `  jetstream:   cluster ${js.meta.cluster ?? "?"}, size ${js.meta.size ?? "?"}, meta leader ${js.meta.leader ?? "NONE"}`,
        );
        for (const p of js.meta.leader === n.name ? js.meta.peers : []) {
          lines.push(`    peer ${p.name}: ${p.current && !p.offline ? "current" : "NOT CURRENT"}${lagText(p.lag)}`);
        }
      }
    }
    for (const line of routeLines(s.control.find((c) => c.node !== undefined && c.node === n.name) ?? s.control[i])) {
      lines.push(line);
    }
    // The API's view below covers every stream; without it, the buckets this node leads.
    for (const kv of s.streams ? [] : n.kv) {
      const followers = kv.followers.map(
        (f) => `${f.name} ${f.current && !f.offline ? "current" : "NOT CURRENT"}${lagText(f.lag)}`,
      );
      lines.push(
        `  kv ${kv.bucket}: R${kv.replicas}${kv.leader ? `, leader ${kv.leader}` : ""}${followers.length ? `, ${followers.join(", ")}` : ""}`,
      );
    }
  }
  if (s.streams) lines.push("", "replication (each stream as its leader reports it):", ...s.streams.map(streamLine));
  if (s.counts) {
    const c = s.counts;
    lines.push(
      "",
      `users:   ${c.users} (${c.activeUsers} active, ${c.admins} admin)`,
      `rooms:   ${c.rooms} (${c.members} members)`,
      `invites: ${c.invites} (${c.openInvites} open)`,
    );
  }
  if (s.roomStorage) lines.push("", ...roomStorageText(s.roomStorage));
  if (s.problems.length) lines.push("", "problems:", ...s.problems.map((p) => `  - ${p}`));
  if (s.derived?.length) {
    lines.push(
      `  (${s.derived.length} more follow from the routes above: no meta leader, replicas behind; --json lists them)`,
    );
  }
  return lines.join("\n");
}

function replicaText(f: ReplicaStatus): string {
  return `${f.name} ${f.current && !f.offline ? "current" : "NOT CURRENT"}${lagText(f.lag)}`;
}

function streamLine(st: StreamReplication): string {
  const what = st.bucket ? `kv ${st.bucket}` : `stream ${st.stream}`;
  const followers = st.followers.map(replicaText).join(", ");
  return `  ${what}: R${st.replicas}${st.leader ? `, leader ${st.leader}` : ", NO LEADER"}${followers ? `, ${followers}` : ""}, ${st.messages} msg(s)`;
}

/** A member's routes: routed peers, and the missing ones with why. */
function routeLines(c: ControlStatus | undefined): string[] {
  const r = c?.routes;
  if (!r) return [];
  const head = `  routes:      ${r.connected.length} of ${r.planned} peer(s)${r.connected.length ? ` (${r.connected.join(", ")})` : ""}${r.quorum ? "" : ", NO MAJORITY"}`;
  return [head, ...r.missing.map((m) => `    missing ${m.url}: ${m.error ?? "no route yet"}`)];
}
