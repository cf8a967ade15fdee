// Three `unibus up` members of a cluster of machines (separate data dirs, one CA copied).
// A member that cannot reach its peers says so: `degraded` naming the peers and the route
// error instead of `ready` (refused: started before the others; TLS: a node given another
// CA), keeps running and says `ready` once they join. Its /readyz names the routes part
// down while the others, still a majority, stay ready. `status` names the route failure
// in one line; on the KV cluster it shows the store's counts and every stream's
// replication from a node that does not lead them.
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { request } from "undici";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import { loadServiceKeys } from "../../lib/auth/service-keys.ts";
import { learnFreeRoutePorts } from "../../lib/bus/cluster-plan.ts";
import { type BusStatus, collectStatus, formatStatus } from "../../lib/ops/index.ts";
import { newInviteToken, openStore, type Store } from "../../lib/store/index.ts";
import { RANDOM_PORTS, runCli, upJson } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";
import { trustingAgent } from "../helpers/http.ts";
import { copyShared, SHARED_FILES, sharedSecrets } from "../helpers/machines.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { kexPubHex, signPubHex } from "../store/keys.ts";

// Three members started and restarted as real processes on a loaded machine: more than the default.
t.setTimeout(360_000);

type Line = { event: string; reason?: string; routes?: { quorum: boolean }; controlUrls: string[] };
const events = (lines: string[]) => lines.map((l) => JSON.parse(l) as Line);

async function until<T>(what: string, probe: () => Promise<T | undefined>, attempts = 120, everyMs = 500): Promise<T> {
  for (let i = 0; i < attempts; i++) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    await sleep(everyMs);
  }
  throw new Error(`gave up waiting: ${what}`);
}

t.test("a member cut off from its peers is degraded and says why; it says ready once it joins", async (t) => {
  const root = await tempDir(t, "degraded");
  const dirs = ["a", "b", "c"].map((x) => path.join(root, x));
  await sharedSecrets(dirs);
  const ports = await learnFreeRoutePorts({ binary: NATS_SERVER, count: 3, host: "127.0.0.1", dir: root });
  const routes = ports.flatMap((p) => ["--route", `nats-route://127.0.0.1:${p}`]);
  const member = (i: number, waitSeconds: number) =>
    upJson(t, [
      ...["--data-dir", dirs[i]!, ...RANDOM_PORTS, "--server-name", `n-${"abc"[i]}`, "--cluster-name", "team"],
      ...["--cluster-port", String(ports[i]), "--replicas", "3", "--route-wait-seconds", String(waitSeconds)],
      ...routes,
    ]);
  const runFile = (i: number) => JSON.parse(fs.readFileSync(path.join(dirs[i]!, "run.json"), "utf8"));
  const ca = fs.readFileSync(path.join(dirs[0]!, "tls", "ca.pem"), "utf8");
  const readyz = async (url: string, trust = ca) => {
    const res = await request(`${url}/readyz`, { dispatcher: trustingAgent(t, trust) });
    return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
  };

  // Started before its peers: nothing answers on their route ports.
  const a = await member(0, 2);
  t.match(a.ready, {
    event: "degraded",
    reason: /^node n-a is routed to 0 of 2 peer\(s\); .*connection refused.*cut off from a majority/,
  });
  t.match(runFile(0).readiness, { state: "degraded", reason: /routed to 0 of 2/ });
  const [b, c] = await Promise.all([member(1, 60), member(2, 60)]);
  t.equal(b.ready.event, "ready", "a member whose peers answer says ready");
  t.equal(c.ready.event, "ready");
  await until("n-a says ready once its peers joined", async () =>
    events(a.lines).some((e) => e.event === "ready") ? true : undefined,
  );
  t.same(
    events(a.lines).map((e) => e.event),
    ["degraded", "ready"],
    "degraded, then ready: nothing else",
  );
  t.match(runFile(0).readiness, { state: "ready" });

  // What the test writes, host-trusted, as `user add` and `invite create` do.
  const store = await until("the replicated store is open", () => kvStore(dirs[0]!));
  const alice = await store.addUser({ signPub: signPubHex(), kexPub: kexPubHex(), handle: "alice", role: "admin" });
  const bob = await store.addUser({ signPub: signPubHex(), kexPub: kexPubHex(), handle: "bob", role: "member" });
  const room = await store.createRoom({
    id: "r1",
    subject: "room.r1",
    ownerSignPub: alice.signPub,
    encrypt: false,
    persist: false,
    signMsgs: false,
    ownerSealedKey: null,
  });
  await store.addMember(room.id, { signPub: bob.signPub });
  await store.createInvite({ token: newInviteToken(), handle: "carol", role: "member", createdBy: "host" });
  await store.close();

  // A careless CA change on c: a new CA in its data dir, so its route certificate is from it.
  const printed = [a.lines.length, b.lines.length];
  c.child.kill("SIGTERM");
  t.equal(await c.exited, 0);
  const saved = path.join(root, "saved");
  copyShared(dirs[2]!, saved);
  fs.rmSync(path.join(dirs[2]!, "tls"), { recursive: true });
  copyShared(saved, dirs[2]!, ["service-keys.json"]);
  const cut = await member(2, 5);
  t.match(cut.ready, {
    event: "degraded",
    reason: /^node n-c is routed to 0 of 2 peer\(s\); .*TLS: .*(unknown authority|bad certificate)/,
    routes: { quorum: false },
  });
  t.notOk(
    events(cut.lines).some((e) => e.event === "ready"),
    "no ready line",
  );
  const otherCa = fs.readFileSync(path.join(dirs[2]!, "tls", "ca.pem"), "utf8");
  t.not(otherCa, ca, "c runs on another CA");
  const cutHealth = await readyz(cut.ready.controlUrls[0]!, otherCa);
  t.equal(cutHealth.status, 503, "the cut-off node fails its readiness check");
  t.match(cutHealth.body, { parts: { routes: "down" }, routes: { planned: 2, connected: [], quorum: false } });
  // Its store waits for a majority too: that is why the routes are the part to fix.
  t.ok((cutHealth.body.down as string[]).includes("routes"), "routes named down");
  // The others lost a peer but are a majority: a load balancer keeps them.
  for (const [i, m] of [a, b].entries()) {
    const h = await until(`n-${"ab"[i]} sees n-c's route fail`, async () => {
      const r = await readyz(m.ready.controlUrls[0]!);
      const missing = (r.body.routes as { missing?: { kind?: string }[] } | undefined)?.missing ?? [];
      return missing.some((x) => x.kind === "tls") ? r : undefined;
    });
    t.equal(h.status, 200, `n-${"ab"[i]} stays ready`);
    t.match(h.body, { routes: { planned: 2, connected: [`n-${"ba"[i]}`], quorum: true } });
    t.equal(m.lines.length, printed[i], `n-${"ab"[i]} prints nothing new`);
  }

  // status on a node of the majority: the lost peer's TLS failure once, the replicas it left behind apart.
  const fromA = await collectStatus({ dataDir: dirs[0]! });
  t.match(
    fromA.problems[0],
    /^node n-a is routed to 1 of 2 peer\(s\) \(n-b\); 127\.0\.0\.1:\d+: TLS: .*; fix: .*same CA/,
  );
  t.notMatch(fromA.problems[0], /cut off from a majority/, "n-a is in the majority");
  t.same(
    fromA.problems.filter((p) => /not current|meta leader/.test(p)),
    [],
    "no replica lines among the problems",
  );

  // status on the cut-off node: the route failure in one line, its effects apart.
  const cli = await runCli(["status", "--json", "--data-dir", dirs[2]!]);
  t.equal(cli.code, 1, cli.stderr);
  const s = JSON.parse(cli.stdout) as BusStatus;
  t.equal(s.state, "degraded");
  t.match(s.problems[0], /^node n-c is routed to 0 of 2 peer\(s\); .*TLS: .*cut off from a majority.*; fix: .*same CA/);
  t.same(
    s.problems.filter((p) => /meta leader|not current|KV bucket|store does not answer|control plane/.test(p)),
    [],
    `the effects are not listed as problems: ${s.problems.join(" | ")}`,
  );
  t.ok((s.derived ?? []).length > 0, "they are listed apart");
  t.match(s.readiness, { state: "degraded" });
  t.match(formatStatus(s), /routes: +0 of 2 peer\(s\), NO MAJORITY\n +missing 127\.0\.0\.1:\d+: TLS: /);
  t.match(formatStatus(s), /more follow from the routes above/);

  // The fix: the cluster's CA back (the certificates from the wrong one go), then a restart.
  cut.child.kill("SIGTERM");
  t.equal(await cut.exited, 0);
  fs.rmSync(path.join(dirs[2]!, "tls"), { recursive: true });
  copyShared(saved, dirs[2]!, SHARED_FILES);
  const healed = await member(2, 60);
  t.equal(healed.ready.event, "ready", (healed.ready as Partial<Line>).reason ?? "");

  // status from c, which leads few if any streams after rejoining: the whole cluster's view.
  let last: BusStatus | undefined;
  const ok = await until("the cluster is healthy from n-c", async () => {
    last = await collectStatus({ dataDir: dirs[2]! });
    return last.state === "healthy" && last.counts ? last : undefined;
  }).catch((err: Error) => {
    t.fail(`${err.message}: ${last?.problems.join(" | ")}`);
    return undefined;
  });
  if (!ok) return;
  t.same(ok.counts, { users: 2, activeUsers: 2, admins: 1, rooms: 1, members: 2, invites: 1, openInvites: 1 });
  const buckets = (ok.streams ?? []).filter((x) => x.bucket?.startsWith("unibus_"));
  t.ok(
    ["unibus_users", "unibus_nonces"].every((b) => buckets.some((x) => x.bucket === b)),
    `the control and nonce buckets are listed (${buckets.map((x) => x.bucket)})`,
  );
  for (const st of buckets) {
    t.match(st, { replicas: 3, leader: /^n-[abc]$/ }, `${st.bucket}: R3 with a leader`);
    t.equal(st.followers.length, 2, `${st.bucket}: two followers`);
    t.ok(
      st.followers.every((f) => f.current),
      `${st.bucket}: both current`,
    );
  }
  t.ok(
    buckets.some((x) => x.leader !== "n-c"),
    "buckets led by the other nodes are shown too",
  );
  const text = formatStatus(ok);
  t.match(text, /kv unibus_users: R3, leader n-[abc], n-[abc] current, n-[abc] current, \d+ msg\(s\)/);
  t.match(text, /users: +2 \(2 active, 1 admin\)/);
  t.match(text, /rooms: +1 \(2 members\)/);
  t.match(text, /invites: +1 \(1 open\)/);
  t.match(text, /routes: +2 of 2 peer\(s\) \(n-a, n-b\)/);
});

/** The replicated store, bound as the admin CLI binds it; undefined until its buckets exist. */
async function kvStore(dataDir: string): Promise<Store | undefined> {
  const run = JSON.parse(fs.readFileSync(path.join(dataDir, "run.json"), "utf8")) as { natsUrls: string[] };
  const keys = await loadServiceKeys(dataDir);
  return openStore({
    backend: "kv",
    servers: run.natsUrls,
    caPem: fs.readFileSync(path.join(dataDir, "tls", "ca.pem"), "utf8"),
    authenticator: nkeySigner(keys.app.publicKey, (d) => keys.app.sign(d)),
    bind: true,
    openTimeoutMs: 5000,
  });
}
