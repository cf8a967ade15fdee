import fsp from "node:fs/promises";
import http from "node:http";
import net from "node:net";

/** Is the server up yet: its ports file, its client port, its health endpoint. */

/** Ports the server actually listens on (learned from its ports file). */
export interface NatsPorts {
  nats: number;
  monitoring?: number;
  cluster?: number;
  websocket?: number;
}

/** Port of the first URL in a ports-file list (`tls://127.0.0.1:4222`, `nats://[::1]:4222`). */
function portOf(urls: unknown): number | undefined {
  if (!Array.isArray(urls) || typeof urls[0] !== "string") return undefined;
  const m = /:(\d{1,5})\/?$/.exec(urls[0]);
  const port = m ? Number(m[1]) : 0;
  return port > 0 && port <= 65535 ? port : undefined;
}

export async function readPortsFile(file: string): Promise<NatsPorts | undefined> {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(await fsp.readFile(file, "utf8"));
  } catch {
    return undefined; // not there yet, or caught half-written
  }
  const nats = portOf(parsed.nats);
  if (nats === undefined) return undefined;
  const ports: NatsPorts = { nats };
  const monitoring = portOf(parsed.monitoring);
  if (monitoring !== undefined) ports.monitoring = monitoring;
  const cluster = portOf(parsed.cluster);
  if (cluster !== undefined) ports.cluster = cluster;
  const websocket = portOf(parsed.websocket);
  if (websocket !== undefined) ports.websocket = websocket;
  return ports;
}

/** Where to reach a listener bound to `host` from this machine. */
export function probeHost(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::") return "::1";
  return host;
}

/** Connects and waits for the server's INFO line: proof that the accept loop serves clients. */
export function probeClient(
  host: string,
  port: number,
  timeoutMs: number,
  onLocalPort: (p: number) => void,
): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    let seen = "";
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once("connect", () => {
      if (sock.localPort) onLocalPort(sock.localPort);
    });
    sock.on("data", (d) => {
      seen += d.toString("latin1");
      if (seen.startsWith("INFO ")) done(true);
      else if (seen.length >= 5) done(false);
    });
    sock.once("error", () => done(false));
    sock.once("close", () => done(false));
  });
}

export function probeHealth(host: string, port: number, urlPath: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: urlPath, timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolve(false));
  });
}
