/**
 * Who may connect to the broker and with what: the auth-callout service, subject
 * permissions, the bus' own service keys and connections, and live kicks.
 */
export { nkeySigner } from "./authenticator.ts";
export {
  type Admission,
  type Admit,
  type AdmittedConnection,
  AuthCallout,
  type AuthCalloutOptions,
  DEFAULT_USER_LIMITS,
  type UserLimits,
} from "./callout.ts";
export { ConnectionRegistry, KICK_SUBJECT, Kicker, type KickerOptions } from "./kick.ts";
export { inboxPrefix, permissionsFor, type RoomGrant, roomStreamName, type SubjectPermissions } from "./permissions.ts";
export { connectAsService } from "./service-connection.ts";
export {
  finishServiceKeys,
  loadOrCreateServiceKeys,
  loadServiceKeys,
  rotateServiceKeys,
  SERVICE_KEYS_FILE,
  type ServiceKeySet,
  type ServiceKeys,
  type ServiceKeysPhase,
  ServiceKeysRotationError,
  type ServiceKeysStep,
  serviceKeysStatus,
  switchServiceKeys,
} from "./service-keys.ts";
