import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, readdir, readFile, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import t, { type Test } from "tap";
import { ChecksumMismatchError, NatsBinaryError } from "../../lib/errors.ts";
import {
  checkNatsServer,
  compareVersions,
  FLOOR_NATS_VERSION,
  installNatsServer,
  judgeNatsVersion,
  MIN_NATS_VERSION,
  NATS_ADVISORIES,
  type NatsInstallProgress,
  PINNED_NATS_VERSION,
  parseNatsVersion,
  resolveNatsServer,
} from "../../lib/nats/binary.ts";
import { advisoriesAffecting } from "../../lib/nats/binary-version.ts";
import { DEBIAN_SUITES, readAptArchives, renderSourcesStanza } from "../../lib/nats/debian.ts";
import { parseSha256Sums, releaseAssetBase, releaseTarget } from "../../lib/nats/release.ts";
import { tempDir } from "../helpers/fs.ts";
import { captureLogger } from "../helpers/log.ts";
import { listenLocal } from "../helpers/net.ts";

const run = promisify(execFile);
// Two real Debian downloads (apt-get update of a whole suite each) run here; on a busy
// machine they alone can take the file past the runner's default timeout.
t.setTimeout(600_000);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

// The suite's runner points UNIBUS_NATS_SERVER at a good binary; without it, use the project's own resolver.
const realBinary = process.env.UNIBUS_NATS_SERVER ?? (await resolveNatsServer()).path;
const realVersion = parseNatsVersion((await run(realBinary, ["--version"])).stdout) ?? "";

/** A directory holding `nats-server` as a link to the real binary. */
async function goodBinDir(tt: Test): Promise<string> {
  const dir = await tempDir(tt, "good");
  await symlink(realBinary, path.join(dir, "nats-server"));
  return dir;
}

/**
 * A directory holding a `nats-server` that only answers `--version` with `version`: enough for
 * everything the resolver does with a binary (it never starts one). The default, 2.9.10, is
 * Debian bookworm's.
 */
async function oldBinDir(tt: Test, version = "2.9.10"): Promise<string> {
  const dir = await tempDir(tt, "old");
  await writeVersionScript(path.join(dir, "nats-server"), version);
  return dir;
}

async function writeVersionScript(file: string, version: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `#!/bin/sh\necho "nats-server: v${version}"\n`);
  await chmod(file, 0o755);
}

/** A cache root holding, for each version, a binary that reports it. */
async function cacheWith(tt: Test, versions: string[]): Promise<string> {
  const cache = await tempDir(tt, "cache");
  for (const v of versions) await writeVersionScript(path.join(cache, "nats-server", v, "nats-server"), v);
  return cache;
}

/** The test runner's PATH minus every directory that holds a nats-server, so system tools stay usable. */
function systemPathWithoutNats(): string {
  return (process.env.PATH ?? "")
    .split(path.delimiter)
    .filter((d) => d && !existsSync(path.join(d, "nats-server")))
    .join(path.delimiter);
}

/** A PATH with only the named system tools, so neither nats-server nor apt-get is found. */
async function toolsOnlyPath(tt: Test, tools: string[]): Promise<string> {
  const dir = await tempDir(tt, "tools");
  for (const tool of tools) {
    const found = systemPathWithoutNats()
      .split(path.delimiter)
      .map((d) => path.join(d, tool))
      .find((f) => existsSync(f));
    if (found) await symlink(found, path.join(dir, tool));
  }
  return dir;
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isDirectory()) out.push(path.join(e.parentPath, e.name));
  }
  return out;
}

// One archive shaped like the official one, built once from the real binary.
const target = releaseTarget();
const assetBase = target ? releaseAssetBase(PINNED_NATS_VERSION, target) : "unsupported";
const assetName = `${assetBase}.tar.gz`;
const workDir = await tempDir(t, "release");
await mkdir(path.join(workDir, "pkg", assetBase), { recursive: true });
await copyFile(realBinary, path.join(workDir, "pkg", assetBase, "nats-server"));
await writeFile(path.join(workDir, "pkg", assetBase, "README.md"), "nats-server\n");
const archivePath = path.join(workDir, assetName);
await run("tar", ["-czf", archivePath, "-C", path.join(workDir, "pkg"), assetBase]);
const archive = await readFile(archivePath);
const goodSums = `${"0".repeat(64)}  nats-server-v${PINNED_NATS_VERSION}-windows-amd64.zip\n${createHash("sha256").update(archive).digest("hex")}  ${assetName}\n`;

/** A release host on 127.0.0.1 that records every request; anything it does not know is a 404. */
async function releaseServer(tt: Test, files: Record<string, string | Buffer> = {}) {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? "");
    const body = files[req.url ?? ""];
    if (body === undefined) {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "content-length": Buffer.byteLength(body) }).end(body);
  });
  const port = await listenLocal(tt, server);
  return { url: `http://127.0.0.1:${port}`, requests };
}

function releaseFiles(sums: string): Record<string, string | Buffer> {
  return { [`/v${PINNED_NATS_VERSION}/${assetName}`]: archive, [`/v${PINNED_NATS_VERSION}/SHA256SUMS`]: sums };
}

t.test("version parsing and ordering", async (t) => {
  t.equal(parseNatsVersion("nats-server: v2.10.27\n"), "2.10.27");
  t.equal(parseNatsVersion("nats-server: v2.11.0-RC.2"), "2.11.0-RC.2");
  t.equal(parseNatsVersion("2.9.10"), "2.9.10");
  t.equal(parseNatsVersion("command not found"), undefined);
  t.equal(parseNatsVersion(""), undefined);
  t.ok(compareVersions("2.10.0", "2.9.10") > 0, "minor compares numerically, not as text");
  t.ok(compareVersions("2.10.27", "2.10.3") > 0);
  t.equal(compareVersions("v2.10.27", "2.10.27"), 0);
  t.ok(compareVersions("2.10.0-RC.1", "2.10.0") < 0, "a pre-release comes before its release");
  t.ok(compareVersions("2.10.0-RC.2", "2.10.0-RC.10") < 0);
  t.ok(compareVersions("3.0.0", "2.99.99") > 0);
  t.equal(MIN_NATS_VERSION, "2.10.0");
  t.equal(PINNED_NATS_VERSION, "2.15.1", "the default is the maintained line (Debian unstable's)");
  t.equal(FLOOR_NATS_VERSION, "2.10.27", "the floor CI runs on is Debian trixie's");
  t.ok(judgeNatsVersion(realVersion).ok, `the test binary (${realVersion}) is one unibus runs on`);
});

t.test("advisories: the refusal list is explicit, and the floor is not on it", async (t) => {
  const refused = NATS_ADVISORIES.filter((a) => a.refused).map((a) => a.id);
  t.same(refused, ["GHSA-fr2g-9hjm-wr23", "GHSA-fhg8-qxh5-7q3w", "GHSA-8m2x-3m6q-6w8j"]);
  // Each refused range: its first release is refused, the release that fixed it is not.
  for (const a of NATS_ADVISORIES.filter((x) => x.refused)) {
    for (const [introduced, fixed] of a.affected) {
      t.ok(advisoriesAffecting(introduced).includes(a), `${introduced} is in ${a.id}`);
      t.notOk(judgeNatsVersion(introduced).ok, `${introduced} is refused`);
      t.notOk(advisoriesAffecting(fixed).includes(a), `${fixed} is out of ${a.id}`);
    }
  }
  const cases: Array<[string, RegExp]> = [
    ["2.10.1", /GHSA-fr2g-9hjm-wr23 \(CVE-2023-47090: .*\); fixed in 2\.10\.2/],
    // Every 2.10 release before the floor is in GHSA-fhg8-qxh5-7q3w's range.
    ["2.10.2", /GHSA-fhg8-qxh5-7q3w .*fixed in 2\.10\.27/],
    ["2.10.26", /GHSA-fhg8-qxh5-7q3w \(CVE-2025-30215: .*\); fixed in 2\.10\.27/],
    ["2.11.0", /GHSA-fhg8-qxh5-7q3w .*fixed in 2\.11\.1/],
    ["2.11.14", /GHSA-8m2x-3m6q-6w8j \(CVE-2026-33249: .*\); fixed in 2\.11\.15/],
    ["2.12.5", /GHSA-8m2x-3m6q-6w8j .*fixed in 2\.12\.6/],
    ["2.9.10", /older than 2\.10\.0/],
  ];
  for (const [version, reason] of cases) {
    const v = judgeNatsVersion(version);
    t.notOk(v.ok, `${version} is refused`);
    if (!v.ok) t.match(v.reason, reason, version);
  }
  for (const version of ["2.10.27", "2.11.15", "2.12.6", "2.14.3", PINNED_NATS_VERSION]) {
    t.ok(judgeNatsVersion(version).ok, `${version} runs`);
  }
  const floor = judgeNatsVersion(FLOOR_NATS_VERSION);
  t.ok(floor.ok, "the floor is accepted");
  if (floor.ok) {
    t.ok(floor.advisories.length >= 10, "the floor is in the 2026 advisories' ranges (no 2.10 fixes)");
    t.ok(
      floor.advisories.every((a) => !a.refused && a.why.length > 0),
      "each says why it does not reach a bus",
    );
    t.ok(floor.advisories.some((a) => a.cve === "CVE-2026-33223"));
  }
  const pinned = judgeNatsVersion(PINNED_NATS_VERSION);
  t.same(pinned.ok ? pinned.advisories : ["refused"], [], "the default is in no advisory's range");
});

t.test("UNIBUS_NATS_SERVER wins over the cache and PATH", async (t) => {
  const cache = await tempDir(t);
  await mkdir(path.join(cache, "nats-server", PINNED_NATS_VERSION), { recursive: true });
  await symlink(realBinary, path.join(cache, "nats-server", PINNED_NATS_VERSION, "nats-server"));
  const override = path.join(await goodBinDir(t), "nats-server");
  const { logger, lines } = captureLogger("debug");
  const got = await resolveNatsServer({
    cacheDir: cache,
    network: false,
    logger,
    env: { PATH: await goodBinDir(t), UNIBUS_NATS_SERVER: override },
  });
  t.same(got, { path: override, version: realVersion, source: "env" });
  t.ok(
    lines.some((l) => l.msg === "using nats-server from UNIBUS_NATS_SERVER"),
    "the choice is logged",
  );
});

t.test("UNIBUS_NATS_SERVER pointing at nothing is an error, not skipped", async (t) => {
  const dir = await tempDir(t);
  const missing = path.join(dir, "no-such-nats-server");
  const err = await resolveNatsServer({
    cacheDir: dir,
    env: { PATH: await goodBinDir(t), UNIBUS_NATS_SERVER: missing },
  }).catch((e: unknown) => e);
  t.type(err, NatsBinaryError);
  t.match((err as Error).message, `UNIBUS_NATS_SERVER=${missing}: no such file`);
  // A directory is not a binary either.
  await t.rejects(
    resolveNatsServer({ cacheDir: dir, network: false, env: { PATH: "", UNIBUS_NATS_SERVER: dir } }),
    NatsBinaryError,
  );
});

t.test("UNIBUS_NATS_SERVER pointing at a too-old or refused binary is an error", async (t) => {
  const old = path.join(await oldBinDir(t), "nats-server");
  const err = await resolveNatsServer({
    cacheDir: await tempDir(t),
    network: false,
    env: { PATH: await goodBinDir(t), UNIBUS_NATS_SERVER: old },
  }).catch((e: unknown) => e);
  t.type(err, NatsBinaryError);
  t.match((err as Error).message, /nats-server 2\.9\.10, which is older than 2\.10\.0/);
  t.match((err as Error).message, />= 2\.10\.0/, "says what is needed");

  const refused = path.join(await oldBinDir(t, "2.11.0"), "nats-server");
  const adv = await resolveNatsServer({
    cacheDir: await tempDir(t),
    network: false,
    env: { PATH: await goodBinDir(t), UNIBUS_NATS_SERVER: refused },
  }).catch((e: unknown) => e);
  t.type(adv, NatsBinaryError, "an explicit override is refused too, not skipped");
  t.match(
    (adv as Error).message,
    /UNIBUS_NATS_SERVER=.* is nats-server 2\.11\.0, which is affected by security advisory GHSA-fhg8-qxh5-7q3w \(CVE-2025-30215: .*\); fixed in 2\.11\.1/,
  );
});

t.test("a program that prints a version but is not nats-server is refused", async (t) => {
  // `node --version` prints v24…, a version above the floor: the name is what tells them apart.
  const err = await resolveNatsServer({
    cacheDir: await tempDir(t),
    network: false,
    env: { PATH: "", UNIBUS_NATS_SERVER: process.execPath },
  }).catch((e: unknown) => e);
  t.type(err, NatsBinaryError);
  t.match((err as Error).message, `UNIBUS_NATS_SERVER=${process.execPath} is not nats-server`);
});

t.test("checkNatsServer: one named binary, judged like UNIBUS_NATS_SERVER", async (t) => {
  const good = await checkNatsServer(realBinary);
  t.same(good, { path: path.resolve(realBinary), version: realVersion }, "a real one: its path and version");
  const dir = await tempDir(t);
  const missing = path.join(dir, "nats-server");
  await t.rejects(checkNatsServer(missing), new RegExp(`nats-server ${missing}: no such file`));
  await t.rejects(checkNatsServer(dir), NatsBinaryError, "a directory");
  await t.rejects(checkNatsServer(process.execPath), /is not nats-server/, "another program");
  await t.rejects(
    checkNatsServer(path.join(await oldBinDir(t), "nats-server")),
    /is nats-server 2\.9\.10, which is older than 2\.10\.0/,
    "a release unibus does not run on",
  );
});

t.test("a too-old nats-server on PATH is skipped for a newer one further on", async (t) => {
  const oldDir = await oldBinDir(t);
  const goodDir = await goodBinDir(t);
  const { logger, lines } = captureLogger("debug");
  const got = await resolveNatsServer({
    cacheDir: await tempDir(t),
    network: false,
    logger,
    env: { PATH: [oldDir, goodDir].join(path.delimiter) },
  });
  t.same(got, { path: path.join(goodDir, "nats-server"), version: realVersion, source: "path" });
  t.ok(
    lines.some((l) => l.msg === "nats-server on PATH is not usable; skipped" && l.version === "2.9.10"),
    "the skip is logged",
  );
});

t.test("nothing found with the network off: one error naming every option", async (t) => {
  const cache = await tempDir(t);
  const err = await resolveNatsServer({
    cacheDir: cache,
    network: false,
    env: { PATH: await oldBinDir(t) },
  }).catch((e: unknown) => e);
  t.type(err, NatsBinaryError);
  const msg = (err as Error).message;
  t.match(msg, "no usable nats-server (>= 2.10.0) was found");
  t.match(msg, "set UNIBUS_NATS_SERVER=/path/to/nats-server (>= 2.10.0, with no refused advisory)");
  t.match(msg, "put nats-server >= 2.10.0 on PATH");
  t.match(msg, "run `npx unibus install` on a machine that can reach the release archive or a Debian mirror");
  t.match(msg, "UNIBUS_NATS_SERVER: not set");
  t.match(msg, `cache (${path.join(cache, "nats-server")}): empty`);
  t.match(msg, "PATH: nats-server 2.9.10 is older than 2.10.0");
  t.match(msg, "downloads: not tried (network off)");

  const empty = await resolveNatsServer({ cacheDir: cache, network: false, env: { PATH: "" } }).catch((e) => e);
  t.match((empty as Error).message, "PATH: no nats-server");
});

t.test("a cache hit never touches the network", async (t) => {
  // The default line, the floor, and what must be passed over: one that does not run,
  // one too old, one refused for an advisory.
  const cache = await cacheWith(t, [PINNED_NATS_VERSION, FLOOR_NATS_VERSION, "2.9.10", "2.11.0"]);
  const root = path.join(cache, "nats-server");
  await mkdir(path.join(root, "2.99.0"));
  await writeFile(path.join(root, "2.99.0", "nats-server"), "#!/bin/sh\nexit 3\n");
  await chmod(path.join(root, "2.99.0", "nats-server"), 0o755);
  await mkdir(path.join(root, "not-a-version"));
  const server = await releaseServer(t, releaseFiles(goodSums));
  const env = { PATH: "", UNIBUS_NATS_DOWNLOAD_URL: server.url };
  const expected = {
    path: path.join(root, PINNED_NATS_VERSION, "nats-server"),
    version: PINNED_NATS_VERSION,
    source: "cache",
  };
  const { logger, lines } = captureLogger();
  t.same(await resolveNatsServer({ cacheDir: cache, network: true, env, logger }), expected);
  t.same(await resolveNatsServer({ cacheDir: cache, network: false, env }), expected);
  t.same(await installNatsServer({ cacheDir: cache, env }), expected);
  t.same(server.requests, [], "no request reached the release host");
  t.ok(
    lines.some((l) => l.msg === "cached nats-server is broken; skipped"),
    "the broken entry is logged",
  );
  t.notOk(
    lines.some((l) => l.level === "warn" && /floor|advisories|older than the default/.test(String(l.msg))),
    "no floor or advisory warning for the default",
  );
});

t.test("the cache may hold the floor next to the default: each is found by version", async (t) => {
  const cache = await cacheWith(t, [FLOOR_NATS_VERSION]);
  const floorPath = path.join(cache, "nats-server", FLOOR_NATS_VERSION, "nats-server");
  const { logger, lines } = captureLogger();
  const got = await resolveNatsServer({ cacheDir: cache, network: false, env: { PATH: "" }, logger });
  t.same(got, { path: floorPath, version: FLOOR_NATS_VERSION, source: "cache" }, "a run takes the floor it has");
  const warnings = lines.filter((l) => l.level === "warn").map((l) => String(l.msg));
  t.ok(
    warnings.some((m) => m.includes(`nats-server ${FLOOR_NATS_VERSION} is the supported floor, not the default`)),
    "with a warning that it is the floor",
  );
  t.ok(
    warnings.some((m) => m.includes("GHSA-vprv-35vv-q339") && m.includes("no leafnode listener")),
    "and the advisories it carries that do not reach a bus",
  );

  // An exact request takes only its own version; the default line is another directory.
  t.same(await resolveNatsServer({ cacheDir: cache, network: false, env: { PATH: "" }, version: "v2.10.27" }), got);
  await writeVersionScript(path.join(cache, "nats-server", PINNED_NATS_VERSION, "nats-server"), PINNED_NATS_VERSION);
  t.equal(
    (await resolveNatsServer({ cacheDir: cache, network: false, env: { PATH: "" } })).version,
    PINNED_NATS_VERSION,
  );
  t.same(
    await installNatsServer({ cacheDir: cache, env: { PATH: "" }, version: FLOOR_NATS_VERSION }),
    got,
    "both sit in the cache",
  );
  const wrong = await resolveNatsServer({
    cacheDir: cache,
    network: false,
    env: { PATH: "" },
    version: "2.14.3",
  }).catch((e: unknown) => e);
  t.type(wrong, NatsBinaryError);
  t.match((wrong as Error).message, "no usable nats-server (2.14.3) was found");
  t.match((wrong as Error).message, `${PINNED_NATS_VERSION} is not the requested 2.14.3`);
});

t.test("a requested version must be a release unibus runs on", async (t) => {
  const cache = await tempDir(t);
  for (const [version, message] of [
    ["latest", /expected a release like 2\.10\.27; got latest/],
    ["2.9.10", /nats-server 2\.9\.10 is older than 2\.10\.0/],
    ["2.10.1", /GHSA-fr2g-9hjm-wr23 .*fixed in 2\.10\.2/],
  ] as const) {
    await t.rejects(resolveNatsServer({ cacheDir: cache, network: false, env: { PATH: "" }, version }), {
      code: "INVALID_ARGUMENT",
      message,
    });
    await t.rejects(installNatsServer({ cacheDir: cache, env: { PATH: "" }, version }), { message });
  }
  // An override that reports another release than the one asked for is a mistake, not a hit.
  const err = await installNatsServer({
    cacheDir: cache,
    env: { PATH: "", UNIBUS_NATS_SERVER: path.join(await oldBinDir(t, PINNED_NATS_VERSION), "nats-server") },
    version: FLOOR_NATS_VERSION,
  }).catch((e: unknown) => e);
  t.type(err, NatsBinaryError);
  t.match((err as Error).message, `is nats-server ${PINNED_NATS_VERSION}, not the requested ${FLOOR_NATS_VERSION}`);
});

t.test("cache root comes from UNIBUS_CACHE_DIR, then XDG_CACHE_HOME, then HOME", async (t) => {
  for (const [name, make] of [
    ["UNIBUS_CACHE_DIR", (d: string) => ({ UNIBUS_CACHE_DIR: d, XDG_CACHE_HOME: "/nonexistent", HOME: "/x" })],
    ["XDG_CACHE_HOME", (d: string) => ({ XDG_CACHE_HOME: path.dirname(d), HOME: "/x" })],
    ["HOME", (d: string) => ({ HOME: path.dirname(path.dirname(d)) })],
  ] as const) {
    const base = await tempDir(t);
    const root = name === "UNIBUS_CACHE_DIR" ? base : path.join(base, ".cache", "unibus");
    const cacheRoot = name === "XDG_CACHE_HOME" ? path.join(base, "unibus") : root;
    await mkdir(path.join(cacheRoot, "nats-server", PINNED_NATS_VERSION), { recursive: true });
    await symlink(realBinary, path.join(cacheRoot, "nats-server", PINNED_NATS_VERSION, "nats-server"));
    const got = await resolveNatsServer({ network: false, env: { PATH: "", ...make(cacheRoot) } });
    t.equal(got.source, "cache", name);
    t.equal(got.path, path.join(cacheRoot, "nats-server", PINNED_NATS_VERSION, "nats-server"), name);
  }
});

t.test("release archive: downloaded, checksum-verified, installed into the cache", { skip: !target }, async (t) => {
  const cache = await tempDir(t);
  // Left by an install that was killed two hours ago: swept before downloading.
  const stale = path.join(cache, "nats-server", ".tmp-stale");
  await mkdir(stale, { recursive: true });
  await writeFile(path.join(stale, "partial.tar.gz"), "partial");
  const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
  await utimes(stale, twoHoursAgo, twoHoursAgo);
  const server = await releaseServer(t, releaseFiles(goodSums));
  const events: NatsInstallProgress[] = [];
  const log = captureLogger<{ level: string; msg: string; phase?: string }>("info");
  const got = await installNatsServer({
    cacheDir: cache,
    env: { PATH: systemPathWithoutNats(), UNIBUS_NATS_DOWNLOAD_URL: server.url },
    onProgress: (e) => events.push(e),
    logger: log.logger,
  });
  // The archive is named for the default release and holds the test binary.
  const installed = path.join(cache, "nats-server", realVersion, "nats-server");
  t.same(got, { path: installed, version: realVersion, source: "release" });
  t.equal((await stat(installed)).mode & 0o777, 0o755);
  t.match((await run(installed, ["--version"])).stdout, `v${realVersion}`);
  t.same(await listFiles(cache), [installed], "only the binary is left: no archive, no temp files, no stale staging");
  t.same(
    server.requests,
    [`/v${PINNED_NATS_VERSION}/SHA256SUMS`, `/v${PINNED_NATS_VERSION}/${assetName}`],
    "the checksums are fetched first, then the archive",
  );
  const phases = new Set(events.map((e) => e.phase));
  for (const p of ["download", "verify", "extract"]) t.ok(phases.has(p), `progress reports ${p}`);
  const last = events.filter((e) => e.received !== undefined).at(-1);
  t.equal(last?.received, archive.length, "download progress reaches the full size");
  t.equal(last?.total, archive.length);
  // What a test's or CI's log shows while it waits: each phase, the download in 10 % steps.
  const progress = log.lines.filter((l) => l.msg.startsWith("nats-server: "));
  const shown = progress.map((l) => l.msg);
  t.ok(
    shown.some((m) => /downloaded 100% of/.test(m)),
    "the download is logged up to 100 %",
  );
  t.ok(shown.some((m) => /checking sha256/.test(m)) && shown.some((m) => /unpacking/.test(m)), "phases are logged");
  const steps = shown.filter((m) => /downloaded \d+%/.test(m));
  t.ok(steps.length >= 1 && steps.length <= 11, `download progress in at most 11 lines (${steps.length})`);
  t.same(
    progress.filter((l) => l.level !== "info"),
    [],
    "at info level",
  );

  // The next resolve finds it in the cache without asking the host again.
  const again = await resolveNatsServer({ cacheDir: cache, env: { PATH: "", UNIBUS_NATS_DOWNLOAD_URL: server.url } });
  t.equal(again.source, "cache");
  t.equal(server.requests.length, 2);
});

t.test("a tampered archive is refused and leaves nothing behind", { skip: !target }, async (t) => {
  const cache = await tempDir(t);
  const wrong = `${createHash("sha256").update("something else").digest("hex")}  ${assetName}\n`;
  const server = await releaseServer(t, releaseFiles(wrong));
  const events: NatsInstallProgress[] = [];
  const err = await installNatsServer({
    cacheDir: cache,
    env: { PATH: systemPathWithoutNats(), UNIBUS_NATS_DOWNLOAD_URL: server.url },
    onProgress: (e) => events.push(e),
  }).catch((e: unknown) => e);
  t.type(err, ChecksumMismatchError);
  t.equal((err as ChecksumMismatchError).file, assetName);
  t.equal((err as ChecksumMismatchError).actual, createHash("sha256").update(archive).digest("hex"));
  t.same(await listFiles(cache), [], "no binary, no archive, no temp file in the cache");
  t.notOk(
    events.some((e) => e.phase.startsWith("apt-get")),
    "resolution stopped: no fall-through to the Debian package",
  );
});

t.test("an unreachable or incomplete release falls through, and the final error says why", async (t) => {
  const cases: Array<{ name: string; files: Record<string, string>; expect: RegExp }> = [
    {
      name: "404",
      files: {},
      expect: /release archive \(2\.15\.1\): http:\/\/127\.0\.0\.1:\d+\/v2\.15\.1\/SHA256SUMS answered HTTP 404/,
    },
    {
      name: "no entry in SHA256SUMS",
      files: { [`/v${PINNED_NATS_VERSION}/SHA256SUMS`]: `${"a".repeat(64)}  other.tar.gz\n` },
      expect: new RegExp(`SHA256SUMS lists no checksum for ${assetName.replace(/\./g, "\\.")}`),
    },
  ];
  for (const c of cases) {
    const cache = await tempDir(t);
    const server = await releaseServer(t, c.files);
    // tar is there for the archive; apt-get is not, so the Debian step reports that.
    const err = await installNatsServer({
      cacheDir: cache,
      env: { PATH: await toolsOnlyPath(t, ["tar", "gzip"]), UNIBUS_NATS_DOWNLOAD_URL: server.url },
    }).catch((e: unknown) => e);
    t.type(err, NatsBinaryError, c.name);
    t.match((err as Error).message, c.expect, c.name);
    for (const suite of DEBIAN_SUITES) {
      t.match(
        (err as Error).message,
        new RegExp(`Debian ${suite} package: (\`apt-get\` is not on PATH|not Linux)`),
        c.name,
      );
    }
    t.same(await listFiles(cache), [], `${c.name}: nothing left in the cache`);
  }
});

t.test("two concurrent installs into one empty cache both succeed", { skip: !target }, async (t) => {
  const cache = await tempDir(t);
  const server = await releaseServer(t, releaseFiles(goodSums));
  const env = { PATH: systemPathWithoutNats(), UNIBUS_NATS_DOWNLOAD_URL: server.url };
  const [a, b] = await Promise.all([
    installNatsServer({ cacheDir: cache, env }),
    installNatsServer({ cacheDir: cache, env }),
  ]);
  const installed = path.join(cache, "nats-server", realVersion, "nats-server");
  t.same(a, { path: installed, version: realVersion, source: "release" });
  t.same(b, a);
  t.match((await run(installed, ["--version"])).stdout, `v${realVersion}`);
  t.same(await listFiles(cache), [installed]);
});

t.test("a downloaded nats-server with a refused advisory is not installed", { skip: !target }, async (t) => {
  // An archive shaped like the default release whose binary reports 2.12.0 (GHSA-8m2x-3m6q-6w8j).
  const dir = await tempDir(t, "refused");
  await writeVersionScript(path.join(dir, "pkg", assetBase, "nats-server"), "2.12.0");
  const file = path.join(dir, assetName);
  await run("tar", ["-czf", file, "-C", path.join(dir, "pkg"), assetBase]);
  const body = await readFile(file);
  const sums = `${createHash("sha256").update(body).digest("hex")}  ${assetName}\n`;
  const server = await releaseServer(t, {
    [`/v${PINNED_NATS_VERSION}/${assetName}`]: body,
    [`/v${PINNED_NATS_VERSION}/SHA256SUMS`]: sums,
  });
  const cache = await tempDir(t);
  const err = await installNatsServer({
    cacheDir: cache,
    env: { PATH: await toolsOnlyPath(t, ["tar", "gzip"]), UNIBUS_NATS_DOWNLOAD_URL: server.url },
  }).catch((e: unknown) => e);
  t.type(err, NatsBinaryError);
  t.match(
    (err as Error).message,
    /release archive \(2\.15\.1\): the archive holds nats-server 2\.12\.0, which is affected by security advisory GHSA-8m2x-3m6q-6w8j \(CVE-2026-33249: .*\); fixed in 2\.12\.6/,
  );
  t.same(await listFiles(cache), [], "nothing refused lands in the cache");
});

t.test("install passes over a cached floor and fetches the default", { skip: !target }, async (t) => {
  const cache = await cacheWith(t, [FLOOR_NATS_VERSION]);
  const server = await releaseServer(t, releaseFiles(goodSums));
  const { logger, lines } = captureLogger();
  const got = await installNatsServer({
    cacheDir: cache,
    logger,
    env: { PATH: systemPathWithoutNats(), UNIBUS_NATS_DOWNLOAD_URL: server.url },
  });
  t.equal(got.source, "release");
  t.same(server.requests, [`/v${PINNED_NATS_VERSION}/SHA256SUMS`, `/v${PINNED_NATS_VERSION}/${assetName}`]);
  t.ok(
    lines.some(
      (l) =>
        l.msg === "no usable nats-server in the cache" &&
        String(l.reason).includes(`${FLOOR_NATS_VERSION} is older than the default ${PINNED_NATS_VERSION}`),
    ),
    "the pass-over is logged",
  );
});

/** Stand-ins for apt-get and dpkg-deb: each suite named in FAKE_NATS_<suite> "ships" that version. */
async function fakeAptDir(tt: Test): Promise<string> {
  const dir = await tempDir(tt, "fake-apt");
  const aptGet = [
    "#!/bin/sh",
    'for a in "$@"; do case "$a" in Dir::Etc::SourceParts=*) parts=$(echo "$a" | sed "s/^[^=]*=//");; esac; done',
    'suite=$(sed -n "s/^Suites: //p" "$parts/unibus.sources")',
    'ver=$(printenv "FAKE_NATS_$suite")',
    'case " $* " in *" update "*) echo "$suite" >> "$FAKE_APT_LOG";; esac',
    'if [ -z "$ver" ]; then echo "E: The repository for $suite does not have a Release file." >&2; exit 100; fi',
    'case " $* " in *" download "*) echo deb > "nats-server_$ver-1_amd64.deb";; esac',
    "exit 0",
  ];
  const dpkgDeb = [
    "#!/bin/sh",
    'ver=$(basename "$2" | sed "s/^nats-server_\\([^-]*\\)-.*/\\1/")',
    'mkdir -p "$3/usr/sbin"',
    `printf '#!/bin/sh\\necho "nats-server: v%s"\\n' "$ver" > "$3/usr/sbin/nats-server"`,
    'chmod 755 "$3/usr/sbin/nats-server"',
  ];
  for (const [name, lines] of [
    ["apt-get", aptGet],
    ["dpkg-deb", dpkgDeb],
  ] as const) {
    await writeFile(path.join(dir, name), `${lines.join("\n")}\n`);
    await chmod(path.join(dir, name), 0o755);
  }
  return dir;
}

const aptConfigured = process.platform === "linux" && (await readAptArchives()).length > 0;

t.test("Debian: unstable first, then trixie, the floor, with a warning", { skip: !aptConfigured }, async (t) => {
  const fake = await fakeAptDir(t);
  const server = await releaseServer(t);
  const base = { PATH: [fake, systemPathWithoutNats()].join(path.delimiter), UNIBUS_NATS_DOWNLOAD_URL: server.url };
  const cases = [
    { name: "unstable has no nats-server", unstable: undefined, refusal: /does not have a Release file/ },
    {
      name: "unstable ships a refused release",
      unstable: "2.10.1",
      refusal: /GHSA-fr2g-9hjm-wr23 .*fixed in 2\.10\.2/,
    },
  ];
  for (const c of cases) {
    const cache = await tempDir(t);
    const log = path.join(cache, "..", `${path.basename(cache)}.apt-log`);
    t.teardown(() => rm(log, { force: true }));
    const env = { ...base, FAKE_APT_LOG: log, FAKE_NATS_trixie: FLOOR_NATS_VERSION, FAKE_NATS_unstable: c.unstable };
    const { logger, lines } = captureLogger();
    const got = await installNatsServer({ cacheDir: cache, env, logger });
    t.same(
      got,
      {
        path: path.join(cache, "nats-server", FLOOR_NATS_VERSION, "nats-server"),
        version: FLOOR_NATS_VERSION,
        source: "debian",
      },
      c.name,
    );
    t.same(
      (await readFile(log, "utf8")).trim().split("\n"),
      ["unstable", "trixie"],
      `${c.name}: unstable is asked first`,
    );
    const missed = lines.find((l) => l.msg === "the Debian unstable package did not deliver nats-server");
    t.match(String(missed?.reason), c.refusal, `${c.name}: why unstable was passed over`);
    t.ok(
      lines.some((l) => l.level === "warn" && String(l.msg).includes(`${FLOOR_NATS_VERSION} is the supported floor`)),
      `${c.name}: the floor is announced`,
    );
    t.same(await listFiles(cache), [got.path], `${c.name}: only the floor is installed`);
  }

  // The floor asked for by name: trixie is asked first, and unstable's release would not do.
  const cache = await tempDir(t);
  const log = path.join(cache, "..", `${path.basename(cache)}.apt-log`);
  t.teardown(() => rm(log, { force: true }));
  const env = {
    ...base,
    FAKE_APT_LOG: log,
    FAKE_NATS_unstable: PINNED_NATS_VERSION,
    FAKE_NATS_trixie: FLOOR_NATS_VERSION,
  };
  const floor = await installNatsServer({ cacheDir: cache, env, version: FLOOR_NATS_VERSION });
  t.equal(floor.version, FLOOR_NATS_VERSION);
  t.same((await readFile(log, "utf8")).trim().split("\n"), ["trixie"]);
  const none = await installNatsServer({
    cacheDir: await tempDir(t),
    env: { ...env, FAKE_NATS_trixie: undefined },
    version: FLOOR_NATS_VERSION,
  }).catch((e: unknown) => e);
  t.type(none, NatsBinaryError);
  t.match(
    (none as Error).message,
    new RegExp(
      `Debian unstable package: \\S+ unstable: unstable ships nats-server ${PINNED_NATS_VERSION}, which is not the requested ${FLOOR_NATS_VERSION}`,
    ),
  );
});

t.test("unibus install --version fetches one release; a refused one is an error", async (t) => {
  const cache = await cacheWith(t, [FLOOR_NATS_VERSION, PINNED_NATS_VERSION]);
  const cli = path.join(repoRoot, "bin", "unibus.js");
  const env = { PATH: path.dirname(process.execPath), UNIBUS_CACHE_DIR: cache };
  const { stdout } = await run(process.execPath, [cli, "install", "--version", FLOOR_NATS_VERSION, "--json"], { env });
  t.same(JSON.parse(stdout), {
    path: path.join(cache, "nats-server", FLOOR_NATS_VERSION, "nats-server"),
    version: FLOOR_NATS_VERSION,
    source: "cache",
  });
  const def = await run(process.execPath, [cli, "install", "--json"], { env });
  t.equal(JSON.parse(def.stdout).version, PINNED_NATS_VERSION, "without --version: the default");
  const refused = await run(process.execPath, [cli, "install", "--version", "2.11.0"], { env }).catch((e) => e);
  t.equal(refused.code, 1);
  t.match(
    refused.stderr,
    /unibus: version: nats-server 2\.11\.0 is affected by security advisory GHSA-fhg8-qxh5-7q3w .*fixed in 2\.11\.1/,
  );
});

t.test("apt sources: main archives are read from the machine's own configuration", async (t) => {
  const etc = await tempDir(t, "etc-apt");
  await mkdir(path.join(etc, "sources.list.d"));
  await writeFile(
    path.join(etc, "sources.list.d", "debian.sources"),
    [
      "Types: deb",
      "# a comment inside a stanza",
      "URIs: http://mirror.example/debian",
      "Suites: bookworm bookworm-updates",
      "Components: main",
      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
      "",
      "Types: deb",
      "URIs: http://mirror.example/debian-security",
      "Suites: bookworm-security",
      "Components: main",
      "",
      "Types: deb",
      "URIs: http://disabled.example/debian",
      "Suites: bookworm",
      "Enabled: no",
      "",
    ].join("\n"),
  );
  await writeFile(
    path.join(etc, "sources.list.d", "other.sources.disabled"),
    "Types: deb\nURIs: http://x/\nSuites: a\n",
  );
  await writeFile(
    path.join(etc, "sources.list"),
    "# deb http://commented.example/debian bookworm main\n" +
      "deb [arch=amd64 signed-by=/etc/keyrings/k.gpg] https://one.example/debian bookworm main\n" +
      "deb-src http://src.example/debian bookworm main\n" +
      "deb cdrom:[Debian]/ bookworm main\n",
  );
  t.same(await readAptArchives(etc), [
    {
      uri: "http://mirror.example/debian",
      signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg",
      file: path.join(etc, "sources.list.d", "debian.sources"),
    },
    { uri: "https://one.example/debian", signedBy: "/etc/keyrings/k.gpg", file: path.join(etc, "sources.list") },
  ]);
  t.same(await readAptArchives(path.join(etc, "missing")), [], "no configuration, no archives");

  t.equal(
    renderSourcesStanza({ uri: "http://m/debian", signedBy: "/k.gpg", file: "f" }, "trixie"),
    "Types: deb\nURIs: http://m/debian\nSuites: trixie\nComponents: main\nSigned-By: /k.gpg\n",
  );
  t.equal(
    renderSourcesStanza(
      { uri: "http://m/debian", signedBy: "-----BEGIN PGP-----\n\nabc\n-----END PGP-----", file: "f" },
      "trixie",
    ),
    "Types: deb\nURIs: http://m/debian\nSuites: trixie\nComponents: main\nSigned-By:\n -----BEGIN PGP-----\n .\n abc\n -----END PGP-----\n",
    "an inline key keeps its deb822 continuation form",
  );
  t.same(parseSha256Sums(`${"AB".repeat(32)} *x.tar.gz\nnoise\n`), new Map([["x.tar.gz", "ab".repeat(32)]]));
});

const aptGet = systemPathWithoutNats()
  .split(path.delimiter)
  .some((d) => d && existsSync(path.join(d, "apt-get")));

t.test("Debian: the default from unstable, under a throwaway apt configuration", async (t) => {
  const cache = await tempDir(t);
  // The release host answers 404, so resolution falls through to Debian whatever the network allows.
  const server = await releaseServer(t);
  if (process.platform !== "linux" || !aptGet) {
    t.comment(`real Debian download not run: needs Linux with apt-get (platform ${process.platform})`);
    // What can be checked here: the Debian source declines cleanly and says why.
    const err = await installNatsServer({
      cacheDir: cache,
      env: { PATH: systemPathWithoutNats(), UNIBUS_NATS_DOWNLOAD_URL: server.url },
    }).catch((e: unknown) => e);
    t.type(err, NatsBinaryError);
    t.match(
      (err as Error).message,
      /Debian unstable package: (not Linux|`apt-get` is not on PATH|`dpkg-deb` is not on PATH)/,
    );
    return;
  }
  const events: NatsInstallProgress[] = [];
  const got = await installNatsServer({
    cacheDir: cache,
    env: { PATH: systemPathWithoutNats(), HOME: cache, UNIBUS_NATS_DOWNLOAD_URL: server.url },
    onProgress: (e) => events.push(e),
  });
  t.equal(got.source, "debian");
  t.ok(compareVersions(got.version, PINNED_NATS_VERSION) >= 0, `unstable's ${got.version} is the default line`);
  t.equal(got.path, path.join(cache, "nats-server", got.version, "nats-server"));
  t.equal((await stat(got.path)).mode & 0o777, 0o755);
  t.match((await run(got.path, ["--version"])).stdout, `v${got.version}`);
  t.same(await listFiles(cache), [got.path], "apt's lists, cache and the .deb are gone");
  const phases = new Set(events.map((e) => e.phase));
  for (const p of ["apt-get update", "apt-get download", "extract", "verify"]) t.ok(phases.has(p), `progress: ${p}`);
});

t.test("Debian: the floor from trixie, on request", { skip: process.platform !== "linux" || !aptGet }, async (t) => {
  const cache = await tempDir(t);
  const server = await releaseServer(t);
  const got = await installNatsServer({
    cacheDir: cache,
    env: { PATH: systemPathWithoutNats(), HOME: cache, UNIBUS_NATS_DOWNLOAD_URL: server.url },
    version: FLOOR_NATS_VERSION,
  });
  t.same(got, {
    path: path.join(cache, "nats-server", FLOOR_NATS_VERSION, "nats-server"),
    version: FLOOR_NATS_VERSION,
    source: "debian",
  });
  t.match((await run(got.path, ["--version"])).stdout, `v${FLOOR_NATS_VERSION}`);
  t.same(server.requests, [`/v${FLOOR_NATS_VERSION}/SHA256SUMS`], "the release archive is tried first");
});

t.test("scripts/install-nats.ts prints the result", async (t) => {
  const cache = await cacheWith(t, [PINNED_NATS_VERSION]);
  const { stdout, stderr } = await run(
    process.execPath,
    ["--disable-warning=ExperimentalWarning", path.join(repoRoot, "scripts", "install-nats.ts"), "--json"],
    { env: { PATH: "", UNIBUS_CACHE_DIR: cache } },
  );
  t.same(JSON.parse(stdout), {
    path: path.join(cache, "nats-server", PINNED_NATS_VERSION, "nats-server"),
    version: PINNED_NATS_VERSION,
    source: "cache",
  });
  t.match(stderr, "unibus: using cached nats-server");
});

/** Runs postinstall as npm would, returning its exit code and output. */
function postinstall(env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot, "scripts", "postinstall.js")], { env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

t.test("postinstall never fails npm install", async (t) => {
  const skipped = await postinstall({ PATH: "", UNIBUS_SKIP_NATS_INSTALL: "1" });
  t.same(skipped, { code: 0, stdout: "", stderr: "" }, "UNIBUS_SKIP_NATS_INSTALL=1 skips silently");

  // No nats-server, no tar, no apt-get, a release host that 404s: every source fails.
  const server = await releaseServer(t);
  const failed = await postinstall({
    PATH: "",
    UNIBUS_CACHE_DIR: await tempDir(t),
    UNIBUS_NATS_DOWNLOAD_URL: server.url,
  });
  t.equal(failed.code, 0);
  t.match(
    failed.stderr.trim().split("\n").at(-1),
    "nats-server could not be fetched now; the first `unibus up` will retry, or run `npx unibus install`",
  );
});
