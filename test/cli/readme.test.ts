// The README's quick start and first-admin blocks, run verbatim in a temp dir with the
// real CLI (`npx unibus …` resolving to this checkout, never to a registry): the bus
// comes up, the first admin is created as written, and that admin can open a room —
// encrypted, the default — and talk in it. The README cannot drift from what works.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { connect } from "../../lib/client/connect.ts";
import { loadIdentity } from "../../lib/crypto/identity.ts";
import { readRunInfo } from "../../lib/ops/run-file.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { collector } from "../helpers/room.ts";
import { waitFor } from "../helpers/wait.ts";

const README = fs.readFileSync(path.resolve("README.md"), "utf8");

/** The ```sh blocks of the README section headed `heading`, each as its lines. */
function shellBlocks(heading: string): string[][] {
  const start = README.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`README has no "## ${heading}" section`);
  const end = README.indexOf("\n## ", start + 1);
  const section = README.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!.split("\n").filter((l) => l.trim() !== ""));
}

/**
 * A directory where `npx unibus` is this checkout, as it is for a project that installed
 * unibus: node_modules/unibus and its bin. npm is kept offline: nothing is fetched.
 */
function project(dir: string): NodeJS.ProcessEnv {
  fs.mkdirSync(path.join(dir, "node_modules", ".bin"), { recursive: true });
  fs.symlinkSync(path.resolve("."), path.join(dir, "node_modules", "unibus"));
  fs.symlinkSync(path.resolve("bin/unibus.js"), path.join(dir, "node_modules", ".bin", "unibus"));
  const env: NodeJS.ProcessEnv = { ...process.env, npm_config_offline: "true", UNIBUS_NATS_SERVER: NATS_SERVER };
  for (const k of Object.keys(env)) if (k.startsWith("UNIBUS_") && k !== "UNIBUS_NATS_SERVER") delete env[k];
  // Random ports through the config chain, so the README's command line stays as written.
  return { ...env, UNIBUS_NATS_PORT: "-1", UNIBUS_CONTROL_PORT: "0", UNIBUS_MONITOR_PORT: "-1" };
}

function sh(line: string, cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("sh", ["-c", line], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, out }));
  });
}

t.test("the quick start and the first admin, as the README writes them, end in a working room", async (t) => {
  const [quick, firstAdmin, ...more] = shellBlocks("Quick start");
  t.equal(more.length, 0, "two shell blocks in the quick start");
  // `npm install` made this checkout and `npm test` runs this very suite: the rest runs here.
  const npm = quick!.filter((l) => l.startsWith("npm "));
  t.same(
    npm.map((l) => l.split(/\s+#/)[0]!.trim()),
    ["npm install", "npm test"],
    "the quick start's npm lines are the two this test stands in for",
  );
  const upLine = quick!.find((l) => l.startsWith("npx unibus up"));
  t.ok(upLine, "the quick start starts a bus with npx unibus up");
  t.equal(quick!.length, npm.length + 1, "and has no other command this test would skip");

  const dir = t.testdir();
  const env = project(dir);
  // Its own process group, so the whole chain (sh, npx, the launcher, the CLI) gets the stop signal.
  const up = spawn("sh", ["-c", upLine!], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  const exited = new Promise<number | null>((r) => up.once("exit", (code) => r(code)));
  t.teardown(async () => {
    if (up.exitCode !== null) return;
    process.kill(-up.pid!, "SIGTERM");
    const timer = setTimeout(() => process.kill(-up.pid!, "SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
  });
  let upOut = "";
  up.stdout.on("data", (d) => (upOut += d));
  up.stderr.on("data", (d) => (upOut += d));
  await Promise.race([
    waitFor("unibus up to be ready", () => upOut.includes("Press Ctrl-C to stop."), 120_000),
    exited.then((code) => Promise.reject(new Error(`up exited (${code}): ${upOut}`))),
  ]);
  t.match(upOut, "No admin yet", "up says how to add the first admin");
  t.match(upOut, "npx unibus identity new --out me.json", "with the README's first command");

  for (const line of firstAdmin!) {
    const r = await sh(line, dir, env);
    t.equal(r.code, 0, `${line}\n${r.out}`);
  }

  const run = await readRunInfo(path.join(dir, ".unibus"));
  t.ok(run, "the bus is running on ./.unibus");
  const me = await loadIdentity(path.join(dir, "me.json"));
  const client = await connect({
    natsUrl: run!.natsUrls[0]!,
    controlUrl: run!.controlUrls[0]!,
    caFile: run!.caFile,
    identity: me,
  });
  t.teardown(() => client.close());
  const room = await client.createRoom();
  t.ok(room.encrypt, "the first admin opens a room, encrypted by default");
  const got = collector(room);
  await client.nc.flush();
  await room.publish("hello from the README");
  t.equal(await got.until(1), 1);
  t.same(got.texts(), ["hello from the README"]);
  const persisted = await client.createRoom({ persist: true, signMsgs: true });
  t.ok(persisted.persist, "and a persisted, signed one");
});

/** The ```ts block of the README section headed `heading` that imports from "unibus". */
function libraryBlock(heading: string): string {
  const start = README.indexOf(`\n## ${heading}\n`);
  const end = README.indexOf("\n## ", start + 1);
  const block = [...README.slice(start, end).matchAll(/```ts\n([\s\S]*?)```/g)].find((m) =>
    m[1]!.includes('from "unibus"'),
  );
  if (!block) throw new Error(`README's "${heading}" has no ts block importing unibus`);
  return block[1]!;
}

/** The process ids under `pid` (children, their children…) whose command is `name`. */
function descendantsNamed(pid: number, name: string): number[] {
  const procs: { pid: number; ppid: number; comm: string }[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const [, comm, rest] = /^\d+ \((.*)\) (.*)$/.exec(fs.readFileSync(`/proc/${entry}/stat`, "utf8").trim())!;
      procs.push({ pid: Number(entry), ppid: Number(rest!.split(" ")[1]), comm: comm! });
    } catch {
      // gone meanwhile
    }
  }
  const under = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of procs) {
      if (!under.has(p.pid) && under.has(p.ppid)) {
        under.add(p.pid);
        grew = true;
      }
    }
  }
  return procs.filter((p) => p.pid !== pid && under.has(p.pid) && p.comm === name).map((p) => p.pid);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

t.test(
  "the library usage block, verbatim, as a project that installed unibus runs it",
  { skip: process.platform !== "linux" && "reads /proc" },
  async (t) => {
    const dir = t.testdir();
    // The installed package as Node resolves it: `unibus` → this checkout's sources (a built
    // package would be dist/; a checkout has none, and Node strips no types under node_modules).
    const pkg = path.join(dir, "node_modules", "unibus");
    fs.mkdirSync(pkg, { recursive: true });
    fs.writeFileSync(
      path.join(pkg, "package.json"),
      JSON.stringify({ name: "unibus", type: "module", exports: "./index.js" }),
    );
    fs.writeFileSync(path.join(pkg, "index.js"), `export * from ${JSON.stringify(path.resolve("lib/index.ts"))};\n`);
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
    fs.writeFileSync(path.join(dir, "example.ts"), libraryBlock("Library usage"));
    const env: NodeJS.ProcessEnv = { ...process.env, UNIBUS_NATS_SERVER: NATS_SERVER };
    const child = spawn(process.execPath, ["--disable-warning=ExperimentalWarning", "example.ts"], {
      cwd: dir,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    t.teardown(() => {
      if (child.exitCode === null) child.kill("SIGKILL");
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    // The bot reads the room's history, then waits on the live subscription for good.
    await Promise.race([
      waitFor("the bot to read the owner's message", () => out.includes("hello"), 120_000),
      exited.then((code) => Promise.reject(new Error(`the example exited (${code}): ${err}`))),
    ]);
    t.equal(out.trim(), "hello", "the bot read the encrypted, signed message from the history");
    const servers = descendantsNamed(child.pid!, "nats-server");
    t.equal(servers.length, 1, "the example's bus runs its nats-server");
    // The example never ends on its own (its subscribe loop); stopped as a user stops it.
    child.kill("SIGTERM");
    await exited;
    await waitFor("the example's nats-server to go with it", () => servers.every((p) => !alive(p)), 30_000);
  },
);
