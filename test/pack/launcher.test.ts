// bin/unibus.js re-runs the CLI on the pinned Node where the running one cannot strip
// types. A process manager signals only the process it started, the launcher: each stop
// signal must reach the CLI below it, or `unibus up` and its nats-server run on orphaned.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { isProcessAlive } from "../../lib/nats/process.ts";
import { RANDOM_PORTS } from "../helpers/cli.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { descendants, executableOf, REPO, REPO_NODE, startUp } from "./helpers.ts";

const LAUNCHER = path.join(REPO, "bin", "unibus.js");
const PINNED = fs.realpathSync(REPO_NODE);

async function gone(pids: number[]): Promise<number[]> {
  // A hang guard, not a timing check: nats-server's watchdog needs its stop grace at most.
  const deadline = Date.now() + 30_000;
  while (pids.some(isProcessAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return pids.filter(isProcessAlive);
}

const CASES = [
  { signal: "SIGTERM", code: 0, why: "up stops cleanly" },
  { signal: "SIGINT", code: 0, why: "up stops cleanly" },
  { signal: "SIGHUP", code: 129, why: "up does not handle SIGHUP: it dies and its watchdog stops nats-server" },
] as const;

for (const { signal, code, why } of CASES) {
  t.test(
    `${signal} to the launcher alone reaches unibus up on the pinned Node; nothing is left (${why})`,
    async (t) => {
      const dataDir = path.join(t.testdir(), "bus");
      // This Node cannot strip types, so the launcher re-runs the CLI on the pinned one.
      const args = ["--no-experimental-strip-types", LAUNCHER, "up", "--json", "--data-dir", dataDir, ...RANDOM_PORTS];
      const up = await startUp(t, REPO_NODE, args, {
        cwd: REPO,
        env: { ...process.env, UNIBUS_NATS_SERVER: NATS_SERVER },
      });
      t.equal(up.ready.dataDir, dataDir, "ready");
      const below = descendants(up.pid);
      t.ok(
        below.some((pid) => executableOf(pid) === PINNED),
        "the CLI runs in a child process on the pinned Node",
      );
      process.kill(up.pid, signal);
      t.same(await up.exited, { code, signal: null }, `the launcher exits ${code}`);
      t.same(await gone(below), [], "no process is left below it");
    },
  );
}
