/**
 * When a cluster is ready: JetStream's meta group has one leader that every live node
 * agrees on, and that leader sees every other live node as a current peer. Read from
 * each node's monitoring endpoint, `GET /jsz`, whose `meta_cluster` (nats-server 2.10)
 * is `{ name, leader, peer, cluster_size, pending, replicas?: [{ name, current,
 * offline?, active, lag, peer }] }` — `replicas` only on the leader, listing the others.
 */
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { ServiceKeys } from "../auth/index.ts";
import { nkeySigner } from "../auth/index.ts";
import { UnibusError } from "../errors.ts";

export interface MetaPeer {
  name: string;
  current: boolean;
  offline: boolean;
}

export interface MetaStatus {
  /** The node that answered (/jsz does not name it). */
  server: string;
  /** Name of the meta leader, "" while there is none. */
  leader: string;
  clusterSize: number;
  /** Only on the leader: the other peers as it sees them. */
  replicas?: MetaPeer[];
}

/** The cluster did not form within the deadline; `status` is the last view of each node. */
export class ClusterNotReadyError extends UnibusError {
  readonly status: (MetaStatus | string)[];
  constructor(message: string, status: (MetaStatus | string)[]) {
    super("CLUSTER_NOT_READY", message);
    this.name = "ClusterNotReadyError";
    this.status = status;
  }
}

/** A node's monitoring endpoint answered with an error status. */
export class MonitoringError extends UnibusError {
  constructor(message: string) {
    super("MONITORING", message);
  }
}

export async function metaStatus(server: string, monitorUrl: string, timeoutMs = 1000): Promise<MetaStatus> {
  const res = await fetch(`${monitorUrl}/jsz`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new MonitoringError(`GET ${monitorUrl}/jsz answered ${res.status}`);
  const jsz = (await res.json()) as {
    meta_cluster?: {
      leader?: string;
      cluster_size?: number;
      replicas?: { name?: string; current?: boolean; offline?: boolean }[];
    };
  };
  const meta = jsz.meta_cluster;
  const status: MetaStatus = {
    server,
    leader: meta?.leader ?? "",
    clusterSize: meta?.cluster_size ?? 0,
  };
  if (meta?.replicas) {
    status.replicas = meta.replicas.map((r) => ({
      name: r.name ?? "",
      current: r.current === true,
      offline: r.offline === true,
    }));
  }
  return status;
}

/**
 * Who leads what, as one node sees it: the meta group and every stream (`KV_<bucket>` for
 * the KV buckets, `ROOM_<id>` for persisted rooms); undefined while a group has no leader.
 */
export async function jetStreamLeaders(
  monitorUrl: string,
  timeoutMs = 1000,
): Promise<{ meta?: string; streams: Record<string, string | undefined> }> {
  const res = await fetch(`${monitorUrl}/jsz?accounts=true&streams=true`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new MonitoringError(`GET ${monitorUrl}/jsz answered ${res.status}`);
  const jsz = (await res.json()) as {
    meta_cluster?: { leader?: string };
    account_details?: { stream_detail?: { name: string; cluster?: { leader?: string } }[] }[];
  };
  const streams: Record<string, string | undefined> = {};
  for (const d of jsz.account_details?.flatMap((a) => a.stream_detail ?? []) ?? []) {
    streams[d.name] = d.cluster?.leader || undefined;
  }
  return { meta: jsz.meta_cluster?.leader || undefined, streams };
}

/** Why `statuses` is not a formed cluster of exactly `names`, or undefined when it is. */
export function notFormed(statuses: MetaStatus[], names: readonly string[]): string | undefined {
  const leaders = new Set(statuses.map((s) => s.leader));
  if (leaders.size !== 1) return `nodes disagree on the meta leader (${[...leaders].map((l) => l || "none")})`;
  const [leader] = leaders;
  if (!leader) return "no meta leader yet";
  if (!names.includes(leader)) return `meta leader ${leader} is not a live node`;
  const view = statuses.find((s) => s.server === leader);
  if (!view) return `meta leader ${leader} did not answer`;
  for (const name of names) {
    if (name === leader) continue;
    const peer = view.replicas?.find((r) => r.name === name);
    if (!peer) return `meta leader ${leader} does not list ${name} yet`;
    if (peer.offline || !peer.current) return `meta leader ${leader} sees ${name} as not current`;
  }
  return undefined;
}

/**
 * Polls every node's `/jsz` until they form one meta group (see notFormed). Throws
 * ClusterNotReadyError after `timeoutMs`.
 */
export async function waitForMetaGroup(
  nodes: readonly { name: string; monitorUrl: string }[],
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<MetaStatus[]> {
  const deadline = performance.now() + opts.timeoutMs;
  const names = nodes.map((n) => n.name);
  let why = "no answer yet";
  let last: (MetaStatus | string)[] = [];
  for (;;) {
    opts.signal?.throwIfAborted();
    const results = await Promise.allSettled(nodes.map((n) => metaStatus(n.name, n.monitorUrl)));
    last = results.map((r, i) => (r.status === "fulfilled" ? r.value : `${names[i]}: ${(r.reason as Error).message}`));
    const ok = results.every((r) => r.status === "fulfilled");
    if (ok) {
      const statuses = results.map((r) => (r as PromiseFulfilledResult<MetaStatus>).value);
      const reason = notFormed(statuses, names);
      if (!reason) return statuses;
      why = reason;
    } else {
      why = last.filter((x) => typeof x === "string").join("; ");
    }
    if (performance.now() >= deadline) {
      throw new ClusterNotReadyError(
        `the cluster of ${names.join(", ")} did not form within ${opts.timeoutMs} ms (${why}); check that the nodes can reach each other's route ports and share one CA`,
        last,
      );
    }
    await sleep(25);
  }
}

/**
 * A formed meta group can still refuse to place a replicated stream for a moment: the
 * leader learns each peer's JetStream limits from its periodic stats, and until then
 * answers "no suitable peers for placement, peer offline" (10005). So readiness also
 * proves placement: a throwaway memory stream at `replicas` is created (retrying until
 * the deadline) and deleted, as the APP service user.
 */
export async function waitForPlacement(probe: {
  servers: string[];
  caPem: string;
  keys: ServiceKeys;
  replicas: number;
  timeoutMs: number;
}): Promise<void> {
  const deadline = performance.now() + probe.timeoutMs;
  const nc = await connect({
    servers: probe.servers,
    name: "unibus-cluster-ready",
    tls: { ca: probe.caPem },
    authenticator: nkeySigner(probe.keys.app.publicKey, (d) => probe.keys.app.sign(d)),
    timeout: Math.max(1000, Math.min(5000, probe.timeoutMs)),
  });
  try {
    const jsm = await jetstreamManager(nc, { checkAPI: false, timeout: 2000 });
    const name = `UNIBUS_READY_${randomBytes(6).toString("hex")}`;
    let last = "";
    for (;;) {
      try {
        await jsm.streams.add({
          name,
          subjects: [`_unibus.ready.${name}`],
          storage: StorageType.Memory,
          num_replicas: probe.replicas,
          max_msgs: 1,
        });
        await jsm.streams.delete(name).catch(() => {});
        return;
      } catch (err) {
        last = (err as Error).message;
      }
      if (performance.now() >= deadline) {
        throw new ClusterNotReadyError(
          `JetStream could not place a stream with ${probe.replicas} replicas within ${probe.timeoutMs} ms (${last}); check that every node runs and reaches the others`,
          [],
        );
      }
      await sleep(50);
    }
  } finally {
    await nc.close().catch(() => {});
  }
}
