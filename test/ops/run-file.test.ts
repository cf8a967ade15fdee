// The run file: written whole and private, read back only while its process lives.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { RUN_FILE, type RunInfo, readRunInfo, removeRunInfo, runningPid, writeRunInfo } from "../../lib/ops/index.ts";

function info(dataDir: string, pid: number): RunInfo {
  return {
    pid,
    natsUrls: ["tls://127.0.0.1:4222"],
    wsUrls: ["wss://127.0.0.1:8443"],
    controlUrls: ["https://127.0.0.1:8470"],
    monitorUrls: ["http://127.0.0.1:8222"],
    caFile: path.join(dataDir, "tls", "ca.pem"),
    dataDir,
    store: "kv",
  };
}

t.test("written 0600 with nothing left beside it, read back as written, removed twice without error", async (t) => {
  const dataDir = t.testdir();
  const written = info(dataDir, process.ppid);
  await writeRunInfo(dataDir, written);
  const file = path.join(dataDir, RUN_FILE);
  t.equal(fs.statSync(file).mode & 0o777, 0o600);
  t.same(fs.readdirSync(dataDir), [RUN_FILE], "no temporary file left");
  t.same(await readRunInfo(dataDir), written);
  t.equal(await runningPid(dataDir), process.ppid, "another live process runs the bus");
  await removeRunInfo(dataDir);
  await removeRunInfo(dataDir);
  t.notOk(fs.existsSync(file));
  t.equal(await runningPid(dataDir), undefined);
});

t.test("a rewrite replaces the file and keeps it private", async (t) => {
  const dataDir = t.testdir({ [RUN_FILE]: "old" });
  fs.chmodSync(path.join(dataDir, RUN_FILE), 0o644);
  await writeRunInfo(dataDir, info(dataDir, process.ppid));
  t.equal(fs.statSync(path.join(dataDir, RUN_FILE)).mode & 0o777, 0o600);
  t.equal((await readRunInfo(dataDir))?.pid, process.ppid);
});

t.test("this process' own file is not another bus", async (t) => {
  const dataDir = t.testdir();
  await writeRunInfo(dataDir, info(dataDir, process.pid));
  t.equal((await readRunInfo(dataDir))?.pid, process.pid);
  t.equal(await runningPid(dataDir), undefined);
});

t.test("no file, garbage, a dead pid or a missing pid read as not running", async (t) => {
  const dead = 2 ** 22 + 1; // above Linux's pid_max ceiling: never a live process
  const dir = t.testdir({
    empty: {},
    garbage: { [RUN_FILE]: "{not json" },
    nopid: { [RUN_FILE]: JSON.stringify({ natsUrls: [] }) },
    stale: { [RUN_FILE]: JSON.stringify({ pid: dead }) },
  });
  for (const name of ["empty", "garbage", "nopid", "stale"]) {
    t.equal(await readRunInfo(path.join(dir, name)), undefined, name);
    t.equal(await runningPid(path.join(dir, name)), undefined, name);
  }
});

t.test("fields a run file lacks get their defaults", async (t) => {
  const dataDir = t.testdir({ [RUN_FILE]: JSON.stringify({ pid: process.ppid, natsUrls: ["tls://a:1", 7, ""] }) });
  t.same(await readRunInfo(dataDir), {
    pid: process.ppid,
    natsUrls: ["tls://a:1"],
    wsUrls: [],
    controlUrls: [],
    monitorUrls: [],
    caFile: path.join(dataDir, "tls", "ca.pem"),
    dataDir,
    store: "sqlite",
  });
});

t.test("a member's readiness is read back as written; a malformed one is left out", async (t) => {
  const base = { pid: process.ppid, natsUrls: [], controlUrls: [], monitorUrls: [] };
  const readiness = {
    state: "degraded",
    since: "2026-12-02T12:00:00.000Z",
    reason: "node n-c is routed to 0 of 2 peer(s)",
  };
  const dir = t.testdir({
    good: { [RUN_FILE]: JSON.stringify({ ...base, readiness }) },
    ready: { [RUN_FILE]: JSON.stringify({ ...base, readiness: { state: "ready", since: readiness.since } }) },
    state: { [RUN_FILE]: JSON.stringify({ ...base, readiness: { ...readiness, state: "fine" } }) },
    reason: { [RUN_FILE]: JSON.stringify({ ...base, readiness: { ...readiness, reason: 7 } }) },
    since: { [RUN_FILE]: JSON.stringify({ ...base, readiness: { state: "ready" } }) },
  });
  t.same((await readRunInfo(path.join(dir, "good")))?.readiness, readiness);
  t.same((await readRunInfo(path.join(dir, "ready")))?.readiness, { state: "ready", since: readiness.since });
  for (const bad of ["state", "reason", "since"]) {
    const run = await readRunInfo(path.join(dir, bad));
    t.ok(run, `${bad}: the run file still reads`);
    t.notOk(run && "readiness" in run, `${bad}: without the malformed readiness`);
  }
});
