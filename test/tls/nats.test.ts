import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import t from "tap";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../../lib/tls/index.ts";
import { tempDir } from "../helpers/fs.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

// Go's crypto/tls in nats-server must accept what we issue, as a server and as a client.

type Ports = { nats?: string[]; cluster?: string[]; monitoring?: string[] };

/** Starts nats-server with a JSON config on random ports; resolves with what it wrote to its ports file. */
async function startNats(
  t: Parameters<typeof tempDir>[0],
  dir: string,
  config: Record<string, unknown>,
): Promise<Ports> {
  const portsDir = await fs.mkdtemp(path.join(dir, "ports-"));
  const configFile = path.join(portsDir, "nats.conf");
  await fs.writeFile(configFile, JSON.stringify({ ...config, ports_file_dir: portsDir }));
  const child: ChildProcess = spawn(NATS_SERVER, ["-c", configFile], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d) => {
    stderr += d;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  });
  let spawnError: Error | undefined;
  child.once("error", (err) => {
    spawnError = err;
  });
  const portsFile = () => path.join(portsDir, `nats-server_${child.pid}.ports`);
  for (;;) {
    if (spawnError) throw new Error(`cannot run ${NATS_SERVER} : ${spawnError.message}`);
    if (child.exitCode !== null) throw new Error(`nats-server exited ${child.exitCode}:\n${stderr}`);
    const text = child.pid ? await fs.readFile(portsFile(), "utf8").catch(() => "") : "";
    if (text) return JSON.parse(text) as Ports;
    await new Promise((r) => setTimeout(r, 20));
  }
}

function portOf(url: string | undefined): number {
  return Number(new URL(url ?? "").port);
}

t.test("nats-server serves our certificate; nats.js verifies it with the CA", async (t) => {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  const cert = await loadOrCreateServerCertificate(dir, ca, { name: "nats" });
  const ports = await startNats(t, dir, {
    listen: "127.0.0.1:-1",
    tls: { cert_file: cert.certFile, key_file: cert.keyFile },
  });
  const port = portOf(ports.nats?.[0]);
  const nc = await connect({ servers: `tls://127.0.0.1:${port}`, tls: { ca: ca.certPem } });
  await nc.flush();
  t.ok(nc.info?.tls_required, "connected and flushed over TLS");
  await nc.close();

  const stranger = await loadOrCreateCa(await tempDir(t));
  await t.rejects(
    connect({ servers: `tls://127.0.0.1:${port}`, tls: { ca: stranger.certPem }, reconnect: false }),
    "a client trusting another CA is refused",
  );
});

t.test("nats-server requires client certificates: peer certificates pass, server-only ones do not", async (t) => {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  const server = await loadOrCreateServerCertificate(dir, ca, { name: "nats", usage: "peer" });
  const peer = await loadOrCreateServerCertificate(dir, ca, { name: "client", usage: "peer" });
  const serverOnly = await loadOrCreateServerCertificate(dir, ca, { name: "plain" });
  const ports = await startNats(t, dir, {
    listen: "127.0.0.1:-1",
    tls: { cert_file: server.certFile, key_file: server.keyFile, ca_file: ca.certFile, verify: true },
  });
  const servers = `tls://127.0.0.1:${portOf(ports.nats?.[0])}`;

  const nc = await connect({ servers, tls: { ca: ca.certPem, cert: peer.certPem, key: peer.keyPem } });
  await nc.flush();
  t.ok(nc.info?.tls_verify, "a peer certificate is accepted as a client certificate by Go");
  await nc.close();

  await t.rejects(
    connect({ servers, tls: { ca: ca.certPem, cert: serverOnly.certPem, key: serverOnly.keyPem }, reconnect: false }),
    "Go refuses a serverAuth-only certificate as a client certificate",
  );
  await t.rejects(connect({ servers, tls: { ca: ca.certPem }, reconnect: false }), "no client certificate");
});

t.test("two nats-servers route over mutual TLS with peer certificates", async (t) => {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  const a = await loadOrCreateServerCertificate(dir, ca, { name: "a", usage: "peer" });
  const b = await loadOrCreateServerCertificate(dir, ca, { name: "b", usage: "peer" });
  const node = (cert: typeof a, routes: string[]) => ({
    listen: "127.0.0.1:-1",
    cluster: {
      name: "tls-test",
      listen: "127.0.0.1:-1",
      routes,
      tls: { cert_file: cert.certFile, key_file: cert.keyFile, ca_file: ca.certFile },
    },
  });
  const portsA = await startNats(t, dir, node(a, []));
  const routeA = `nats-route://127.0.0.1:${portOf(portsA.cluster?.[0])}`;
  const portsB = await startNats(t, dir, node(b, [routeA]));

  // A message only crosses from B to A if the TLS route came up.
  const ncA = await connect({ servers: `127.0.0.1:${portOf(portsA.nats?.[0])}` });
  const ncB = await connect({ servers: `127.0.0.1:${portOf(portsB.nats?.[0])}` });
  t.teardown(async () => {
    await ncA.close();
    await ncB.close();
  });
  ncA.subscribe("ping", {
    callback: (_err, msg) => {
      msg.respond("pong");
    },
  });
  await ncA.flush();
  for (;;) {
    try {
      const reply = await ncB.request("ping", "", { timeout: 200 });
      t.equal(reply.string(), "pong", "request crossed the route");
      break;
    } catch {
      // Route or interest not propagated yet; ask again.
    }
  }
});
