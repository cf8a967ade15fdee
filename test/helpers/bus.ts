import fs from "node:fs";
import net from "node:net";
import { type NatsConnection, connect as natsConnect } from "@nats-io/transport-node";
import type { Test } from "tap";
import { busLayout } from "../../lib/bus/layout.ts";
import { type StartUnibusOptions, startUnibus, type Unibus } from "../../lib/bus/unibus.ts";
import { connect, type UnibusClient } from "../../lib/client/connect.ts";
import { ControlClient } from "../../lib/client/control.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";

/** A fresh bus for one test, stopped in teardown. */
export async function testBus(t: Test, opts: StartUnibusOptions = {}): Promise<Unibus> {
  const bus = await startUnibus(opts);
  t.teardown(() => bus.stop());
  return bus;
}

/** A new identity already on the bus' allowlist. */
export async function member(bus: Unibus, handle: string, role: "admin" | "member" = "member"): Promise<Identity> {
  const id = createIdentity();
  await bus.addUser(id.signPub, { handle, role, kexPub: id.kexPub });
  return id;
}

/** A connected client, closed in teardown unless the test closed it first (closing twice is an error). */
export async function client(t: Test, bus: Unibus, identity: Identity): Promise<UnibusClient> {
  const c = await connect({
    natsUrl: bus.natsUrl,
    controlUrl: bus.controlUrl,
    ca: bus.caPem,
    identity,
    timeoutMs: 5000,
  });
  let closed = false;
  const close = c.close.bind(c);
  c.close = async () => {
    if (closed) return;
    closed = true;
    await close();
  };
  t.teardown(() => c.close());
  return c;
}

/** A control-plane client that signs every request as `identity`; closed in teardown. */
export function api(t: Test, bus: Unibus, identity: Identity): ControlClient {
  const c = new ControlClient({ baseUrl: bus.controlUrl, ca: bus.caPem, identity });
  t.teardown(() => c.close());
  return c;
}

/** A new member on the allowlist and its connected client (connect's own time limit), closed in teardown. */
export async function user(
  t: Test,
  bus: Unibus,
  handle: string,
  role: "admin" | "member" = "member",
): Promise<{ id: Identity; c: UnibusClient }> {
  const id = await member(bus, handle, role);
  const c = await connect({ natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, identity: id });
  t.teardown(() => c.close());
  return { id, c };
}

/** Connects once without reconnecting: for asserting a denial. */
export function connectOnce(
  bus: Unibus,
  authenticator: Parameters<typeof natsConnect>[0] extends infer O
    ? O extends { authenticator?: infer A }
      ? A
      : never
    : never,
) {
  return natsConnect({ servers: bus.natsUrl, tls: { ca: bus.caPem }, authenticator, reconnect: false, timeout: 5000 });
}

export function tcpPort(url: string): number {
  return Number(new URL(url).port);
}

/**
 * Talks plaintext NATS protocol to a port and returns everything the server sent
 * until it closed the socket (or 3 s passed).
 */
export function plaintextProbe(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let received = "";
    let sent = false;
    const timer = setTimeout(() => s.destroy(), 3000);
    s.on("data", (d) => {
      received += d.toString("latin1");
      if (!sent && received.includes("\r\n")) {
        sent = true;
        s.write('CONNECT {"verbose":false,"pedantic":false}\r\nSUB > 1\r\nPING\r\n');
      }
    });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve(received);
    });
  });
}

/** Resolves at the connection's next successful reconnect (a kick forces one). */
export async function nextReconnect(nc: NatsConnection): Promise<void> {
  for await (const s of nc.status()) if (s.type === "reconnect") return;
}

/** Runs `action` (which makes the bus kick `c`) and resolves once `c` is back. */
export async function reconnected(c: UnibusClient, action: () => Promise<unknown>): Promise<void> {
  const back = nextReconnect(c.nc);
  await action();
  await back;
}

/**
 * The pid of the nats-server a bus in `dataDir` runs, read from the ports file
 * nats-server writes (`<binary>_<pid>.ports`) into the node's dir.
 */
export function findNatsPid(dataDir: string, serverName = "unibus-1"): number | undefined {
  const dir = busLayout(dataDir, serverName).natsDir;
  const file = fs.readdirSync(dir).find((f) => f.endsWith(".ports"));
  return file ? Number(/_(\d+)\.ports$/.exec(file)?.[1]) : undefined;
}
