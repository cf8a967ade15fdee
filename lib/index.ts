/**
 * The public surface of unibus. Everything a user imports comes from here.
 */

export {
  type AddUserOptions,
  type BusHandle,
  type BusState,
  ClusterNotReadyError,
  type RestartOptions,
  type RouteReport,
  type StartClusterOptions,
  type StartUnibusOptions,
  startCluster,
  startUnibus,
  Unibus,
  UnibusCluster,
  type UnibusClusterOptions,
} from "./bus/index.ts";
export type { ConnectOptions, CreateRoomOptions } from "./client/connect.ts";
export { connect, UnibusClient } from "./client/connect.ts";
export type { BlobDownload, BlobInfo } from "./client/control.ts";
export { ControlClient } from "./client/control.ts";
export type {
  DroppedFrame,
  MemberRef,
  PublishAck,
  PublishOptions,
  RoomInfo,
  RoomMember,
  RoomMessage,
  RoomRetention,
  SubscribeOptions,
} from "./client/room.ts";
export { Room } from "./client/room.ts";
export {
  createIdentity,
  Identity,
  loadIdentity,
  loadOrCreateIdentity,
  parseSignPub,
  saveIdentity,
} from "./crypto/identity.ts";
export { CryptoError } from "./crypto/room-key.ts";
export * from "./errors.ts";
export { installNatsServer, resolveNatsServer } from "./nats/index.ts";
export type { Role, Store, User, UserStatus } from "./store/index.ts";
