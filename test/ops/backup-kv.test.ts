// `unibus backup` refuses a KV cluster in one line that names the cold-copy procedure,
// and leaves nothing behind (no half backup directory).
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { createBackup } from "../../lib/ops/backup.ts";
import { BackupError } from "../../lib/ops/backup-format.ts";
import { writeRunInfo } from "../../lib/ops/run-file.ts";
import { oneLineError, runCli } from "../helpers/cli.ts";

/** A data dir whose run file says a KV bus runs on it (this process stands in for its pid). */
async function kvDataDir(root: string): Promise<string> {
  const dataDir = path.join(root, "node");
  fs.mkdirSync(dataDir, { mode: 0o700 });
  await writeRunInfo(dataDir, {
    pid: process.pid,
    natsUrls: ["tls://127.0.0.1:1"],
    controlUrls: ["https://127.0.0.1:1"],
    monitorUrls: ["http://127.0.0.1:1"],
    wsUrls: [],
    caFile: path.join(dataDir, "tls", "ca.pem"),
    dataDir,
    store: "kv",
  });
  return dataDir;
}

t.test("the library: a typed BackupError naming the cold copy, no output dir", async (t) => {
  const root = t.testdir();
  const dataDir = await kvDataDir(root);
  const out = path.join(root, "backup");
  const err = await createBackup({ dataDir, out, unibusVersion: "0" }).catch((e: unknown) => e);
  t.type(err, BackupError);
  t.match((err as Error).message, /not a KV cluster: stop one current node, copy its whole data dir/);
  t.notOk(fs.existsSync(out), "nothing written");
});

t.test("the CLI: one line, non-zero exit, nothing written", async (t) => {
  const root = t.testdir();
  const dataDir = await kvDataDir(root);
  const out = path.join(root, "backup");
  const r = await runCli(["backup", out, "--data-dir", dataDir]);
  oneLineError(t, r, /Backing up a KV cluster/, "backup of a KV bus");
  t.notOk(fs.existsSync(out), "nothing written");
});
