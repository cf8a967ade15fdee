// The CA and the service keys of a running three-node cluster rotated together, phase by
// phase (rotate, switch, finish; each a rolling restart), under steady traffic: a
// publisher into a persisted room, a subscriber, control-plane writes, and a connect plus
// a signed control request through each node in turn every ~100 ms. No connect, route or
// control request is refused for its certificate or keys, nothing acknowledged is lost;
// afterwards the old CA and the old service keys let nothing in.
import fs from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect as natsConnect } from "@nats-io/transport-node";
import t from "tap";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import { finishServiceKeys, loadServiceKeys, rotateServiceKeys, switchServiceKeys } from "../../lib/auth/index.ts";
import { startCluster } from "../../lib/bus/cluster.ts";
import { busLayout } from "../../lib/bus/layout.ts";
import { connect } from "../../lib/client/connect.ts";
import { ControlClient } from "../../lib/client/control.ts";
import { registrationProofMessage } from "../../lib/control/protocol.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import type { NKeyPair } from "../../lib/crypto/index.ts";
import { NatsServerProcess } from "../../lib/nats/process.ts";
import { fetchPinnedCa, finishCa, issueCertificate, loadOrCreateCa, rotateCa, switchCa } from "../../lib/tls/index.ts";
import { tempDir } from "../helpers/fs.ts";
import { assertNothingLost, steadyLoad } from "../helpers/load.ts";
import { captureLogger } from "../helpers/log.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { collector } from "../helpers/room.ts";
import { waitFor } from "../helpers/wait.ts";

// Nine node restarts (three phases of a rolling restart): past the runner's default on a busy machine.
t.setTimeout(420_000);
const log = captureLogger();
const cluster = await startCluster({ nodes: 3, natsServer: NATS_SERVER, readyTimeoutMs: 40_000, logger: log.logger });
t.teardown(() => cluster.stop());
const root = cluster.dataDir;
const tlsDir = busLayout(root, "").tlsDir;
const admin = createIdentity();
await cluster.nodes[0]!.addUser(admin.signPub, { handle: "admin", role: "admin", kexPub: admin.kexPub });

/** What a certificate refusal looks like, as opposed to a node that is down or stopping. */
const REFUSAL = /certificate|CERT_|self[- ]signed|unable to verify/i;
/**
 * What a client sees of any callout denial. A rolling restart alone causes some: while a
 * KV group elects a new leader the callout cannot read the allowlist in time and denies
 * ("store unavailable", "decision timed out"), rotation or not (test/bus/rolling.test.ts).
 * So these are set against the callout's own reasons in the log.
 */
const DENIED = /Authorization Violation|AUTH_DENIED/;
/** The store's hiccups: the denials a rolling restart explains. */
const STORE_REASONS = new Set(["store unavailable", "decision timed out", "store not open"]);
function describe(err: unknown): string {
  const parts: string[] = [];
  for (let e = err as { message?: string; code?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    parts.push(`${String(e.code ?? "")} ${e.message ?? String(e)}`);
    if (parts.length > 4) break;
  }
  return parts.join(" <- ");
}

/**
 * What the logs say of every denial. nats-server logs each error answer of the callout
 * (WRN "auth callout service returned an error: …") and each answer it rejects (a wrong
 * issuer); the callout logs a request for an issuer it does not hold. A denial with none of
 * these is an answer that never came: the callout of a node that was stopping.
 */
function denialLog(serviceKeys: string[]) {
  const lines = (log.lines as { msg?: string; reason?: string }[]).map((l) => `${l.msg ?? ""} ${l.reason ?? ""}`);
  const answered = lines.flatMap((m) => /auth callout service returned an error: (.*?)\s*$/i.exec(m)?.[1] ?? []);
  return {
    answered,
    keyTrouble: lines.filter(
      (m) =>
        /issuer|auth callout violation|signing key is unknown|user JWT/i.test(m) ||
        (/authentication error/.test(m) && serviceKeys.some((k) => m.includes(k))),
    ),
  };
}

/** Connects through each node in turn (skipping one being restarted), then a signed control request through it. */
function connectLoop(ca: string, restarting: Set<number>) {
  const stats = { ok: 0, refused: [] as string[], denied: [] as string[], unavailable: [] as string[], running: true };
  const controls = cluster.controlUrls.map(
    (baseUrl) => new ControlClient({ baseUrl, ca, identity: admin, timeoutMs: 5000 }),
  );
  const done = (async () => {
    for (let i = 0; stats.running; i++) {
      const node = i % 3;
      if (restarting.has(node)) {
        await sleep(20);
        continue;
      }
      try {
        const nc = await natsConnect({
          servers: cluster.natsUrls[node]!,
          tls: { ca },
          authenticator: nkeySigner(admin.nkey, (d) => admin.sign(d)),
          reconnect: false,
          timeout: 15_000,
        });
        await nc.close();
        await controls[node]!.request("GET", `/v1/users/${admin.signPub}/rooms`);
        stats.ok++;
      } catch (err) {
        const text = `node ${node} at ${new Date().toISOString()}: ${describe(err)}`;
        (REFUSAL.test(text) ? stats.refused : DENIED.test(text) ? stats.denied : stats.unavailable).push(text);
      }
      await sleep(100);
    }
    await Promise.all(controls.map((c) => c.close()));
  })();
  return Object.assign(stats, {
    stop: async () => {
      stats.running = false;
      await done;
    },
  });
}

async function rollingRestart(restarting: Set<number>): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await sleep(300);
    restarting.add(i);
    try {
      await cluster.restart(i);
    } finally {
      restarting.delete(i);
    }
  }
}

/** A connect with `ca` to `natsUrl`: "ok", or the refusal's text. */
async function tryConnect(natsUrl: string, ca: string): Promise<string> {
  try {
    const nc = await natsConnect({
      servers: natsUrl,
      tls: { ca },
      authenticator: nkeySigner(admin.nkey, (d) => admin.sign(d)),
      reconnect: false,
      timeout: 10_000,
    });
    await nc.close();
    return "ok";
  } catch (err) {
    return describe(err);
  }
}

/** A connect as one of the bus' own nkey users (bypassing the callout): "ok", or the refusal's text. */
async function tryServiceKey(key: NKeyPair, ca: string): Promise<string> {
  try {
    const nc = await natsConnect({
      servers: cluster.natsUrls[0]!,
      tls: { ca },
      authenticator: nkeySigner(key.publicKey, (d) => key.sign(d)),
      reconnect: false,
      timeout: 10_000,
    });
    await nc.close();
    return "ok";
  } catch (err) {
    return describe(err);
  }
}

/**
 * An invite made through node 0's control plane now, registered by a new identity the way
 * `unibus register --ca-fingerprint` does it (the CA fetched from the handshake and pinned),
 * `later` (before or after the next restarts). Answers the pinned fingerprint and how the
 * registration went.
 */
async function invite(admin0: ControlClient) {
  const made = await admin0.request<{ token: string; caFingerprint: string }>("POST", "/v1/invites", {
    handle: `i${Math.random().toString(36).slice(2, 8)}`,
  });
  const register = async (): Promise<string> => {
    const url = cluster.controlUrls[0]!;
    let ca: string;
    try {
      ca = await fetchPinnedCa(url, made.caFingerprint);
    } catch (err) {
      return describe(err);
    }
    const id = createIdentity();
    const client = new ControlClient({ baseUrl: url, ca, identity: id });
    try {
      const body = {
        token: made.token,
        signPub: id.signPub,
        kexPub: id.kexPub,
        proof: id.sign(registrationProofMessage(made.token)).toString("base64url"),
      };
      await client.request("POST", "/v1/register", body, { signed: false });
      return "registered";
    } catch (err) {
      return describe(err);
    } finally {
      await client.close();
    }
  };
  return { pin: made.caFingerprint, register };
}

const oldCa = await loadOrCreateCa(tlsDir);
const oldKeys = await loadServiceKeys(root);

t.test("CA and service keys rotated under traffic: nothing refused, nothing lost", async (t) => {
  const restarting = new Set<number>();

  // Phase 1 on disk; clients are handed the bundle while the nodes roll onto it.
  const rotated = await rotateCa(tlsDir);
  await rotateServiceKeys(root);
  const bundle = await fs.readFile(rotated.clientCaFile, "utf8");
  const newCaPem = await fs.readFile(path.join(tlsDir, "ca-next.pem"), "utf8");

  const controls = cluster.controlUrls.map(
    (baseUrl) => new ControlClient({ baseUrl, ca: bundle, identity: admin, timeoutMs: 5000 }),
  );
  t.teardown(() => Promise.all(controls.map((c) => c.close())));
  const opts = { natsUrl: cluster.natsUrls, controlUrl: cluster.controlUrls[0]!, ca: bundle, identity: admin };
  const pub = await connect(opts);
  t.teardown(() => pub.close());
  const sub = await connect({ ...opts, controlUrl: cluster.controlUrls[1]! });
  t.teardown(() => sub.close());
  const room = await pub.createRoom({ encrypt: false, persist: true });
  const received = collector(await sub.openRoom(room.id));
  const load = steadyLoad({ client: pub, room, sender: admin, controls });
  const withBundle = connectLoop(bundle, restarting);
  // A client nobody has handed the bundle yet: it must keep connecting until the switch.
  const withOldCa = connectLoop(oldCa.certPem, restarting);

  await rollingRestart(restarting);
  // Invites pin the CA that signs the node's certificates: still the old one.
  const early = await invite(controls[0]!);
  t.equal(early.pin, oldCa.fingerprint, "an invite made during phase 1 pins the old (signing) CA");
  t.equal(await early.register(), "registered", "and registers during phase 1");
  const stale = await invite(controls[0]!);
  await withOldCa.stop();
  t.equal(cluster.nodes[0]!.caPem, bundle, "restarted nodes trust the bundle");
  t.same(
    withOldCa.refused,
    [],
    `a client holding only the old CA was never refused during phase 1 (${withOldCa.ok} connects)`,
  );
  t.ok(withOldCa.ok > 0);

  await switchCa(tlsDir);
  await switchServiceKeys(root);
  await rollingRestart(restarting);
  const switchedInvite = await invite(controls[0]!);
  t.equal(switchedInvite.pin, rotated.other, "after the switch, invites pin the new CA");
  t.equal(await switchedInvite.register(), "registered");
  t.match(
    await stale.register(),
    /CA_PIN_MISMATCH/,
    "an invite line from before the switch is refused before anything is sent: make a new one",
  );
  const oldOnly = await tryConnect(cluster.natsUrls[0]!, oldCa.certPem);
  t.match(
    oldOnly,
    REFUSAL,
    "after the switch the nodes present new-CA certificates: why clients need the bundle first",
  );
  t.equal(await tryServiceKey(oldKeys.app, bundle), "ok", "the old service keys are still let in until finish");

  await finishCa(tlsDir);
  await finishServiceKeys(root);
  await rollingRestart(restarting);

  await sleep(500);
  await Promise.all([load.stop(), withBundle.stop()]);
  const { publishes, writes, acked, written } = load;
  t.comment(
    `connects through each node: ${withBundle.ok} ok, ${withBundle.unavailable.length} while a node stopped; publishes refused ${publishes.refused} (longest ${Math.round(publishes.longestMs)} ms), writes refused ${writes.refused}`,
  );
  t.same(withBundle.refused, [], "no connect or control request was refused for its certificate");
  const keys = [oldKeys, await loadServiceKeys(root)].flatMap((k) =>
    [k.service, k.system, k.app].map((p) => p.publicKey),
  );
  const denials = denialLog(keys);
  const denied = [...withBundle.denied, ...withOldCa.denied];
  t.comment(
    `callout denials seen by the connect loops: ${denied.length}; callout answers with an error: ${denials.answered.join(", ") || "none"}`,
  );
  t.same(
    denials.keyTrouble,
    [],
    "no node asked for an issuer the callout lacked or refused its answer; no service key refused",
  );
  t.same(
    denials.answered.filter((r) => !STORE_REASONS.has(r)),
    [],
    "every denial the callout gave was the store's (a KV leader election during a restart), none for keys",
  );
  t.ok(withBundle.ok > 0 && acked.length > 0 && written.length > 0, "traffic flowed through all three phases");
  t.same(
    [...writes.reasons.keys()].filter((r) => REFUSAL.test(r)),
    [],
    `no control-plane write was refused for its certificate (${writes.refused} found every node busy: ${[...writes.reasons.keys()].join("; ")})`,
  );
  t.ok(received.got.length > 0, `the subscriber received (${received.got.length})`);

  await assertNothingLost(t, load, room, cluster.nodes[2]!.store);

  t.equal(cluster.nodes[0]!.caPem.trim(), newCaPem.trim(), "nodes now trust the new CA alone");
  for (let i = 0; i < 3; i++) {
    t.match(
      await tryConnect(cluster.natsUrls[i]!, oldCa.certPem),
      REFUSAL,
      `node ${i}: a client with only the old CA is refused`,
    );
    t.equal(
      await tryConnect(cluster.natsUrls[i]!, newCaPem),
      "ok",
      `node ${i}: a client with only the new CA connects`,
    );
  }
});

t.test("after finishing, the old CA's key and the old service keys let nothing in", async (t) => {
  const newCa = await loadOrCreateCa(tlsDir);
  const newKeys = await loadServiceKeys(root);
  t.not(newCa.fingerprint, oldCa.fingerprint);
  t.not(newKeys.issuer.publicKey, oldKeys.issuer.publicKey);

  // Each old key as a thief of the old key file would use it.
  for (const role of ["service", "system", "app"] as const) {
    t.match(
      await tryServiceKey(oldKeys[role], newCa.certPem),
      /Authorization Violation/,
      `the old ${role} key is refused`,
    );
  }
  t.equal(await tryServiceKey(newKeys.app, newCa.certPem), "ok", "the new app key connects");
  for (const node of cluster.nodes) {
    const conf = await fs.readFile(
      path.join(busLayout(root, node.serverName).natsDir, `${node.serverName}.conf`),
      "utf8",
    );
    const old = [oldKeys.issuer, oldKeys.service, oldKeys.system, oldKeys.app].filter((k) =>
      conf.includes(k.publicKey),
    );
    t.same(old, [], `${node.serverName}'s nats-server config names no old key`);
    t.ok(conf.includes(newKeys.issuer.publicKey), "and expects the new issuer");
  }

  // A would-be node with a route certificate minted by the old CA's key, and one with a
  // certificate of the new CA as the control: the control joins, the impostor does not.
  const dir = await tempDir(t);
  const varz = (await (await fetch(`${cluster.monitorUrls[0]}/varz`)).json()) as { cluster: { cluster_port: number } };
  const route = `nats-route://127.0.0.1:${varz.cluster.cluster_port}`;
  const rogue = async (name: string, signer: { certPem: string; keyPem: string }) => {
    const issued = await issueCertificate(signer, {
      commonName: name,
      hosts: ["127.0.0.1", "localhost"],
      usage: "peer",
    });
    const files = { certFile: path.join(dir, `${name}.pem`), keyFile: path.join(dir, `${name}-key.pem`) };
    await fs.writeFile(files.certFile, issued.certPem);
    await fs.writeFile(files.keyFile, issued.keyPem, { mode: 0o600 });
    const server = new NatsServerProcess({
      binary: NATS_SERVER,
      workDir: path.join(dir, name),
      supervise: false,
      config: {
        serverName: name,
        host: "127.0.0.1",
        port: -1,
        http: { host: "127.0.0.1", port: -1 },
        cluster: {
          name: cluster.name,
          host: "127.0.0.1",
          port: -1,
          routes: [route],
          tls: { ...files, caFile: newCa.certFile, timeout: 2 },
        },
      },
    });
    t.teardown(() => server.stop());
    const ports = await server.start();
    return { server, monitor: `http://127.0.0.1:${ports.monitoring}` };
  };
  const routes = async (monitor: string) =>
    ((await (await fetch(`${monitor}/routez`)).json()) as { num_routes: number }).num_routes;
  await fs.mkdir(path.join(dir, "control"));
  await fs.mkdir(path.join(dir, "impostor"));
  const [control, impostor] = await Promise.all([rogue("control", newCa), rogue("impostor", oldCa)]);
  await waitFor("the control node to be routed", async () => (await routes(control.monitor)) > 0, 30_000);
  // Go's TLS client offers its certificate only when the node asks for its issuer, so the
  // impostor's attempts end with the node's "client didn't provide a certificate".
  await waitFor(
    "the impostor's route attempts to be closed twice",
    () => impostor.server.recentLog().filter((l) => /Router connection closed/.test(l)).length >= 2,
    30_000,
  );
  t.equal(await routes(impostor.monitor), 0, "a route with an old-CA certificate is refused");
  const node0 = (await (await fetch(`${cluster.monitorUrls[0]}/routez`)).json()) as {
    routes: { remote_name?: string }[];
  };
  const names = node0.routes.map((r) => r.remote_name);
  t.ok(names.includes("control"), "the node routes to the new-CA control");
  t.notOk(names.includes("impostor"), "and not to the impostor");
  await control.server.stop();
  await impostor.server.stop();
});
