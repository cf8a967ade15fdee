/** Shared by every copy of this module: `Symbol.for` returns one symbol per process. */
const BRAND = Symbol.for("unibus.error");

/** The class names from `cls` up to and including `UnibusError`, most derived first. */
function classChain(cls: abstract new (...args: never[]) => unknown): readonly string[] {
  const names: string[] = [];
  for (let c: unknown = cls; typeof c === "function" && c !== Error; c = Object.getPrototypeOf(c)) {
    names.push(c.name);
  }
  return Object.freeze(names);
}

/**
 * Every failure a user of unibus can meet, as a typed error with a stable `code`.
 * Callers branch on `instanceof` or `code`; messages say what went wrong and what
 * to do about it. No secret ever goes into a message.
 */
export class UnibusError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    Object.defineProperty(this, BRAND, { value: classChain(new.target) });
  }

  /**
   * A test project and a library that depends on unibus can load two copies of this
   * module in one process; their classes differ, so the default `instanceof` would
   * miss errors thrown by the other copy. Every instance carries, under a
   * process-wide symbol, the names of its class chain; a class matches when its own
   * name is in that chain, so subclasses still narrow (`StateError` matches only a
   * `StateError` or a subclass of it) and `UnibusError` matches every one.
   */
  static override [Symbol.hasInstance]<T>(this: abstract new (...args: never[]) => T, value: unknown): value is T {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class on the right of `instanceof`, maybe a subclass
    if (Function.prototype[Symbol.hasInstance].call(this, value)) return true;
    if (typeof value !== "object" || value === null) return false;
    const chain = (value as { [BRAND]?: unknown })[BRAND];
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class on the right of `instanceof`, maybe a subclass
    return Array.isArray(chain) && chain.includes(this.name);
  }
}

/** A method was called in a state that does not allow it (e.g. `stop()` before `start()`). */
export class StateError extends UnibusError {
  readonly expected: readonly string[];
  readonly actual: string;
  constructor(expected: readonly string[], actual: string, what = "operation") {
    super("STATE", `${what} needs state ${expected.join(" or ")}, but the state is ${actual}`);
    this.expected = expected;
    this.actual = actual;
  }
}

/** A value given by the caller is not acceptable. `field` names it. */
export class InvalidArgumentError extends UnibusError {
  readonly field: string;
  constructor(field: string, message: string) {
    super("INVALID_ARGUMENT", message);
    this.field = field;
  }
}

/** Configuration could not be resolved: unknown key or bad value. */
export class ConfigError extends UnibusError {
  readonly key: string;
  constructor(key: string, message: string) {
    super("CONFIG", message);
    this.key = key;
  }
}

/** No usable nats-server binary could be found or fetched. */
export class NatsBinaryError extends UnibusError {
  constructor(message: string, options?: ErrorOptions) {
    super("NATS_BINARY", message, options);
  }
}

/** A downloaded archive or package did not match its published checksum. */
export class ChecksumMismatchError extends UnibusError {
  readonly file: string;
  readonly expected: string;
  readonly actual: string;
  constructor(file: string, expected: string, actual: string) {
    super(
      "CHECKSUM_MISMATCH",
      `checksum mismatch for ${file}: expected sha256 ${expected}, got ${actual}; the download is corrupt or tampered with — delete it and retry`,
    );
    this.file = file;
    this.expected = expected;
    this.actual = actual;
  }
}

export type NatsStartReason = "port_in_use" | "bad_config" | "exited" | "timeout" | "tls";

/** nats-server did not become ready. `log` holds its last lines. */
export class NatsStartError extends UnibusError {
  readonly reason: NatsStartReason;
  readonly log: readonly string[];
  constructor(reason: NatsStartReason, message: string, log: readonly string[] = []) {
    const tail = log.length ? `\n--- last nats-server output ---\n${log.join("\n")}` : "";
    super("NATS_START", message + tail);
    this.reason = reason;
    this.log = log;
  }
}

/** An identity or key file is missing, corrupt or has unsafe permissions. */
export class KeyFileError extends UnibusError {
  readonly file: string;
  constructor(file: string, message: string, options?: ErrorOptions) {
    super("KEY_FILE", message, options);
    this.file = file;
  }
}

/** The thing asked for does not exist. Both store backends throw exactly this. */
export class NotFoundError extends UnibusError {
  readonly kind: string;
  readonly id: string;
  constructor(kind: string, id: string) {
    super("NOT_FOUND", `${kind} ${id} not found`);
    this.kind = kind;
    this.id = id;
  }
}

/** A user with this signing key is already on the allowlist. */
export class UserExistsError extends UnibusError {
  readonly signPub: string;
  constructor(signPub: string) {
    super("USER_EXISTS", `a user with signing key ${signPub} already exists`);
    this.signPub = signPub;
  }
}

/** A state transition that is not allowed (e.g. revoking a revoked user). */
export class ConflictError extends UnibusError {
  constructor(message: string) {
    super("CONFLICT", message);
  }
}

/** The store could not answer (I/O error, timeout, quorum loss). Callers deny. */
export class StoreUnavailableError extends UnibusError {
  constructor(message = "the store is unavailable", options?: ErrorOptions) {
    super("STORE_UNAVAILABLE", message, options);
  }
}

/** The broker refused to let this identity in. `reason` is what the server said. */
export class AuthDeniedError extends UnibusError {
  readonly reason: string;
  constructor(reason: string, options?: ErrorOptions) {
    super(
      "AUTH_DENIED",
      `the bus refused this identity (${reason}): its signing key is not on the allowlist, was revoked, or has reached its connection limit; an admin can tell which with \`unibus user list\``,
      options,
    );
    this.reason = reason;
  }
}

/**
 * A membership change went through (room `roomId` exists, with this identity in it),
 * but when the bus made this connection log in again to take the new permissions, it
 * refused it for good (revoked meanwhile, over its connection limit). The connection
 * has given up (see `UnibusClient.closed()`): it holds neither the old permissions nor
 * the new ones.
 */
export class ReadmissionRefusedError extends AuthDeniedError {
  readonly roomId: string;
  constructor(roomId: string, reason: string, options?: ErrorOptions) {
    super(`refused when logging in again to take room ${roomId}'s permissions: ${reason}`, options);
    this.roomId = roomId;
  }
}

/** A persisted room's history cannot be read: its stream is not on the bus. */
export class HistoryUnavailableError extends UnibusError {
  readonly roomId: string;
  constructor(roomId: string, options?: ErrorOptions) {
    super(
      "HISTORY_UNAVAILABLE",
      `room ${roomId}'s history is not on the bus (its stream is missing, e.g. after a restore without it); ask the operator to run \`unibus doctor\``,
      options,
    );
    this.roomId = roomId;
  }
}

/**
 * The control plane refused a request. `code` is the server's error code (e.g.
 * `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`), `status` the HTTP status, and the message is
 * the server's own words for what the caller did wrong.
 */
export class ControlPlaneError extends UnibusError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

export type CryptoErrorReason = "malformed" | "unsupported-version" | "invalid-key" | "undecryptable";

/**
 * A key or sealed key could not be used. `reason` says which way it failed; the
 * message never carries key material. (Here rather than in crypto/: the browser build
 * throws the same class.)
 */
export class CryptoError extends UnibusError {
  readonly reason: CryptoErrorReason;
  constructor(reason: CryptoErrorReason, message: string, options?: ErrorOptions) {
    super("CRYPTO", message, options);
    this.reason = reason;
  }
}

/** What every error of an acknowledged publish carries besides its cause. */
export interface PublishErrorOptions extends ErrorOptions {
  /**
   * For `publishMany(items, { ack: true })`: the index of the item this error is about.
   * Every item before it was stored (acknowledged by the room's stream); it and the
   * items after it are not known to be. 0 for a single publish.
   */
  stored?: number;
}

/**
 * JetStream has no room left: its disk (or `jetstreamMaxFileBytes`) is full. A
 * persisted room it cannot hold is refused (the control plane answers 507
 * STORAGE_FULL), and an acknowledged publish into a persisted room rejects with this:
 * the message was not stored. Retry once the operator freed space (health names
 * `storage` while it lasts).
 */
export class StorageFullError extends UnibusError {
  /** See PublishErrorOptions.stored; 0 where nothing was being published. */
  readonly stored: number;
  constructor(message: string, options: PublishErrorOptions = {}) {
    super("STORAGE_FULL", message, options);
    this.stored = options.stored ?? 0;
  }
}

/**
 * An acknowledged publish got no answer from the room's stream in time (the bus is
 * restarting its nats-server, a cluster is electing a leader, or it is overloaded).
 * The message may or may not be stored: read the history, or publish it again and
 * accept a duplicate.
 */
export class AckTimeoutError extends UnibusError {
  readonly timeoutMs: number;
  readonly stored: number;
  constructor(timeoutMs: number, options: PublishErrorOptions = {}) {
    super(
      "ACK_TIMEOUT",
      `no acknowledgement from the room's stream within ${timeoutMs} ms: the message may or may not be stored; read the history or publish it again`,
      options,
    );
    this.timeoutMs = timeoutMs;
    this.stored = options.stored ?? 0;
  }
}

/**
 * The bus refused an acknowledged publish: `reason` says who. `permission`: the
 * connection may not publish into this room (no longer a member). `stream`: the
 * room's stream refused the message; `errCode` is JetStream's error code and the
 * message its words. Nothing was stored.
 */
export class PublishRefusedError extends UnibusError {
  readonly reason: "permission" | "stream";
  readonly errCode: number | undefined;
  readonly stored: number;
  constructor(
    reason: "permission" | "stream",
    message: string,
    options: PublishErrorOptions & { errCode?: number } = {},
  ) {
    super("PUBLISH_REFUSED", message, options);
    this.reason = reason;
    this.errCode = options.errCode;
    this.stored = options.stored ?? 0;
  }
}

/**
 * An acknowledgement named a place in the room's stream that does not hold this
 * message (read back, it is missing or another message). Either someone other than
 * the stream answered — a publish's reply subject reaches every subscriber of the
 * room, and a member may reply once to any message it receives — or the room's
 * retention pushed the message out at once (one larger than the room's `maxBytes` is
 * stored and dropped in the same step). Either way the history does not hold it at
 * that place; it may hold it elsewhere if the stream's own answer was beaten.
 */
export class AckMismatchError extends UnibusError {
  readonly seq: number | undefined;
  readonly stored: number;
  constructor(seq: number | undefined, options: PublishErrorOptions = {}) {
    super(
      "ACK_MISMATCH",
      `the acknowledgement for this publish names stream sequence ${seq ?? "(none)"}, which does not hold this message: either it did not come from the room's stream, or the room's retention pushed the message out at once (is it larger than the room's maxBytes?); read the history, or publish it again`,
      options,
    );
    this.seq = seq;
    this.stored = options.stored ?? 0;
  }
}
