import { once } from "node:events";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { connect, type Status } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { InvalidArgumentError, NatsStartError } from "../../lib/errors.ts";
import { NatsCrashedError } from "../../lib/nats/errors.ts";
import {
  isProcessAlive,
  type NatsExitInfo,
  type NatsProcessEvents,
  type NatsRestartedEvent,
  type NatsRestartingEvent,
  NatsServerProcess,
} from "../../lib/nats/process.ts";
import { tempDir } from "../helpers/fs.ts";
import { captureLogger } from "../helpers/log.ts";
import { natsConfig as config, NATS_SERVER, natsServer as server } from "../helpers/nats.ts";

/** The first argument of every event of one kind, in order. */
function record<K extends keyof NatsProcessEvents>(s: NatsServerProcess, event: K): NatsProcessEvents[K][0][] {
  const seen: NatsProcessEvents[K][0][] = [];
  const listener = (...args: NatsProcessEvents[K]) => seen.push(args[0]);
  s.on(event, listener as never); // EventEmitter's listener type is a conditional TypeScript cannot resolve for a generic K
  return seen;
}

function timers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
}

/** Holds a TCP port on 127.0.0.1 so nats-server cannot bind it. */
async function holdPort(t: Test, port: number): Promise<net.Server> {
  const holder = net.createServer();
  await new Promise<void>((resolve, reject) => {
    holder.once("error", reject);
    holder.listen({ port, host: "127.0.0.1" }, resolve);
  });
  t.teardown(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  return holder;
}

t.test("SIGKILL from outside: back on the same ports, and a reconnecting client works again", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, supervise: { initialDelayMs: 10 } });
  const ports = await s.start();
  const states = record(s, "state");
  const exits = record(s, "exit");
  const nc = await connect({ servers: `127.0.0.1:${ports.nats}`, reconnectTimeWait: 50, maxReconnectAttempts: -1 });
  t.teardown(() => nc.close());
  const sub = nc.subscribe("after.restart", { max: 1 });
  await nc.flush();
  const statuses = nc.status();
  const reconnected = (async () => {
    for await (const st of statuses) if (st.type === "reconnect") return st;
  })();

  const oldPid = s.pid as number;
  const restarting = once(s, "restarting") as Promise<[NatsRestartingEvent]>;
  const restarted = once(s, "restarted") as Promise<[NatsRestartedEvent]>;
  process.kill(oldPid, "SIGKILL");
  const [info] = await restarting;
  t.match(info, { attempt: 1, delayMs: 10, exit: { code: null, signal: "SIGKILL" } });
  t.type(info.exit.at, Date);
  const [back] = await restarted;
  t.equal(back.attempt, 1);
  t.same(back.ports, ports, "same client and monitoring ports");
  t.not(back.pid, oldPid, "a new process");
  t.equal(s.pid, back.pid);
  t.ok(isProcessAlive(back.pid));
  t.notOk(isProcessAlive(oldPid), "the old process is gone");
  t.notOk(
    await fs.access(path.join(dir, `${path.basename(NATS_SERVER)}_${oldPid}.ports`)).then(
      () => true,
      () => false,
    ),
    "the old ports file is removed",
  );
  t.equal(s.state, "running");
  t.equal(s.restarts, 1);
  t.match(s.lastExit, { code: null, signal: "SIGKILL" });
  t.ok(
    s.lastExit?.log.some((l) => l.includes("Server is ready")),
    "lastExit holds the crashed run's output",
  );
  t.same(states, ["restarting", "starting", "running"]);
  t.same(exits, [{ code: null, signal: "SIGKILL", expected: false }]);

  await reconnected;
  nc.publish("after.restart", "still here");
  for await (const m of sub) t.equal(m.string(), "still here", "pub/sub works after the restart");
});

t.test("the budget: killed more often than maxRestarts allows, it ends failed with NatsCrashedError", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, {
    workDir: dir,
    supervise: { initialDelayMs: 10, maxDelayMs: 25, maxRestarts: 3, windowMs: 600_000, healthyAfterMs: 600_000 },
  });
  await s.start();
  const restarting = record(s, "restarting");
  const failed = once(s, "failed") as Promise<[NatsCrashedError]>;
  const pids: number[] = [];
  for (let i = 0; i < 3; i++) {
    pids.push(s.pid as number, s.watchdogPid as number);
    const back = once(s, "restarted");
    process.kill(s.pid as number, "SIGKILL");
    await back;
  }
  pids.push(s.pid as number, s.watchdogPid as number);
  process.kill(s.pid as number, "SIGKILL");
  const [err] = await failed;

  t.type(err, NatsCrashedError);
  t.match(err, { code: "NATS_CRASHED", signal: "SIGKILL", exitCode: null, failures: 4 });
  t.type(err.log, Array);
  t.match(err.message, /killed by SIGKILL.*4 times within 600000 ms/);
  t.same(
    restarting.map((r) => [r.attempt, r.delayMs]),
    [
      [1, 10],
      [2, 20],
      [3, 25],
    ],
    "exponential backoff, capped at maxDelayMs",
  );
  t.equal(s.state, "failed");
  t.equal(s.restarts, 3);
  t.equal(s.pid, undefined);
  t.equal(pids.length, 8);
  t.same(
    pids.filter((p) => isProcessAlive(p)),
    [],
    "no server and no watchdog left",
  );
  await s.stop();
  t.equal(s.state, "failed", "stop() after giving up changes nothing");
  await s.start();
  t.equal(s.state, "running", "start() after giving up works, with a fresh budget");
});

t.test("a restart that ran healthy starts the backoff over", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, supervise: { initialDelayMs: 10, healthyAfterMs: 0 } });
  await s.start();
  const restarting = record(s, "restarting");
  for (let i = 0; i < 3; i++) {
    const back = once(s, "restarted");
    process.kill(s.pid as number, "SIGKILL");
    await back;
  }
  t.same(
    restarting.map((r) => [r.attempt, r.delayMs]),
    [
      [1, 10],
      [1, 10],
      [1, 10],
    ],
  );
  t.equal(s.restarts, 3);
});

t.test("a restart that cannot start (client port taken) counts and retries with backoff", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, supervise: { initialDelayMs: 20, healthyAfterMs: 600_000 } });
  const ports = await s.start();
  const restarting = record(s, "restarting");
  let holder: Promise<net.Server> | undefined;
  s.once("restarting", () => {
    holder = holdPort(t, ports.nats); // before the first attempt: the restart fails
  });
  s.on("restarting", (info) => {
    if (info.exit.startError) void holder?.then((h) => h.close()); // free it for a later attempt
  });
  const restarted = once(s, "restarted") as Promise<[NatsRestartedEvent]>;
  process.kill(s.pid as number, "SIGKILL");
  const [back] = await restarted;

  t.ok(restarting.length >= 2, `${restarting.length} restarting events`);
  const failure = restarting[1] as NatsRestartingEvent;
  t.type(failure.exit.startError, NatsStartError);
  t.equal((failure.exit.startError as NatsStartError).reason, "port_in_use");
  t.equal(failure.exit.code, 1, "the attempt's own exit");
  t.ok(
    failure.exit.log.some((l) => l.includes("address already in use")),
    "the failed attempt's output",
  );
  t.same(
    restarting.map((r) => r.attempt),
    restarting.map((_, i) => i + 1),
  );
  t.same(
    restarting.map((r) => r.delayMs),
    restarting.map((_, i) => Math.min(20 * 2 ** i, 3000)),
    "each failed attempt doubles the delay",
  );
  t.equal(back.attempt, restarting.length);
  t.same(back.ports, ports, "in the end back on the same port");
  t.equal(s.restarts, restarting.length);
  t.equal(s.state, "running");
});

t.test("a restart that never starts spends the budget: failed, with the start error as cause", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, supervise: { initialDelayMs: 10, maxRestarts: 2 } });
  const ports = await s.start();
  let holder: Promise<net.Server> | undefined;
  s.once("restarting", () => {
    holder = holdPort(t, ports.nats);
  });
  const failed = once(s, "failed") as Promise<[NatsCrashedError]>;
  const exits = record(s, "exit");
  process.kill(s.pid as number, "SIGKILL");
  const [err] = await failed;
  t.type(err, NatsCrashedError);
  t.equal(err.failures, 3, "the crash and two failed restarts");
  t.type(err.cause, NatsStartError);
  t.equal((err.cause as NatsStartError).reason, "port_in_use");
  t.match(err.message, /could not be restarted/);
  t.equal(s.state, "failed");
  t.equal(s.restarts, 2);
  t.equal(s.pid, undefined);
  t.equal(exits.length, 3, "the crashed server and the two attempts all exited");

  const h = await holder;
  await new Promise((resolve) => h?.close(resolve));
  t.same(await s.start(), ports, "a start by the owner after the port is free");
});

t.test("stop() and kill() during the backoff cancel the restart: no timer, no child, stopped", async (t) => {
  const dir = await tempDir(t);
  for (const how of ["stop", "kill"] as const) {
    const s = server(t, {
      workDir: path.join(dir, how),
      supervise: { initialDelayMs: 600_000, maxDelayMs: 600_000 },
    });
    await s.start();
    const before = timers();
    const pid = s.pid as number;
    const watchdog = s.watchdogPid as number;
    const restarting = once(s, "restarting");
    const states = record(s, "state");
    process.kill(pid, "SIGKILL");
    await restarting;
    t.equal(s.state, "restarting");
    t.equal(timers(), before + 1, `${how}: the backoff timer is pending`);
    await s[how]();
    t.equal(s.state, "stopped", `${how}: stopped`);
    t.equal(timers(), before, `${how}: no timer left`);
    t.same(states, ["restarting", "stopping", "stopped"]);
    t.notOk(isProcessAlive(pid) || isProcessAlive(watchdog), `${how}: no process left`);
    t.equal(s.restarts, 0);
  }
});

t.test("restart() during the backoff restarts at once, on the same ports", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, supervise: { initialDelayMs: 600_000, maxDelayMs: 600_000 } });
  const ports = await s.start();
  const restarting = once(s, "restarting");
  process.kill(s.pid as number, "SIGKILL");
  await restarting;
  t.same(await s.restart(), ports);
  t.equal(s.state, "running");
  t.equal(s.restarts, 0, "a restart by the owner is not a supervised one");
});

t.test("stop() from a listener of the crash's state change: no restarting event, stopped", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, supervise: { initialDelayMs: 10 } });
  await s.start();
  const restarting = record(s, "restarting");
  const stopped = new Promise<void>((resolve) => {
    s.on("state", (st) => {
      if (st === "restarting") void s.stop();
      if (st === "stopped") resolve();
    });
  });
  process.kill(s.pid as number, "SIGKILL");
  await stopped;
  t.equal(s.state, "stopped");
  t.same(restarting, [], "the crash's cleanup saw the stop and did not schedule a restart");
  t.equal(s.restarts, 0);
});

t.test("SIGSTOP then SIGCONT: the server did not exit, so nothing restarts", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, supervise: { initialDelayMs: 10 } });
  const ports = await s.start();
  const exits = record(s, "exit");
  const states = record(s, "state");
  const pid = s.pid as number;
  process.kill(pid, "SIGSTOP");
  for (;;) {
    const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8");
    if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("T")) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  process.kill(pid, "SIGCONT");
  const nc = await connect({ servers: `127.0.0.1:${ports.nats}` });
  await nc.flush();
  await nc.close();
  t.equal(s.pid, pid, "the same process");
  t.equal(s.state, "running");
  t.same(exits, []);
  t.same(states, []);
  t.equal(s.restarts, 0);
});

t.test("a supervised server stopped, killed or restarted by its owner is not restarted", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, supervise: { initialDelayMs: 10 } });
  const restarting = record(s, "restarting");
  const exits = record(s, "exit");
  await s.start();
  await s.stop();
  t.equal(s.state, "stopped");
  await s.start();
  await s.kill();
  t.equal(s.state, "stopped");
  await s.start();
  await s.restart();
  t.equal(s.state, "running");
  t.same(restarting, []);
  t.equal(exits.length, 3);
  t.ok(
    exits.every((e) => e.expected),
    "every exit was expected",
  );
  t.equal(s.restarts, 0);
  t.equal(s.lastExit, undefined);
});

t.test("without supervise a crash is final: failed event with NatsCrashedError", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir });
  await s.start();
  const failed = once(s, "failed") as Promise<[NatsCrashedError]>;
  process.kill(s.pid as number, "SIGKILL");
  const [err] = await failed;
  t.type(err, NatsCrashedError);
  t.match(err, { code: "NATS_CRASHED", signal: "SIGKILL", failures: 1 });
  t.match(err.message, /not supervised/);
  t.equal(s.state, "failed");
  t.equal(s.restarts, 0);
  t.match(s.lastExit, { signal: "SIGKILL" });
});

t.test("supervise and stop options are validated", async (t) => {
  const dir = await tempDir(t);
  const bad: unknown[] = [
    "yes",
    { initialDelayMs: 0 },
    { maxDelayMs: 1.5 },
    { maxRestarts: -1 },
    { windowMs: Number.NaN },
    { healthyAfterMs: -1 },
    { initialDelayMs: 100, maxDelayMs: 50 },
  ];
  for (const supervise of bad) {
    t.throws(
      () => new NatsServerProcess({ binary: NATS_SERVER, workDir: dir, config: config(), supervise } as never),
      InvalidArgumentError,
      JSON.stringify(supervise),
    );
  }
  for (const supervise of [true, false, { maxRestarts: 0, healthyAfterMs: 0 }]) {
    t.doesNotThrow(() => new NatsServerProcess({ binary: NATS_SERVER, workDir: dir, config: config(), supervise }));
  }
  const s = server(t, { workDir: dir });
  await t.rejects(s.stop({ lameDuck: true, lameDuckMs: 0 }), InvalidArgumentError);
});

t.test("lame-duck stop: clients are told and dropped, then the server exits by itself", async (t) => {
  const dir = await tempDir(t);
  const { logger, lines: entries } = captureLogger("debug");
  const s = server(t, {
    workDir: dir,
    logger,
    supervise: true,
    // nats-server 2.10 wants a duration of at least 30 s; the grace period is the wait before closing clients.
    config: config({ extra: { lame_duck_duration: "30s", lame_duck_grace_period: "10ms" } }),
  });
  const ports = await s.start();
  const pid = s.pid as number;
  const nc = await connect({ servers: `127.0.0.1:${ports.nats}`, reconnect: false });
  await nc.flush();
  const seen: Status["type"][] = [];
  const watching = (async () => {
    for await (const st of nc.status()) seen.push(st.type);
  })();
  const exited = once(s, "exit") as Promise<[NatsExitInfo]>;
  const restarting = record(s, "restarting");

  await s.stop({ lameDuck: true, lameDuckMs: 60_000 });
  t.equal(s.state, "stopped");
  t.same((await exited)[0], { code: 0, signal: null, expected: true }, "it exited on its own");
  t.notOk(isProcessAlive(pid));
  t.ok(
    s.recentLog().some((l) => l.includes("Entering lame duck mode")),
    "the server entered lame-duck mode",
  );
  t.notOk(
    entries.some((e) => /escalating/.test(String(e.msg))),
    "no fallback to a shutdown signal",
  );
  const closed = await nc.closed();
  await watching;
  t.ok(closed === undefined || closed instanceof Error, "the client's connection ended");
  t.ok(seen.includes("ldm"), `nats.js reported lame-duck mode (${seen.join(", ")})`);
  t.same(restarting, [], "a lame-duck exit is not a crash");
});

t.test("lame-duck stop falls back to a shutdown when the server is not gone within lameDuckMs", async (t) => {
  const dir = await tempDir(t);
  const { logger, lines: entries } = captureLogger("debug");
  // The default grace period (10 s) keeps a connected client, and so the server, past lameDuckMs.
  const s = server(t, { workDir: dir, logger });
  const ports = await s.start();
  const pid = s.pid as number;
  const nc = await connect({ servers: `127.0.0.1:${ports.nats}`, reconnect: false });
  t.teardown(() => nc.close());
  await nc.flush();
  const exited = once(s, "exit") as Promise<[NatsExitInfo]>;
  await s.stop({ lameDuck: true, lameDuckMs: 200 });
  t.equal(s.state, "stopped");
  t.notOk(isProcessAlive(pid));
  t.ok(
    entries.some((e) => e.level === "warn" && /within 200 ms of SIGUSR2/.test(String(e.msg))),
    "the fallback is logged",
  );
  // nats-server ignores SIGTERM in lame-duck mode; the fallback must be a signal it obeys.
  t.same((await exited)[0], { code: 0, signal: null, expected: true }, "shut down, not SIGKILLed");
  await nc.closed();
});

t.test("lame-duck stop of a server without clients exits at once", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir });
  await s.start();
  const exited = once(s, "exit") as Promise<[NatsExitInfo]>;
  await s.stop({ lameDuck: true });
  t.same((await exited)[0], { code: 0, signal: null, expected: true });
  await s.stop({ lameDuck: true });
  t.equal(s.state, "stopped", "idempotent");
});
