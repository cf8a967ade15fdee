// `unibus up` in text mode logs for people: info by default, one readable line per event,
// nats-server's own errors among them; every level and format flag is obeyed.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t, { type Test } from "tap";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { RANDOM_PORTS, UNIBUS_BIN } from "../helpers/cli.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

/** `unibus up` without --json; resolves once it printed its ready text, with the run file's URLs. */
async function upText(t: Test, extra: string[]) {
  const dataDir = path.join(t.testdir(), "bus");
  const child = spawn(process.execPath, [UNIBUS_BIN, "up", "--data-dir", dataDir, ...RANDOM_PORTS, ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, UNIBUS_NATS_SERVER: NATS_SERVER, UNIBUS_LOG_LEVEL: "" },
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  t.teardown(async () => {
    if (child.exitCode !== null) return;
    child.kill("SIGTERM");
    await exited;
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  while (!stdout.includes("Press Ctrl-C to stop.")) {
    if (child.exitCode !== null) throw new Error(`up exited: ${stderr}`);
    await sleep(50);
  }
  const run = JSON.parse(fs.readFileSync(path.join(dataDir, "run.json"), "utf8")) as {
    natsUrls: string[];
    caFile: string;
  };
  return { run, stderr: () => stderr };
}

/** What an operator's bus meets: a stranger's connection, which the callout denies and nats-server reports. */
async function provoke(run: { natsUrls: string[]; caFile: string }): Promise<void> {
  const stranger = createIdentity();
  await connect({ natsUrl: run.natsUrls[0]!, caFile: run.caFile, identity: stranger, timeoutMs: 5000 }).then(
    (c) => c.close(),
    () => {},
  );
}

async function until(read: () => string, re: RegExp): Promise<string> {
  while (!re.test(read())) await sleep(50);
  return read();
}

const READABLE = /^\d\d:\d\d:\d\d\.\d{3} (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) /;

t.test("default: info lines, readable, one per event, nats-server's errors among them", async (t) => {
  const { run, stderr } = await upText(t, []);
  await provoke(run);
  await until(stderr, /WARN {2}nats: Auth callout service returned an error/);
  await until(stderr, /INFO {2}auth: connection denied/);
  const lines = stderr().trim().split("\n");
  for (const line of lines) t.match(line, READABLE, `readable: ${line.slice(0, 60)}`);
  t.notMatch(stderr(), /\{"/, "no JSON blob anywhere");
  t.match(
    stderr(),
    /WARN {2}nats: Auth callout service returned an error: not on the allowlist node=unibus-1/,
    "the server's own warning, at warn",
  );
  t.match(stderr(), /ERROR nats: \S+ - cid:\d+ - authentication error/, "and its error, at error");
  t.match(stderr(), /INFO {2}auth: connection denied decision=deny reason=\S+/, "the callout's decision, at info");
});

t.test("--log-level warn: no info lines, the server's warning still there", async (t) => {
  const { run, stderr } = await upText(t, ["--log-level", "warn"]);
  await provoke(run);
  await until(stderr, /WARN {2}nats: Auth callout service returned an error/);
  t.notMatch(stderr(), / INFO {2}/, "nothing below warn");
});

t.test("--log-format json without --json: JSON lines at the asked level", async (t) => {
  const { run, stderr } = await upText(t, ["--log-format", "json", "--log-level", "info"]);
  await provoke(run);
  await until(stderr, /connection denied/);
  const lines = stderr().trim().split("\n");
  const parsed = lines.map((l) => JSON.parse(l) as { level: string; msg: string });
  t.ok(
    parsed.some((p) => p.level === "info" && p.msg === "connection denied"),
    "info as JSON",
  );
});

t.test("--log-level debug: readable lines from the start, before the ready text", async (t) => {
  const { stderr } = await upText(t, ["--log-level", "debug"]);
  t.match(stderr(), /DEBUG nats: .*Starting nats-server/, "nats-server's start is visible when asked");
  for (const line of stderr().trim().split("\n")) t.match(line, READABLE);
});
