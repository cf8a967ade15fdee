import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import type { Teardown } from "../helpers/fs.ts";
import { listenLocal } from "../helpers/net.ts";

export async function modeOf(file: string): Promise<number> {
  return (await fs.stat(file)).mode & 0o777;
}

/** Contents and mode of every file in `dir`, to prove an error left them untouched. */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await fs.readdir(dir)).sort()) {
    const file = path.join(dir, name);
    out[name] = `${(await modeOf(file)).toString(8)} ${await fs.readFile(file, "utf8")}`;
  }
  return out;
}

export interface ServerSeen {
  authorized: boolean;
  authorizationError: string | undefined;
  peerCN: string | undefined;
}

/**
 * A TLS server on a random port that greets every accepted connection with "hello"
 * and records how it judged the client's certificate.
 */
export async function startTlsServer(
  t: Teardown,
  options: tls.TlsOptions,
  host = "127.0.0.1",
): Promise<{ port: number; seen: ServerSeen[] }> {
  const seen: ServerSeen[] = [];
  const server = tls.createServer(options, (socket) => {
    const peer = socket.getPeerCertificate();
    seen.push({
      authorized: socket.authorized,
      authorizationError: socket.authorizationError ? String(socket.authorizationError) : undefined,
      peerCN: peer && "subject" in peer ? (peer.subject?.CN as string | undefined) : undefined,
    });
    socket.end("hello");
  });
  server.on("tlsClientError", () => {});
  return { port: await listenLocal(t, server, host), seen };
}

export type ClientResult =
  | { ok: true; authorized: boolean; data: string }
  | { ok: false; code: string; message: string };

/**
 * Connects and reads until the server closes. ok means the handshake passed the
 * client's checks AND the server sent its greeting (so it accepted us too: under
 * TLS 1.3 the client finishes before the server has judged the client certificate).
 */
export function tlsConnect(options: tls.ConnectionOptions): Promise<ClientResult> {
  return new Promise((resolve) => {
    let data = "";
    let authorized = false;
    const socket = tls.connect(options, () => {
      authorized = socket.authorized;
    });
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      data += chunk;
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      resolve({ ok: false, code: err.code ?? "UNKNOWN", message: err.message });
    });
    socket.on("close", () => {
      if (data === "hello") resolve({ ok: true, authorized, data });
      else resolve({ ok: false, code: "CLOSED_WITHOUT_GREETING", message: "the server closed the connection" });
    });
  });
}

/** Whether this machine can listen on the IPv6 loopback. */
export async function hasIPv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(0, "::1", () => server.close(() => resolve(true)));
  });
}

/** Awaits `promise`, requiring it to reject with an instance of `type`; returns the error for more checks. */
export async function rejection<E extends Error>(
  promise: Promise<unknown> | (() => unknown),
  type: abstract new (...args: never[]) => E,
): Promise<E> {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (err) {
    if (err instanceof type) return err;
    throw new Error(`expected ${type.name}, got ${(err as Error)?.name}: ${(err as Error)?.message}`, { cause: err });
  }
  throw new Error(`expected ${type.name}, but nothing was thrown`);
}
