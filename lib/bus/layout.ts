import path from "node:path";
import type { ServiceKeys } from "../auth/service-keys.ts";
import type { NatsClusterOptions } from "../nats/config.ts"; // cluster
import type { NatsConfigOptions } from "../nats/index.ts";

/** Where each part of a bus lives inside its data dir. */
export function busLayout(dataDir: string, serverName: string) {
  return {
    dataDir,
    tlsDir: path.join(dataDir, "tls"),
    storeFile: path.join(dataDir, "store.db"),
    natsDir: path.join(dataDir, "nats", serverName),
    jetstreamDir: path.join(dataDir, "jetstream", serverName),
  };
}

export type BusLayout = ReturnType<typeof busLayout>;

/**
 * The nats-server configuration of a node: TLS on the client port, three accounts
 * (AUTH holds the callout service, APP every bus user plus the bus' own service user
 * that manages room streams, SYS the system user that can kick connections) and the
 * auth callout in front of everyone else.
 */
export function natsConfigFor(o: {
  serverName: string;
  host: string;
  port: number;
  monitoringPort: number;
  layout: BusLayout;
  cert: { certFile: string; keyFile: string };
  caFile: string;
  keys: ServiceKeys;
  /** cluster: routes to the other nodes (mutual TLS); absent on a single node. */
  cluster?: NatsClusterOptions;
  /** Seconds a client has to authenticate, the auth callout's answer included (nats-server default 2). */
  authTimeoutSeconds?: number;
}): NatsConfigOptions {
  return {
    serverName: o.serverName,
    host: o.host,
    port: o.port,
    http: { host: "127.0.0.1", port: o.monitoringPort },
    portsFileDir: o.layout.natsDir,
    tls: { certFile: o.cert.certFile, keyFile: o.cert.keyFile, caFile: o.caFile, timeout: 2 },
    accounts: {
      AUTH: { users: [{ nkey: o.keys.service.publicKey }] },
      APP: { jetstream: true, users: [{ nkey: o.keys.app.publicKey }] },
      SYS: { users: [{ nkey: o.keys.system.publicKey }] },
    },
    systemAccount: "SYS",
    authCallout: {
      issuer: o.keys.issuer.publicKey,
      account: "AUTH",
      authUsers: [o.keys.service.publicKey, o.keys.system.publicKey, o.keys.app.publicKey],
    },
    jetstream: { storeDir: o.layout.jetstreamDir },
    ...(o.cluster ? { cluster: o.cluster } : {}), // cluster
    ...(o.authTimeoutSeconds ? { authTimeout: o.authTimeoutSeconds } : {}),
  };
}
