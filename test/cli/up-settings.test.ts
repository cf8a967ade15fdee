// The operator's limits travel from the config chain into the running bus: a real
// `unibus up` started with a config file, a variable and a flag, then probed from outside.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import t from "tap";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { readRunInfo } from "../../lib/ops/run-file.ts";
import { runCli, upOn } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

t.test("up --print-config shows every limit and where it came from", async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, "limits.json");
  fs.writeFileSync(file, JSON.stringify({ roomMaxBytes: 8_388_608, blobGcIntervalSeconds: 60 }));
  const r = await runCli(["up", "--config", file, "--print-config", "--max-connections-per-ip", "16"], {
    cwd: dir,
    env: { UNIBUS_CONNECTIONS_PER_IDENTITY: "10" },
  });
  t.equal(r.code, 0, r.stderr);
  const { settings } = JSON.parse(r.stdout);
  t.same(settings.roomMaxBytes, { value: 8_388_608, source: "file" });
  t.same(settings.blobGcIntervalSeconds, { value: 60, source: "file" });
  t.same(settings.connectionsPerIdentity, { value: 10, source: "env" });
  t.same(settings.maxConnectionsPerIp, { value: 16, source: "flag" });
  t.same(settings.roomStorageBytes, { value: 4_294_967_296, source: "default" });
  t.same(settings.jetstreamMaxFileBytes, { value: null, source: "default" });
  t.same(settings.routeWaitSeconds, { value: 30, source: "default" });
});

t.test("up refuses a bad limit naming it, and a budget smaller than one room's cap", async (t) => {
  const dir = t.testdir();
  const bad = await runCli(["up", "--min-body-bytes-per-sec", "0", "--data-dir", path.join(dir, "a")]);
  t.not(bad.code, 0);
  t.match(bad.stderr, /--min-body-bytes-per-sec="0" must be an integer from 1/);
  const budget = await runCli(["up", "--room-storage-bytes", "1048576", "--data-dir", path.join(dir, "b")]);
  t.not(budget.code, 0);
  t.match(budget.stderr, /roomStorageBytes \(1048576\) must be at least roomMaxBytes/);
  t.equal(budget.stdout, "");
  const wait = await runCli(["up", "--route-wait-seconds", "-1", "--data-dir", path.join(dir, "c")]);
  t.not(wait.code, 0);
  t.match(wait.stderr, /--route-wait-seconds="-1" must be an integer from 0/);
  t.notOk(fs.existsSync(path.join(dir, "c", "run.json")), "nothing started");
});

t.test("a bus started by up runs under the limits it was given", async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, "bus");
  const file = path.join(dir, "limits.json");
  fs.writeFileSync(file, JSON.stringify({ maxPayloadBytes: 300_000 }));
  const bus = await upOn(t, dataDir, ["--config", file, "--max-connections-per-ip", "2"]);
  const run = await readRunInfo(dataDir);
  const varz = (await (await fetch(`${run!.monitorUrls[0]}/varz`)).json()) as { max_payload: number };
  t.equal(varz.max_payload, 300_000, "the file's maxPayloadBytes is nats-server's max_payload");

  // The flag's per-address cap: two sockets are held, a third is closed at once.
  const port = Number(new URL(bus.ready.controlUrls[0]!).port);
  const open = (): Promise<tls.TLSSocket> =>
    new Promise((resolve, reject) => {
      const s = tls.connect({ host: "127.0.0.1", port, ca: fs.readFileSync(bus.ready.caFile, "utf8") }, () =>
        resolve(s),
      );
      s.once("error", reject);
    });
  const held = [await open(), await open()];
  t.teardown(() => {
    for (const s of held) s.destroy();
  });
  const third = net.connect({ host: "127.0.0.1", port });
  let closed = false;
  third.on("error", () => {});
  third.on("close", () => {
    closed = true;
  });
  // waitFor fails the test if the third socket is left open.
  await waitFor("the third connection from one address to be closed", () => closed);
  t.ok(
    held.every((s) => !s.destroyed),
    "the first two are still open",
  );
});

t.test("up --cluster 2 gives every node the limits, and status counts each room once", async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, "bus");
  const bus = await upOn(t, dataDir, [
    ...["--cluster", "2", "--cluster-port", "-1"],
    ...["--max-payload-bytes", "300000", "--room-max-bytes", "1048576", "--room-storage-bytes", "8388608"],
  ]);
  const run = await readRunInfo(dataDir);
  t.equal(run!.monitorUrls.length, 2);
  for (const url of run!.monitorUrls) {
    const varz = (await (await fetch(`${url}/varz`)).json()) as { max_payload: number; server_name: string };
    t.equal(varz.max_payload, 300_000, `${varz.server_name} has the flag's max_payload`);
  }
  const alice = createIdentity();
  const add = await runCli([
    ...["user", "add", alice.signPub, "--kex-pub", alice.kexPub, "--handle", "alice"],
    ...["--store", "kv", "-d", dataDir],
  ]);
  t.equal(add.code, 0, add.stderr);
  const c = await connect({
    natsUrl: bus.ready.natsUrls,
    controlUrl: bus.ready.controlUrls[1]!,
    caFile: bus.ready.caFile,
    identity: alice,
  });
  t.teardown(() => c.close());
  const room = await c.createRoom({ persist: true, retention: { maxBytes: 512 * 1024 } });
  t.same(room.retention?.maxBytes, 512 * 1024, "the second node grants a room within the flag's ceiling");
  await t.rejects(c.createRoom({ persist: true, retention: { maxBytes: 2 * 1048576 } }), {
    code: "RETENTION_ABOVE_CEILING",
  });
  const status = await runCli(["status", "--json", "-d", dataDir]);
  const { roomStorage } = JSON.parse(status.stdout);
  // Counted once though both nodes report the stream; at 1 MiB, the least a room takes from the budget.
  t.match(roomStorage, {
    rooms: 1,
    reservedBytes: 1_048_576,
    budgetBytes: 8_388_608,
    ceiling: { maxBytes: 1_048_576 },
  });
});
