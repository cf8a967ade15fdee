import path from "node:path";
import type { Test } from "tap";
import { resolveNatsServer } from "../../lib/nats/binary.ts";
import { type NatsProcessConfig, NatsServerProcess, type NatsServerProcessOptions } from "../../lib/nats/process.ts";
import { tempDir } from "./fs.ts";

/**
 * The nats-server binary every test runs: the project's own resolver (UNIBUS_NATS_SERVER,
 * the cache `npm install` filled, PATH), without reaching the network.
 */
export const NATS_SERVER = (await resolveNatsServer({ network: false })).path;

/** A one-node config on random client and monitoring ports of 127.0.0.1. */
export function natsConfig(extra: Partial<NatsProcessConfig> = {}): NatsProcessConfig {
  return { serverName: "n1", host: "127.0.0.1", port: -1, http: { host: "127.0.0.1", port: -1 }, ...extra };
}

/**
 * A nats-server process (not started) that teardown stops. Make `workDir` with
 * tempDir first: its removal is registered earlier, so it runs after the stop.
 */
export function natsServer(t: Test, opts: Partial<NatsServerProcessOptions> & { workDir: string }): NatsServerProcess {
  const s = new NatsServerProcess({ binary: NATS_SERVER, config: natsConfig(), ...opts });
  t.teardown(() => s.stop());
  return s;
}

/**
 * A started nats-server with JetStream, in a temp dir of its own, stopped in
 * teardown (before the dir goes). `extra` adds to or overrides its config.
 */
export async function startJetStream(t: Test, serverName: string, extra: Partial<NatsProcessConfig> = {}) {
  const dir = await tempDir(t);
  const server = new NatsServerProcess({
    binary: NATS_SERVER,
    workDir: dir,
    config: { serverName, host: "127.0.0.1", port: -1, jetstream: { storeDir: path.join(dir, "js") }, ...extra },
  });
  t.teardown(() => server.stop());
  const ports = await server.start();
  return { server, ports, url: `nats://127.0.0.1:${ports.nats}` };
}
