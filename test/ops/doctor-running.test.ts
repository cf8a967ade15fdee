// `unibus doctor` against a running bus: it checks the ports in the bus' run file (not the
// configured defaults), and on a cluster dials every route with the data dir's route
// certificate — naming the TLS failure of a node whose CA differs from its peers'.
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { startCluster } from "../../lib/bus/index.ts";
import { type Finding, runDoctor } from "../../lib/ops/doctor.ts";
import { readRunInfo, writeRunInfo } from "../../lib/ops/run-file.ts";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../../lib/tls/index.ts";
import { runCli, upOn } from "../helpers/cli.ts";

const byCheck = (f: Finding[], check: string) => f.filter((x) => x.check === check);

t.test("a bus on random ports: doctor without port flags checks the run file's ports", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const { ready } = await upOn(t, dataDir);
  const natsPort = new URL(ready.natsUrls[0]!).port;
  // No --nats-port etc.: the configuration says 4222/8470/8222, the bus runs elsewhere.
  const r = await runCli(["doctor", "--json", "--data-dir", dataDir], {
    env: { UNIBUS_NATS_PORT: "", UNIBUS_CONTROL_PORT: "" },
  });
  const { findings } = JSON.parse(r.stdout) as { findings: Finding[] };
  const ports = byCheck(findings, "port");
  t.equal(ports.length, 3);
  t.ok(
    ports.every((p) => p.level === "ok"),
    "every port is the bus' own",
  );
  t.match(
    ports[0]!.message,
    new RegExp(`NATS port\\(s\\) ${natsPort} held by this bus \\(pid \\d+\\), from its run file`),
  );
  t.notMatch(JSON.stringify(ports), /4222|8470|8222/, "the defaults are not looked at");
  t.same(byCheck(findings, "routes"), [], "a single node has no routes to check");
});

t.test("a cluster: every route's TLS handshake and every node's peers; a node on another CA is named", async (t) => {
  const root = t.testdir(); // once: a second testdir() call would empty it
  const dataDir = path.join(root, "cluster");
  const cluster = await startCluster({ nodes: 3, dataDir });
  t.teardown(() => cluster.stop());
  await writeRunInfo(dataDir, cluster);

  const healthy = await runDoctor({ dataDir });
  const routes = byCheck(healthy, "routes");
  t.equal(
    routes.filter((f) => /mutual handshake ok/.test(f.message)).length,
    3,
    "three route ports, each handshake ok",
  );
  t.equal(routes.filter((f) => /is routed to 2 peer\(s\)/.test(f.message)).length, 3, "each node sees both peers");
  t.same(
    routes.filter((f) => f.level !== "ok"),
    [],
    "no route problem",
  );

  // The node whose data dir got a new CA (as after a careless CA change): its route
  // certificate is from that CA, so the peers refuse it and it refuses them.
  const isolated = path.join(root, "isolated");
  const tlsDir = path.join(isolated, "tls");
  const ca = await loadOrCreateCa(tlsDir);
  await loadOrCreateServerCertificate(tlsDir, ca, { name: "route", hosts: ["localhost", "127.0.0.1"], usage: "peer" });
  const run = (await readRunInfo(dataDir))!;
  await writeRunInfo(isolated, { ...run, dataDir: isolated, caFile: ca.certFile });
  const cut = byCheck(await runDoctor({ dataDir: isolated }), "routes");
  const failed = cut.filter((f) => f.level === "error");
  t.equal(failed.length, 3, "every route handshake fails");
  for (const f of failed) {
    t.match(
      f.message,
      /route TLS to 127\.0\.0\.1:\d+ fails: \S*(CERT|SELF_SIGNED|UNABLE_TO)/,
      "the TLS error is named",
    );
    t.match(f.fix, /same CA/, "and the fix");
  }
  t.ok(fs.existsSync(path.join(dataDir, "run.json")), "the cluster's own run file is untouched");

  // A node gone: the two left are each routed to one of their two peers, and its route port refuses.
  await cluster.kill(2);
  let down = byCheck(await runDoctor({ dataDir }), "routes");
  while (!down.some((f) => /routed to 1 of 2 peer\(s\)/.test(f.message))) {
    await sleep(200); // until the others notice the route is gone
    down = byCheck(await runDoctor({ dataDir }), "routes");
  }
  t.equal(down.filter((f) => /is routed to 1 of 2 peer\(s\) \(unibus-\d\): it is cut off/.test(f.message)).length, 2);
  t.match(
    down.find((f) => /fails: ECONNREFUSED/.test(f.message)),
    { level: "error", fix: /nothing answers on that route port/ },
    "the dead node's route port is named",
  );
});

t.test("no bus running: no route findings, configured ports checked as before", async (t) => {
  const dataDir = t.testdir();
  const findings = await runDoctor({ dataDir, ports: { nats: -1, control: 0, monitoring: -1, websocket: -1 } });
  t.same(byCheck(findings, "routes"), []);
  t.match(byCheck(findings, "port"), [
    { message: /random port/ },
    { message: /random port/ },
    { message: /random port/ },
    { message: /random port/ },
  ]);
});
