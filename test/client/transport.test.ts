// CoalescingTransport against a real nats-server over TLS: every byte of every message
// arrives in order whatever the record boundaries, reconnects come back through it, and
// the server's certificate is still checked against the CA given — also with the one TLS
// context a unibus client keeps for all its reconnects.
import crypto from "node:crypto";
import path from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { NodeTransport } from "@nats-io/transport-node/lib/node_transport.js";
import t, { type Test } from "tap";
import { connect, keptTlsContext } from "../../lib/client/connect.ts";
import { CoalescingTransport, connectCoalescing } from "../../lib/client/transport.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { UnibusError } from "../../lib/errors.ts";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../../lib/tls/index.ts";
import { client, member, testBus } from "../helpers/bus.ts";
import { tempDir } from "../helpers/fs.ts";
import { natsServer } from "../helpers/nats.ts";
import { waitFor } from "../helpers/wait.ts";

interface ServerTls {
  certFile: string;
  keyFile: string;
}

/** A started nats-server requiring TLS with `tls`'s certificate; `port` pins the port (for a restart). */
async function startTlsServer(t: Test, tls: ServerTls, port = -1) {
  const server = natsServer(t, {
    workDir: await tempDir(t, "transport"),
    config: { serverName: "n1", host: "127.0.0.1", port, tls },
  });
  const ports = await server.start();
  return { server, port: ports.nats, url: `tls://127.0.0.1:${ports.nats}` };
}

/** A nats-server requiring TLS with a certificate from a fresh CA. */
async function tlsServer(t: Test) {
  const dir = await tempDir(t, "transport-ca");
  const ca = await loadOrCreateCa(path.join(dir, "ca"));
  const cert = await loadOrCreateServerCertificate(path.join(dir, "server"), ca, { name: "n1" });
  const tls = { certFile: cert.certFile, keyFile: cert.keyFile };
  return { ...(await startTlsServer(t, tls)), ca: ca.certPem, tls };
}

async function dial(t: Test, url: string, ca: string, extra = {}): Promise<NatsConnection> {
  const nc = await connectCoalescing({ servers: url, tls: { ca }, ...extra });
  t.teardown(() => (nc.isClosed() ? undefined : nc.close()));
  return nc;
}

const transportOf = (nc: NatsConnection) => (nc as unknown as { protocol: { transport: unknown } }).protocol.transport;

/** Publishes `payloads` pipelined (no flush between) and resolves with what `sub` received, in order. */
async function roundTrip(pub: NatsConnection, sub: NatsConnection, payloads: Uint8Array[]): Promise<Uint8Array[]> {
  const got: Uint8Array[] = [];
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const s = sub.subscribe("t.stream", {
    callback: (err, m) => {
      if (err) throw err;
      got.push(m.data);
      if (got.length === payloads.length) done();
    },
  });
  await sub.flush();
  for (let i = 0; i < payloads.length; i++) {
    pub.publish("t.stream", payloads[i]!);
    if (i % 500 === 499) await new Promise((r) => setImmediate(r));
  }
  await all;
  s.unsubscribe();
  return got;
}

/** Payloads that carry their index and a digest of themselves, so a reorder or a torn byte shows. */
function numbered(sizes: number[]): Uint8Array[] {
  return sizes.map((size, i) => {
    const b = crypto.randomBytes(Math.max(size, 40));
    b.writeUInt32BE(i, 0);
    crypto.createHash("sha256").update(b.subarray(36)).digest().copy(b, 4);
    return b.subarray(0, Math.max(size, 40));
  });
}

function checkIntact(t: Test, sent: Uint8Array[], got: Uint8Array[]) {
  t.equal(got.length, sent.length, "every message arrived");
  const bad = got.findIndex((g, i) => !Buffer.from(g).equals(Buffer.from(sent[i]!)));
  t.equal(bad, -1, "each arrived byte for byte, in publish order");
}

t.test("small messages pipelined over TLS arrive intact and in order", async (t) => {
  const { url, ca } = await tlsServer(t);
  const pub = await dial(t, url, ca);
  const sub = await dial(t, url, ca);
  t.ok(transportOf(sub) instanceof CoalescingTransport, "the connection reads through CoalescingTransport");
  const sent = numbered(Array.from({ length: 20_000 }, (_, i) => 40 + (i % 300)));
  checkIntact(t, sent, await roundTrip(pub, sub, sent));
});

t.test("big and small messages mixed: payloads spanning many TLS records stay whole", async (t) => {
  const { url, ca } = await tlsServer(t);
  const pub = await dial(t, url, ca);
  const sub = await dial(t, url, ca);
  // 1 MiB is nats-server's default max_payload; 16 KiB ± 1 straddles a record's size
  const sizes = [1, 17, 16_383, 16_384, 16_385, 100_000, 1_048_000, 3, 256, 64 * 1024];
  const sent = numbered(Array.from({ length: 300 }, (_, i) => sizes[i % sizes.length]!));
  checkIntact(t, sent, await roundTrip(pub, sub, sent));
});

t.test("after the server restarts, the client reconnects through CoalescingTransport and traffic flows", async (t) => {
  const first = await tlsServer(t);
  const pub = await dial(t, first.url, first.ca, { reconnectTimeWait: 50, maxReconnectAttempts: -1 });
  const sub = await dial(t, first.url, first.ca, { reconnectTimeWait: 50, maxReconnectAttempts: -1 });
  const before = transportOf(sub);
  // Both connections must be back before traffic: a flush on one still reconnecting rejects.
  const back = [pub, sub].map(async (nc) => {
    for await (const s of nc.status()) if (s.type === "reconnect") return;
  });
  await first.server.stop();
  // the same certificate and port, so the client's options still hold
  await startTlsServer(t, first.tls, first.port);
  await Promise.all(back);
  await pub.flush();
  t.not(transportOf(sub), before, "a new transport after the reconnect");
  t.ok(transportOf(sub) instanceof CoalescingTransport, "and it is a CoalescingTransport");
  const sent = numbered(Array.from({ length: 2_000 }, (_, i) => 40 + (i % 500)));
  checkIntact(t, sent, await roundTrip(pub, sub, sent));
});

t.test("a server certificate from another CA is refused", async (t) => {
  const { url } = await tlsServer(t);
  const other = await loadOrCreateCa(path.join(await tempDir(t, "other-ca"), "ca"));
  await t.rejects(
    connectCoalescing({ servers: url, tls: { ca: other.certPem }, reconnect: false, timeout: 3000 }),
    /certificate/i,
  );
});

t.test("with one kept TLS context, every reconnect still checks the server's certificate", async (t) => {
  const first = await tlsServer(t);
  const nc = await connectCoalescing({
    servers: first.url,
    tls: keptTlsContext(first.ca),
    reconnectTimeWait: 50,
    maxReconnectAttempts: -1,
  });
  t.teardown(() => (nc.isClosed() ? undefined : nc.close()));
  const seen = { attempts: 0, back: 0 };
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "reconnecting") seen.attempts++;
      if (s.type === "reconnect") seen.back++;
    }
  })();
  await first.server.stop();
  // an impostor on the same port, with a certificate from another CA
  const dir = await tempDir(t, "impostor");
  const otherCa = await loadOrCreateCa(path.join(dir, "ca"));
  const cert = await loadOrCreateServerCertificate(path.join(dir, "server"), otherCa, { name: "n1" });
  const impostor = await startTlsServer(t, { certFile: cert.certFile, keyFile: cert.keyFile }, first.port);
  const from = seen.attempts;
  await waitFor("three attempts against the impostor", () => seen.attempts >= from + 3);
  t.equal(seen.back, 0, "none of them got through");
  await impostor.server.stop();
  await startTlsServer(t, first.tls, first.port);
  await waitFor("the reconnect to the real server", () => seen.back === 1);
  const sub = nc.subscribe("x", { max: 1 });
  nc.publish("x", "after");
  for await (const m of sub) t.equal(m.string(), "after", "traffic flows after it");
});

t.test("websocket URLs are refused with a clear error", async (t) => {
  await t.rejects(connectCoalescing({ servers: "ws://127.0.0.1:1" }), {
    code: "INVALID_ARGUMENT",
    message: /websocket URLs are not supported/,
  });
});

t.test("the unibus client reads through CoalescingTransport unless coalesceReads is false", async (t) => {
  const bus = await testBus(t);
  const id = await member(bus, "reader");
  const c = await client(t, bus, id);
  t.ok(transportOf(c.nc) instanceof CoalescingTransport, "default: CoalescingTransport");
  const plain = await connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: id, coalesceReads: false });
  t.teardown(() => plain.close());
  const tr = transportOf(plain.nc);
  t.ok(tr instanceof NodeTransport && !(tr instanceof CoalescingTransport), "coalesceReads: false: nats.js's own");
});

t.test("the unibus client refuses a bus whose certificate the given CA did not sign", async (t) => {
  const bus = await testBus(t);
  const id = createIdentity();
  await bus.addUser(id.signPub, { handle: "x" });
  const other = await loadOrCreateCa(path.join(await tempDir(t, "wrong-ca"), "ca"));
  await t.rejects(connect({ natsUrl: bus.natsUrl, ca: other.certPem, identity: id, timeoutMs: 3000 }), UnibusError);
});
