/** Operator tooling: `unibus status` and `unibus doctor` as a library, and the run file they read. */

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
  nodeStatus,
  type ReplicaStatus,
  type StatusOptions,
  type StoreCounts,
  statusExitCode,
} from "./status.ts";
