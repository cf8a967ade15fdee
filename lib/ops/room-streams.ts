/**
 * Persisted rooms whose history stream is missing: what a data dir restored by hand
 * (store copied, JetStream not) looks like. Every publish into such a room is lost and
 * every history read fails, while every other part is healthy — so status and doctor
 * look for it.
 */
import fs from "node:fs/promises";
import { reservedBytes } from "../bus/index.ts";
import { busLayout } from "../bus/layout.ts";
import { openStore } from "../store/index.ts";
import type { RunInfo } from "./run-file.ts";

/** Room ids with `persist` but no `ROOM_<id>` stream; undefined when it cannot be told (KV, no JetStream answer). */
export async function roomsWithoutStream(
  dataDir: string,
  run: RunInfo | undefined,
  timeoutMs: number,
): Promise<string[] | undefined> {
  const monitor = run?.monitorUrls[0];
  if (run?.store !== "sqlite" || !monitor) return undefined;
  const file = busLayout(dataDir, "").storeFile;
  if (!(await fs.stat(file).catch(() => undefined))) return undefined;
  const streams = await roomStreams([monitor], timeoutMs);
  if (!streams) return undefined;
  const store = await openStore({ backend: "sqlite", file });
  try {
    const rooms = (await store.snapshot()).rooms.filter((r) => r.persist);
    return rooms.map((r) => r.id).filter((id) => !streams.has(`ROOM_${id}`));
  } finally {
    await store.close();
  }
}

/** A room's history stream as the monitoring endpoints report it. */
export interface RoomStreamDetail {
  /** The room's limits (JetStream's own config: the truth of what the room keeps). */
  retention: { maxBytes: number; maxAgeMs: number; maxMsgs: number };
  bytes: number;
  messages: number;
}

/**
 * Every `ROOM_<id>` stream, by name, from each node's /jsz (in a cluster a node reports
 * the streams it holds a replica of, so all are asked and their answers merged).
 * Undefined when no node answers.
 */
export async function roomStreams(
  monitorUrls: readonly string[],
  timeoutMs: number,
): Promise<Map<string, RoomStreamDetail> | undefined> {
  const answers = await Promise.all(monitorUrls.map((u) => jszStreams(u, timeoutMs)));
  if (answers.every((a) => a === undefined)) return undefined;
  const streams = new Map<string, RoomStreamDetail>();
  for (const list of answers) {
    for (const s of list ?? []) {
      if (!s.name?.startsWith("ROOM_") || streams.has(s.name)) continue;
      streams.set(s.name, {
        retention: {
          maxBytes: s.config?.max_bytes ?? -1,
          // JetStream counts age in nanoseconds.
          maxAgeMs: Math.round((s.config?.max_age ?? 0) / 1_000_000),
          maxMsgs: s.config?.max_msgs ?? -1,
        },
        bytes: s.state?.bytes ?? 0,
        messages: s.state?.messages ?? 0,
      });
    }
  }
  return streams;
}

interface JszStream {
  name?: string;
  config?: { max_bytes?: number; max_age?: number; max_msgs?: number };
  state?: { bytes?: number; messages?: number };
}

async function jszStreams(monitorUrl: string, timeoutMs: number): Promise<JszStream[] | undefined> {
  try {
    const res = await fetch(`${monitorUrl.replace(/\/+$/, "")}/jsz?accounts=true&streams=true&config=true`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!res.ok) return undefined;
    const body = (await res.json()) as { account_details?: { stream_detail?: JszStream[] }[] };
    return (body.account_details ?? []).flatMap((a) => a.stream_detail ?? []);
  } catch {
    return undefined;
  }
}

/** The problem line for status and doctor. */
export function missingStreamsText(ids: string[]): string {
  return `${ids.length} persisted room(s) have no history stream (${ids.slice(0, 5).join(", ")}${ids.length > 5 ? ", …" : ""}): their messages are not kept and history reads fail`;
}

export const MISSING_STREAMS_FIX =
  "restore the bus from a `unibus backup` (`unibus restore <backup> --data-dir <new>`); a data dir copied without its jetstream/ dir lost the history";

/** Persisted rooms' storage against the limits, for `unibus status`. */
export interface RoomStorageStatus {
  /** Persisted rooms with a history stream. */
  rooms: number;
  storedBytes: number;
  storedMessages: number;
  /** What the rooms take from the budget: each its byte cap, at least 1 MiB (see `reservedBytes` in lib/bus). */
  reservedBytes: number;
  /** The budget and each room's ceiling, when the run file has them. */
  budgetBytes?: number;
  ceiling?: { maxBytes: number; maxAgeMs: number; maxMsgs: number };
}

/** Undefined when no monitoring endpoint answers. */
export async function roomStorageStatus(run: RunInfo, timeoutMs: number): Promise<RoomStorageStatus | undefined> {
  const streams = await roomStreams(run.monitorUrls, timeoutMs);
  if (!streams) return undefined;
  const limits = run.roomStorage;
  const out: RoomStorageStatus = { rooms: 0, storedBytes: 0, storedMessages: 0, reservedBytes: 0 };
  for (const s of streams.values()) {
    out.rooms++;
    out.storedBytes += s.bytes;
    out.storedMessages += s.messages;
    // Counted as the bus counts it (reservedBytes); without the limits, at its own cap.
    out.reservedBytes += limits
      ? reservedBytes(s.retention.maxBytes, limits.retention)
      : Math.max(0, s.retention.maxBytes);
  }
  if (limits) Object.assign(out, { budgetBytes: limits.budgetBytes, ceiling: { ...limits.retention } });
  return out;
}

/** The status lines: stored and reserved against the budget, each room's ceiling, and whether another room fits. */
export function roomStorageText(s: RoomStorageStatus): string[] {
  const budget = s.budgetBytes !== undefined ? ` of the ${bytesText(s.budgetBytes)} budget` : "";
  const lines = [
    `room storage: ${s.rooms} persisted room(s), ${bytesText(s.storedBytes)} in ${s.storedMessages} message(s) stored; their caps reserve ${bytesText(s.reservedBytes)}${budget}`,
  ];
  if (s.ceiling) {
    const c = s.ceiling;
    lines.push(`  each room at most ${bytesText(c.maxBytes)}, ${ageText(c.maxAgeMs)}, ${c.maxMsgs} messages`);
    if (s.budgetBytes !== undefined && s.reservedBytes + c.maxBytes > s.budgetBytes) {
      lines.push(
        `  the budget has ${bytesText(s.budgetBytes - s.reservedBytes)} left: a new persisted room must ask for a smaller retention.maxBytes (else 507)`,
      );
    }
  }
  return lines;
}

export function bytesText(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

export function ageText(ms: number): string {
  const day = 86_400_000;
  if (ms % day === 0) return `${ms / day} day(s)`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} hour(s)`;
  return `${Math.round(ms / 1000)} s`;
}
