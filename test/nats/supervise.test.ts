import { once } from "node:events";
import { Writable } from "node:stream";
import { connect, type Status } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { InvalidArgumentError } from "../../lib/errors.ts";
import { createLogger } from "../../lib/log/index.ts";
import {
  isProcessAlive,
  type NatsExitInfo,
  type NatsProcessConfig,
  NatsServerProcess,
  type NatsServerProcessOptions,
} from "../../lib/nats/process.ts";
import { tempDir } from "../helpers/fs.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

function config(extra: Partial<NatsProcessConfig> = {}): NatsProcessConfig {
  return { serverName: "n1", host: "127.0.0.1", port: -1, http: { host: "127.0.0.1", port: -1 }, ...extra };
}

/** A server whose teardown stops it (registered after the temp dir's, so it runs first). */
function server(t: Test, opts: Partial<NatsServerProcessOptions> & { workDir: string }): NatsServerProcess {
  const s = new NatsServerProcess({ binary: NATS_SERVER, config: config(), ...opts });
  t.teardown(() => s.stop());
  return s;
}

function captureLog() {
  const entries: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split("\n")) if (line) entries.push(JSON.parse(line));
      cb();
    },
  });
  return { logger: createLogger({ level: "debug", destination }), entries };
}

t.test("lame-duck stop: clients are told and dropped, then the server exits by itself", async (t) => {
  const dir = await tempDir(t);
  const { logger, entries } = captureLog();
  const s = server(t, {
    workDir: dir,
    logger,
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
});

t.test("lame-duck stop falls back to a shutdown when the server is not gone within lameDuckMs", async (t) => {
  const dir = await tempDir(t);
  const { logger, entries } = captureLog();
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
  await t.rejects(s.stop({ lameDuck: true, lameDuckMs: 0 }), InvalidArgumentError, "lameDuckMs is checked");
});
