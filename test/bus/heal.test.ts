// The bus heals itself and its health tells the truth: nats-server killed (as the OOM
// killer would) comes back on the same port, clients and the bus's own connections
// resume, persisted history is intact, and /healthz says 503 — naming the part — for
// exactly as long as something is down. Past the restart budget the bus fails, loudly.
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import t, { type Test } from "tap";
import { Agent, request } from "undici";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { NatsCrashedError } from "../../lib/nats/index.ts";
import { isProcessAlive } from "../../lib/nats/process.ts";
import { client, member, testBus } from "../helpers/bus.ts";
import { waitFor } from "../helpers/wait.ts";

interface Health {
  status: number;
  body: {
    status: string;
    parts?: Record<string, string>;
    down?: string[];
    state?: string;
    node?: string;
    nats?: { restarts: number; lastExit?: { at: string; reason: string } };
  };
}

async function health(bus: Unibus, dispatcher: Agent, probe = "/healthz"): Promise<Health> {
  const res = await request(`${bus.controlUrl}${probe}`, { dispatcher });
  return { status: res.statusCode, body: (await res.body.json()) as Health["body"] };
}

/** Polls /healthz until `want` holds (bounded by the test's timeout, not by a threshold). */
async function healthUntil(bus: Unibus, dispatcher: Agent, want: (h: Health) => boolean): Promise<Health> {
  for (;;) {
    const h = await health(bus, dispatcher);
    if (want(h)) return h;
    await sleep(20);
  }
}

function trusting(t: Test, bus: Unibus): Agent {
  const agent = new Agent({ connect: { ca: bus.caPem } });
  t.teardown(() => agent.close());
  return agent;
}

t.test(
  "SIGKILL of nats-server: /healthz goes 503 naming nats, the server comes back, everything resumes",
  async (t) => {
    const bus = await testBus(t);
    const agent = trusting(t, bus);
    const healthy = await health(bus, agent);
    t.equal(healthy.status, 200, "healthy at first");
    t.match(
      healthy.body.parts,
      { nats: "up", callout: "up", kicker: "up", streams: "up", store: "up" },
      "every part is named",
    );
    t.match(healthy.body, { node: "unibus-1", nats: { restarts: 0 } }, "no restart yet");
    t.notOk(healthy.body.nats?.lastExit, "and no unexpected exit");
    t.same(await health(bus, agent, "/readyz"), healthy, "/readyz answers what /healthz does");

    const alice = await member(bus, "alice");
    const c = await client(t, bus, alice);
    const room = await c.createRoom({ encrypt: true, persist: true });
    await room.publish(new TextEncoder().encode("before"));
    await room.flush(); // on the server before anyone subscribes: the subscriber must see only what follows
    // Stored, and on its way to disk: JetStream's file store writes a stored message out
    // through a coalescing flusher within milliseconds; a SIGKILL inside that window loses
    // it on any nats-server, which is not what this test is about.
    await waitFor("the first message to be stored", async () => {
      for await (const m of room.history()) return new TextDecoder().decode(m.data) === "before";
      return false;
    });
    await sleep(500);
    const received: string[] = [];
    const sub = room.subscribe();
    void (async () => {
      for await (const m of sub) received.push(new TextDecoder().decode(m.data));
    })();
    await c.nc.flush();

    const pid = bus.natsPid!;
    const restarting = once(bus, "nats-restarting");
    const restarted = once(bus, "nats-restarted");
    process.kill(pid, "SIGKILL");
    const [event] = await restarting;
    t.equal(event.exit.signal, "SIGKILL", "the restart names the signal");
    const down = await healthUntil(bus, agent, (h) => h.status === 503);
    t.match(down.body, { status: "unavailable" }, "503 while nats-server is down");
    t.ok(down.body.down?.length, `the body names what is down (${down.body.down})`);
    // Every service connection loses the server with it, the callout's and the kicker's too.
    const links = await healthUntil(bus, agent, (h) => ["callout", "kicker"].every((p) => h.body.down?.includes(p)));
    t.match(links.body.parts, { callout: "down", kicker: "down" }, "the service connections are named down");
    const live = await health(bus, agent, "/livez");
    t.match(live, { status: 200, body: { status: "ok", state: "running" } }, "/livez: a healing bus is alive");
    await restarted;
    t.not(bus.natsPid, pid, "a new nats-server runs");
    t.notOk(isProcessAlive(pid), "the old one is gone");
    const back = await healthUntil(bus, agent, (h) => h.status === 200);
    t.equal(bus.state, "running");
    t.match(back.body.parts, { callout: "up", kicker: "up" }, "the service connections are back");
    t.match(
      back.body.nats,
      { restarts: 1, lastExit: { reason: "killed by SIGKILL", at: /^\d{4}-\d\d-\d\dT/ } },
      "the restart and how the server ended are reported",
    );

    // The subscribed client is back on its own and receives; history kept what was stored.
    for (let i = 0; received.length === 0; i++) {
      await room.publish(new TextEncoder().encode(`after-${i}`));
      await sleep(50);
    }
    t.match(received[0], /^after-/, "an already-subscribed client receives after the restart");
    const history = [];
    for await (const m of room.history()) history.push(new TextDecoder().decode(m.data));
    t.equal(history[0], "before", "persisted history is intact");

    const metrics = await request(`${bus.controlUrl}/metrics`, { dispatcher: agent });
    const exposition = await metrics.body.text();
    t.match(exposition, /unibus_nats_restarts_total\{node="unibus-1"\} 1/, "the restart is counted");
    t.match(
      exposition,
      /unibus_nats_last_exit_timestamp_seconds\{node="unibus-1",reason="killed by SIGKILL"\} \d+/,
      "the last exit is a metric",
    );
    t.match(exposition, /unibus_part_up\{part="callout"\} 1/, "the callout's up gauge");
  },
);

t.test("SIGSTOP of nats-server: 503 while it is frozen, 200 after SIGCONT, no restart", async (t) => {
  const bus = await testBus(t);
  const agent = trusting(t, bus);
  const pid = bus.natsPid!;
  let restarts = 0;
  bus.on("nats-restarting", () => restarts++);
  process.kill(pid, "SIGSTOP");
  t.teardown(() => {
    if (isProcessAlive(pid)) process.kill(pid, "SIGCONT");
  });
  const frozen = await healthUntil(bus, agent, (h) => h.status === 503);
  t.ok(frozen.body.down?.includes("nats"), "nats is named as down");
  t.equal((await health(bus, agent, "/readyz")).status, 503, "not ready while frozen");
  t.equal(
    (await health(bus, agent, "/livez")).status,
    200,
    "but alive: a frozen server is no reason to restart the bus",
  );
  process.kill(pid, "SIGCONT");
  await healthUntil(bus, agent, (h) => h.status === 200);
  t.equal(restarts, 0, "a frozen server is not restarted");
  t.equal(bus.natsPid, pid, "the same server runs");
});

t.test(
  "past the restart budget the bus fails: a typed error, state failed, 503, and stop() still cleans up",
  async (t) => {
    const bus = await testBus(t, { supervise: { maxRestarts: 1, windowMs: 60_000, initialDelayMs: 20 } });
    const agent = trusting(t, bus);
    const pids: number[] = [];
    const failed = once(bus, "failed");
    let errors = 0;
    bus.on("error", () => errors++);
    pids.push(bus.natsPid!);
    process.kill(bus.natsPid!, "SIGKILL");
    await once(bus, "nats-restarted");
    pids.push(bus.natsPid!);
    process.kill(bus.natsPid!, "SIGKILL");
    const [err] = await failed;
    t.ok(err instanceof NatsCrashedError, "a NatsCrashedError");
    t.equal((err as NatsCrashedError).code, "NATS_CRASHED");
    t.match((err as Error).message, /restart budget/, "the message says why it stays down");
    t.equal(errors, 1, "also emitted as 'error' to a listener");
    t.equal(bus.state, "failed");
    const h = await health(bus, agent);
    t.equal(h.status, 503, "a failed bus is unhealthy");
    t.match(h.body.nats, { restarts: 1, lastExit: { reason: "killed by SIGKILL" } }, "the last end is named");
    const live = await health(bus, agent, "/livez");
    t.match(
      live,
      { status: 503, body: { status: "unavailable", state: "failed" } },
      "/livez: a failed bus is not alive",
    );
    const head = await request(`${bus.controlUrl}/livez`, { method: "HEAD", dispatcher: agent });
    await head.body.dump();
    t.equal(head.statusCode, 503, "HEAD /livez says the same without a body");
    const post = await request(`${bus.controlUrl}/livez`, { method: "POST", dispatcher: agent });
    await post.body.dump();
    t.not(post.statusCode, 200, `POST /livez is no probe (${post.statusCode})`);
    await bus.stop();
    t.equal(bus.state, "stopped");
    for (const pid of pids) t.notOk(isProcessAlive(pid), `nats-server ${pid} is gone`);
  },
);

t.test("a bus without an 'error' listener that fails does not throw into its host", async (t) => {
  const bus = await testBus(t, { supervise: { maxRestarts: 0, windowMs: 60_000 } });
  const failed = once(bus, "failed");
  process.kill(bus.natsPid!, "SIGKILL");
  await failed;
  t.equal(bus.listenerCount("error"), 0);
  t.equal(bus.state, "failed", "failed, and the test process is still here");
});

t.test("supervise: false keeps the old behaviour: no restart, the bus fails at the first crash", async (t) => {
  const bus = await testBus(t, { supervise: false });
  const failed = once(bus, "failed");
  process.kill(bus.natsPid!, "SIGKILL");
  const [err] = await failed;
  t.match((err as Error).message, /not supervised/);
  t.equal(bus.state, "failed");
});
