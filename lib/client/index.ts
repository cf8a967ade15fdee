/** The client side of unibus: a connection to the bus, its rooms and the control plane. */
export { type ConnectOptions, type CreateRoomOptions, connect, UnibusClient } from "./connect.ts";
export { type BlobDownload, type BlobInfo, ControlClient, type ControlClientOptions } from "./control.ts";
export {
  type DroppedFrame,
  type MemberRef,
  type PublishAck,
  type PublishOptions,
  Room,
  type RoomInfo,
  type RoomMember,
  type RoomMessage,
  type SubscribeOptions,
} from "./room.ts";
