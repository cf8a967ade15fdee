// `unibus doctor` on real data dirs: healthy, a key file readable by others, expired and
// expiring certificates, a busy port, a missing nats-server and an old Node.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import t from "tap";
import { loadOrCreateServiceKeys } from "../../lib/auth/service-keys.ts";
import { checkNode, type Finding, formatFindings, runDoctor } from "../../lib/ops/doctor.ts";
import { openStore } from "../../lib/store/index.ts";
import { issueCertificate, loadOrCreateCa, loadOrCreateServerCertificate } from "../../lib/tls/index.ts";
import { runCli } from "../helpers/cli.ts";
import { listenLocal } from "../helpers/net.ts";

const RANDOM = { nats: -1, control: 0, monitoring: -1, websocket: -1 };
const RANDOM_ENV = {
  UNIBUS_NATS_PORT: "-1",
  UNIBUS_CONTROL_PORT: "0",
  UNIBUS_MONITOR_PORT: "-1",
  UNIBUS_WS_PORT: "-1",
};
const DAY = 86_400_000;

/** The files `unibus up` leaves in a data dir, made by the same functions. */
async function dataDir(root: string) {
  const dir = path.join(root, "bus");
  fs.mkdirSync(dir, { mode: 0o700 });
  const tls = path.join(dir, "tls");
  const ca = await loadOrCreateCa(tls);
  await loadOrCreateServerCertificate(tls, ca, { name: "server" });
  await loadOrCreateServiceKeys(dir);
  await (await openStore({ backend: "sqlite", file: path.join(dir, "store.db") })).close();
  return { dir, tls, ca };
}

const errors = (f: Finding[]) => f.filter((x) => x.level === "error");
const byCheck = (f: Finding[], check: string) => f.filter((x) => x.check === check);

t.test("a fresh data dir has no error; every check reports", async (t) => {
  const { dir } = await dataDir(t.testdir());
  const findings = await runDoctor({ dataDir: dir, ports: RANDOM });
  t.same(errors(findings), []);
  for (const check of ["nats-server", "node", "permissions", "certificate", "port", "clock"]) {
    t.ok(byCheck(findings, check).length > 0, `${check} reported`);
  }
  t.equal(byCheck(findings, "certificate").length, 2, "the CA and the server certificate");
  t.match(byCheck(findings, "clock")[0], { level: "ok", message: /no bus is running/ });

  const cli = await runCli(["doctor", "--json", "--data-dir", dir], { env: RANDOM_ENV });
  t.equal(cli.code, 0, cli.stderr);
  const out = JSON.parse(cli.stdout) as { ok: boolean; findings: Finding[] };
  t.equal(out.ok, true);
  t.same(errors(out.findings), []);
});

t.test("key files readable by others are errors with `chmod 600` as the fix", async (t) => {
  const { dir, tls } = await dataDir(t.testdir());
  const keys = path.join(dir, "service-keys.json");
  const tlsKey = path.join(tls, "server-key.pem");
  fs.chmodSync(keys, 0o644);
  fs.chmodSync(tlsKey, 0o644);
  fs.chmodSync(dir, 0o755);
  const findings = byCheck(await runDoctor({ dataDir: dir, ports: RANDOM }), "permissions");
  t.match(findings, [
    { level: "warn", message: /mode 0755/, fix: `chmod 700 ${dir}` },
    { level: "error", message: new RegExp(`^${keys} is mode 0644`), fix: `chmod 600 ${keys}` },
    { level: "error", message: new RegExp(`^${tlsKey} is mode 0644`), fix: `chmod 600 ${tlsKey}` },
  ]);
  t.equal(findings.length, 3);

  const cli = await runCli(["doctor", "--data-dir", dir], { env: RANDOM_ENV });
  t.equal(cli.code, 1, "an error fails the run");
  t.match(cli.stdout, `ERROR permissions: ${keys} is mode 0644`);
  t.match(cli.stdout, `fix: chmod 600 ${keys}`);
  t.match(cli.stdout, /2 error\(s\), 1 warning\(s\)/);
});

t.test("an expired server certificate is an error; one expiring soon a warning", async (t) => {
  const { dir, tls, ca } = await dataDir(t.testdir());
  const now = Date.now();
  const expired = await issueCertificate(ca, {
    commonName: "server",
    hosts: ["localhost"],
    usage: "server",
    notBefore: new Date(now - 10 * DAY),
    notAfter: new Date(now - DAY),
  });
  fs.writeFileSync(path.join(tls, "server.pem"), expired.certPem);
  fs.writeFileSync(path.join(tls, "server-key.pem"), expired.keyPem, { mode: 0o600 });
  let certs = byCheck(await runDoctor({ dataDir: dir, ports: RANDOM }), "certificate");
  t.match(certs, [
    { level: "ok", message: /ca\.pem valid until/ },
    { level: "error", message: /server\.pem expired on /, fix: /restart the bus/ },
  ]);

  const soon = await issueCertificate(ca, {
    commonName: "server",
    hosts: ["localhost"],
    usage: "server",
    notAfter: new Date(now + 10 * DAY),
  });
  fs.writeFileSync(path.join(tls, "server.pem"), soon.certPem);
  certs = byCheck(await runDoctor({ dataDir: dir, ports: RANDOM }), "certificate");
  t.match(certs[1], { level: "warn", message: /server\.pem expires in (9|10) day\(s\)/ });

  // The same checks with the clock moved past the CA's own expiry.
  certs = byCheck(await runDoctor({ dataDir: dir, ports: RANDOM, now: () => now + 4000 * DAY }), "certificate");
  t.match(certs[0], { level: "error", message: /ca\.pem expired/, fix: /create a new CA/ });

  fs.writeFileSync(path.join(tls, "server.pem"), "not a certificate");
  certs = byCheck(await runDoctor({ dataDir: dir, ports: RANDOM }), "certificate");
  t.match(certs[1], { level: "error", message: /cannot be read as a certificate/ });
});

t.test("a configured port held by another process is an error; a missing data dir a warning", async (t) => {
  const other = net.createServer();
  const port = await listenLocal(t, other);
  const dir = path.join(t.testdir(), "nothing-here");
  const findings = await runDoctor({ dataDir: dir, ports: { nats: port, control: 0, monitoring: -1, websocket: -1 } });
  t.match(byCheck(findings, "port"), [
    { level: "error", message: `NATS port ${port} on 127.0.0.1 is in use by another process`, fix: /--nats-port/ },
    { level: "ok", message: /random/ },
    { level: "ok", message: /random/ },
    { level: "ok", message: /random/ },
  ]);
  t.match(byCheck(findings, "permissions"), [{ level: "warn", message: /no data dir/, fix: /unibus up/ }]);
  t.match(byCheck(findings, "certificate"), [{ level: "warn" }]);
});

t.test("nats-server and Node checks", async (t) => {
  const dir = t.testdir();
  const missing = path.join(dir, "no-such-nats-server");
  const findings = await runDoctor({
    dataDir: dir,
    ports: RANDOM,
    env: { ...process.env, UNIBUS_NATS_SERVER: missing },
  });
  t.match(byCheck(findings, "nats-server"), [{ level: "error", message: /no such file/, fix: /unibus install/ }]);
  t.match(checkNode("20.11.1"), { level: "error", message: /older than 22\.13\.0/ });
  t.match(checkNode("v22.13.0"), { level: "ok" });
  t.match(formatFindings([checkNode("20.0.0")]), /^ERROR node: .*\n {6}fix: install Node/);
});
