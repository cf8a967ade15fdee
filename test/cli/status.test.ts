// `unibus status` against a real `unibus up`: healthy, degraded (nats-server hung) and not running.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { isProcessAlive } from "../../lib/nats/process.ts";
import { type BusStatus, collectStatus, formatStatus, runDoctor, statusExitCode } from "../../lib/ops/index.ts";
import { newInviteToken, openStore } from "../../lib/store/index.ts";
import { packageVersion } from "../../lib/version.ts";
import { findNatsPid } from "../helpers/bus.ts";
import { runCli, upOn as up } from "../helpers/cli.ts";

t.test("a healthy bus: exit 0 with nodes, versions, ports, connections and counts", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const { ready } = await up(t, dataDir);
  // What `user add` and `invite create` do: host-trusted writes to the running bus' store.
  const store = await openStore({ backend: "sqlite", file: path.join(dataDir, "store.db") });
  await store.addUser({ signPub: createIdentity().signPub, handle: "alice", role: "admin", kexPub: null });
  await store.createInvite({ token: newInviteToken(), handle: "bob", role: "member", createdBy: "host" });
  await store.close();

  const json = await runCli(["status", "--json", "--data-dir", dataDir]);
  t.equal(json.code, 0, json.stderr);
  const s = JSON.parse(json.stdout) as BusStatus;
  const natsPort = Number(new URL(ready.natsUrls[0]!).port);
  t.match(s, {
    state: "healthy",
    dataDir,
    unibusVersion: packageVersion(),
    natsUrls: ready.natsUrls,
    control: [{ url: ready.controlUrls[0], healthy: true, health: "ok" }],
    counts: { users: 1, activeUsers: 1, admins: 1, rooms: 0, members: 0, invites: 1, openInvites: 1 },
    problems: [],
  });
  // A bus alone: no routes, nothing derived, no readiness of a member, no cluster-wide stream view.
  for (const key of ["derived", "readiness", "streams"]) t.notOk(key in s, `no ${key}`);
  t.notOk(s.control[0]?.routes, "no routes");
  t.equal(s.nodes.length, 1);
  const node = s.nodes[0]!;
  t.match(node, {
    reachable: true,
    healthy: true,
    health: "ok",
    name: "unibus-1",
    version: /^2\.\d+\.\d+/,
    ports: { client: natsPort, monitoring: Number(new URL(node.monitorUrl).port) },
    jetstream: { enabled: true },
    kv: [],
  });
  t.type(node.connections, "number");
  t.notOk(node.jetstream?.meta, "a single node has no meta group");

  const text = formatStatus(await collectStatus({ dataDir }));
  t.match(text, /^unibus: HEALTHY/);
  t.match(text, new RegExp(`version: +unibus ${packageVersion().replaceAll(".", "\\.")}\n`));
  t.match(text, /node unibus-1 {2}ok/);
  t.match(text, /version: +nats-server 2\./);
  t.match(text, new RegExp(`ports: +client ${natsPort}, monitor \\d+`));
  t.match(text, /users: +1 \(1 active, 1 admin\)/);
  t.match(text, /invites: +1 \(1 open\)/);
  t.match(text, /rooms: +0 \(0 members\)/);
  t.notMatch(text, /routes:|replication \(|up said:/, "nothing of a cluster member");

  // doctor against the running bus: its own ports are not a clash, and the clocks agree.
  const port = (u: string) => Number(new URL(u).port);
  const findings = await runDoctor({
    dataDir,
    ports: { nats: natsPort, control: port(ready.controlUrls[0]!), monitoring: port(node.monitorUrl) },
  });
  t.same(
    findings.filter((f) => f.level === "error"),
    [],
  );
  t.match(
    findings.filter((f) => f.check === "port"),
    [
      { level: "ok", message: /held by this bus/ },
      { level: "ok", message: /held by this bus/ },
      { level: "ok", message: /held by this bus/ },
    ],
  );
  t.match(
    findings.find((f) => f.check === "clock"),
    { level: "ok", message: /^within \d s of the bus at https:/ },
  );
  // A local clock a minute slow: the Date header of the control plane gives it away.
  const slow = await runDoctor({
    dataDir,
    ports: { nats: -1, control: 0, monitoring: -1 },
    now: () => Date.now() - 60_000,
  });
  t.match(
    slow.find((f) => f.check === "clock"),
    { level: "warn", message: /this machine's clock is (59|60|61)\.\d s behind the bus/, fix: /time synchronisation/ },
  );
});

t.test("a node down: exit 1 naming the node", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const { child } = await up(t, dataDir);
  const natsPid = findNatsPid(dataDir);
  t.ok(natsPid && isProcessAlive(natsPid), "nats-server runs");
  // Frozen rather than killed: the bus restarts a nats-server that dies, but one that
  // hangs stays down (its sockets open, nothing answering) until it is resumed.
  process.kill(natsPid!, "SIGSTOP");
  const resume = () => {
    if (isProcessAlive(natsPid!)) process.kill(natsPid!, "SIGCONT");
  };
  t.teardown(resume);
  t.equal(child.exitCode, null, "the bus process itself still runs");

  const json = await runCli(["status", "--json", "--data-dir", dataDir]);
  t.equal(json.code, 1, json.stderr);
  const s = JSON.parse(json.stdout) as BusStatus;
  t.equal(s.state, "degraded");
  t.match(s.nodes, [{ reachable: false, healthy: false }]);
  t.match(s.problems.join("\n"), /node http:\/\/127\.0\.0\.1:\d+ is unreachable/);

  const text = formatStatus(s);
  t.match(text, /^unibus: DEGRADED/);
  t.match(text, /UNREACHABLE/);
  t.match(text, /problems:\n {2}- node .* is unreachable/);
  resume();
});

t.test("no bus: exit 3, for a missing, a stale and an unreadable run file", async (t) => {
  const dir = t.testdir({ empty: {}, stale: {}, garbage: { "run.json": "{not json" } });
  const none = await runCli(["status", "--data-dir", path.join(dir, "empty")]);
  t.equal(none.code, 3);
  t.match(none.stdout, /^unibus: not running/);
  t.equal(none.stderr, "");

  // A pid that surely is gone: a child we started and waited for.
  const dead = spawn(process.execPath, ["-e", ""]);
  await new Promise((r) => dead.once("exit", r));
  fs.writeFileSync(
    path.join(dir, "stale", "run.json"),
    JSON.stringify({ pid: dead.pid, monitorUrls: ["http://127.0.0.1:1"], controlUrls: [], natsUrls: [] }),
  );
  const stale = await collectStatus({ dataDir: path.join(dir, "stale") });
  t.match(stale, { state: "not-running", nodes: [] });
  t.equal(statusExitCode(stale), 3);

  const garbage = await collectStatus({ dataDir: path.join(dir, "garbage") });
  t.equal(garbage.state, "not-running");
  t.match(formatStatus(garbage), /not running/);
});

t.test("a node whose nats-server was killed and restarted: status shows the restart and how it ended", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  await up(t, dataDir);
  const before = JSON.parse((await runCli(["status", "--json", "--data-dir", dataDir])).stdout) as BusStatus;
  t.match(before.control, [{ node: "unibus-1", restarts: 0 }], "no restart at first");
  t.notOk(before.control[0]?.lastExit, "and no exit to report");
  const natsPid = findNatsPid(dataDir)!;
  process.kill(natsPid, "SIGKILL");
  // The supervisor restarts it on the same ports; status reads the count from the control plane.
  let s: BusStatus;
  do {
    await new Promise((r) => setTimeout(r, 100));
    s = JSON.parse((await runCli(["status", "--json", "--data-dir", dataDir])).stdout) as BusStatus;
  } while (s.state !== "healthy" || s.control[0]?.restarts !== 1);
  t.match(s.control[0], { restarts: 1, lastExit: { reason: "killed by SIGKILL", at: /^\d{4}-/ } });
  const text = formatStatus(s);
  t.match(text, /restarts: +1 \(last exit: killed by SIGKILL at \d{4}-/, "the text names the restart and its reason");
});
