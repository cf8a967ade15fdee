// Steady traffic against a cluster while nodes are restarted or killed: publishes into a
// persisted room (acknowledged by JetStream), control-plane writes (user adds, each node
// asked in turn until one accepts) and, optionally, logins through the callout.
import { setTimeout as sleep } from "node:timers/promises";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { Test } from "tap";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import type { UnibusClient } from "../../lib/client/connect.ts";
import type { ControlClient } from "../../lib/client/control.ts";
import { encodeFrame } from "../../lib/crypto/frame.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";

/**
 * The longest stretch in which every attempt of one kind was refused, and the longest
 * time between two successes (an attempt that hangs instead of failing shows there).
 */
export class RefusalWindow {
  #since: number | undefined;
  #lastOk: number | undefined;
  longestMs = 0;
  longestGapMs = 0;
  refused = 0;
  /** How many refusals gave each reason (the first line of the error). */
  readonly reasons = new Map<string, number>();
  ok(): void {
    const now = performance.now();
    if (this.#since !== undefined) this.longestMs = Math.max(this.longestMs, now - this.#since);
    if (this.#lastOk !== undefined) this.longestGapMs = Math.max(this.longestGapMs, now - this.#lastOk);
    this.#since = undefined;
    this.#lastOk = now;
  }
  /** The load ended: a stretch still refused at the end counts too. */
  end(): void {
    if (this.#since !== undefined) this.longestMs = Math.max(this.longestMs, performance.now() - this.#since);
  }
  fail(reason = "no reason given"): void {
    this.reasons.set(reason, (this.reasons.get(reason) ?? 0) + 1);
    this.refused++;
    this.#since ??= performance.now();
  }
}

export interface LoadOptions {
  client: UnibusClient;
  /** A persisted room of `client`'s. */
  room: { id: string; subject: string };
  sender: Identity;
  /** One control client per node. */
  controls: ControlClient[];
  /**
   * When given: logins (with `sender`) through the nodes `nodes()` names, in turn — each a
   * connect through the callout plus a room listing through the same node's control plane.
   */
  logins?: { natsUrls: string[]; ca: string; nodes: () => number[] };
}

export interface Load {
  /** Texts whose publish JetStream acknowledged. */
  acked: string[];
  /** signPubs whose user add a node acknowledged. */
  written: string[];
  publishes: RefusalWindow;
  writes: RefusalWindow;
  logins: RefusalWindow;
  loginsOk: number;
  stop(): Promise<void>;
}

/** Starts the traffic; `stop()` ends it and waits for the last attempts. */
export function steadyLoad(opts: LoadOptions): Load {
  let running = true;
  const load = {
    acked: [] as string[],
    written: [] as string[],
    publishes: new RefusalWindow(),
    writes: new RefusalWindow(),
    logins: new RefusalWindow(),
    loginsOk: 0,
  };
  const loops = [
    publishLoop(opts, load, () => running),
    writeLoop(opts, load, () => running),
    ...(opts.logins ? [loginLoop(opts, load, () => running)] : []),
  ];
  return Object.assign(load, {
    stop: async () => {
      running = false;
      await Promise.all(loops);
      for (const w of [load.publishes, load.writes, load.logins]) w.end();
    },
  });
}

async function publishLoop(opts: LoadOptions, load: Pick<Load, "acked" | "publishes">, running: () => boolean) {
  for (let i = 0; running(); i++) {
    const text = `m-${i}`;
    const frame = encodeFrame({ roomId: opts.room.id, epoch: 0, sender: opts.sender, plaintext: text, sign: false });
    try {
      // A request on a persisted room's subject is answered by JetStream's PubAck once stored.
      const ack = await opts.client.nc.request(opts.room.subject, frame, { timeout: 2000 });
      if ((ack.json() as { seq?: number }).seq) {
        load.acked.push(text);
        load.publishes.ok();
      } else load.publishes.fail("an answer without a sequence");
    } catch (err) {
      load.publishes.fail(reasonOf(err));
    }
    await sleep(20);
  }
}

async function writeLoop(opts: LoadOptions, load: Pick<Load, "written" | "writes">, running: () => boolean) {
  const { controls } = opts;
  for (let i = 0; running(); i++) {
    const id = createIdentity();
    let done = false;
    const why: string[] = [];
    for (let n = 0; n < controls.length && !done; n++) {
      try {
        await controls[(i + n) % controls.length]!.request("POST", "/v1/users", {
          signPub: id.signPub,
          // Unique across loads: a second load on the same bus must not collide with the first.
          handle: `u${i}-${id.signPub.slice(0, 8)}`,
        });
        done = true;
      } catch (err) {
        why.push(reasonOf(err)); // this node refused: the next one is asked
      }
    }
    if (done) {
      load.written.push(id.signPub);
      load.writes.ok();
    } else load.writes.fail(why.join(" | "));
    await sleep(50);
  }
}

async function loginLoop(opts: LoadOptions, load: Pick<Load, "logins" | "loginsOk">, running: () => boolean) {
  const { natsUrls, ca, nodes } = opts.logins!;
  const id = opts.sender;
  for (let i = 0; running(); i++) {
    const live = nodes();
    const node = live[i % live.length]!;
    try {
      const nc = await natsConnect({
        servers: natsUrls[node]!,
        tls: { ca },
        authenticator: nkeySigner(id.nkey, (d) => id.sign(d)),
        reconnect: false,
        timeout: 15_000,
      });
      await nc.close();
      await opts.controls[node]!.request("GET", `/v1/users/${id.signPub}/rooms`);
      load.loginsOk++;
      load.logins.ok();
    } catch (err) {
      load.logins.fail(reasonOf(err));
    }
    await sleep(100);
  }
}

function reasonOf(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return `${e.code ? `${e.code}: ` : ""}${String(e.message ?? err).split("\n")[0]}`;
}

/**
 * After a load: every publish it saw acknowledged is in `room`'s history, and every user
 * add a node acknowledged is in `store` (one node's view, read after the load ended).
 */
export async function assertNothingLost(
  t: Test,
  load: Pick<Load, "acked" | "written">,
  room: { history(): AsyncIterable<{ data: Uint8Array }> },
  store: { getUser(signPub: string): Promise<unknown> },
): Promise<void> {
  const stored = new Set<string>();
  for await (const m of room.history()) stored.add(new TextDecoder().decode(m.data));
  t.same(
    load.acked.filter((x) => !stored.has(x)),
    [],
    `every acknowledged message is in the history (${load.acked.length})`,
  );
  const missing: string[] = [];
  for (const signPub of load.written) {
    const found = await store.getUser(signPub).then(
      () => true,
      () => false,
    );
    if (!found) missing.push(signPub);
  }
  t.same(missing, [], `every acknowledged write is in the store (${load.written.length})`);
}
