/**
 * `unibus status`: what a running bus looks like from its data dir — every node's
 * monitoring endpoint (health, version, ports, connections, JetStream meta group, KV
 * replication) plus the control plane and the store's counts. Read-only throughout.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { Agent, request } from "undici";
import { busLayout } from "../bus/layout.ts";
import { describeFetchError, MONITOR_TIMEOUT_MS, type NodeStatus, nodeStatus } from "../nats/index.ts";
import { openStore, type StoreBackend } from "../store/index.ts";
import { MISSING_STREAMS_FIX, missingStreamsText, roomsWithoutStream } from "./room-streams.ts";
import { readRunInfo } from "./run-file.ts";

export type { KvBucketStatus, NodeStatus, ReplicaStatus } from "../nats/index.ts";

export interface ControlStatus {
  url: string;
  healthy: boolean;
  health: string;
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
  for (const c of control) if (!c.healthy) problems.push(`control plane ${c.url} is unhealthy (${c.health})`);
  // Several nodes report the same cluster-wide facts; say each once.
  return [...new Set(problems)];
}

function lagText(lag: number | undefined): string {
  return lag ? ` (lag ${lag})` : "";
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});
const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);

async function controlStatus(url: string, ca: string | undefined, timeoutMs: number): Promise<ControlStatus> {
  const agent = new Agent({ connect: ca ? { ca } : {} });
  try {
    const res = await request(`${url.replace(/\/+$/, "")}/healthz`, {
      dispatcher: agent,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.body.text();
    let status: string | undefined;
    try {
      status = str(obj(JSON.parse(text)).status);
    } catch {}
    return { url, healthy: res.statusCode === 200, health: status ?? `HTTP ${res.statusCode}` };
  } catch (err) {
    return { url, healthy: false, health: describeFetchError(err) };
  } finally {
    await agent.close().catch(() => {});
  }
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
  for (const n of s.nodes) {
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
  if (s.problems.length) lines.push("", "problems:", ...s.problems.map((p) => `  - ${p}`));
  return lines.join("\n");
}
