/**
 * The unibus client in a browser page: NATS over the bus' websocket listener (nats.js's
 * websocket transport), the control plane over fetch, every signature made in the page
 * by a non-extractable WebCrypto key.
 */
import { type NatsConnection, wsconnect } from "@nats-io/nats-core";
import { inboxPrefix } from "../auth/permissions.ts";
import type { CreateRoomOptions } from "../client/connect.ts";
import { DenialWatch } from "../client/denials.ts";
import { AuthDeniedError, InvalidArgumentError, UnibusError } from "../errors.ts";
import { randomBytes, toBase64url, toHex, utf8 } from "./bytes.ts";
import { BrowserControl } from "./control.ts";
import type { BrowserIdentity } from "./identity.ts";
import { BrowserRoom, type RoomInfo } from "./room.ts";
import { newRoomKey, sealRoomKey } from "./seal.ts";
import { SigningSocket } from "./socket.ts";

export type { CreateRoomOptions };

export interface BrowserConnectOptions {
  /** `wss://host:port` of the bus' websocket listener(s) (`up` prints them; `wsUrls`). */
  wsUrl: string | string[];
  /** `https://host:port` of the control plane; needed for rooms. */
  controlUrl?: string;
  identity: BrowserIdentity;
  name?: string;
  timeoutMs?: number;
}

export class BrowserClient {
  readonly nc: NatsConnection;
  readonly identity: BrowserIdentity;
  readonly #control: BrowserControl | undefined;
  readonly #rooms = new Set<BrowserRoom>();
  readonly #denials: DenialWatch;

  constructor(nc: NatsConnection, identity: BrowserIdentity, control: BrowserControl | undefined) {
    this.nc = nc;
    this.identity = identity;
    this.#control = control;
    this.#denials = new DenialWatch(nc as never);
  }

  get control(): BrowserControl {
    if (!this.#control) throw new InvalidArgumentError("controlUrl", "connect() without controlUrl: no rooms");
    return this.#control;
  }

  /** Creates a room owned by this identity; an encrypted room's first key is made here. */
  async createRoom(opts: CreateRoomOptions = {}): Promise<BrowserRoom> {
    const encrypt = opts.encrypt ?? true;
    const id = toHex(randomBytes(12));
    const key = encrypt ? newRoomKey() : undefined;
    const body: Record<string, unknown> = {
      id,
      encrypt,
      persist: opts.persist ?? false,
      signMsgs: opts.signMsgs ?? false,
    };
    if (key) {
      body.ownerSealedKey = await sealRoomKey({
        roomKey: key,
        recipientKexPub: this.identity.kexPub,
        roomId: id,
        epoch: 1,
      });
    }
    // The bus re-admits this connection with the new room before it answers: wait for that.
    const back = this.#nextReconnect();
    const info = await this.control.request<RoomInfo>("POST", "/v1/rooms", body);
    await back;
    const room = this.#track(new BrowserRoom(info, { nc: this.nc, control: this.control, identity: this.identity }));
    if (key) room.rememberKey(info.epoch, key);
    return room;
  }

  async openRoom(id: string): Promise<BrowserRoom> {
    const info = await this.control.request<RoomInfo>("GET", `/v1/rooms/${encodeURIComponent(id)}`);
    return this.#track(new BrowserRoom(info, { nc: this.nc, control: this.control, identity: this.identity }));
  }

  listMyRooms(): Promise<Array<RoomInfo & { role: "owner" | "member" }>> {
    return this.control.request("GET", `/v1/users/${this.identity.signPub}/rooms`);
  }

  /** Resolves when the connection ended for good: AuthDeniedError when the bus kept refusing it. */
  closed(): Promise<Error | undefined> {
    return this.#denials.closed();
  }

  async close(): Promise<void> {
    for (const room of this.#rooms) room.close();
    if (!this.nc.isClosed()) await this.nc.close();
  }

  #track(room: BrowserRoom): BrowserRoom {
    this.#rooms.add(room);
    return room;
  }

  /** The next reconnect, or a 5 s bound (a room created while the kick already passed). */
  async #nextReconnect(): Promise<void> {
    const status = this.nc.status();
    const back = (async () => {
      for await (const s of status) if (s.type === "reconnect") return;
    })();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([back, new Promise<void>((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
    (status as unknown as { stop?: () => void }).stop?.();
  }
}

export async function connect(opts: BrowserConnectOptions): Promise<BrowserClient> {
  const { identity } = opts;
  if (!identity) throw new InvalidArgumentError("identity", "connect() needs an identity (importIdentity)");
  const servers = Array.isArray(opts.wsUrl) ? opts.wsUrl : [opts.wsUrl];
  if (servers.length === 0 || servers.some((s) => typeof s !== "string" || !s.startsWith("wss://"))) {
    throw new InvalidArgumentError("wsUrl", "connect() needs the bus' wss:// URL (wsUrls); plain ws:// is refused");
  }
  // The login signature is made by WebCrypto, asynchronously; nats.js asks for it
  // synchronously. The socket holds the server's INFO back until its nonce is signed.
  const signatures = new Map<string, string>();
  const sign = async (nonce: string) => signatures.set(nonce, toBase64url(await identity.sign(utf8(nonce))));
  try {
    const nc = await wsconnect({
      servers,
      name: opts.name ?? `unibus-browser:${identity.signPub.slice(0, 12)}`,
      authenticator: (nonce?: string) => ({ nkey: identity.nkey, sig: nonce ? (signatures.get(nonce) ?? "") : "" }),
      inboxPrefix: inboxPrefix(identity.signPub),
      timeout: opts.timeoutMs ?? 10_000,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
      reconnectJitter: 50,
      reconnectJitterTLS: 50,
      ignoreAuthErrorAbort: false,
      wsFactory: async (url: string) => ({
        socket: new SigningSocket(url, sign) as unknown as WebSocket,
        encrypted: true,
      }),
    });
    // As the Node client: once admitted, refusals are ridden out for a moment (DenialWatch decides).
    (nc as unknown as { options: { ignoreAuthErrorAbort: boolean } }).options.ignoreAuthErrorAbort = true;
    const control = opts.controlUrl ? new BrowserControl(opts.controlUrl, identity) : undefined;
    return new BrowserClient(nc, identity, control);
  } catch (err) {
    const e = err as Error;
    if (e?.name === "AuthorizationError" || /Authorization Violation/i.test(e?.message ?? "")) {
      throw new AuthDeniedError("Authorization Violation", { cause: err });
    }
    throw new UnibusError("CONNECT", `could not connect to the bus: ${e?.message ?? String(err)}`, { cause: err });
  }
}
