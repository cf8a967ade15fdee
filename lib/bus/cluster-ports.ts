import fs from "node:fs/promises";
import path from "node:path";
import { NatsServerProcess } from "../nats/index.ts";

/**
 * Route ports for nodes that must know each other's before any starts: a JetStream
 * cluster node refuses to start without configured routes, so a random route port
 * cannot be learned from the real node. Each port comes from a bare, route-only
 * nats-server on port -1 (no JetStream, ~20 ms), which is stopped at once. Another
 * process could take the port in between; the caller retries on `port_in_use`.
 */
export async function learnFreeRoutePorts(o: {
  binary: string;
  count: number;
  /** Bind address the route listener will use. */
  host: string;
  /** Scratch space; each probe's dir is removed afterwards. */
  dir: string;
}): Promise<number[]> {
  return Promise.all(
    Array.from({ length: o.count }, async (_, i) => {
      const workDir = path.join(o.dir, `route-port-${process.pid}-${i}`);
      const probe = new NatsServerProcess({
        binary: o.binary,
        workDir,
        config: {
          serverName: `route-port-${i}`,
          host: "127.0.0.1",
          port: -1,
          cluster: { name: "unibus-port-probe", host: o.host, port: -1, routes: [] },
        },
      });
      try {
        const ports = await probe.start();
        if (!ports.cluster) throw new Error("nats-server wrote no cluster port to its ports file");
        return ports.cluster;
      } finally {
        await probe.stop();
        await fs.rm(workDir, { recursive: true, force: true });
      }
    }),
  );
}
