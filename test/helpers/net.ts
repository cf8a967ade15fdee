import type http from "node:http";
import net from "node:net";
import type { Teardown } from "./fs.ts";

/** A port that was free a moment ago on 127.0.0.1: for addresses a test must know before anything listens. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Listens on a random port of `host` and resolves with it; closed in teardown.
 * An HTTP(S) server also drops its open (keep-alive) connections, which would
 * otherwise hold the close open.
 */
export async function listenLocal(t: Teardown, server: net.Server, host = "127.0.0.1"): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as Partial<http.Server>).closeAllConnections?.();
      }),
  );
  return (server.address() as net.AddressInfo).port;
}
