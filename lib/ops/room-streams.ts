/**
 * Persisted rooms whose history stream is missing: what a data dir restored by hand
 * (store copied, JetStream not) looks like. Every publish into such a room is lost and
 * every history read fails, while every other part is healthy — so status and doctor
 * look for it.
 */
import fs from "node:fs/promises";
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
  const streams = await roomStreams(monitor, timeoutMs);
  if (!streams) return undefined;
  const store = await openStore({ backend: "sqlite", file });
  try {
    const rooms = (await store.snapshot()).rooms.filter((r) => r.persist);
    return rooms.map((r) => r.id).filter((id) => !streams.has(`ROOM_${id}`));
  } finally {
    await store.close();
  }
}

async function roomStreams(monitorUrl: string, timeoutMs: number): Promise<Set<string> | undefined> {
  try {
    const res = await fetch(`${monitorUrl.replace(/\/+$/, "")}/jsz?accounts=true&streams=true`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!res.ok) return undefined;
    const body = (await res.json()) as { account_details?: { stream_detail?: { name?: string }[] }[] };
    const names = new Set<string>();
    for (const a of body.account_details ?? []) for (const s of a.stream_detail ?? []) if (s.name) names.add(s.name);
    return names;
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
