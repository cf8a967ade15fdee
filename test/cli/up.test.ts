import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { isProcessAlive } from "../../lib/nats/process.ts";
import { findNatsPid } from "../helpers/bus.ts";
import { RANDOM_PORTS, runCli, upOn as up } from "../helpers/cli.ts";

t.test(
  "up --json prints exactly one ready line; SIGTERM stops every child; a second up reuses the data dir",
  async (t) => {
    const dataDir = path.join(t.testdir(), "bus");
    const first = await up(t, dataDir);
    t.match(first.ready, {
      event: "ready",
      natsUrls: [/^tls:\/\/127\.0\.0\.1:\d+$/],
      wsUrls: [/^wss:\/\/127\.0\.0\.1:\d+$/],
      controlUrls: [/^https:\/\/127\.0\.0\.1:\d+$/],
      caFile: path.join(dataDir, "tls", "ca.pem"),
      dataDir,
      store: "sqlite",
    });
    t.same(Object.keys(first.ready), ["event", "natsUrls", "wsUrls", "controlUrls", "caFile", "dataDir", "store"]);
    const run = JSON.parse(fs.readFileSync(path.join(dataDir, "run.json"), "utf8"));
    t.equal(run.pid, first.child.pid);

    // the running bus admits a user the CLI adds while it runs
    const alice = createIdentity();
    const add = await runCli([
      "user",
      "add",
      alice.signPub,
      "--handle",
      "alice",
      "--role",
      "admin",
      "--data-dir",
      dataDir,
    ]);
    t.equal(add.code, 0, add.stderr);
    const c = await connect({ natsUrl: first.ready.natsUrls[0]!, caFile: first.ready.caFile, identity: alice });
    await c.close();

    // a second up on a running data dir is refused
    const clash = await runCli(["up", "--data-dir", dataDir, ...RANDOM_PORTS]);
    t.equal(clash.code, 1);
    t.match(clash.stderr.trim(), /^unibus: a bus is already running on .* \(pid \d+\)/);

    const natsPid = findNatsPid(dataDir);
    t.ok(natsPid && isProcessAlive(natsPid), "nats-server runs");
    const ca = fs.readFileSync(first.ready.caFile, "utf8");
    first.child.kill("SIGTERM");
    t.equal(await first.exited, 0, "clean exit on SIGTERM");
    t.equal(first.lines.length, 1, "exactly one line on stdout");
    t.notOk(isProcessAlive(natsPid!), "nats-server stopped");
    t.notOk(fs.existsSync(path.join(dataDir, "run.json")), "run file removed");

    const second = await up(t, dataDir);
    t.equal(fs.readFileSync(second.ready.caFile, "utf8"), ca, "same CA");
    const again = await connect({ natsUrl: second.ready.natsUrls[0]!, caFile: second.ready.caFile, identity: alice });
    await again.close();
    second.child.kill("SIGINT");
    t.equal(await second.exited, 0, "clean exit on SIGINT");
  },
);

t.test("up refuses bad ports and a busy port with one line", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const bad = await runCli(["up", "--data-dir", dataDir, "--nats-port", "99999"]);
  t.equal(bad.code, 1);
  t.match(bad.stderr.trim(), /^unibus: --nats-port="99999" must be an integer from -1 to 65535$/);
  t.equal(bad.stderr.trim().split("\n").length, 1);

  const first = await up(t, path.join(t.testdir(), "other"));
  const port = new URL(first.ready.natsUrls[0]!).port;
  const busy = await runCli([
    "up",
    "--data-dir",
    dataDir,
    "--nats-port",
    port,
    "--control-port",
    "0",
    "--monitor-port",
    "-1",
    "--ws-port",
    "-1",
  ]);
  t.equal(busy.code, 1);
  t.match(busy.stderr.trim(), /^unibus: .*already in use/);
  t.equal(busy.stderr.trim().split("\n").length, 1, busy.stderr);
  first.child.kill("SIGTERM");
  await first.exited;
});

t.test(
  "up takes --ws-port and --cors-origin; a bad origin is refused with one line before anything starts",
  async (t) => {
    const dataDir = path.join(t.testdir(), "bus");
    const bad = await runCli(["up", "--data-dir", dataDir, ...RANDOM_PORTS, "--cors-origin", "https://app.example/x"]);
    t.equal(bad.code, 1);
    t.match(bad.stderr.trim(), /^unibus: corsOrigins: "https:\/\/app\.example\/x" is not an origin/);
    t.equal(bad.stderr.trim().split("\n").length, 1);
    const shown = await runCli(["up", "--print-config", "--ws-port", "9443", "--cors-origin", "https://app.example"]);
    t.equal(shown.code, 0, shown.stderr);
    const settings = JSON.parse(shown.stdout).settings;
    t.same(settings.wsPort, { value: 9443, source: "flag" });
    t.same(settings.corsOrigins, { value: ["https://app.example"], source: "flag" });
  },
);
