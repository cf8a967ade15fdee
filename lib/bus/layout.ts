import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { ServiceKeySet, ServiceKeys } from "../auth/index.ts";
import type { Logger } from "../log/index.ts";
import { armDirRemoval, type NatsClusterOptions, type NatsConfigOptions, type Watchdog } from "../nats/index.ts";

/**
 * The data dir to use: the given one (created 0700, never removed by us), or a fresh
 * temp dir that the caller owns and removes on stop — and that a guard removes should
 * this process die hard before it can (see armDirRemoval).
 */
export async function openDataDir(
  given: string | undefined,
  tempPrefix: string,
  logger?: Logger,
): Promise<{ dir: string; owned: boolean; guard?: Watchdog }> {
  if (given) {
    const dir = path.resolve(given);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    return { dir, owned: false };
  }
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), tempPrefix));
  return { dir, owned: true, guard: armDirRemoval(dir, logger ? { logger } : {}) };
}

/** Removes a temp dir of ours, its guard first (so the guard cannot outlive it). */
export async function removeOwnedDir(dir: string, guard: Watchdog | undefined): Promise<void> {
  await guard?.disarm();
  await fs.rm(dir, { recursive: true, force: true });
}

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
export function natsConfigFor(node: {
  serverName: string;
  host: string;
  port: number;
  monitoringPort: number;
  /** The websocket listener's port (browsers), on `host` with the same certificate; -1 = random. */
  websocketPort: number;
  layout: BusLayout;
  cert: { certFile: string; keyFile: string };
  caFile: string;
  keys: ServiceKeys;
  /** Routes to the other nodes (mutual TLS); absent on a single node. */
  cluster?: NatsClusterOptions;
  /** Seconds a client has to authenticate, the auth callout's answer included (nats-server default 2). */
  authTimeoutSeconds?: number;
  /** JetStream's file-store limit (`max_file_store`); the server's default when absent. */
  maxFileBytes?: number;
  /**
   * Per-connection limits for every client: nats-server (2.10 at least) does not apply a
   * callout-issued user JWT's own limits, so the server-wide settings enforce them.
   */
  connectionLimits?: { maxPayload: number; maxSubscriptions: number };
}): NatsConfigOptions {
  // During a service-key rotation both sets' users are let in, so either set connects.
  const sets = [node.keys, ...(node.keys.alternate ? [node.keys.alternate] : [])];
  return {
    serverName: node.serverName,
    host: node.host,
    port: node.port,
    http: { host: "127.0.0.1", port: node.monitoringPort },
    portsFileDir: node.layout.natsDir,
    tls: { certFile: node.cert.certFile, keyFile: node.cert.keyFile, caFile: node.caFile, timeout: 2 },
    // No authorization block of its own: browsers meet the same callout and permissions.
    websocket: {
      host: node.host,
      port: node.websocketPort,
      tls: { certFile: node.cert.certFile, keyFile: node.cert.keyFile, timeout: 2 },
    },
    accounts: {
      AUTH: { users: nkeyUsers(sets, "service") },
      APP: { jetstream: true, users: nkeyUsers(sets, "app") },
      SYS: { users: nkeyUsers(sets, "system") },
    },
    systemAccount: "SYS",
    // One issuer per server (nats-server takes one); during a key rotation the callout
    // holds both and signs with the one the asking server names.
    authCallout: {
      issuer: node.keys.issuer.publicKey,
      account: "AUTH",
      authUsers: sets.flatMap((k) => [k.service.publicKey, k.system.publicKey, k.app.publicKey]),
    },
    jetstream: { storeDir: node.layout.jetstreamDir, ...(node.maxFileBytes ? { maxFile: node.maxFileBytes } : {}) },
    ...(node.cluster ? { cluster: node.cluster } : {}),
    ...(node.authTimeoutSeconds ? { authTimeout: node.authTimeoutSeconds } : {}),
    ...(node.connectionLimits ?? {}),
  };
}

function nkeyUsers(sets: readonly ServiceKeySet[], role: "service" | "system" | "app"): { nkey: string }[] {
  return sets.map((k) => ({ nkey: k[role].publicKey }));
}
