/**
 * `<dataDir>/run.json`: how the tools (`status`, `doctor`, `user`, `invite`) find the bus
 * that `unibus up` runs on a data dir. Only `up` writes it; everything else reads it
 * through `readRunInfo`, so a crashed run's leftover file reads as "not running".
 */
import fs from "node:fs/promises";
import path from "node:path";
import type { BusHandle } from "../bus/handle.ts";
import type { RoomStorageLimits } from "../bus/index.ts";
import { isProcessAlive } from "../nats/index.ts";
import type { StoreBackend } from "../store/index.ts";
import { CA_CERT_FILE } from "../tls/ca.ts";
import { packageVersion } from "../version.ts";

export const RUN_FILE = "run.json";

/** What `unibus up` writes to `<dataDir>/run.json` once the bus is ready. */
export interface RunInfo {
  pid: number;
  natsUrls: string[];
  /** The websocket listeners (empty when the run file predates them). */
  wsUrls: string[];
  controlUrls: string[];
  monitorUrls: string[];
  caFile: string;
  dataDir: string;
  /** The store backend the bus runs on ("sqlite" when the run file predates the field). */
  store: StoreBackend;
  /** The unibus release running the bus (absent in run files written before 0.1.0 recorded it). */
  unibusVersion?: string;
  /** Persisted rooms' retention ceiling and storage budget (absent when the run file predates the field). */
  roomStorage?: RoomStorageLimits;
  /** A cluster member: what `up` last said, `ready` or `degraded` (and why). Absent for a bus alone. */
  readiness?: Readiness;
}

export interface Readiness {
  state: "ready" | "degraded";
  /** ISO time `up` said it. */
  since: string;
  /** Why it is degraded. */
  reason?: string;
}

export function runInfoOf(handle: BusHandle): RunInfo {
  return {
    pid: process.pid,
    natsUrls: [...handle.natsUrls],
    wsUrls: [...handle.wsUrls],
    controlUrls: [...handle.controlUrls],
    monitorUrls: [...handle.monitorUrls],
    caFile: handle.caFile,
    dataDir: handle.dataDir,
    store: handle.storeBackend,
    unibusVersion: packageVersion(),
    roomStorage: handle.roomStorage,
  };
}

/**
 * Writes the run file, 0600 (it names the bus' endpoints and pid, nobody else's business),
 * through a temporary file and a rename: a reader never sees half a file.
 */
export async function writeRunInfo(dataDir: string, bus: BusHandle | RunInfo): Promise<void> {
  const info = "pid" in bus ? bus : runInfoOf(bus);
  const file = path.join(dataDir, RUN_FILE);
  const temp = `${file}.${process.pid}.tmp`;
  try {
    await fs.writeFile(temp, `${JSON.stringify(info)}\n`, { mode: 0o600 });
    await fs.rename(temp, file);
  } finally {
    await fs.rm(temp, { force: true });
  }
}

/** Removes the run file (a stopped bus); no error when it is already gone. */
export async function removeRunInfo(dataDir: string): Promise<void> {
  await fs.rm(path.join(dataDir, RUN_FILE), { force: true });
}

/** The bus' run file, or undefined when there is none or its process is gone (a crashed run). */
export async function readRunInfo(dataDir: string): Promise<RunInfo | undefined> {
  let raw: unknown;
  try {
    raw = JSON.parse(await fs.readFile(path.join(dataDir, RUN_FILE), "utf8"));
  } catch {
    return undefined;
  }
  const r = raw as Partial<RunInfo> | null;
  if (!r || typeof r.pid !== "number" || !isProcessAlive(r.pid)) return undefined;
  const strings = (v: unknown): string[] =>
    Array.isArray(v) ? v.filter((x): x is string => typeof x === "string" && x !== "") : [];
  return {
    pid: r.pid,
    natsUrls: strings(r.natsUrls),
    wsUrls: strings(r.wsUrls),
    controlUrls: strings(r.controlUrls),
    monitorUrls: strings(r.monitorUrls),
    caFile: typeof r.caFile === "string" ? r.caFile : path.join(dataDir, "tls", CA_CERT_FILE),
    dataDir: typeof r.dataDir === "string" ? r.dataDir : dataDir,
    store: r.store === "kv" ? "kv" : "sqlite",
    ...(typeof r.unibusVersion === "string" && r.unibusVersion ? { unibusVersion: r.unibusVersion } : {}),
    ...(isRoomStorage(r.roomStorage) ? { roomStorage: r.roomStorage } : {}),
    ...(isReadiness(r.readiness) ? { readiness: r.readiness } : {}),
  };
}

/**
 * The pid of another live process running a bus on `dataDir`, or undefined. Two buses
 * on one data dir would fight over the store and the ports; this process' own file
 * (a restart within one process) does not count.
 */
export async function runningPid(dataDir: string): Promise<number | undefined> {
  const run = await readRunInfo(dataDir);
  return run && run.pid !== process.pid ? run.pid : undefined;
}

/** A run file is read back, never trusted blindly: the limits are whole numbers or left out. */
function isRoomStorage(v: unknown): v is RoomStorageLimits {
  const whole = (n: unknown) => Number.isSafeInteger(n) && (n as number) > 0;
  const r = v as Partial<RoomStorageLimits> | undefined;
  const ret = r?.retention;
  return whole(r?.budgetBytes) && whole(ret?.maxBytes) && whole(ret?.maxAgeMs) && whole(ret?.maxMsgs);
}

function isReadiness(v: unknown): v is Readiness {
  const r = v as Partial<Readiness> | undefined;
  return (
    (r?.state === "ready" || r?.state === "degraded") &&
    typeof r.since === "string" &&
    (r.reason === undefined || typeof r.reason === "string")
  );
}
