import { resolveNatsServer } from "../../lib/nats/binary.ts";

/**
 * The nats-server binary every test runs: the project's own resolver (UNIBUS_NATS_SERVER,
 * the cache `npm install` filled, PATH), without reaching the network.
 */
export const NATS_SERVER = (await resolveNatsServer({ network: false })).path;
