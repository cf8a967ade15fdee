// The test-runner recipes under examples/ work as a user copies them: each project
// installs the packed package, runs its runner's tests against one bus, and a run with a
// failing test still stops that bus (no nats-server, no temp dir left).
// Slow (it installs each runner from the registry): part of `npm run test:pack`. It runs
// under `node --test`, not tap: tap's process-info hook wraps every process spawned below
// it, and a `node --test` example run under that hook never ends.

import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { NATS_SERVER } from "../helpers/nats.ts";
import { pathOutsideRepo, REPO, REPO_NODE, run } from "./helpers.ts";

/** How each runner says "two passed" (the failing test is skipped unless asked for). */
const EXAMPLES: Record<string, RegExp> = {
  "node-test": /[#ℹ] pass 2\b/,
  tap: /# \{ total: 3, pass: 2, skip: 1 \}/,
  vitest: /Tests\s+2 passed/,
  jest: /Tests:\s+1 skipped, 2 passed/,
};

const work = await fsp.mkdtemp(path.join(os.tmpdir(), "unibus-examples-"));
after(() => fsp.rm(work, { recursive: true, force: true }));
const nodeDir = path.dirname(fs.realpathSync(REPO_NODE));
/** This process' environment as a user's shell would have it: without the test runner's own hooks. */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    // NODE_TEST_CONTEXT would make an example's `node --test` believe it is a test worker
    // itself; npm_* are this run's own npm settings, not the user's.
    if (/^(TAP|_TAPJS|NODE_OPTIONS$|NODE_TEST_|npm_)/.test(key)) continue;
    env[key] = value;
  }
  return env;
}
const env = {
  ...userEnv(),
  PATH: `${nodeDir}${path.delimiter}${pathOutsideRepo()}`,
  UNIBUS_NATS_SERVER: NATS_SERVER,
};

const packed = await run("npm", ["pack", "--json", "--pack-destination", work], { cwd: REPO, env: process.env });
const tarball = path.join(
  work,
  (JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as [{ filename: string }])[0].filename,
);

/** Processes whose command line names `dir` (a nats-server started below it), read from /proc. */
function processesUnder(dir: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(dir)) found.push(Number(entry));
    } catch {
      // gone between readdir and read
    }
  }
  return found;
}

for (const [name, passed] of Object.entries(EXAMPLES)) {
  test(`examples/${name}: passes against the packed package; a failing run still stops its bus`, async () => {
    const dir = path.join(work, name);
    await fsp.cp(path.join(REPO, "examples", name), dir, { recursive: true });
    // The copy depends on this tarball, not on a release from the registry.
    const pkgFile = path.join(dir, "package.json");
    const pkg = JSON.parse(await fsp.readFile(pkgFile, "utf8"));
    pkg.devDependencies.unibus = `file:${tarball}`;
    await fsp.writeFile(pkgFile, JSON.stringify(pkg, null, 2));
    const install = await run("npm", ["install", "--no-audit", "--no-fund"], { cwd: dir, env });
    assert.equal(install.code, 0, `npm install: ${install.stderr.slice(-4000)}`);

    for (const failing of [false, true]) {
      // A TMPDIR of its own: the bus' data dir lands there, so leftovers are easy to see.
      const tmp = await fsp.mkdtemp(path.join(work, `${name}-tmp-`));
      const runEnv = { ...env, TMPDIR: tmp, ...(failing ? { UNIBUS_EXAMPLE_FAIL: "1" } : {}) };
      const r = await run("npm", ["test"], { cwd: dir, env: runEnv });
      const output = `${r.stdout}\n${r.stderr}`.replace(/\x1b\[[0-9;]*m/g, "");
      if (failing) assert.notEqual(r.code, 0, `${name}: a failing test fails the run`);
      else {
        assert.equal(r.code, 0, `${name}: the run passes\n${output.slice(-4000)}`);
        assert.match(output, passed, `${name}: both tests ran and passed`);
      }
      const label = failing ? "after a failing run" : "after a passing run";
      assert.deepEqual(processesUnder(tmp), [], `${name}: no nats-server left ${label}`);
      const left = (await fsp.readdir(tmp)).filter((f) => f.startsWith("unibus-"));
      assert.deepEqual(left, [], `${name}: no bus data dir left ${label}`);
    }
  });
}
