// An opening of the KV store that outlives its bound must leave nothing running. Before
// the fix, the abandoned attempt went on to make a store whose rooms watch retried forever
// (and, without a given connection, a connection nobody closed): a process that gave up
// on the store and closed everything it knew of never exited. Seen as a test file that
// passed every test and then hung until tap's timeout, after a cluster node's store
// opening timed out while its peers were still electing.
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import path from "node:path";
import t from "tap";
import { startJetStream } from "../helpers/nats.ts";

const { url } = await startJetStream(t, "kvopen");
const CHILD = path.join(import.meta.dirname, "abandoned-open.child.ts");
/** Far beyond what the child needs; reaching it means the child would never have exited. */
const STUCK_MS = 60_000;

function runChild(mode: string): Promise<{ code: number | null; stdout: string; stuck: boolean }> {
  const prefix = `t${crypto.randomBytes(5).toString("hex")}_`;
  const child = spawn(process.execPath, ["--disable-warning=ExperimentalWarning", CHILD, url, prefix, mode], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let stdout = "";
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve({ code: null, stdout, stuck: true });
    }, STUCK_MS);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stuck: false });
    });
  });
}

for (const mode of ["given-connection", "own-connection"]) {
  t.test(`an opening given up by its bound leaves nothing alive (${mode})`, async (t) => {
    const { code, stdout, stuck } = await runChild(mode);
    t.notOk(stuck, "the process exited by itself once it let go of its connection");
    t.equal(code, 0);
    t.equal(stdout.trim(), "StoreUnavailableError", "the caller was told the store is unavailable");
  });
}
