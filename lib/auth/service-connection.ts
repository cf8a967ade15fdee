import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { NKeyPair } from "../crypto/nkeypair.ts";
import { nkeySigner } from "./authenticator.ts";

/**
 * A connection of the bus' own (callout, kicker, stream manager): a static nkey user
 * that bypasses the callout, over TLS with the bus CA, reconnecting forever and fast —
 * these connections must be back before any client needs them.
 */
export function connectAsService(opts: {
  servers: string[];
  caPem?: string;
  key: NKeyPair;
  name: string;
}): Promise<NatsConnection> {
  return connect({
    servers: opts.servers,
    name: opts.name,
    ...(opts.caPem ? { tls: { ca: opts.caPem } } : {}),
    authenticator: nkeySigner(opts.key.publicKey, (d) => opts.key.sign(d)),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 100,
    ignoreAuthErrorAbort: true,
  });
}
