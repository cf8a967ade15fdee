/**
 * The public surface of unibus. Everything a user imports comes from here.
 */

export type { AddUserOptions, BusState, StartUnibusOptions } from "./bus/unibus.ts";
export { startUnibus, Unibus } from "./bus/unibus.ts";
export type { ConnectOptions } from "./client/connect.ts";
export { connect, UnibusClient } from "./client/connect.ts";
export {
  createIdentity,
  Identity,
  loadIdentity,
  loadOrCreateIdentity,
  parseSignPub,
  saveIdentity,
} from "./crypto/identity.ts";
export * from "./errors.ts";
export { installNatsServer, resolveNatsServer } from "./nats/index.ts";
export type { Role, Store, User, UserStatus } from "./store/index.ts";
