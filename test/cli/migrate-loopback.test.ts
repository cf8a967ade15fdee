// migrate-to-kv against a real bus on loopback: the bus speaks only TLS with its own CA,
// so without --ca the migration verifies it with the data dir's CA; a failure names what failed.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { loadOrCreateCa } from "../../lib/tls/index.ts";
import { testBus } from "../helpers/bus.ts";
import { runCli } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";

t.test("on loopback without --ca the data dir's CA is used, and a wrong CA is named", async (t) => {
  const dataDir = await tempDir(t);
  const bus = await testBus(t, { dataDir, store: "sqlite" });
  const alice = createIdentity();
  await bus.addUser(alice.signPub, { handle: "alice", role: "admin", kexPub: alice.kexPub });
  t.match(bus.natsUrl, /127\.0\.0\.1/, "a loopback target");

  const r = await runCli(["migrate-to-kv", "-d", dataDir, "--nats-url", bus.natsUrl]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /parity: OK/);

  const otherDir = await tempDir(t);
  await loadOrCreateCa(otherDir);
  const otherCa = fs
    .readdirSync(otherDir, { recursive: true })
    .map(String)
    .find((f) => f.endsWith("ca.pem"));
  const caFile = path.join(otherDir, otherCa!);
  const wrong = await runCli(["migrate-to-kv", "-d", dataDir, "--nats-url", bus.natsUrl, "--ca", caFile]);
  t.equal(wrong.code, 1);
  t.match(wrong.stderr, `cannot open the KV store on`);
  t.match(wrong.stderr, `TLS verified against ${caFile}`, "names the CA it tried");
  t.equal(wrong.stderr.trim().split("\n").at(-1)?.startsWith("unibus: "), true);

  const missing = await runCli([
    "migrate-to-kv",
    "-d",
    dataDir,
    "--nats-url",
    bus.natsUrl,
    "--ca",
    "/nonexistent/ca.pem",
  ]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /cannot read the bus CA \/nonexistent\/ca\.pem \(ENOENT\)/);
});
