// `npm run test:floor`: the auth callout, ACL, cluster and acknowledged-publish tests on the supported floor,
// nats-server 2.10.27 (Debian trixie's), fetched into the cache first if it is not there.
// `npm test` runs everything on the default release; this proves the floor still works.
// Extra arguments go to tap. UNIBUS_NATS_SERVER, if set, must be that release.
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { FLOOR_NATS_VERSION, installNatsServer } from "../lib/nats/binary.ts";

const FLOOR_TESTS = [
  "test/bus/auth.test.ts",
  "test/bus/acl.test.ts",
  "test/bus/cluster-acl.test.ts",
  "test/bus/cluster.test.ts",
  "test/bus/cluster-up.test.ts",
  "test/bus/cluster-kv.test.ts",
  "test/tls/nats.test.ts",
  "test/bus/websocket.test.ts",
  // nats-server 2.10 answers an acknowledged publish into a full disk itself (2.15 is silent)
  "test/client/ack.test.ts",
  "test/bus/disk-full.test.ts",
];

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

async function main(): Promise<number> {
  let floor: { path: string; version: string };
  try {
    floor = await installNatsServer({
      version: FLOOR_NATS_VERSION,
      onProgress: (e) => process.stderr.write(`${e.phase}: ${e.message}\n`),
    });
  } catch (err) {
    process.stderr.write(`unibus: cannot run the floor tests: ${(err as Error).message}\n`);
    return 1;
  }
  process.stderr.write(`unibus: floor tests on nats-server ${floor.version} (${floor.path})\n`);
  const tap = path.join(root, "node_modules", ".bin", "tap");
  const child = spawn(tap, [...FLOOR_TESTS, ...process.argv.slice(2)], {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, UNIBUS_NATS_SERVER: floor.path },
  });
  return new Promise((resolve) => {
    child.once("error", (err) => {
      process.stderr.write(`unibus: could not start tap: ${err.message}\n`);
      resolve(1);
    });
    child.once("close", (code) => resolve(code ?? 1));
  });
}

process.exitCode = await main();
