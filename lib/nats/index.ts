/** nats-server: finding the binary, rendering its configuration, running it. */

export type { NatsBinarySource, NatsInstallProgress, ResolvedNatsServer, ResolveNatsOptions } from "./binary.ts";
export {
  checkNatsServer,
  compareVersions,
  installNatsServer,
  MIN_NATS_VERSION,
  PINNED_NATS_VERSION,
  parseNatsVersion,
  resolveNatsServer,
} from "./binary.ts";
export type { NatsClusterOptions, NatsConfigOptions } from "./config.ts";
export { buildNatsConfig, renderNatsConfig } from "./config.ts";
export { NatsCrashedError } from "./errors.ts";
export {
  asArray,
  asNumber,
  asObject,
  asString,
  describeFetchError,
  type Json,
  type KvBucketStatus,
  MONITOR_TIMEOUT_MS,
  type NodeStatus,
  nodeStatus,
  type ReplicaStatus,
} from "./monitor.ts";
export type {
  NatsExitInfo,
  NatsPorts,
  NatsProcessEvents,
  NatsProcessState,
  NatsRestartedEvent,
  NatsRestartingEvent,
  NatsServerProcessOptions,
  NatsStopOptions,
} from "./process.ts";
export { isProcessAlive, NatsServerProcess } from "./process.ts";
export type { NatsExitRecord, NatsSuperviseOptions } from "./supervisor.ts";
export { armDirRemoval, type Watchdog } from "./watchdog.ts";
