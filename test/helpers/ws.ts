import type { NatsConnection } from "@nats-io/nats-core";
import { wsconnect } from "@nats-io/nats-core";
import { Agent } from "undici";
import { inboxPrefix, nkeySigner } from "../../lib/auth/index.ts";
import type { Identity } from "../../lib/crypto/identity.ts";

/**
 * A NATS connection over the bus' websocket listener, as a browser makes it, from Node:
 * nats.js's websocket transport on Node's own WebSocket, trusting `ca` only (an undici
 * dispatcher per socket, so no process-wide trust is changed).
 */
export async function wsConnect(
  url: string,
  ca: string,
  identity: Identity,
  opts: { reconnect?: boolean } = {},
): Promise<NatsConnection> {
  const dispatcher = new Agent({ connect: { ca } });
  return wsconnect({
    servers: url,
    authenticator: nkeySigner(identity.nkey, (d) => identity.sign(d)),
    inboxPrefix: inboxPrefix(identity.signPub),
    timeout: 5000,
    reconnect: opts.reconnect ?? false,
    reconnectTimeWait: 100,
    wsFactory: async (u: string) => {
      // Node's WebSocket (undici) takes a dispatcher beside the protocols.
      const Ws = WebSocket as unknown as new (u: string, o: unknown) => WebSocket;
      return { socket: new Ws(u, { dispatcher }), encrypted: u.startsWith("wss:") };
    },
  });
}
