// Starting and stopping a whole bus: no orphans, no leftovers, no collisions.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import t from "tap";
import { request } from "undici";
import { startUnibus, Unibus } from "../../lib/bus/unibus.ts";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { isProcessAlive } from "../../lib/nats/process.ts";
import { describeCertificate } from "../../lib/tls/index.ts";
import { member, testBus } from "../helpers/bus.ts";
import { trustingAgent } from "../helpers/http.ts";
import { captureLogger } from "../helpers/log.ts";
import { waitFor } from "../helpers/wait.ts";

t.test("stop() leaves no child process and no temp dir; it is idempotent", async (t) => {
  const bus = await startUnibus();
  const states: string[] = [];
  bus.on("state", (s) => states.push(s));
  const pid = bus.natsPid!;
  const dir = bus.dataDir;
  t.ok(isProcessAlive(pid), "nats-server runs");
  t.ok(fs.existsSync(dir), "temp data dir exists");
  t.equal(bus.state, "running");
  await Promise.all([bus.stop(), bus.stop()]);
  await bus.stop();
  t.notOk(isProcessAlive(pid), "nats-server is gone");
  t.notOk(fs.existsSync(dir), "temp data dir is removed");
  t.same(states, ["stopping", "stopped"]);
  await t.rejects(bus.addUser(createIdentity().signPub, { handle: "late" }), { code: "STATE" });
});

t.test("await using stops the bus at the end of the scope", async (t) => {
  let pid = 0;
  {
    await using bus = await startUnibus();
    pid = bus.natsPid!;
  }
  t.notOk(isProcessAlive(pid));
});

t.test("a user-given data dir is kept, and a second start reuses CA, service keys and store", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const alice = createIdentity();
  let fingerprint = "";
  let serviceKeys = "";
  {
    await using bus = await startUnibus({ dataDir });
    await bus.addUser(alice.signPub, { handle: "alice", role: "admin" });
    fingerprint = describeCertificate(bus.caPem).fingerprint;
    serviceKeys = fs.readFileSync(path.join(dataDir, "service-keys.json"), "utf8");
    t.equal(fs.statSync(path.join(dataDir, "service-keys.json")).mode & 0o777, 0o600, "service keys are 0600");
    t.equal(fs.statSync(path.join(dataDir, "tls", "ca-key.pem")).mode & 0o777, 0o600, "CA key is 0600");
  }
  t.ok(fs.existsSync(dataDir), "the data dir survives stop()");
  await using bus = await startUnibus({ dataDir });
  t.equal(describeCertificate(bus.caPem).fingerprint, fingerprint, "same CA");
  t.equal(fs.readFileSync(path.join(dataDir, "service-keys.json"), "utf8"), serviceKeys, "same service keys");
  t.equal((await bus.store.getUser(alice.signPub)).handle, "alice", "same store");
  await using c = await connect({ natsUrl: bus.natsUrl, caFile: bus.caFile, identity: alice });
  t.ok(c.nc.info?.tls_required, "connected over TLS with the CA file");
});

t.test("two buses in one process do not collide", async (t) => {
  const [a, b] = await Promise.all([testBus(t), testBus(t)]);
  t.not(a.natsUrl, b.natsUrl);
  t.not(a.controlUrl, b.controlUrl);
  t.not(a.dataDir, b.dataDir);
  const alice = await member(a, "alice");
  await using ca = await connect({ natsUrl: a.natsUrl, ca: a.caPem, identity: alice });
  t.ok(ca.nc.info, "alice gets into bus a");
  // bus b has its own allowlist (and its own CA)
  await t.rejects(connect({ natsUrl: b.natsUrl, ca: b.caPem, identity: alice, timeoutMs: 5000 }), {
    code: "AUTH_DENIED",
  });
});

t.test("the control plane answers /healthz over TLS from the bus CA", async (t) => {
  const bus = await testBus(t);
  const dispatcher = trustingAgent(t, bus.caPem);
  const res = await request(`${bus.controlUrl}/healthz`, { dispatcher });
  t.equal(res.statusCode, 200);
  t.same(await res.body.json(), {
    status: "ok",
    node: "unibus-1",
    parts: { nats: "up", streams: "up", store: "up", callout: "up", kicker: "up", storage: "up" },
    nats: { restarts: 0 },
  });
  const missing = await request(`${bus.controlUrl}/nope`, { dispatcher });
  t.equal(missing.statusCode, 404);
  await missing.body.dump();
});

t.test("a port in use fails the start with a typed error and leaves nothing running", async (t) => {
  const first = await testBus(t);
  const port = Number(new URL(first.natsUrl).port);
  const dataDir = path.join(t.testdir(), "second");
  const err = await startUnibus({ dataDir, ports: { nats: port } }).catch((e) => e);
  t.match(err, { code: "NATS_START", reason: "port_in_use" });
  t.match(err.message, /address already in use/);
  t.ok(fs.existsSync(dataDir), "the failed start keeps its files for investigation");
});

t.test("a SIGKILLed parent leaves no nats-server behind", async (t) => {
  const dir = t.testdir();
  const script = path.join(dir, "parent.ts");
  const lib = pathToFileURL(path.resolve("lib/bus/unibus.ts")).href;
  fs.writeFileSync(
    script,
    `import { startUnibus } from ${JSON.stringify(lib)};\nconst bus = await startUnibus({ dataDir: ${JSON.stringify(path.join(dir, "data"))} });\nconsole.log(JSON.stringify({ pid: bus.natsPid }));\nsetInterval(() => {}, 1000);\n`,
  );
  const child = spawn(process.execPath, ["--disable-warning=ExperimentalWarning", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.teardown(() => child.kill("SIGKILL"));
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout.once("data", (d) => resolve(String(d)));
    child.once("exit", (code) => reject(new Error(`parent exited early (${code})`)));
  });
  const { pid } = JSON.parse(line) as { pid: number };
  t.ok(isProcessAlive(pid), "nats-server runs under the parent");
  child.kill("SIGKILL");
  await waitFor("nats-server to die with its parent", () => !isProcessAlive(pid), 10_000);
  t.notOk(isProcessAlive(pid), "no orphan");
});

t.test("a SIGKILLed parent leaves no temp dir behind either", async (t) => {
  const dir = t.testdir();
  const script = path.join(dir, "parent.ts");
  const lib = pathToFileURL(path.resolve("lib/bus/unibus.ts")).href;
  fs.writeFileSync(
    script,
    `import { startUnibus } from ${JSON.stringify(lib)};\nconst bus = await startUnibus();\nconsole.log(JSON.stringify({ pid: bus.natsPid, dataDir: bus.dataDir }));\nsetInterval(() => {}, 1000);\n`,
  );
  const child = spawn(process.execPath, ["--disable-warning=ExperimentalWarning", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.teardown(() => child.kill("SIGKILL"));
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout.once("data", (d) => resolve(String(d)));
    child.once("exit", (code) => reject(new Error(`parent exited early (${code})`)));
  });
  const { pid, dataDir } = JSON.parse(line) as { pid: number; dataDir: string };
  t.ok(fs.existsSync(dataDir), "the bus made its own temp dir");
  child.kill("SIGKILL");
  await waitFor("the temp dir to be removed after its owner died", () => !fs.existsSync(dataDir), 20_000);
  t.notOk(fs.existsSync(dataDir), "the temp dir is gone");
  t.notOk(isProcessAlive(pid), "and so is nats-server");
});

t.test("a failed start removes the temp dir it made", async (t) => {
  const first = await testBus(t);
  const bus = new Unibus({ ports: { nats: Number(new URL(first.natsUrl).port) } });
  await t.rejects(bus.start(), { code: "NATS_START" });
  t.ok(bus.dataDir.length > 0, "it had made a temp dir");
  t.notOk(fs.existsSync(bus.dataDir), "its temp dir is gone");
});

t.test(
  "a bus stopped as soon as it is ready warns of nothing (its first prune of room streams is cut short)",
  async (t) => {
    // Seen in the start bench: every bus stopped right after ready logged "pruning room
    // streams failed: connection closed" at warn, although nothing was wrong.
    const log = captureLogger<{ level: string; msg: string }>("debug");
    for (let i = 0; i < 3; i++) {
      const bus = await startUnibus({ logger: log.logger });
      await bus.stop();
    }
    await new Promise((r) => setTimeout(r, 200)); // a prune ending after stop() logs late
    const warned = log.lines.filter((l) => l.level === "warn" || l.level === "error");
    t.same(warned, [], "no warning or error");
  },
);
