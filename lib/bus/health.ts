/**
 * What a node's health is made of, each part observed rather than assumed: nats-server
 * (its process runs and its monitoring endpoint answers — a stopped (SIGSTOP) server
 * keeps its sockets open and fools anything that only looks at them), each service
 * connection (connected, as nats.js last reported it) and the store (open).
 */
import type { NatsConnection } from "@nats-io/transport-node";

export type PartName = "nats" | "callout" | "kicker" | "streams" | "store" | "replay";
export type PartState = "up" | "down";

export interface HealthReport {
  ok: boolean;
  /** Every part's state. */
  parts: Partial<Record<PartName, PartState>>;
  /** The parts that are down, named for the operator (absent when none). */
  down?: PartName[];
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
