/**
 * unibus in a browser: the same client API as the Node library (connect, createRoom,
 * openRoom, listMyRooms, publish, subscribe, history, blobs) over the bus' websocket
 * listener, with the identity in non-extractable WebCrypto keys. Bundled by
 * scripts/build-browser.ts into dist/browser/unibus.js.
 */

export type { PublishAck } from "../client/ack.ts";
export {
  AuthDeniedError,
  ControlPlaneError,
  CryptoError,
  InvalidArgumentError,
  KeyFileError,
  UnibusError,
} from "../errors.ts";
export { decryptBlob, encryptBlob } from "./blob.ts";
export { BrowserClient, type BrowserConnectOptions, type CreateRoomOptions, connect } from "./client.ts";
export { type BlobInfo, BrowserControl } from "./control.ts";
export { encodeFrame, openFrame, parseFrame } from "./frame.ts";
export { BrowserIdentity, importIdentity } from "./identity.ts";
export {
  type BrowserPublishOptions,
  BrowserRoom,
  type DroppedFrame,
  type RoomInfo,
  type RoomMember,
  type RoomMessage,
} from "./room.ts";
export { newRoomKey, openRoomKey, sealRoomKey } from "./seal.ts";
export { type AsyncRequestSigner, signRequest } from "./signer.ts";
