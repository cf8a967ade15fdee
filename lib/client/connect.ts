/**
 * The unibus client: one object holding the NATS connection (TLS with the bus CA,
 * nkey login signed by the identity, a private inbox prefix, reconnect that survives
 * the server forcing a re-authentication). The control-plane client and rooms come
 * with the client-library issue.
 */
import fs from "node:fs/promises";
import { type NatsConnection, connect as natsConnect } from "@nats-io/transport-node";
import { nkeySigner } from "../auth/authenticator.ts";
import { inboxPrefix } from "../auth/permissions.ts";
import type { Identity } from "../crypto/identity.ts";
import { AuthDeniedError, InvalidArgumentError, UnibusError } from "../errors.ts";

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
}

export class UnibusClient {
  readonly nc: NatsConnection;
  readonly identity: Identity;
  readonly controlUrl: string | undefined;
  /** Replies and private subjects live under this prefix; only this connection may read it. */
  readonly inboxPrefix: string;

  constructor(nc: NatsConnection, identity: Identity, controlUrl: string | undefined) {
    this.nc = nc;
    this.identity = identity;
    this.controlUrl = controlUrl;
    this.inboxPrefix = inboxPrefix(identity.signPub);
  }

  async close(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
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
  try {
    const nc = await natsConnect({
      servers,
      name: opts.name ?? `unibus:${identity.signPub.slice(0, 12)}`,
      ...(ca ? { tls: { ca } } : {}),
      authenticator: nkeySigner(identity.nkey, (d) => identity.sign(d)),
      inboxPrefix: inboxPrefix(identity.signPub),
      timeout: opts.timeoutMs ?? 10_000,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      // A kick or an expired user JWT forces a re-authentication; keep trying, the
      // callout decides. A revoked identity is refused and the caller sees it closed.
      ignoreAuthErrorAbort: false,
    });
    return new UnibusClient(nc, identity, opts.controlUrl);
  } catch (err) {
    throw toClientError(err);
  }
}

function toClientError(err: unknown): Error {
  const e = err as Error & { code?: string };
  if (e?.name === "AuthorizationError" || /Authorization Violation/i.test(e?.message ?? "")) {
    return new AuthDeniedError("Authorization Violation", { cause: err });
  }
  if (e instanceof UnibusError) return e;
  return new UnibusError("CONNECT", `could not connect to the bus: ${e?.message ?? String(err)}`, { cause: err });
}
