/**
 * The unibus client: one object holding the NATS connection (TLS with the bus CA,
 * nkey login signed by the identity, a private inbox prefix, reconnect that survives
 * the server forcing a re-authentication). The control-plane client and rooms come
 * with the client-library issue.
 */

import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import tls from "node:tls";
import { type NatsConnection, connect as natsConnect, type TlsOptions } from "@nats-io/transport-node";
import { inboxPrefix, nkeySigner } from "../auth/index.ts";
import { type Identity, newRoomKey, sealRoomKey } from "../crypto/index.ts";
import { AuthDeniedError, InvalidArgumentError, ReadmissionRefusedError, StateError, UnibusError } from "../errors.ts";
import { ControlClient } from "./control.ts";
import { DenialWatch, isDenial } from "./denials.ts";
import { ReconnectPacing } from "./reconnect.ts";
import { Room, type RoomInfo, type RoomRetention } from "./room.ts";
import { connectCoalescing } from "./transport.ts";

export interface ConnectOptions {
  /** `tls://host:port`, or several for a cluster. */
  natsUrl: string | string[];
  /** The control plane (`https://host:port`). Used by rooms; optional for a NATS-only client. */
  controlUrl?: string;
  /** The bus CA certificate, PEM text. */
  ca?: string | Uint8Array;
  /** Or the path of the CA file (`bus.caFile`). */
  caFile?: string;
  identity: Identity;
  /** Connection name shown in the server's monitoring. */
  name?: string;
  /** Give up after this long when the bus is unreachable. */
  timeoutMs?: number;
  /**
   * Hand the TLS records of one socket read to nats.js's parser as one buffer (default
   * true; see lib/client/transport.ts). false keeps nats.js's transport as it ships, which
   * is the baseline `npm run bench -- tls` compares against.
   */
  coalesceReads?: boolean;
}

export interface CreateRoomOptions {
  /** End-to-end encrypted (default). Cleartext rooms are refused on a public bind. */
  encrypt?: boolean;
  /** Keep history in a JetStream stream (ciphertext only). */
  persist?: boolean;
  /** Every frame must carry a valid Ed25519 signature; others are dropped. */
  signMsgs?: boolean;
  /**
   * A persisted room's history limits, each at most the bus's ceiling (a limit above it
   * is refused: ControlPlaneError, code RETENTION_ABOVE_CEILING); what is left out gets
   * the ceiling. Past any of them the oldest messages go.
   */
  retention?: RoomRetention;
}

/**
 * Once admitted, a refusal is no longer final at the second one (nats.js's rule): a kick,
 * an expired user JWT or a restart of nats-server forces a new login, and a client that
 * comes back before the bus's callout is refused for a moment. DenialWatch ends the
 * connection after DENIAL_GRACE_MS of refusals instead. nats.js reads this option from
 * the connection's live options on every refusal; it offers no other way to change it.
 */
function tolerateRefusals(nc: NatsConnection): void {
  const live = (nc as unknown as { options?: { ignoreAuthErrorAbort?: boolean } }).options;
  if (live) live.ignoreAuthErrorAbort = true;
}

export class UnibusClient {
  readonly nc: NatsConnection;
  readonly identity: Identity;
  readonly controlUrl: string | undefined;
  /** Replies and private subjects live under this prefix; only this connection may read it. */
  readonly inboxPrefix: string;
  readonly #control: ControlClient | undefined;
  readonly #rooms = new Set<Room>();
  readonly #denials: DenialWatch;
  /** The last membership change of this connection in flight (see #afterReauth). */
  #reauthQueue: Promise<unknown> = Promise.resolve();

  constructor(nc: NatsConnection, identity: Identity, controlUrl: string | undefined, control?: ControlClient) {
    this.nc = nc;
    this.#denials = new DenialWatch(nc);
    this.identity = identity;
    this.controlUrl = controlUrl;
    this.inboxPrefix = inboxPrefix(identity.signPub);
    this.#control = control;
  }

  /** The signed control-plane client (needs `controlUrl` at connect). */
  get control(): ControlClient {
    if (!this.#control)
      throw new InvalidArgumentError(
        "controlUrl",
        "this client was connected without controlUrl; pass it to connect() to use rooms",
      );
    return this.#control;
  }

  /** Creates a room owned by this identity; for encrypted rooms, makes the epoch-1 key here. */
  async createRoom(opts: CreateRoomOptions = {}): Promise<Room> {
    const encrypt = opts.encrypt ?? true;
    const key = encrypt ? newRoomKey() : undefined;
    // The control plane re-authenticates this connection (new room, new permissions)
    // before it answers; wait for that so the caller can publish at once.
    // We pick the id: the sealed epoch-1 key binds it, so it must be known before the room exists.
    const id = randomBytes(12).toString("hex");
    const body: Record<string, unknown> = {
      id,
      encrypt,
      persist: opts.persist ?? false,
      signMsgs: opts.signMsgs ?? false,
      ...(opts.retention ? { retention: opts.retention } : {}),
    };
    if (key)
      body.ownerSealedKey = sealRoomKey({ roomKey: key, recipientKexPub: this.identity.kexPub, roomId: id, epoch: 1 });
    const info = await this.#afterReauth(id, () => this.control.request<RoomInfo>("POST", "/v1/rooms", body));
    const room = this.#track(new Room(info, { nc: this.nc, control: this.control, identity: this.identity }));
    if (key) room.rememberKey(info.epoch, key);
    return room;
  }

  /**
   * Registers this identity's key-exchange key with the bus when it was added by its
   * signing key alone (encrypted rooms need it). Set once: a 409 when one is already there.
   */
  async registerKexPub(): Promise<void> {
    await this.control.request("PUT", `/v1/users/${this.identity.signPub}/kex`, { kexPub: this.identity.kexPub });
  }

  /** Opens a room this identity is a member of. */
  async openRoom(id: string): Promise<Room> {
    const info = await this.control.request<RoomInfo>("GET", `/v1/rooms/${encodeURIComponent(id)}`);
    return this.#track(new Room(info, { nc: this.nc, control: this.control, identity: this.identity }));
  }

  /** The rooms this identity belongs to, with its role in each — how an invited bot finds its rooms. */
  async listMyRooms(): Promise<Array<RoomInfo & { role: "owner" | "member" }>> {
    return this.control.request("GET", `/v1/users/${this.identity.signPub}/rooms`);
  }

  #track(room: Room): Room {
    this.#rooms.add(room);
    return room;
  }

  /**
   * Runs `action`, which makes the server kick this connection, and resolves once it is
   * back. One change at a time per connection: a change's wait ends at the first
   * reconnect after it started, and with two in flight that could be the other's,
   * admitted before this one's room was stored. (A change costs a reconnect; rooms
   * created concurrently on one client take their turns.)
   */
  #afterReauth<T>(roomId: string, action: () => Promise<T>): Promise<T> {
    const run = this.#reauthQueue.then(() =>
      afterReauth(this.nc, action, { roomId, closed: () => this.#denials.closed() }),
    );
    this.#reauthQueue = run.catch(() => {});
    return run;
  }

  /**
   * Resolves when the connection has ended for good: with an AuthDeniedError when the bus
   * kept refusing this identity (revoked, deleted), nats.js's error otherwise, undefined
   * after close().
   */
  closed(): Promise<Error | undefined> {
    return this.#denials.closed();
  }

  async close(): Promise<void> {
    for (const room of this.#rooms) room.close();
    if (!this.nc.isClosed()) await this.nc.close();
    await this.#control?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

export interface AfterReauthOptions {
  /** When no kick comes by then, the connection had nothing to change: resolve anyway. */
  timeoutMs?: number;
  /** The room the change is about, named in a ReadmissionRefusedError. */
  roomId?: string;
  /**
   * Why the connection ended for good (`UnibusClient.closed()`, which knows when the
   * bus kept refusing it); nats.js's own reason when not given.
   */
  closed?: () => Promise<Error | undefined>;
}

/**
 * Runs `action`, which makes the server kick `nc` to re-authenticate (a membership
 * change), and resolves once `nc` is back with its new permissions, or after
 * `timeoutMs` when no kick came (the connection had nothing to change). Nothing is
 * asked of the server while waiting: nats.js reports the reconnect.
 *
 * When the bus refuses the connection as it logs in again, the wait goes on as long as
 * the connection keeps trying (a refusal can be passing — see DenialWatch); once it gives
 * up, or the refusals last past `timeoutMs`, this rejects with ReadmissionRefusedError
 * (an AuthDeniedError) — never resolves as if the new permissions were held.
 */
export async function afterReauth<T>(
  nc: NatsConnection,
  action: () => Promise<T>,
  opts: AfterReauthOptions = {},
): Promise<T> {
  const { timeoutMs = 5000, roomId = "(unnamed)" } = opts;
  const status = nc.status();
  let refusal: unknown;
  const back = (async (): Promise<"back" | "closed"> => {
    for await (const s of status) {
      if (s.type === "reconnect") return "back";
      if (s.type === "error" && isDenial(s.error)) refusal = s.error;
    }
    return "closed"; // the status stream ends with the connection
  })();
  try {
    const result = await action();
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      back,
      new Promise<"timeout">((r) => {
        timer = setTimeout(() => r("timeout"), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (outcome === "back" || (outcome === "timeout" && refusal === undefined)) return result;
    if (outcome === "closed") {
      const why = (await opts.closed?.()) ?? (await nc.closed()) ?? undefined;
      if (why instanceof AuthDeniedError || isDenial(why))
        throw new ReadmissionRefusedError(roomId, reasonOf(why), { cause: why });
      // closed by its owner, or by nats.js for another reason: no refusal to report
      throw new StateError(["connected"], "closed", "waiting for a membership change's new permissions");
    }
    throw new ReadmissionRefusedError(roomId, `${reasonOf(refusal)}, still refused after ${timeoutMs} ms`, {
      cause: refusal,
    });
  } finally {
    // stop listening
    (status as unknown as { stop?: () => void }).stop?.();
  }
}

function reasonOf(err: unknown): string {
  if (err instanceof AuthDeniedError) return err.reason;
  return (err as Error | undefined)?.message ?? String(err);
}

export async function connect(opts: ConnectOptions): Promise<UnibusClient> {
  if (!opts.identity)
    throw new InvalidArgumentError("identity", "connect() needs an identity (see loadOrCreateIdentity)");
  const servers = Array.isArray(opts.natsUrl) ? opts.natsUrl : [opts.natsUrl];
  if (servers.length === 0 || servers.some((s) => typeof s !== "string" || s.length === 0)) {
    throw new InvalidArgumentError("natsUrl", "connect() needs the bus' NATS URL (bus.natsUrl)");
  }
  const ca =
    opts.ca !== undefined
      ? Buffer.from(opts.ca).toString()
      : opts.caFile
        ? await fs.readFile(opts.caFile, "utf8")
        : undefined;
  const { identity } = opts;
  // A kick (membership change) forces a reconnect: come back at once (see ReconnectPacing),
  // then, if that fails, every 100-150 ms. nats.js' defaults (2 s, up to 1 s of TLS jitter)
  // would stall a room's traffic for that long.
  const pacing = new ReconnectPacing({ waitMs: 100, jitterMs: 50 });
  try {
    const dial = opts.coalesceReads === false ? natsConnect : connectCoalescing;
    const nc = await dial({
      servers,
      name: opts.name ?? `unibus:${identity.signPub.slice(0, 12)}`,
      ...(ca ? { tls: keptTlsContext(ca) } : {}),
      authenticator: nkeySigner(identity.nkey, (d) => identity.sign(d)),
      inboxPrefix: inboxPrefix(identity.signPub),
      timeout: opts.timeoutMs ?? 10_000,
      maxReconnectAttempts: -1,
      reconnectDelayHandler: pacing.delay,
      // The first login fails fast on a refusal (an unknown or revoked identity is told at
      // once, even when the server's INFO lists a whole cluster to try); once admitted,
      // see tolerateRefusals below.
      ignoreAuthErrorAbort: false,
    });
    tolerateRefusals(nc);
    pacing.follow(nc);
    const control = opts.controlUrl
      ? new ControlClient({ baseUrl: opts.controlUrl, ...(ca ? { ca } : {}), identity })
      : undefined;
    return new UnibusClient(nc, identity, opts.controlUrl, control);
  } catch (err) {
    throw toClientError(err);
  }
}

/**
 * TLS options that trust `ca` through one SecureContext made here, for every (re)connect
 * of the connection. Given `ca` alone, Node builds a new context — parsing the CA and
 * setting up a certificate store — on each dial; a membership change is a dial, and that
 * was ~1.5 ms of the ~4 ms TLS handshake of each one (measured: TLS upgrade of a NATS
 * connection to the bus, p50 4.1 ms with `ca`, 2.6 ms with a kept context). nats.js hands
 * these options to `tls.connect` as they are; the server's name is still checked.
 */
export function keptTlsContext(ca: string): TlsOptions {
  return { secureContext: tls.createSecureContext({ ca }) } as TlsOptions;
}

function toClientError(err: unknown): Error {
  const e = err as Error & { code?: string };
  if (e?.name === "AuthorizationError" || /Authorization Violation/i.test(e?.message ?? "")) {
    return new AuthDeniedError("Authorization Violation", { cause: err });
  }
  if (e instanceof UnibusError) return e;
  return new UnibusError("CONNECT", `could not connect to the bus: ${e?.message ?? String(err)}`, { cause: err });
}
