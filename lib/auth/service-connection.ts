import type { NatsConnection } from "@nats-io/transport-node";
import type { NKeyPair } from "../crypto/index.ts";
import { nkeySigner } from "./authenticator.ts";

/**
 * A connection of the bus' own (callout, kicker, stream manager): a static nkey user
 * that bypasses the callout, over TLS with the bus CA, reconnecting forever and fast —
 * these connections must be back before any client needs them. The NATS client loads
 * on the first call: the CLI reaches this module through the auth index, and a command
 * that edits a SQLite store never needs it.
 */
export async function connectAsService(opts: {
  servers: string[];
  caPem?: string;
  key: NKeyPair;
  name: string;
}): Promise<NatsConnection> {
  const { connect } = await import("@nats-io/transport-node");
  return connect({
    servers: opts.servers,
    name: opts.name,
    ...(opts.caPem ? { tls: { ca: opts.caPem } } : {}),
    authenticator: nkeySigner(opts.key.publicKey, (d) => opts.key.sign(d)),
    maxReconnectAttempts: -1,
    // Back before any client after a restart of nats-server: a client that reconnects
    // while the callout is still away is refused (no one answers its authorization), and
    // nats.js gives up after two refusals. Clients wait 100-150 ms; services 50, no jitter
    // (nats.js adds up to 1 s of TLS jitter by default).
    reconnectTimeWait: 50,
    reconnectJitter: 0,
    reconnectJitterTLS: 0,
    ignoreAuthErrorAbort: true,
  });
}
