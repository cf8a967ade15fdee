/** Operator tooling: `unibus status` and `unibus doctor` as a library, and the run file they read. */

// Read from nats-server's monitoring endpoint; lives with the other nats-server code.
export { nodeStatus } from "../nats/index.ts";
export {
  CERT_WARN_DAYS,
  type DoctorOptions,
  doctorExitCode,
  type Finding,
  type FindingLevel,
  formatFindings,
  MAX_CLOCK_SKEW_MS,
  MIN_NODE_VERSION,
  runDoctor,
} from "./doctor.ts";
export {
  RUN_FILE,
  type RunInfo,
  readRunInfo,
  removeRunInfo,
  runningPid,
  writeRunInfo,
} from "./run-file.ts";
export {
  type BusState,
  type BusStatus,
  type ControlStatus,
  collectStatus,
  formatStatus,
  type KvBucketStatus,
  type NodeStatus,
  type ReplicaStatus,
  type StatusOptions,
  type StoreCounts,
  type StreamReplication,
  statusExitCode,
} from "./status.ts";
