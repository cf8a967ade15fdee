/**
 * What a node's health is made of, each part observed rather than assumed: nats-server
 * (its process runs and its monitoring endpoint answers — a stopped (SIGSTOP) server
 * keeps its sockets open and fools anything that only looks at them), each service
 * connection (connected, as nats.js last reported it), the store (open) and the data
 * dir's disk (room left, no failed write unhealed: storage-watch.ts) and, for a cluster
 * member, its routes: down while the node with the peers it is routed to is no majority
 * of the planned cluster (route-watch.ts).
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { NatsExitRecord } from "../nats/index.ts";
import type { RouteReport } from "./route-watch.ts";

export type PartName = "nats" | "callout" | "kicker" | "streams" | "store" | "replay" | "storage" | "routes";
export type PartState = "up" | "down";

/** How this node's nats-server last ended on its own, for `unibus status`. */
export interface ExitSummary {
  /** ISO time of the end. */
  at: string;
  /** "killed by SIGKILL", "exited with code 1", or why a restart did not get ready. */
  reason: string;
}

/** What supervision has seen of this node's nats-server. */
export interface NatsLife {
  /** Supervised restarts since the bus started. */
  restarts: number;
  lastExit?: ExitSummary;
}

export interface HealthReport {
  ok: boolean;
  /** Every part's state. */
  parts: Partial<Record<PartName, PartState>>;
  /** The parts that are down, named for the operator (absent when none). */
  down?: PartName[];
  /** A cluster member's routes: peers planned, routed and missing (and why). */
  routes?: RouteReport;
}

/** Liveness in the Kubernetes sense: the bus runs or heals itself; false once it failed or stopped. */
export function isLive(state: string): boolean {
  return state === "running" || state === "starting";
}

/** One readable reason for an unexpected end. */
export function exitReason(exit: NatsExitRecord): ExitSummary {
  const reason = exit.startError
    ? `a restart did not get ready: ${exit.startError.message.split("\n")[0]}`
    : exit.signal
      ? `killed by ${exit.signal}`
      : `exited with code ${exit.code}`;
  return { at: exit.at.toISOString(), reason };
}

/** How long the monitoring endpoint may take before nats-server counts as down. */
export const NATS_PROBE_TIMEOUT_MS = 1000;

/** Follows a connection's status events; `up` is false from a disconnect until the next reconnect, and after close. */
export class LinkWatch {
  #up = true;
  #closed = false;

  constructor(nc: NatsConnection) {
    void this.#follow(nc);
    nc.closed().then(
      () => this.#markClosed(),
      () => this.#markClosed(),
    );
  }

  get up(): boolean {
    return this.#up && !this.#closed;
  }

  #markClosed(): void {
    this.#closed = true;
  }

  async #follow(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        if (s.type === "disconnect" || s.type === "staleConnection") this.#up = false;
        else if (s.type === "reconnect") this.#up = true;
      }
    } catch {
      // the iterator ends with the connection; `closed()` marks it down
    }
  }
}

/** True when nats-server's own health endpoint answers 200 in time. */
export async function natsAnswers(monitorUrl: string): Promise<boolean> {
  if (!monitorUrl) return true;
  try {
    const res = await fetch(`${monitorUrl}/healthz?js-server-only=true`, {
      signal: AbortSignal.timeout(NATS_PROBE_TIMEOUT_MS),
    });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

export function reportOf(parts: Partial<Record<PartName, boolean>>, running: boolean): HealthReport {
  const states = Object.fromEntries(Object.entries(parts).map(([name, up]) => [name, up ? "up" : "down"])) as Partial<
    Record<PartName, PartState>
  >;
  const down = (Object.keys(states) as PartName[]).filter((name) => states[name] === "down");
  return { ok: running && down.length === 0, parts: states, ...(down.length ? { down } : {}) };
}
