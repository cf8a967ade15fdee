import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, readdir, readFile, stat, symlink, utimes, writeFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import t, { type Test } from "tap";
import { ChecksumMismatchError, NatsBinaryError } from "../../lib/errors.ts";
import {
  compareVersions,
  installNatsServer,
  MIN_NATS_VERSION,
  type NatsInstallProgress,
  PINNED_NATS_VERSION,
  parseNatsVersion,
  resolveNatsServer,
} from "../../lib/nats/binary.ts";
import { readAptArchives, renderSourcesStanza } from "../../lib/nats/debian.ts";
import { parseSha256Sums, releaseAssetBase, releaseTarget } from "../../lib/nats/release.ts";
import { tempDir } from "../helpers/fs.ts";
import { captureLogger } from "../helpers/log.ts";
import { listenLocal } from "../helpers/net.ts";

const run = promisify(execFile);
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

/** A directory holding a `nats-server` that claims an old version, as Debian bookworm's does. */
async function oldBinDir(tt: Test, version = "2.9.10"): Promise<string> {
  const dir = await tempDir(tt, "old");
  const file = path.join(dir, "nats-server");
  await writeFile(file, `#!/bin/sh\necho "nats-server: v${version}"\n`);
  await chmod(file, 0o755);
  return dir;
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
  t.equal(PINNED_NATS_VERSION, "2.10.27");
  t.equal(realVersion, PINNED_NATS_VERSION, "the test binary is the pinned release");
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
  t.same(got, { path: override, version: PINNED_NATS_VERSION, source: "env" });
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

t.test("UNIBUS_NATS_SERVER pointing at a too-old binary is an error", async (t) => {
  const old = path.join(await oldBinDir(t), "nats-server");
  const err = await resolveNatsServer({
    cacheDir: await tempDir(t),
    network: false,
    env: { PATH: await goodBinDir(t), UNIBUS_NATS_SERVER: old },
  }).catch((e: unknown) => e);
  t.type(err, NatsBinaryError);
  t.match((err as Error).message, /nats-server 2\.9\.10, which is too old/);
  t.match((err as Error).message, />= 2\.10\.0/, "says what is needed");
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
  t.same(got, { path: path.join(goodDir, "nats-server"), version: PINNED_NATS_VERSION, source: "path" });
  t.ok(
    lines.some((l) => l.msg === "nats-server on PATH is too old; skipped" && l.version === "2.9.10"),
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
  t.match(msg, "set UNIBUS_NATS_SERVER=/path/to/nats-server (>= 2.10.0)");
  t.match(msg, "put nats-server >= 2.10.0 on PATH");
  t.match(msg, "run `npx unibus install` on a machine that can reach the release archive or a Debian mirror");
  t.match(msg, "UNIBUS_NATS_SERVER: not set");
  t.match(msg, `cache (${path.join(cache, "nats-server")}): empty`);
  t.match(msg, "PATH: nats-server 2.9.10 is too old");
  t.match(msg, "release archive: not tried (network off)");
  t.match(msg, "Debian package: not tried (network off)");

  const empty = await resolveNatsServer({ cacheDir: cache, network: false, env: { PATH: "" } }).catch((e) => e);
  t.match((empty as Error).message, "PATH: no nats-server");
});

t.test("a cache hit never touches the network", async (t) => {
  const cache = await tempDir(t);
  const root = path.join(cache, "nats-server");
  await mkdir(path.join(root, PINNED_NATS_VERSION), { recursive: true });
  await symlink(realBinary, path.join(root, PINNED_NATS_VERSION, "nats-server"));
  // A higher version that does not run must be passed over, and a too-old one ignored.
  for (const [version, script] of [
    ["2.99.0", "#!/bin/sh\nexit 3\n"],
    ["2.9.10", '#!/bin/sh\necho "nats-server: v2.9.10"\n'],
  ] as const) {
    await mkdir(path.join(root, version));
    await writeFile(path.join(root, version, "nats-server"), script);
    await chmod(path.join(root, version, "nats-server"), 0o755);
  }
  await mkdir(path.join(root, "not-a-version"));
  const server = await releaseServer(t, releaseFiles(goodSums));
  const env = { PATH: "", UNIBUS_NATS_DOWNLOAD_URL: server.url };
  const expected = {
    path: path.join(root, PINNED_NATS_VERSION, "nats-server"),
    version: PINNED_NATS_VERSION,
    source: "cache",
  };
  const { logger, lines } = captureLogger("debug");
  t.same(await resolveNatsServer({ cacheDir: cache, network: true, env, logger }), expected);
  t.same(await resolveNatsServer({ cacheDir: cache, network: false, env }), expected);
  t.same(await installNatsServer({ cacheDir: cache, env }), expected);
  t.same(server.requests, [], "no request reached the release host");
  t.ok(
    lines.some((l) => l.msg === "cached nats-server is broken; skipped"),
    "the broken entry is logged",
  );
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
  const got = await installNatsServer({
    cacheDir: cache,
    env: { PATH: systemPathWithoutNats(), UNIBUS_NATS_DOWNLOAD_URL: server.url },
    onProgress: (e) => events.push(e),
  });
  const installed = path.join(cache, "nats-server", PINNED_NATS_VERSION, "nats-server");
  t.same(got, { path: installed, version: PINNED_NATS_VERSION, source: "release" });
  t.equal((await stat(installed)).mode & 0o777, 0o755);
  t.match((await run(installed, ["--version"])).stdout, `v${PINNED_NATS_VERSION}`);
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
      expect: /release archive: http:\/\/127\.0\.0\.1:\d+\/v[\d.]+\/SHA256SUMS answered HTTP 404/,
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
    t.match((err as Error).message, /Debian package: (`apt-get` is not on PATH|not Linux)/, c.name);
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
  const installed = path.join(cache, "nats-server", PINNED_NATS_VERSION, "nats-server");
  t.same(a, { path: installed, version: PINNED_NATS_VERSION, source: "release" });
  t.same(b, a);
  t.match((await run(installed, ["--version"])).stdout, `v${PINNED_NATS_VERSION}`);
  t.same(await listFiles(cache), [installed]);
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

t.test("Debian package: apt-get download under a throwaway configuration", async (t) => {
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
    t.match((err as Error).message, /Debian package: (not Linux|`apt-get` is not on PATH|`dpkg-deb` is not on PATH)/);
    return;
  }
  const events: NatsInstallProgress[] = [];
  const got = await installNatsServer({
    cacheDir: cache,
    env: { PATH: systemPathWithoutNats(), HOME: cache, UNIBUS_NATS_DOWNLOAD_URL: server.url },
    onProgress: (e) => events.push(e),
  });
  t.equal(got.source, "debian");
  t.ok(compareVersions(got.version, MIN_NATS_VERSION) >= 0, `Debian's ${got.version} is new enough`);
  t.equal(got.path, path.join(cache, "nats-server", got.version, "nats-server"));
  t.equal((await stat(got.path)).mode & 0o777, 0o755);
  t.match((await run(got.path, ["--version"])).stdout, `v${got.version}`);
  t.same(await listFiles(cache), [got.path], "apt's lists, cache and the .deb are gone");
  const phases = new Set(events.map((e) => e.phase));
  for (const p of ["apt-get update", "apt-get download", "extract", "verify"]) t.ok(phases.has(p), `progress: ${p}`);
});

t.test("scripts/install-nats.ts prints the result", async (t) => {
  const cache = await tempDir(t);
  await mkdir(path.join(cache, "nats-server", PINNED_NATS_VERSION), { recursive: true });
  await symlink(realBinary, path.join(cache, "nats-server", PINNED_NATS_VERSION, "nats-server"));
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
