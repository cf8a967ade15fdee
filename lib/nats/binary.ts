import { stat } from "node:fs/promises";
import path from "node:path";
import { ChecksumMismatchError, InvalidArgumentError, NatsBinaryError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import {
  cachedBinaryPath,
  listCachedVersions,
  natsCacheDir,
  resolveCacheRoot,
  sweepStaleStaging,
} from "./binary-cache.ts";
import {
  type FetchContext,
  findAllOnPath,
  isExecutableFile,
  type NatsInstallProgress,
  probeNatsServer,
  SourceUnavailable,
  safeProgress,
} from "./binary-exec.ts";
import {
  compareVersions,
  FLOOR_NATS_VERSION,
  isBelowDefault,
  judgeNatsVersion,
  MIN_NATS_VERSION,
  NATS_ADVISORIES,
  type NatsAdvisory,
  PINNED_NATS_VERSION,
  parseNatsVersion,
} from "./binary-version.ts";
import { DEBIAN_SUITES, fetchDebian } from "./debian.ts";
import { fetchRelease } from "./release.ts";

export type { NatsInstallProgress } from "./binary-exec.ts";
export type { NatsAdvisory } from "./binary-version.ts";
export {
  compareVersions,
  FLOOR_NATS_VERSION,
  judgeNatsVersion,
  MIN_NATS_VERSION,
  NATS_ADVISORIES,
  PINNED_NATS_VERSION,
  parseNatsVersion,
  resolveCacheRoot,
};

export type NatsBinarySource = "env" | "cache" | "path" | "release" | "debian";

export interface ResolvedNatsServer {
  /** Absolute path of a binary that answered `--version` with a version unibus runs on. */
  path: string;
  version: string;
  source: NatsBinarySource;
}

export interface ResolveNatsOptions {
  logger?: Logger;
  /** Allow downloading (release archive, then Debian packages). Default true. */
  network?: boolean;
  /** Cache root; the binary lives in `<cacheDir>/nats-server/<version>/nats-server`. */
  cacheDir?: string;
  /** Environment to read (`UNIBUS_*`, `PATH`, `HOME`, `XDG_CACHE_HOME`); default `process.env`. */
  env?: NodeJS.ProcessEnv;
  onProgress?: (event: NatsInstallProgress) => void;
  /**
   * One release instead of the default line (the floor, say, to test on it): only this exact
   * version is taken from the cache, PATH and downloads.
   */
  version?: string;
}

/** Which versions a caller takes from the cache and PATH: any usable one, at least one, or exactly one. */
interface Want {
  exact?: string;
  atLeast?: string;
}

/** What the resolver carries from step to step. */
interface Run {
  env: NodeJS.ProcessEnv;
  log: Logger;
  cacheRoot: string;
  want: Want;
  findings: string[];
}

const FIX_HINTS = [
  `set UNIBUS_NATS_SERVER=/path/to/nats-server (>= ${MIN_NATS_VERSION}, with no refused advisory)`,
  `put nats-server >= ${MIN_NATS_VERSION} on PATH`,
  "run `npx unibus install` on a machine that can reach the release archive or a Debian mirror",
];

/**
 * Finds a nats-server unibus runs on: >= MIN_NATS_VERSION and in no refused range of
 * `NATS_ADVISORIES`. First hit wins, each step logged: `UNIBUS_NATS_SERVER` (wrong → error),
 * the cache (highest usable version), `nats-server` on PATH, then — with `network` — the
 * default release (PINNED_NATS_VERSION) from the official archive (SHA256SUMS checked), Debian
 * unstable, and Debian trixie (the floor). Downloads land in the cache. Throws `NatsBinaryError`
 * naming what each place held and every way to fix it, or `ChecksumMismatchError` when a
 * download was tampered with.
 */
export async function resolveNatsServer(options: ResolveNatsOptions = {}): Promise<ResolvedNatsServer> {
  return resolveWith(options, options.version === undefined ? {} : { exact: checkedVersion(options.version) });
}

/**
 * What `unibus install` and postinstall run: the default release (or `version`) into the
 * cache. A cached or PATH binary older than the default does not count, so an install after
 * an upgrade fetches the new default; the floor from Debian trixie is the last fallback.
 */
export async function installNatsServer(
  options: Omit<ResolveNatsOptions, "network"> = {},
): Promise<ResolvedNatsServer> {
  const want =
    options.version === undefined ? { atLeast: PINNED_NATS_VERSION } : { exact: checkedVersion(options.version) };
  return resolveWith({ ...options, network: true }, want);
}

async function resolveWith(options: ResolveNatsOptions, want: Want): Promise<ResolvedNatsServer> {
  const env = options.env ?? process.env;
  const log = (options.logger ?? silentLogger).child({ component: "nats-binary" });
  const run: Run = { env, log, cacheRoot: resolveCacheRoot(options.cacheDir, env), want, findings: [] };

  const override = env.UNIBUS_NATS_SERVER?.trim();
  if (override) return announce(await fromOverride(override, run), log);
  log.debug("UNIBUS_NATS_SERVER is not set");
  run.findings.push("UNIBUS_NATS_SERVER: not set");

  const cached = await fromCache(run);
  if (cached) return announce(cached, log);
  const onPath = await fromPath(run);
  if (onPath) return announce(onPath, log);

  if (options.network ?? true) {
    const fetched = await fromNetwork(run, safeProgress(options.onProgress, log));
    if (fetched) return announce(fetched, log);
  } else {
    log.info("network is off: not downloading nats-server");
    run.findings.push("downloads: not tried (network off)");
  }
  throw notFound(run);
}

function notFound(run: Run): NatsBinaryError {
  const message = [
    `no usable nats-server (${wantLabel(run.want)}) was found. Looked at:`,
    ...run.findings.map((f) => `  - ${f}`),
    "Fix it with one of:",
    ...FIX_HINTS.map((h) => `  - ${h}`),
  ].join("\n");
  run.log.warn({ findings: run.findings }, "no usable nats-server");
  return new NatsBinaryError(message);
}

/** A requested release must be one unibus would run, or asking for it is a mistake. */
function checkedVersion(version: string): string {
  const v = version.trim().replace(/^v/, "");
  if (parseNatsVersion(v) !== v) {
    throw new InvalidArgumentError("version", `version: expected a release like ${FLOOR_NATS_VERSION}; got ${version}`);
  }
  const verdict = judgeNatsVersion(v);
  if (!verdict.ok) throw new InvalidArgumentError("version", `version: nats-server ${v} ${verdict.reason}`);
  return v;
}

function wantLabel(want: Want): string {
  if (want.exact) return want.exact;
  return `>= ${want.atLeast ?? MIN_NATS_VERSION}`;
}

/** Why a version found in the cache or on PATH is passed over, as a phrase after "nats-server <version>". */
function passOver(version: string, want: Want): string | undefined {
  const verdict = judgeNatsVersion(version);
  if (!verdict.ok) return verdict.reason;
  if (want.exact && version !== want.exact) return `is not the requested ${want.exact}`;
  if (want.atLeast && compareVersions(version, want.atLeast) < 0) return `is older than the default ${want.atLeast}`;
  return undefined;
}

/** Downloads take the default line or, failing that, the floor; an exact request takes only itself. */
function refuseDownload(version: string, want: Want): string | undefined {
  const verdict = judgeNatsVersion(version);
  if (!verdict.ok) return verdict.reason;
  if (want.exact && version !== want.exact) return `is not the requested ${want.exact}`;
  return undefined;
}

/** Logs what the user should know about the binary that won, and hands it back. */
function announce(found: ResolvedNatsServer, log: Logger): ResolvedNatsServer {
  const verdict = judgeNatsVersion(found.version);
  const advisories = verdict.ok ? verdict.advisories : [];
  if (advisories.length > 0) {
    log.warn(
      { version: found.version, advisories: advisories.map((a) => a.id), default: PINNED_NATS_VERSION },
      `nats-server ${found.version} is affected by ${advisories.length} published advisories in parts of nats-server unibus does not turn on (${describe(advisories)}); the default ${PINNED_NATS_VERSION} is not`,
    );
  }
  if (isBelowDefault(found.version)) {
    const floor = sameLine(found.version, FLOOR_NATS_VERSION);
    log.warn(
      { version: found.version, default: PINNED_NATS_VERSION, path: found.path },
      floor
        ? `nats-server ${found.version} is the supported floor, not the default ${PINNED_NATS_VERSION}; run \`npx unibus install\` to fetch the default`
        : `nats-server ${found.version} is older than the default ${PINNED_NATS_VERSION}; run \`npx unibus install\` to fetch the default`,
    );
  }
  return found;
}

function describe(advisories: NatsAdvisory[]): string {
  return advisories.map((a) => `${a.id}: ${a.why}`).join("; ");
}

function sameLine(a: string, b: string): boolean {
  return a.split(".").slice(0, 2).join(".") === b.split(".").slice(0, 2).join(".");
}

/** An explicit override is a promise from the user: if it is wrong, say so instead of guessing. */
async function fromOverride(value: string, run: Run): Promise<ResolvedNatsServer> {
  const fix = `point UNIBUS_NATS_SERVER at a nats-server >= ${MIN_NATS_VERSION} binary with no refused advisory, or unset it to let unibus find one`;
  const found = await checkBinary(value, `UNIBUS_NATS_SERVER=${value}`, fix, run);
  if (run.want.exact && found.version !== run.want.exact) {
    throw new NatsBinaryError(
      `UNIBUS_NATS_SERVER=${value} is nats-server ${found.version}, not the requested ${run.want.exact}; unset it to fetch ${run.want.exact}`,
    );
  }
  run.log.info({ path: found.path, version: found.version }, "using nats-server from UNIBUS_NATS_SERVER");
  return { ...found, source: "env" };
}

/**
 * One named binary, checked as `UNIBUS_NATS_SERVER` is: it exists, runs, and is a release
 * unibus runs on. For a caller that picks the binary itself (a node restarted on another
 * release during an upgrade). Throws NatsBinaryError saying what is wrong with it.
 */
export async function checkNatsServer(
  file: string,
  options: Pick<ResolveNatsOptions, "env" | "logger"> = {},
): Promise<{ path: string; version: string }> {
  const log = (options.logger ?? silentLogger).child({ component: "nats-binary" });
  const run: Run = { env: options.env ?? process.env, log, cacheRoot: "", want: {}, findings: [] };
  const fix = `give the path of a nats-server >= ${MIN_NATS_VERSION} binary with no refused advisory`;
  return checkBinary(file, `nats-server ${file}`, fix, run);
}

/** `label` names the binary in the error (where it came from), `fix` says what to do instead. */
async function checkBinary(
  value: string,
  label: string,
  fix: string,
  run: Run,
): Promise<{ path: string; version: string }> {
  const file = path.resolve(value);
  try {
    await stat(file);
  } catch {
    throw new NatsBinaryError(`${label}: no such file; ${fix}`);
  }
  if (!(await isExecutableFile(file))) {
    throw new NatsBinaryError(`${label} is not an executable file; ${fix}`);
  }
  const probe = await probeNatsServer(file, run.env, run.log);
  if (!probe.ok) throw new NatsBinaryError(`${label} ${probe.reason}; ${fix}`);
  const verdict = judgeNatsVersion(probe.version);
  if (!verdict.ok) {
    throw new NatsBinaryError(`${label} is nats-server ${probe.version}, which ${verdict.reason}; ${fix}`);
  }
  return { path: file, version: probe.version };
}

/** The highest cached version the caller wants that still runs. The cache wins over PATH. */
async function fromCache(run: Run): Promise<ResolvedNatsServer | undefined> {
  const names = (await listCachedVersions(run.cacheRoot)).filter((n) => parseNatsVersion(n) === n);
  const notes: string[] = [];
  const usable: string[] = [];
  for (const name of names) {
    const why = passOver(name, run.want);
    if (why) notes.push(`${name} ${why}`);
    else usable.push(name);
  }
  for (const version of usable.sort((a, b) => compareVersions(b, a))) {
    const got = await tryCached(run, version);
    if (typeof got !== "string") return got;
    notes.push(got);
  }
  const finding = notes.length ? notes.join("; ") : "empty";
  run.log.info({ path: natsCacheDir(run.cacheRoot), reason: finding }, "no usable nats-server in the cache");
  run.findings.push(`cache (${natsCacheDir(run.cacheRoot)}): ${finding}`);
  return undefined;
}

/** One cached version: the binary if it runs and reports a wanted version, else why not. */
async function tryCached(run: Run, version: string): Promise<ResolvedNatsServer | string> {
  const file = cachedBinaryPath(run.cacheRoot, version);
  if (!(await isExecutableFile(file))) return `${version} has no executable binary`;
  const probe = await probeNatsServer(file, run.env, run.log);
  if (!probe.ok) {
    run.log.warn({ path: file, reason: probe.reason }, "cached nats-server is broken; skipped");
    return `${version} ${probe.reason}`;
  }
  const why = passOver(probe.version, run.want);
  if (why) return `${version} reports ${probe.version}, which ${why}`;
  run.log.info({ path: file, version: probe.version }, "using cached nats-server");
  return { path: file, version: probe.version, source: "cache" };
}

async function fromPath(run: Run): Promise<ResolvedNatsServer | undefined> {
  const notes: string[] = [];
  for (const file of await findAllOnPath("nats-server", run.env)) {
    const probe = await probeNatsServer(file, run.env, run.log);
    if (!probe.ok) {
      run.log.info({ path: file, reason: probe.reason }, "nats-server on PATH does not run; skipped");
      notes.push(`${file} ${probe.reason}`);
      continue;
    }
    const why = passOver(probe.version, run.want);
    if (why) {
      run.log.info({ path: file, version: probe.version, reason: why }, "nats-server on PATH is not usable; skipped");
      notes.push(`nats-server ${probe.version} ${why} (${file})`);
      continue;
    }
    run.log.info({ path: file, version: probe.version }, "using nats-server from PATH");
    return { path: file, version: probe.version, source: "path" };
  }
  const finding = notes.length ? notes.join("; ") : "no nats-server";
  run.log.info({ reason: finding }, "no usable nats-server on PATH");
  run.findings.push(`PATH: ${finding}`);
  return undefined;
}

/** The release archive first (it fails fast where unreachable), then each Debian suite in turn. */
async function fromNetwork(run: Run, progress: FetchContext["progress"]): Promise<ResolvedNatsServer | undefined> {
  await sweepStaleStaging(run.cacheRoot, run.log);
  const ctx: FetchContext = {
    cacheRoot: run.cacheRoot,
    env: run.env,
    logger: run.log,
    progress,
    refuse: (v) => refuseDownload(v, run.want),
  };
  for (const s of networkSources(run, ctx)) {
    run.log.info({ source: s.source }, `fetching nats-server from the ${s.label}`);
    try {
      const got = await s.fetch();
      run.log.info({ path: got.path, version: got.version, source: s.source }, "nats-server installed into the cache");
      return { ...got, source: s.source };
    } catch (err) {
      // A tampered download is an attack or a broken mirror, not an outage: stop, loudly.
      if (err instanceof ChecksumMismatchError) throw err;
      const reason = err instanceof SourceUnavailable ? err.reason : `failed (${(err as Error).message})`;
      run.log.info(
        { source: s.source, reason, err: err instanceof SourceUnavailable ? undefined : err },
        `the ${s.label} did not deliver nats-server`,
      );
      run.findings.push(`${s.label}: ${reason}`);
    }
  }
  return undefined;
}

function networkSources(run: Run, ctx: FetchContext) {
  const version = run.want.exact ?? PINNED_NATS_VERSION;
  const baseUrl = run.env.UNIBUS_NATS_DOWNLOAD_URL || undefined;
  // An older release asked for by name is most likely in the stable suite.
  const suites = run.want.exact && isBelowDefault(run.want.exact) ? [...DEBIAN_SUITES].reverse() : [...DEBIAN_SUITES];
  return [
    {
      source: "release" as const,
      label: `release archive (${version})`,
      fetch: () => fetchRelease({ ...ctx, version, baseUrl }),
    },
    ...suites.map((suite) => ({
      source: "debian" as const,
      label: `Debian ${suite} package`,
      fetch: () => fetchDebian({ ...ctx, suite }),
    })),
  ];
}
