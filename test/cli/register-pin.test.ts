// `unibus register` with the invite line alone: the CA fingerprint is enough. The bus CA
// is read from the control plane's handshake and taken only when its fingerprint is the
// pinned one; a server holding another CA — a second bus, or an attacker relaying the real
// CA after its own certificate — is refused with one line and receives nothing.
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import t, { type Test } from "tap";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { loadOrCreateCa, loadOrCreateServerCertificate, pemFingerprint } from "../../lib/tls/index.ts";
import { testBus } from "../helpers/bus.ts";
import { oneLineError, runCli } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";
import { freePort, listenLocal } from "../helpers/net.ts";

async function invite(t: Test, dataDir: string, handle: string): Promise<string> {
  const r = await runCli(["invite", "create", "--json", "--handle", handle, "--data-dir", dataDir]);
  t.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).token;
}

/** Requests the control plane of `bus` has answered so far, over every route. */
async function requestsServed(bus: Unibus): Promise<number> {
  const values = (await bus.metrics.httpLatency.get()).values;
  return values.filter((v) => v.metricName?.endsWith("_count")).reduce((n, v) => n + v.value, 0);
}

t.test("the fingerprint alone registers against the real bus; the CA is fetched and checked", async (t) => {
  const dir = await tempDir(t);
  const dataDir = path.join(dir, "bus");
  const bus = await testBus(t, { dataDir });
  const token = await invite(t, dataDir, "alice");
  const fp = pemFingerprint(bus.caPem);
  const me = path.join(dir, "me.json");
  // The way a person pastes it: upper case with colons works as well as the printed form.
  const colons = fp.toUpperCase().replace(/(..)(?!$)/g, "$1:");
  const r = await runCli([
    "register",
    token,
    "--identity",
    me,
    "--control-url",
    bus.controlUrl,
    "--ca-fingerprint",
    colons,
  ]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, "registered alice (member)");
  const signPub = JSON.parse(fs.readFileSync(me, "utf8")).signPub;
  t.match(await bus.store.getUser(signPub), { handle: "alice", status: "active" });
});

t.test("a second bus's CA is refused with one line, nothing is sent, the token stays open", async (t) => {
  const dir = await tempDir(t);
  const realDir = path.join(dir, "real");
  const real = await testBus(t, { dataDir: realDir });
  const other = await testBus(t, { dataDir: path.join(dir, "other") });
  const token = await invite(t, realDir, "bob");
  const me = path.join(dir, "me.json");
  const before = await requestsServed(other);
  const r = await runCli([
    ...["register", token, "--identity", me, "--control-url", other.controlUrl],
    ...["--ca-fingerprint", pemFingerprint(real.caPem)],
  ]);
  oneLineError(
    t,
    r,
    /presents no CA with the invite's fingerprint [0-9a-f]{64} .*refusing it, nothing was sent/,
    "other bus",
  );
  t.match(r.stderr, pemFingerprint(other.caPem), "it names the CA it was shown");
  t.equal(await requestsServed(other), before, "the other bus's control plane received no request");
  t.notOk(fs.existsSync(me), "no identity created");
  t.equal((await real.store.listInvites()).find((i) => i.handle === "bob")?.status, "open", "the token is not spent");
});

t.test("an attacker sending the real CA after its own certificate gets no byte", async (t) => {
  const dir = await tempDir(t);
  const realDir = path.join(dir, "real");
  const real = await testBus(t, { dataDir: realDir });
  const token = await invite(t, realDir, "carol");
  // The bus CA is public: the attacker sends it in its chain, after a leaf its own CA issued.
  const evilCa = await loadOrCreateCa(path.join(dir, "evil"));
  const leaf = await loadOrCreateServerCertificate(path.join(dir, "evil"), evilCa, { name: "control" });
  let received = 0;
  let connections = 0;
  const server = tls.createServer({ cert: `${leaf.certPem.trimEnd()}\n${real.caPem}`, key: leaf.keyPem }, (s) => {
    s.on("data", (d: Buffer) => {
      received += d.length;
    });
    s.on("error", () => {});
  });
  server.on("tlsClientError", () => {});
  server.on("connection", () => {
    connections++;
  });
  const port = await listenLocal(t, server);
  const me = path.join(dir, "me.json");
  const r = await runCli([
    ...["register", token, "--identity", me, "--control-url", `https://127.0.0.1:${port}`],
    ...["--ca-fingerprint", pemFingerprint(real.caPem)],
  ]);
  // Only the presented certificate's issuers count: the relayed CA issued nothing here.
  oneLineError(t, r, /presents no CA with the invite's fingerprint .*refusing it, nothing was sent/, "relayed CA");
  t.match(r.stderr, pemFingerprint(leaf.certPem), "it names the certificate it was shown");
  t.ok(connections >= 1, "the attacker was asked for its handshake");
  t.equal(received, 0, "not one byte of the registration reached the attacker");
  t.equal((await real.store.listInvites()).find((i) => i.handle === "carol")?.status, "open", "the token is not spent");
});

t.test("register's own refusals: no CA at all, a malformed fingerprint, nothing listening", async (t) => {
  const dir = await tempDir(t);
  const token = "ab".repeat(32);
  const me = path.join(dir, "me.json");
  const base = ["register", token, "--identity", me];
  const [none, malformed, nobody] = await Promise.all([
    runCli([...base, "--control-url", "https://127.0.0.1:8470"]),
    runCli([...base, "--control-url", "https://127.0.0.1:8470", "--ca-fingerprint", "abc"]),
    runCli([...base, "--control-url", `https://127.0.0.1:${await freePort()}`, "--ca-fingerprint", "cd".repeat(32)]),
  ]);
  oneLineError(t, none, /pass --ca-fingerprint <hex> from the invite line/, "neither --ca nor --ca-fingerprint");
  oneLineError(t, malformed, /--ca-fingerprint must be the 64 hex characters/, "malformed fingerprint");
  oneLineError(
    t,
    nobody,
    /could not reach the control plane at https:\/\/127\.0\.0\.1:\d+ to fetch its CA/,
    "nothing there",
  );
  t.notOk(fs.existsSync(me), "no identity created for any of them");
});
