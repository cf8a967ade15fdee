/**
 * Orchestration: one bus (`Unibus`) or several as one cluster (`UnibusCluster`), both
 * behind `BusHandle`. The CLI and library users start buses through here.
 */

export { type RestartOptions, startCluster, UnibusCluster } from "./cluster.ts";
export { learnFreeRoutePorts, MAX_NODES, type StartClusterOptions } from "./cluster-plan.ts";
export { ClusterNotReadyError, jetStreamLeaders, type MetaStatus, metaStatus } from "./cluster-ready.ts";
export type { BusHandle, BusHandleEvents, BusState, ClusterEvents, UnibusEvents } from "./handle.ts";
export { type BusLayout, busLayout } from "./layout.ts";
export { type DeletedRoom, finishRoomDeletion, type RoomCleanupOptions } from "./room-cleanup.ts";
export type { MissingRoute, RouteError, RouteErrorKind, RouteReport } from "./route-watch.ts";
export { type RoomRetention, type RoomStorageLimits, reservedBytes } from "./streams.ts";
export {
  type AddUserOptions,
  type OperatorOptions,
  type StartUnibusOptions,
  startUnibus,
  Unibus,
  type UnibusClusterOptions,
} from "./unibus.ts";
