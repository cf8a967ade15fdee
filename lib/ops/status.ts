/**
 * `unibus status`: what a running bus looks like from its data dir — every node's
 * monitoring endpoint (health, version, ports, connections, JetStream meta group, KV
 * replication) plus the control plane and the store's counts. Read-only throughout.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { Agent, request } from "undici";
import { busLayout } from "../bus/layout.ts";
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
} from "../nats/index.ts";
import { openStore, type StoreBackend } from "../store/index.ts";
import {
  MISSING_STREAMS_FIX,
  missingStreamsText,
  type RoomStorageStatus,
  roomStorageStatus,
  roomStorageText,
  roomsWithoutStream,
} from "./room-streams.ts";
import { readRunInfo } from "./run-file.ts";

export type { KvBucketStatus, NodeStatus, ReplicaStatus } from "../nats/index.ts";

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
}

export interface StoreCounts {
  users: number;
  activeUsers: number;
  admins: number;
  rooms: number;
  invites: number;
  openInvites: number;
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
  /** SQLite only (KV: `unibus user list --store kv`). */
  counts?: StoreCounts;
  /** Persisted rooms' history against the retention ceiling and the storage budget (absent when JetStream does not answer). */
  roomStorage?: RoomStorageStatus;
  /** Human-readable reasons for "degraded" (or "not-running"). */
  problems: string[];
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
  const [nodes, control, counts] = await Promise.all([
    Promise.all(run.monitorUrls.map((u) => nodeStatus(u, timeoutMs))),
    Promise.all(run.controlUrls.map((u) => controlStatus(u, ca, timeoutMs))),
    // A KV bus may have a SQLite file left from before its migration: never count that one.
    run.store === "sqlite" ? storeCounts(dataDir).catch(() => undefined) : undefined,
  ]);
  const problems = problemsOf(nodes, control);
  const missing = await roomsWithoutStream(dataDir, run, timeoutMs).catch(() => undefined);
  if (missing?.length) problems.push(`${missingStreamsText(missing)}; ${MISSING_STREAMS_FIX}`);
  if (run.monitorUrls.length === 0) problems.push("the run file lists no monitoring endpoint");
  const roomStorage = await roomStorageStatus(run, timeoutMs);
  return {
    state: problems.length ? "degraded" : "healthy",
    dataDir,
    pid: run.pid,
    ...(run.unibusVersion ? { unibusVersion: run.unibusVersion } : {}),
    natsUrls: run.natsUrls,
    store: run.store,
    nodes,
    control,
    ...(counts ? { counts } : {}),
    ...(roomStorage ? { roomStorage } : {}),
    problems,
  };
}

/** 0 healthy, 1 degraded, 3 not running. */
export function statusExitCode(s: BusStatus): number {
  return s.state === "healthy" ? 0 : s.state === "degraded" ? 1 : 3;
}

function problemsOf(nodes: NodeStatus[], control: ControlStatus[]): string[] {
  const problems: string[] = [];
  for (const n of nodes) {
    const label = n.name ?? n.monitorUrl;
    if (!n.reachable) problems.push(`node ${label} is unreachable (${n.health})`);
    else if (!n.healthy) problems.push(`node ${label} is unhealthy (${n.health})`);
    const meta = n.jetstream?.meta;
    if (meta && !meta.leader) problems.push(`node ${label} sees no JetStream meta leader`);
    // Only the meta leader tracks its peers; since nats-server 2.11 the followers list them
    // too, each other as never current — judging from them would cry wolf.
    const leads = meta?.leader !== undefined && meta.leader === n.name;
    for (const p of leads ? meta.peers : []) {
      if (!p.current || p.offline) problems.push(`JetStream peer ${p.name} is not current (seen from ${label})`);
    }
    for (const kv of n.kv) {
      for (const f of kv.followers) {
        if (!f.current || f.offline) {
          problems.push(`KV bucket ${kv.bucket}: replica ${f.name} is not current${lagText(f.lag)}`);
        }
      }
      if (kv.replicas > 1 && !kv.leader) problems.push(`KV bucket ${kv.bucket} has no leader`);
    }
  }
  for (const c of control) {
    const down = c.down ? `; down: ${c.down.join(", ")}` : "";
    if (!c.healthy) problems.push(`control plane ${c.url} is unhealthy (${c.health}${down})`);
  }
  // Several nodes report the same cluster-wide facts; say each once.
  return [...new Set(problems)];
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

/** The node, its down parts, restarts and last exit from a control plane's /healthz body. */
function lifeOf(body: Json): Pick<ControlStatus, "node" | "down" | "restarts" | "lastExit"> {
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
  };
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
    const snap = await store.snapshot();
    const now = Date.now();
    return {
      users: snap.users.length,
      activeUsers: snap.users.filter((u) => u.status === "active").length,
      admins: snap.users.filter((u) => u.role === "admin" && u.status === "active").length,
      rooms: snap.rooms.length,
      invites: snap.invites.length,
      openInvites: snap.invites.filter((i) => i.status === "open" && i.expiresAt > now).length,
    };
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
    for (const kv of n.kv) {
      const followers = kv.followers.map(
        (f) => `${f.name} ${f.current && !f.offline ? "current" : "NOT CURRENT"}${lagText(f.lag)}`,
      );
      lines.push(
        `  kv ${kv.bucket}: R${kv.replicas}${kv.leader ? `, leader ${kv.leader}` : ""}${followers.length ? `, ${followers.join(", ")}` : ""}`,
      );
    }
  }
  if (s.counts) {
    const c = s.counts;
    lines.push(
      "",
      `users:   ${c.users} (${c.activeUsers} active, ${c.admins} admin)`,
      `rooms:   ${c.rooms}`,
      `invites: ${c.invites} (${c.openInvites} open)`,
    );
  }
  if (s.roomStorage) lines.push("", ...roomStorageText(s.roomStorage));
  if (s.problems.length) lines.push("", "problems:", ...s.problems.map((p) => `  - ${p}`));
  return lines.join("\n");
}
