// Messages that send the user the right way: a wrong --ca, a revoked identity, a key
// already on the allowlist.
import path from "node:path";
import t from "tap";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { AuthDeniedError } from "../../lib/errors.ts";
import { writeRunInfo } from "../../lib/ops/run-file.ts";
import { loadOrCreateCa } from "../../lib/tls/index.ts";
import { member, testBus } from "../helpers/bus.ts";
import { oneLineError, runCli } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

t.test("a revoked identity is told it may have been revoked, not to ask for `user add`", async (t) => {
  const bus = await testBus(t, { natsServer: NATS_SERVER });
  const bob = await member(bus, "bob");
  await bus.store.revokeUser(bob.signPub);
  const err = await connect({
    natsUrl: bus.natsUrl,
    controlUrl: bus.controlUrl,
    ca: bus.caPem,
    identity: bob,
    timeoutMs: 5000,
  }).catch((e: unknown) => e);
  t.ok(err instanceof AuthDeniedError, "a typed denial");
  t.match((err as Error).message, /not on the allowlist, was revoked, or has reached its connection limit/);
  t.notMatch((err as Error).message, /unibus user add/);
  // The same text for a key never added: the denial does not tell an attacker which it is.
  const stranger = await connect({
    natsUrl: bus.natsUrl,
    controlUrl: bus.controlUrl,
    ca: bus.caPem,
    identity: createIdentity(),
    timeoutMs: 5000,
  }).catch((e: unknown) => e);
  t.equal((stranger as Error).message, (err as Error).message);
});

t.test("a wrong --ca says the TLS certificate was not trusted and names --ca", async (t) => {
  const root = await tempDir(t, "wrongca");
  const dataDir = path.join(root, "bus");
  const bus = await testBus(t, { dataDir, natsServer: NATS_SERVER });
  await writeRunInfo(dataDir, bus);
  await loadOrCreateCa(path.join(root, "other"));
  const r = await runCli([
    "user",
    "list",
    "--data-dir",
    dataDir,
    "--store",
    "kv",
    "--server",
    bus.natsUrl,
    "--ca",
    path.join(root, "other", "ca.pem"),
  ]);
  oneLineError(t, r, /the TLS certificate of .* was not trusted.*pass --ca <file> with the bus CA/, "wrong CA");
});

t.test("user add of a key on the allowlist names the next command", async (t) => {
  const dataDir = path.join(await tempDir(t, "dupe"), "bus");
  const alice = createIdentity();
  const d = ["--data-dir", dataDir];
  t.equal((await runCli(["user", "add", alice.signPub, "--handle", "alice", ...d])).code, 0);
  oneLineError(
    t,
    await runCli(["user", "add", alice.signPub, "--handle", "alice2", ...d]),
    new RegExp(
      `${alice.signPub} is already on the allowlist; .*\`unibus user list\`.*\`unibus user delete ${alice.signPub}\``,
    ),
    "duplicate key",
  );
});

t.test("user reinstate: a revoked user comes back; every refusal names the next command", async (t) => {
  const dataDir = path.join(await tempDir(t, "reinstate"), "bus");
  const d = ["--data-dir", dataDir];
  const bob = createIdentity();
  t.equal((await runCli(["user", "add", bob.signPub, "--handle", "bob", ...d])).code, 0);
  oneLineError(
    t,
    await runCli(["user", "reinstate", bob.signPub, ...d]),
    /is already active; nothing to reinstate \(`unibus user list`/,
    "an active user",
  );
  t.equal((await runCli(["user", "revoke", bob.signPub, ...d])).code, 0);
  oneLineError(
    t,
    await runCli(["user", "revoke", bob.signPub, ...d]),
    new RegExp(`already revoked; to let it in again: \`unibus user reinstate ${bob.signPub}\``),
    "a second revoke",
  );
  const r = await runCli(["user", "reinstate", bob.signPub, ...d]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^reinstated bob \(member, active\)/);
  const list = JSON.parse((await runCli(["user", "list", "--json", ...d])).stdout);
  t.equal(list[0].status, "active");
  t.equal(list[0].revokedAt, null);
  const stranger = createIdentity().signPub;
  oneLineError(
    t,
    await runCli(["user", "reinstate", stranger, ...d]),
    new RegExp(`is not on the allowlist; add it with \`unibus user add ${stranger} --handle <handle>\``),
    "an unknown key",
  );
});
