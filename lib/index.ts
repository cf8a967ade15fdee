/**
 * The public surface of unibus. Everything a user imports comes from here.
 */

export type { StartClusterOptions, UnibusCluster } from "./bus/cluster.ts"; // cluster
export { startCluster } from "./bus/cluster.ts"; // cluster
export { ClusterNotReadyError } from "./bus/cluster-ready.ts"; // cluster
export type { AddUserOptions, BusState, StartUnibusOptions, UnibusClusterOptions } from "./bus/unibus.ts";
export { startUnibus, Unibus } from "./bus/unibus.ts";
export type { ConnectOptions, CreateRoomOptions } from "./client/connect.ts";
export { connect, UnibusClient } from "./client/connect.ts";
export type { BlobDownload, BlobInfo } from "./client/control.ts";
export { ControlClient } from "./client/control.ts";
export type { DroppedFrame, MemberRef, RoomInfo, RoomMember, RoomMessage, SubscribeOptions } from "./client/room.ts";
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
