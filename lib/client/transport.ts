/**
 * The client's NATS transport: nats.js's own Node transport with one change on the read
 * side — the TLS records that arrive in one socket read reach the protocol parser as one
 * buffer instead of one call per record.
 *
 * Why (measured, see docs/performance-tls.md): over TLS nats-server writes each of its
 * outbound buffers as its own TLS record — 512 B, ~2 messages, at 256 B payloads. Over
 * plain TCP the kernel merges those writes and Node reads ~57 KB at a time; over TLS every
 * record stays a record, Node's TLSSocket emits one 'data' per record, and nats.js runs
 * its parser once per record. Most
 * records end inside a message, so the parser takes its split-message path (a copied
 * argument, a growing buffer) about once per record. Handing the parser every record of
 * one event-loop turn at once removes those splits.
 */

import {
  deferred,
  hasWsProtocol,
  type NatsConnection,
  NatsConnectionImpl,
  type NodeConnectionOptions,
  setTransportFactory,
} from "@nats-io/transport-node";
import { NodeTransport, nodeResolveHost } from "@nats-io/transport-node/lib/node_transport.js";
import { InvalidArgumentError } from "../errors.ts";

/** Resolves after the I/O callbacks already due in this turn of the event loop have run. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * NodeTransport whose reader hands on, once per event-loop turn, everything the socket
 * delivered in that turn as one buffer. Node runs microtasks after each TLS record it
 * emits, so waiting for the signal alone would still wake the reader once per record;
 * setImmediate runs after the whole socket read has been decrypted and emitted.
 */
export class CoalescingTransport extends NodeTransport {
  override async *iterate(): AsyncIterableIterator<Uint8Array> {
    // The server's INFO, read before the TLS upgrade, is waiting when the reader starts:
    // hand it on at once, so CONNECT (and a re-admission after a kick) is not one more
    // turn of a busy event loop away.
    let first = this.yields.length > 0;
    while (true) {
      if (this.yields.length === 0) await this.signal;
      if (!first) await nextTurn();
      first = false;
      const frames = this.yields;
      this.yields = [];
      if (frames.length > 0) yield frames.length === 1 ? frames[0]! : Buffer.concat(frames);
      // nats.js's own loop ends the same way: stop once closed, re-arm the signal when drained
      if (this.done) break;
      if (this.yields.length === 0) this.signal = deferred<void>();
    }
  }
}

/**
 * nats.js's `connect()` with CoalescingTransport. nats.js keeps one transport factory per
 * process and reads it on every (re)connect; its own `connect()` installs NodeTransport
 * each time it is called. A connection made here therefore reconnects with whichever of
 * the two was installed last — both speak the same protocol, only the read batching differs.
 */
export function connectCoalescing(opts: NodeConnectionOptions): Promise<NatsConnection> {
  if (hasWsProtocol(opts))
    return Promise.reject(new InvalidArgumentError("servers", "websocket URLs are not supported; use tls://host:port"));
  setTransportFactory({ factory: () => new CoalescingTransport(), dnsResolveFn: nodeResolveHost });
  return NatsConnectionImpl.connect(opts);
}
