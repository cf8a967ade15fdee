/**
 * Keys and what is done with them: identities, nkeys and JWTs for the broker, signed
 * control-plane requests, room keys sealed per member, and encrypted frames and blobs.
 */
export { decryptBlob, encryptBlob } from "./blob.ts";
export {
  AUTH_HEADERS,
  ContentHashVerifier,
  EMPTY_SHA256,
  parseSignedHeaders,
  SIGNATURE_SCHEME,
  type SignedHeaders,
  SignedRequestError,
  sha256Hex,
  signRequest,
  verifySignedRequest,
} from "./canonical.ts";
export { ed25519PublicKey, verify } from "./ed25519.ts";
export { writeFileAtomic } from "./files.ts";
export {
  clearFrameHeader,
  encodeFrame,
  FRAME_HEADER_BYTES,
  type FrameFailure,
  type FrameFailureReason,
  type OpenedFrame,
  type OpenFrameResult,
  openClearFrame,
  openFrame,
  type ParsedFrame,
  parseFrame,
  payloadBytes,
  writeClearFrame,
} from "./frame.ts";
export {
  createIdentity,
  Identity,
  loadIdentity,
  loadOrCreateIdentity,
  parseSignPub,
  saveIdentity,
} from "./identity.ts";
export { decodeJwt, encodeJwt, JwtError } from "./jwt.ts";
export { NKeyPair, verifyNkeySignature } from "./nkeypair.ts";
export { decodePublicKey } from "./nkeys.ts";
export { CryptoError, newRoomKey } from "./room-key.ts";
export { openRoomKey, sealRoomKey } from "./seal.ts";
