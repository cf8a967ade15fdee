/**
 * A cluster node that stops on purpose hands its JetStream leaderships over first. A
 * group whose leader just vanishes waits out a random 4–9 s election timer (hard-coded
 * in nats-server) before anyone may write to it again; a leader that steps down hands
 * the group to a current follower at once. So a rolling restart costs a moment of
 * refused writes instead of an election per group.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import type { ServiceKeys } from "../auth/index.ts";
import { connectAsService } from "../auth/index.ts";
import type { Logger } from "../log/index.ts";
import { jetStreamLeaders } from "./cluster-ready.ts";

export interface HandoverOptions {
  serverName: string;
  monitorUrl: string;
  /** An APP-account connection: stream stepdowns are asked in the stream's account. */
  app: NatsConnection;
  servers: string[];
  caPem: string;
  keys: ServiceKeys;
  logger: Logger;
  /** The whole handover's bound; whatever is still led then goes by election. Default 3000 ms. */
  timeoutMs?: number;
}

export interface HandoverResult {
  /** Streams (KV buckets' and rooms') this node led and asked to step down. */
  streams: string[];
  meta: boolean;
  /** Streams still led by this node when the bound ran out. */
  stillLed: string[];
}

/** Asks every group this node leads to elect another leader, and waits (bounded) until they have. */
export async function handOverLeaderships(opts: HandoverOptions): Promise<HandoverResult> {
  const deadline = performance.now() + (opts.timeoutMs ?? 3000);
  const led = await ledBy(opts);
  if (!led) return { streams: [], meta: false, stillLed: [] };
  await Promise.allSettled(led.streams.map((name) => stepDown(opts.app, `$JS.API.STREAM.LEADER.STEPDOWN.${name}`)));
  if (led.meta) await stepDownMeta(opts);
  let stillLed = led.streams;
  while (stillLed.length > 0 && performance.now() < deadline) {
    await sleep(50);
    stillLed = (await ledBy(opts))?.streams ?? [];
  }
  opts.logger.info(
    { component: "bus", streams: led.streams.length, meta: led.meta, stillLed },
    "handed JetStream leaderships over before stopping",
  );
  return { streams: led.streams, meta: led.meta, stillLed };
}

async function ledBy(opts: HandoverOptions): Promise<{ streams: string[]; meta: boolean } | undefined> {
  try {
    const leaders = await jetStreamLeaders(opts.monitorUrl);
    const streams = Object.entries(leaders.streams).flatMap(([name, leader]) =>
      leader === opts.serverName ? [name] : [],
    );
    return { streams, meta: leaders.meta === opts.serverName };
  } catch {
    return undefined; // monitoring unreachable: nothing to hand over that we can see
  }
}

async function stepDown(nc: NatsConnection, subject: string): Promise<void> {
  await nc.request(subject, "", { timeout: 1000 });
}

/** The meta group's stepdown is a system-account request: a short-lived system connection asks it. */
async function stepDownMeta(opts: HandoverOptions): Promise<void> {
  let nc: NatsConnection | undefined;
  try {
    nc = await connectAsService({
      servers: opts.servers,
      caPem: opts.caPem,
      key: opts.keys.system,
      name: "unibus-handover",
    });
    await stepDown(nc, "$JS.API.META.LEADER.STEPDOWN");
  } catch (err) {
    opts.logger.warn({ component: "bus", err: (err as Error).message }, "meta leader stepdown failed");
  } finally {
    await nc?.close().catch(() => {});
  }
}
