// @ts-check
/**
 * The health panel: the control plane's /healthz and the node report of
 * `GET /v1/status` (its nats-server, JetStream and the KV buckets' replication).
 */
import { byId, el } from "./dom.js";

/**
 * @typedef {{ name: string, current: boolean, lag?: number, offline?: boolean }} Replica
 * @typedef {{ bucket: string, replicas: number, leader?: string, followers: Replica[], messages?: number }} Bucket
 * @typedef {{ enabled: boolean, streams?: number, meta?: { cluster?: string, leader?: string, size?: number, peers: Replica[] } }} JetStream
 * @typedef {{ monitorUrl: string, reachable: boolean, healthy: boolean, health: string, name?: string, version?: string,
 *   connections?: number, jetstream?: JetStream, kv: Bucket[] }} NodeStatus
 * @typedef {{ health: { ok: boolean, parts: Record<string, string>, down?: string[] }, node: NodeStatus }} NodeReport
 */

/** @param {string} label @param {string} value @param {string} [state] "ok" | "bad" */
function fact(label, value, state) {
  return el("div", { class: "fact" }, el("dt", { text: label }), el("dd", state ? { class: state } : {}, value));
}

/** @param {Replica} r */
function replicaText(r) {
  const ok = r.current && !r.offline;
  return `${r.name} ${ok ? "current" : "NOT CURRENT"}${r.lag ? ` (lag ${r.lag})` : ""}`;
}

/** @param {JetStream | undefined} js */
function jetStreamText(js) {
  if (!js) return "unknown";
  if (!js.enabled) return "disabled";
  if (!js.meta) return `standalone, ${js.streams ?? 0} stream(s)`;
  const peers = js.meta.peers.map(replicaText).join(", ");
  return `cluster ${js.meta.cluster ?? "?"} of ${js.meta.size ?? "?"}, meta leader ${js.meta.leader ?? "NONE"}${peers ? `; ${peers}` : ""}`;
}

/** @param {Bucket[]} kv */
function replicationList(kv) {
  if (kv.length === 0) return el("p", { text: "No replicated KV buckets on this node (a single node on SQLite)." });
  return el(
    "ul",
    { id: "replication" },
    ...kv.map((b) =>
      el("li", {
        "data-bucket": b.bucket,
        text: `${b.bucket}: R${b.replicas}${b.leader ? `, leader ${b.leader}` : ""}${b.followers.length ? `, ${b.followers.map(replicaText).join(", ")}` : ""}`,
      }),
    ),
  );
}

/** @param {{ status?: string, parts?: Record<string, string> }} healthz @param {NodeReport} report */
export function renderHealth(healthz, report) {
  const n = report.node;
  const parts = Object.entries(report.health.parts)
    .map(([name, state]) => `${name} ${state}`)
    .join(", ");
  byId("health-body").replaceChildren(
    el(
      "dl",
      { id: "node", "data-node": n.name ?? "", "data-healthy": String(n.healthy && report.health.ok) },
      fact("Control plane", healthz.status ?? "unknown", healthz.status === "ok" ? "ok" : "bad"),
      fact("Parts", parts, report.health.ok ? "ok" : "bad"),
      fact("Node", n.name ?? n.monitorUrl),
      fact(
        "nats-server",
        n.reachable ? `${n.version ?? "?"}, ${n.health}` : `unreachable: ${n.health}`,
        n.healthy ? "ok" : "bad",
      ),
      fact("Connections", n.connections === undefined ? "?" : `${n.connections} (the bus' own included)`),
      fact("JetStream", jetStreamText(n.jetstream)),
    ),
    el("h3", { text: "Replication" }),
    replicationList(n.kv),
  );
}
