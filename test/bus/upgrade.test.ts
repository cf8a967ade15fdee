// Upgrading nats-server one node at a time (docs/operations.md, "Upgrading unibus and
// nats-server, node by node"): a three-node KV cluster started on the floor release
// (2.10.27) on every node is moved node by node to the default release under steady
// traffic — publishes into a persisted room with a subscriber counting, logins through
// the callout, signed control-plane writes — the cluster running mixed versions in
// between. Then the same way back down, which nats-server does not promise (see the docs).
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t, { type Test } from "tap";
import { startCluster } from "../../lib/bus/cluster.ts";
import { connect } from "../../lib/client/connect.ts";
import { ControlClient } from "../../lib/client/control.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { NatsBinaryError } from "../../lib/errors.ts";
import { FLOOR_NATS_VERSION, installNatsServer, PINNED_NATS_VERSION } from "../../lib/nats/binary.ts";
import { type BusStatus, collectStatus, formatStatus } from "../../lib/ops/index.ts";
import { writeRunInfo } from "../../lib/ops/run-file.ts";
import type { Snapshot } from "../../lib/store/index.ts";
import { steadyLoad } from "../helpers/load.ts";
import { collector } from "../helpers/room.ts";

// Both releases from the cache (the floor is fetched as `npm run test:floor` fetches it when
// missing). UNIBUS_NATS_SERVER names one binary for everything; this test needs two.
const { UNIBUS_NATS_SERVER: _, ...env } = process.env;
const [floor, current] = await Promise.all([
  installNatsServer({ version: FLOOR_NATS_VERSION, env }),
  installNatsServer({ version: PINNED_NATS_VERSION, env }),
]);

const cluster = await startCluster({ nodes: 3, natsServer: floor.path, readyTimeoutMs: 60_000 });
t.teardown(() => cluster.stop());
// `unibus status` finds a bus through its run file; ports and control URLs survive restarts.
await writeRunInfo(cluster.dataDir, cluster);

const admin = createIdentity();
const bob = createIdentity();
await cluster.nodes[0]!.addUser(admin.signPub, { handle: "admin", role: "admin", kexPub: admin.kexPub });
await cluster.nodes[0]!.addUser(bob.signPub, { handle: "bob", kexPub: bob.kexPub });
const controls = cluster.controlUrls.map(
  (baseUrl) => new ControlClient({ baseUrl, ca: cluster.caPem, identity: admin, timeoutMs: 5000 }),
);
t.teardown(() => Promise.all(controls.map((c) => c.close())));
const opts = { natsUrl: cluster.natsUrls, controlUrl: cluster.controlUrls[0]!, ca: cluster.caPem };

/** The nats-server version each node reports through `unibus status`, once the bus is healthy. */
async function versionsInStatus(): Promise<{ versions: (string | undefined)[]; status: BusStatus }> {
  let status = await collectStatus({ dataDir: cluster.dataDir });
  // A node that just came back may still show a replica catching up: healthy follows shortly.
  const deadline = performance.now() + 45_000;
  while (status.state !== "healthy" && performance.now() < deadline) {
    await sleep(200);
    status = await collectStatus({ dataDir: cluster.dataDir });
  }
  if (status.state !== "healthy") t.comment(`status still ${status.state}: ${status.problems.join("; ")}`);
  const byName = new Map(status.nodes.map((n) => [n.name, n.version]));
  return { versions: cluster.nodes.map((n) => byName.get(n.serverName)), status };
}

/** Every user, room, member and sealed key of `before` is in `after`, unchanged. */
function missingFrom(before: Snapshot, after: Snapshot): string[] {
  const keyed = <T>(xs: T[]) => new Set(xs.map((x) => JSON.stringify(x)));
  const missing: string[] = [];
  for (const [what, a, b] of [
    ["user", before.users, after.users],
    ["room", before.rooms, after.rooms],
    ["member", before.members, after.members],
    ["sealed key", before.sealedKeys, after.sealedKeys],
  ] as const) {
    const there = keyed(b as unknown[]);
    for (const x of a as unknown[]) if (!there.has(JSON.stringify(x))) missing.push(`${what} ${JSON.stringify(x)}`);
  }
  return missing;
}

/** Moves every node, one at a time, to `binary` under traffic; checks nothing acknowledged was lost. */
async function rollTo(t: Test, binary: { path: string; version: string }, from: string): Promise<void> {
  await using c = await connect({ ...opts, identity: admin });
  await using listener = await connect({ ...opts, identity: bob });
  const room = await c.createRoom({ encrypt: false, persist: true });
  await room.addMember(bob);
  const heard = collector(await listener.openRoom(room.id));
  // The subscription's interest reaches the publisher's node over a route a moment later:
  // it is in place once a message published after it arrives.
  for (let i = 0; i < 75 && heard.got.length === 0; i++) {
    await room.publish(`probe-${i}`);
    await heard.until(1, 200);
  }
  t.ok(heard.got.length > 0, "the subscriber hears the room");
  const before = await cluster.nodes[0]!.store.snapshot();

  const load = steadyLoad({
    client: c,
    room,
    sender: admin,
    controls,
    // Through the nodes that are up: a login aimed at the one restarting measures nothing.
    logins: {
      natsUrls: cluster.natsUrls,
      ca: cluster.caPem,
      nodes: () => cluster.nodes.flatMap((n, i) => (n.state === "running" ? [i] : [])),
    },
  });
  const { publishes, writes, logins, acked, written } = load;
  for (let i = 0; i < cluster.nodes.length; i++) {
    await sleep(500);
    await cluster.restart(i, { natsServer: binary.path });
    const { versions } = await versionsInStatus();
    t.same(
      versions,
      cluster.nodes.map((_, j) => (j <= i ? binary.version : from)),
      `after node ${i + 1}: ${versions.join(", ")}`,
    );
  }
  await sleep(500);
  await load.stop();
  t.comment(
    `${from} -> ${binary.version}, longest refused stretch: publish ${Math.round(publishes.longestMs)} ms (${publishes.refused} refused of ${acked.length + publishes.refused}), control-plane write ${Math.round(writes.longestMs)} ms (${writes.refused} refused of ${written.length + writes.refused}), login ${Math.round(logins.longestMs)} ms (${logins.refused} refused of ${load.loginsOk + logins.refused})`,
  );
  for (const [kind, w] of Object.entries({ publish: publishes, write: writes, login: logins })) {
    for (const [reason, n] of w.reasons) t.comment(`  ${kind} refused ${n}x: ${reason}`);
  }
  t.ok(acked.length > 0 && written.length > 0 && load.loginsOk > 0, "publishes, writes and logins went on");

  const stored: string[] = [];
  for await (const m of room.history()) stored.push(new TextDecoder().decode(m.data));
  const storedSet = new Set(stored);
  t.same(
    acked.filter((x) => !storedSet.has(x)),
    [],
    `every acknowledged message is stored (${acked.length})`,
  );
  t.equal(storedSet.size, stored.length, "and none twice");
  for (const node of cluster.nodes) {
    const users = new Set((await node.store.listUsers()).map((u) => u.signPub));
    t.same(
      written.filter((p) => !users.has(p)),
      [],
      `${node.serverName} has every acknowledged write (${written.length})`,
    );
    t.same(missingFrom(before, await node.store.snapshot()), [], `${node.serverName} has every user and room`);
  }

  // Live delivery is core NATS: the subscriber misses what was published while its own
  // node restarted, and hears a publish whose store was refused. It heard nothing twice,
  // nothing out of order and nothing that was not published.
  const texts = heard.texts().filter((x) => x.startsWith("m-"));
  const numbers = texts.map((x) => Number(x.slice(2)));
  const attempted = acked.length + publishes.refused;
  t.ok(
    numbers.every((n, i) => texts[i] === `m-${n}` && n < attempted && (i === 0 || n > numbers[i - 1]!)),
    `the subscriber heard ${texts.length} of ${attempted} published, in order`,
  );
  const count = heard.got.length;
  await room.publish("after");
  await room.flush();
  t.equal(await heard.until(count + 1, 15_000), count + 1, "and still hears the room");
}

t.test("a node restarted on a binary that is not nats-server stays up", async (t) => {
  const node = cluster.nodes[1]!;
  await t.rejects(cluster.restart(1, { natsServer: "/nonexistent/nats-server" }), NatsBinaryError);
  // A program that answers `--version` with a version but is some other program.
  const other = path.join(t.testdir(), "other");
  await writeFile(other, '#!/bin/sh\necho "other 2.15.1"\n', { mode: 0o755 });
  await t.rejects(cluster.restart(1, { natsServer: other }), NatsBinaryError, "a binary that is not it");
  t.equal(cluster.nodes[1], node, "the node was not restarted");
  t.equal(node.state, "running", "and still runs");
});

t.test(`upgrade ${FLOOR_NATS_VERSION} -> ${PINNED_NATS_VERSION} node by node under traffic`, async (t) => {
  const { versions } = await versionsInStatus();
  t.same(versions, [floor.version, floor.version, floor.version], "every node starts on the floor");

  // An encrypted room made on the old release is read on the new one.
  const c = await connect({ ...opts, identity: admin });
  const secret = await c.createRoom({ encrypt: true, persist: true });
  await secret.addMember(bob);
  await secret.publish("written on the floor");
  await secret.flush();
  await c.close();

  await rollTo(t, current, floor.version);

  const { status } = await versionsInStatus();
  t.equal(status.state, "healthy", "unibus status: healthy");
  const text = formatStatus(status);
  t.equal(
    text.split("\n").filter((l) => l.includes(`nats-server ${current.version}`)).length,
    3,
    "every node shows its version in the status text",
  );

  await using b = await connect({ ...opts, identity: bob });
  const read: string[] = [];
  for await (const m of (await b.openRoom(secret.id)).history()) read.push(new TextDecoder().decode(m.data));
  t.same(read, ["written on the floor"], "bob decrypts what was written before the upgrade");
});
