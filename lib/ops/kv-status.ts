/**
 * `unibus status` on a KV bus: the store's counts and the replication of every stream
 * (the KV buckets, the blob bucket, the rooms' history), read through JetStream's API
 * as the bus itself (the data dir's service key, TLS verified against the bus CA). The
 * API answers a stream's info from its leader, so one node's data dir shows every
 * stream — not only those its own monitoring endpoint leads.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { nkeySigner } from "../auth/authenticator.ts";
import { loadServiceKeys } from "../auth/service-keys.ts";
import { describeFetchError, type ReplicaStatus } from "../nats/index.ts";
import { openKvStore, type Store } from "../store/index.ts";
import type { RunInfo } from "./run-file.ts";

export interface StoreCounts {
  users: number;
  activeUsers: number;
  admins: number;
  rooms: number;
  /** Room memberships, every room's together. */
  members: number;
  invites: number;
  openInvites: number;
}

/** One stream as its leader reports it. */
export interface StreamReplication {
  stream: string;
  /** The KV bucket behind `KV_<bucket>` streams. */
  bucket?: string;
  replicas: number;
  leader?: string;
  /** The other replicas (empty at R1). */
  followers: ReplicaStatus[];
  messages: number;
}

export interface KvStatus {
  counts?: StoreCounts;
  streams?: StreamReplication[];
  /** Why the counts or the streams could not be read. */
  error?: string;
}

/** The counts of a store's snapshot; `now` decides which invites are still open. */
export async function countsOf(store: Store, now = Date.now()): Promise<StoreCounts> {
  const snap = await store.snapshot();
  return {
    users: snap.users.length,
    activeUsers: snap.users.filter((u) => u.status === "active").length,
    admins: snap.users.filter((u) => u.role === "admin" && u.status === "active").length,
    rooms: snap.rooms.length,
    members: snap.members.length,
    invites: snap.invites.length,
    openInvites: snap.invites.filter((i) => i.status === "open" && i.expiresAt > now).length,
  };
}

/** Counts and replication of the KV bus whose run file is `run`; never throws (an unreadable part is `error`). */
export async function kvStatus(dataDir: string, run: RunInfo, timeoutMs: number): Promise<KvStatus> {
  if (run.natsUrls.length === 0) return { error: "the run file lists no NATS URL" };
  let nc: Awaited<ReturnType<typeof connect>> | undefined;
  try {
    const [ca, keys] = await Promise.all([
      fs.readFile(run.caFile || path.join(dataDir, "tls", "ca.pem"), "utf8"),
      loadServiceKeys(dataDir),
    ]);
    nc = await connect({
      servers: run.natsUrls,
      name: "unibus-status",
      tls: { ca },
      authenticator: nkeySigner(keys.app.publicKey, (d) => keys.app.sign(d)),
      timeout: timeoutMs,
      maxReconnectAttempts: 0,
    });
    const streams = await streamReplication(nc, timeoutMs);
    const store = await openKvStore({ nc, bind: true, timeoutMs, openTimeoutMs: timeoutMs });
    try {
      return { streams, counts: await countsOf(store) };
    } catch (err) {
      return { streams, error: `the store's counts could not be read: ${(err as Error).message}` };
    } finally {
      await store.close();
    }
  } catch (err) {
    return { error: describeFetchError(err) };
  } finally {
    await nc?.close().catch(() => {});
  }
}

async function streamReplication(
  nc: Awaited<ReturnType<typeof connect>>,
  timeoutMs: number,
): Promise<StreamReplication[]> {
  const jsm = await jetstreamManager(nc, { timeout: timeoutMs });
  const out: StreamReplication[] = [];
  for await (const info of jsm.streams.list()) {
    const name = info.config.name;
    out.push({
      stream: name,
      ...(name.startsWith("KV_") ? { bucket: name.slice("KV_".length) } : {}),
      replicas: info.config.num_replicas,
      ...(info.cluster?.leader ? { leader: info.cluster.leader } : {}),
      followers: (info.cluster?.replicas ?? []).map((r) => ({
        name: r.name,
        current: r.current,
        ...(r.lag !== undefined ? { lag: r.lag } : {}),
        ...(r.active !== undefined ? { active: r.active } : {}),
        ...(r.offline ? { offline: true } : {}),
      })),
      messages: info.state.messages,
    });
  }
  return out.sort((a, b) => a.stream.localeCompare(b.stream));
}
