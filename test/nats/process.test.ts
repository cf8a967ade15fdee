import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import t from "tap";
import { NatsBinaryError, NatsStartError, StateError } from "../../lib/errors.ts";
import { isProcessAlive, type NatsProcessConfig, type NatsProcessState } from "../../lib/nats/process.ts";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../../lib/tls/index.ts";
import { tempDir } from "../helpers/fs.ts";
import { captureLogger } from "../helpers/log.ts";
import { natsConfig as config, NATS_SERVER, natsServer as server } from "../helpers/nats.ts";
import { waitFor } from "../helpers/wait.ts";

const NATS = NATS_SERVER;

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/** A stand-in "binary": a shell script, for start failures nats-server cannot be made to produce. */
async function fakeBinary(dir: string, body: string): Promise<string> {
  const file = path.join(dir, "fake-nats-server");
  await fs.writeFile(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return file;
}

t.test("start: ports learned, ready, clients pub/sub; stop: gone, idempotent", async (t) => {
  const dir = await tempDir(t);
  const { logger, lines: entries } = captureLogger("debug");
  const s = server(t, { workDir: dir, logger });
  const states: NatsProcessState[] = [];
  s.on("state", (st) => states.push(st));
  t.equal(s.state, "new");
  t.equal(s.pid, undefined);

  const ports = await s.start();
  t.equal(s.state, "running");
  t.ok(ports.nats > 0 && ports.monitoring !== undefined, `ports ${JSON.stringify(ports)}`);
  t.same(s.ports, ports);
  t.equal(ports.cluster, undefined);
  const pid = s.pid as number;
  t.ok(isProcessAlive(pid), "server process alive");
  t.equal((await fs.stat(s.configFile)).mode & 0o777, 0o600, "config file is 0600");
  t.equal(path.dirname(s.configFile), dir);
  const portsFile = path.join(dir, `${path.basename(NATS)}_${pid}.ports`);
  t.ok(await exists(portsFile), "ports file in workDir");

  const health = await fetch(`http://127.0.0.1:${ports.monitoring}/healthz`);
  t.equal(health.status, 200);

  const nc = await connect({ servers: `127.0.0.1:${ports.nats}` });
  const sub = nc.subscribe("greet", { max: 1 });
  nc.publish("greet", "hello");
  for await (const m of sub) t.equal(m.string(), "hello");
  await nc.close();

  t.ok(
    entries.some((e) => e.component === "nats" && e.node === "n1" && /Server is ready/.test(String(e.msg))),
    "server output re-emitted to the logger with component and node",
  );
  t.ok(
    s.recentLog().some((l) => l.includes("Server is ready")),
    "recentLog holds the output",
  );

  await s.stop();
  t.equal(s.state, "stopped");
  t.notOk(isProcessAlive(pid), "server process gone");
  t.equal(s.pid, undefined);
  t.equal(s.ports, undefined);
  t.notOk(await exists(portsFile), "ports file removed");
  await s.stop();
  t.equal(s.state, "stopped", "second stop is fine");
  t.same(states, ["starting", "running", "stopping", "stopped"]);
});

t.test("server warnings and errors reach the logger at warn and error", async (t) => {
  const dir = await tempDir(t);
  const { logger, lines: entries } = captureLogger("debug");
  const s = server(t, { workDir: dir, logger, config: config({ maxPayload: 16 * 1024 * 1024 }) });
  await s.start();
  t.ok(
    entries.some((e) => e.level === "warn" && e.component === "nats" && /Maximum payloads over/.test(String(e.msg))),
    "[WRN] becomes warn, without the pid/time/level prefix",
  );
  const bad = server(t, { workDir: path.join(dir, "bad"), logger, config: config({ extra: { bogus_key: 1 } }) });
  await t.rejects(bad.start(), NatsStartError);
  t.ok(
    entries.some((e) => e.level === "error" && /unknown field/.test(String(e.msg))),
    "config errors become error",
  );
});

t.test("restart comes back on the same ports; kill() then restart too", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir });
  const first = await s.start();
  const firstPid = s.pid as number;
  const second = await s.restart();
  t.same(second, first, "same client and monitoring ports");
  t.not(s.pid, firstPid, "a new process");
  t.notOk(isProcessAlive(firstPid));

  const pid = s.pid as number;
  await s.kill();
  t.equal(s.state, "stopped");
  t.notOk(isProcessAlive(pid), "killed");
  t.notOk(await exists(path.join(dir, `${path.basename(NATS)}_${pid}.ports`)), "stale ports file removed");
  t.same(await s.restart(), first);
  const nc = await connect({ servers: `127.0.0.1:${first.nats}` });
  await nc.flush();
  await nc.close();
});

t.test("two-pass cluster: learn cluster ports, setConfig routes, restart on the same ports", async (t) => {
  const dir = await tempDir(t);
  const node = (name: string) =>
    server(t, {
      workDir: path.join(dir, name),
      config: config({ serverName: name, cluster: { name: "c1", host: "127.0.0.1", port: -1, routes: [] } }),
    });
  const a = node("a");
  const b = node("b");
  const [pa, pb] = await Promise.all([a.start(), b.start()]);
  t.ok(pa.cluster && pb.cluster, "cluster ports learned");
  const routes = [`nats-route://127.0.0.1:${pa.cluster}`, `nats-route://127.0.0.1:${pb.cluster}`];
  for (const s of [a, b]) {
    s.setConfig({
      ...s.config,
      cluster: { ...(s.config.cluster as NonNullable<NatsProcessConfig["cluster"]>), routes },
    });
  }
  t.throws(() => a.setConfig({ ...a.config, port: 0 }), { name: "InvalidArgumentError" }, "setConfig validates");
  const [ra, rb] = await Promise.all([a.restart(), b.restart()]);
  t.same(ra, pa);
  t.same(rb, pb);
  const routeCount = async () =>
    ((await (await fetch(`http://127.0.0.1:${ra.monitoring}/routez`)).json()) as { num_routes: number }).num_routes;
  await waitFor("the route to form", async () => (await routeCount()) > 0);
  t.ok((await routeCount()) > 0, "a and b are routed");
});

t.test("a configured port already in use fails with port_in_use and leaves no process", async (t) => {
  const dir = await tempDir(t);
  const a = server(t, { workDir: path.join(dir, "a"), config: config({ serverName: "a" }) });
  const held = await a.start();
  const b = server(t, {
    workDir: path.join(dir, "b"),
    config: config({ serverName: "b", port: held.nats }),
  });
  const exits: unknown[] = [];
  b.on("exit", (info) => exits.push(info));
  const err = await b.start().catch((e: unknown) => e);
  t.type(err, NatsStartError);
  t.equal((err as NatsStartError).reason, "port_in_use");
  t.ok(
    (err as NatsStartError).log.some((l) => l.includes("address already in use")),
    "the server's own words are in the error",
  );
  t.match((err as Error).message, /already in use/);
  t.equal(b.state, "failed");
  t.equal(b.pid, undefined);
  t.equal(exits.length, 1, "the process has exited");
  t.ok(await exists(b.configFile), "workDir kept for investigation");
  await b.stop();
  t.equal(b.state, "failed", "stop after a failed start is a no-op");

  const mon = server(t, {
    workDir: path.join(dir, "c"),
    config: config({ serverName: "c", http: { host: "127.0.0.1", port: held.monitoring as number } }),
  });
  const err2 = await mon.start().catch((e: unknown) => e);
  t.equal((err2 as NatsStartError).reason, "port_in_use", "monitoring port too");
});

t.test("a config nats-server rejects fails with bad_config", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, config: config({ extra: { bogus_key: 1 } }) });
  const err = await s.start().catch((e: unknown) => e);
  t.type(err, NatsStartError);
  t.equal((err as NatsStartError).reason, "bad_config");
  t.match((err as Error).message, /unknown field "bogus_key"/);
  t.equal(s.state, "failed");

  // A failure only the running server detects: JetStream in a cluster without routes.
  const js = server(t, {
    workDir: path.join(dir, "js"),
    config: config({
      serverName: "js",
      jetstream: { storeDir: path.join(dir, "js", "store") },
      cluster: { name: "c", host: "127.0.0.1", port: -1, routes: [] },
    }),
  });
  const err2 = await js.start().catch((e: unknown) => e);
  t.equal((err2 as NatsStartError).reason, "bad_config");
  t.match((err2 as Error).message, /\[FTL\]/);
});

t.test("an unreadable TLS certificate fails with tls", async (t) => {
  const dir = await tempDir(t);
  const notPem = path.join(dir, "not-a-cert.pem");
  await fs.writeFile(notPem, "hello");
  const s = server(t, { workDir: dir, config: config({ tls: { certFile: notPem, keyFile: notPem } }) });
  const err = await s.start().catch((e: unknown) => e);
  t.equal((err as NatsStartError).reason, "tls");

  const ca = await loadOrCreateCa(path.join(dir, "ca"));
  const cert = await loadOrCreateServerCertificate(path.join(dir, "certs"), ca, { name: "server" });
  const missingCa = server(t, {
    workDir: path.join(dir, "m"),
    config: config({ tls: { certFile: cert.certFile, keyFile: cert.keyFile, caFile: path.join(dir, "nope.pem") } }),
  });
  const err2 = await missingCa.start().catch((e: unknown) => e);
  t.equal((err2 as NatsStartError).reason, "tls", "a missing CA file is a TLS problem too");
});

t.test("TLS server: ready, serves TLS clients, readiness probe logs no error", async (t) => {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(path.join(dir, "ca"));
  const cert = await loadOrCreateServerCertificate(path.join(dir, "certs"), ca, { name: "server" });
  const { logger, lines: entries } = captureLogger("debug");
  const s = server(t, {
    workDir: dir,
    logger,
    config: config({ tls: { certFile: cert.certFile, keyFile: cert.keyFile } }),
  });
  const ports = await s.start();
  const nc = await connect({ servers: `tls://127.0.0.1:${ports.nats}`, tls: { ca: ca.certPem } });
  await nc.flush();
  await nc.close();
  await s.stop(); // all output read
  t.same(
    entries.filter((e) => e.level === "error" || e.level === "warn"),
    [],
    "no warnings or errors, in particular not the probe's TLS handshake EOF",
  );
});

t.test("JetStream: ready means /healthz?js-enabled-only=true", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, config: config({ jetstream: { storeDir: path.join(dir, "js") } }) });
  const ports = await s.start();
  const res = await fetch(`http://127.0.0.1:${ports.monitoring}/healthz?js-enabled-only=true`);
  t.equal(res.status, 200);
  const nc = await connect({ servers: `127.0.0.1:${ports.nats}` });
  const info = await nc.request("$JS.API.INFO");
  t.match(info.json(), { type: "io.nats.jetstream.api.v1.account_info_response" });
  await nc.close();
});

t.test("without monitoring, ready is ports file + client INFO", async (t) => {
  const dir = await tempDir(t);
  const { http: _http, ...noHttp } = config();
  const s = server(t, { workDir: dir, config: noHttp });
  const ports = await s.start();
  t.equal(ports.monitoring, undefined);
  const nc = await connect({ servers: `127.0.0.1:${ports.nats}` });
  await nc.flush();
  await nc.close();
});

t.test("state errors", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir });
  await s.stop();
  t.equal(s.state, "new", "stop() before start() does nothing");
  await s.kill();
  t.equal(s.state, "new", "so does kill()");
  const starting = s.start();
  await t.rejects(s.start(), StateError, "start() while starting");
  await t.rejects(s.restart(), StateError, "restart() while starting");
  await starting;
  await t.rejects(s.start(), StateError, "start() while running");
  const err = await s.start().catch((e: unknown) => e);
  t.match(err, { code: "STATE", actual: "running" });
});

t.test("two servers in parallel get their own ports", async (t) => {
  const dir = await tempDir(t);
  const a = server(t, { workDir: path.join(dir, "a"), config: config({ serverName: "a" }) });
  const b = server(t, { workDir: path.join(dir, "b"), config: config({ serverName: "b" }) });
  const [pa, pb] = await Promise.all([a.start(), b.start()]);
  t.not(pa.nats, pb.nats);
  t.not(pa.monitoring, pb.monitoring);
  for (const p of [pa, pb]) {
    const nc = await connect({ servers: `127.0.0.1:${p.nats}` });
    await nc.flush();
    await nc.close();
  }
  await Promise.all([a.stop(), b.stop()]);
  t.equal(a.state, "stopped");
  t.equal(b.state, "stopped");
});

t.test("a server that dies on its own: state failed, exit event, stop() fine", async (t) => {
  const dir = await tempDir(t);
  const { logger, lines: entries } = captureLogger("debug");
  const s = server(t, { workDir: dir, logger });
  await s.start();
  const pid = s.pid as number;
  const exited = new Promise((resolve) => s.once("exit", resolve));
  const failed = new Promise((resolve) => s.once("state", resolve));
  process.kill(pid, "SIGKILL");
  t.same(await exited, { code: null, signal: "SIGKILL", expected: false });
  t.equal(await failed, "failed");
  t.ok(entries.some((e) => e.level === "error" && /exited unexpectedly/.test(String(e.msg))));
  await s.stop();
  t.equal(s.state, "failed");
  t.same((await s.restart()).nats > 0, true, "restart after a crash works");
});

t.test("exit before ready, timeout and abort use a stand-in binary", async (t) => {
  const dir = await tempDir(t);

  const crasher = await fakeBinary(path.join(dir), 'echo "boom: something broke" >&2; exit 3');
  const c = server(t, { workDir: path.join(dir, "c"), binary: crasher });
  const err = await c.start().catch((e: unknown) => e);
  t.equal((err as NatsStartError).reason, "exited");
  t.match((err as Error).message, /exited with code 3/);
  t.same((err as NatsStartError).log, ["boom: something broke"]);

  const sleeperDir = path.join(dir, "s");
  await fs.mkdir(sleeperDir);
  const sleeper = await fakeBinary(sleeperDir, "exec sleep 30");
  const slow = server(t, { workDir: path.join(dir, "t"), binary: sleeper, readyTimeoutMs: 300 });
  let slowExits = 0;
  slow.on("exit", () => slowExits++);
  const err2 = await slow.start().catch((e: unknown) => e);
  t.equal((err2 as NatsStartError).reason, "timeout");
  t.match((err2 as Error).message, /ports file/);
  t.equal(slow.state, "failed");
  t.equal(slowExits, 1, "the stand-in was killed");

  const aborted = server(t, { workDir: path.join(dir, "u"), binary: sleeper });
  const starting = aborted.start();
  await waitFor("the stand-in to run", () => aborted.pid !== undefined);
  const pid = aborted.pid as number;
  await aborted.stop();
  t.equal(aborted.state, "stopped", "stop() during start aborts it");
  await t.rejects(starting, NatsStartError);
  t.notOk(isProcessAlive(pid));
});

t.test("a binary that cannot be run is a NatsBinaryError", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir, binary: path.join(dir, "no-such-nats-server") });
  await t.rejects(s.start(), NatsBinaryError);
  t.equal(s.state, "failed");
});

t.test("watchdog: a normal stop leaves no watchdog behind", async (t) => {
  const dir = await tempDir(t);
  const s = server(t, { workDir: dir });
  await s.start();
  const wd = s.watchdogPid as number;
  t.ok(wd > 0 && isProcessAlive(wd), "a watchdog guards the running server");
  await s.stop();
  t.notOk(isProcessAlive(wd), "watchdog gone after stop");
});

t.test("watchdog: SIGKILL of the owning Node process takes nats-server down", async (t) => {
  const dir = await tempDir(t);
  const moduleUrl = new URL("../../lib/nats/process.ts", import.meta.url).href;
  const script = path.join(dir, "owner.mjs");
  await fs.writeFile(
    script,
    [
      `import { NatsServerProcess } from ${JSON.stringify(moduleUrl)};`,
      "const [binary, workDir] = process.argv.slice(2);",
      'const s = new NatsServerProcess({ binary, workDir, config: { serverName: "owned", host: "127.0.0.1", port: -1 } });',
      "await s.start();",
      'process.stdout.write(JSON.stringify({ pid: s.pid, watchdog: s.watchdogPid }) + "\\n");',
      "setInterval(() => {}, 60_000);",
    ].join("\n"),
  );
  const owner = spawn(process.execPath, ["--disable-warning=ExperimentalWarning", script, NATS, path.join(dir, "w")], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const ownerExited = new Promise((resolve) => owner.once("exit", resolve));
  const pids: number[] = [];
  t.teardown(async () => {
    if (owner.exitCode === null && owner.signalCode === null) owner.kill("SIGKILL");
    await ownerExited;
    for (const pid of pids) if (isProcessAlive(pid)) process.kill(pid, "SIGKILL");
  });
  const first = await new Promise<string>((resolve, reject) => {
    let out = "";
    owner.stdout.on("data", (d) => {
      out += d;
      if (out.includes("\n")) resolve(out.split("\n")[0] as string);
    });
    owner.once("exit", (code) => reject(new Error(`owner exited early (${code})`)));
  });
  const { pid, watchdog } = JSON.parse(first) as { pid: number; watchdog: number };
  pids.push(pid, watchdog);
  t.ok(isProcessAlive(pid), "nats-server runs");
  t.ok(isProcessAlive(watchdog), "its watchdog runs");

  owner.kill("SIGKILL");
  await ownerExited;
  await waitFor("nats-server to die after its owner", () => !isProcessAlive(pid));
  t.notOk(isProcessAlive(pid), "nats-server is gone");
  await waitFor("the watchdog to finish", () => !isProcessAlive(watchdog));
  t.notOk(isProcessAlive(watchdog), "the watchdog is gone too");
});
