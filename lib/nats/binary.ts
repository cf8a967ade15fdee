import { stat } from "node:fs/promises";
import path from "node:path";
import { ChecksumMismatchError, NatsBinaryError } from "../errors.ts";
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
  isSupportedVersion,
  MIN_NATS_VERSION,
  PINNED_NATS_VERSION,
  parseNatsVersion,
} from "./binary-version.ts";
import { fetchDebian } from "./debian.ts";
import { fetchRelease } from "./release.ts";

export type { NatsInstallProgress } from "./binary-exec.ts";
export { compareVersions, MIN_NATS_VERSION, PINNED_NATS_VERSION, parseNatsVersion, resolveCacheRoot };

export type NatsBinarySource = "env" | "cache" | "path" | "release" | "debian";

export interface ResolvedNatsServer {
  /** Absolute path of a binary that answered `--version` with a supported version. */
  path: string;
  version: string;
  source: NatsBinarySource;
}

export interface ResolveNatsOptions {
  logger?: Logger;
  /** Allow downloading (release archive, then Debian package). Default true. */
  network?: boolean;
  /** Cache root; the binary lives in `<cacheDir>/nats-server/<version>/nats-server`. */
  cacheDir?: string;
  /** Environment to read (`UNIBUS_*`, `PATH`, `HOME`, `XDG_CACHE_HOME`); default `process.env`. */
  env?: NodeJS.ProcessEnv;
  onProgress?: (event: NatsInstallProgress) => void;
}

const FIX_HINTS = [
  `set UNIBUS_NATS_SERVER=/path/to/nats-server (>= ${MIN_NATS_VERSION})`,
  `put nats-server >= ${MIN_NATS_VERSION} on PATH`,
  "run `npx unibus install` on a machine that can reach the release archive or a Debian mirror",
];

/**
 * Finds a nats-server >= MIN_NATS_VERSION. First hit wins: `UNIBUS_NATS_SERVER` (wrong → error),
 * the cache (highest working version), `nats-server` on PATH, then — with `network` — the
 * official release archive (SHA256SUMS checked) and the Debian package. Downloads land in the
 * cache. Throws `NatsBinaryError` naming what each place held and every way to fix it, or
 * `ChecksumMismatchError` when a download was tampered with.
 */
export async function resolveNatsServer(options: ResolveNatsOptions = {}): Promise<ResolvedNatsServer> {
  const env = options.env ?? process.env;
  const log = (options.logger ?? silentLogger).child({ component: "nats-binary" });
  const network = options.network ?? true;
  const cacheRoot = resolveCacheRoot(options.cacheDir, env);
  const findings: string[] = [];

  const override = env.UNIBUS_NATS_SERVER?.trim();
  if (override) return fromOverride(override, env, log);
  log.debug("UNIBUS_NATS_SERVER is not set");
  findings.push("UNIBUS_NATS_SERVER: not set");

  const cached = await fromCache(cacheRoot, env, log);
  if ("path" in cached) return cached;
  findings.push(`cache (${natsCacheDir(cacheRoot)}): ${cached.finding}`);

  const onPath = await fromPath(env, log);
  if ("path" in onPath) return onPath;
  findings.push(`PATH: ${onPath.finding}`);

  if (!network) {
    log.info("network is off: not downloading nats-server");
    findings.push("release archive: not tried (network off)", "Debian package: not tried (network off)");
  } else {
    await sweepStaleStaging(cacheRoot, log);
    const ctx: FetchContext = { cacheRoot, env, logger: log, progress: safeProgress(options.onProgress, log) };
    const sources = [
      {
        source: "release" as const,
        label: "release archive",
        fetch: () =>
          fetchRelease({ ...ctx, version: PINNED_NATS_VERSION, baseUrl: env.UNIBUS_NATS_DOWNLOAD_URL || undefined }),
      },
      { source: "debian" as const, label: "Debian package", fetch: () => fetchDebian(ctx) },
    ];
    for (const s of sources) {
      log.info({ source: s.source }, `fetching nats-server from the ${s.label}`);
      try {
        const got = await s.fetch();
        log.info({ path: got.path, version: got.version, source: s.source }, "nats-server installed into the cache");
        return { ...got, source: s.source };
      } catch (err) {
        // A tampered download is an attack or a broken mirror, not an outage: stop, loudly.
        if (err instanceof ChecksumMismatchError) throw err;
        const reason = err instanceof SourceUnavailable ? err.reason : `failed (${(err as Error).message})`;
        log.info(
          { source: s.source, reason, err: err instanceof SourceUnavailable ? undefined : err },
          `the ${s.label} did not deliver nats-server`,
        );
        findings.push(`${s.label}: ${reason}`);
      }
    }
  }

  const message = [
    `no usable nats-server (>= ${MIN_NATS_VERSION}) was found. Looked at:`,
    ...findings.map((f) => `  - ${f}`),
    "Fix it with one of:",
    ...FIX_HINTS.map((h) => `  - ${h}`),
  ].join("\n");
  log.warn({ findings }, "no usable nats-server");
  throw new NatsBinaryError(message);
}

/** `resolveNatsServer` with downloads allowed: what `unibus install` and postinstall run. */
export function installNatsServer(options: Omit<ResolveNatsOptions, "network"> = {}): Promise<ResolvedNatsServer> {
  return resolveNatsServer({ ...options, network: true });
}

/** An explicit override is a promise from the user: if it is wrong, say so instead of guessing. */
async function fromOverride(value: string, env: NodeJS.ProcessEnv, log: Logger): Promise<ResolvedNatsServer> {
  const file = path.resolve(value);
  const fix = `point UNIBUS_NATS_SERVER at a nats-server >= ${MIN_NATS_VERSION} binary, or unset it to let unibus find one`;
  try {
    await stat(file);
  } catch {
    throw new NatsBinaryError(`UNIBUS_NATS_SERVER=${value}: no such file; ${fix}`);
  }
  if (!(await isExecutableFile(file))) {
    throw new NatsBinaryError(`UNIBUS_NATS_SERVER=${value} is not an executable file; ${fix}`);
  }
  const probe = await probeNatsServer(file, env, log);
  if (!probe.ok) throw new NatsBinaryError(`UNIBUS_NATS_SERVER=${value} ${probe.reason}; ${fix}`);
  if (!isSupportedVersion(probe.version)) {
    throw new NatsBinaryError(`UNIBUS_NATS_SERVER=${value} is nats-server ${probe.version}, which is too old; ${fix}`);
  }
  log.info({ path: file, version: probe.version }, "using nats-server from UNIBUS_NATS_SERVER");
  return { path: file, version: probe.version, source: "env" };
}

async function fromCache(
  cacheRoot: string,
  env: NodeJS.ProcessEnv,
  log: Logger,
): Promise<ResolvedNatsServer | { finding: string }> {
  const names = await listCachedVersions(cacheRoot);
  const usable = names
    .filter((n) => parseNatsVersion(n) === n && isSupportedVersion(n))
    .sort((a, b) => compareVersions(b, a));
  const notes: string[] = [];
  for (const version of usable) {
    const file = cachedBinaryPath(cacheRoot, version);
    if (!(await isExecutableFile(file))) {
      notes.push(`${version} has no executable binary`);
      continue;
    }
    const probe = await probeNatsServer(file, env, log);
    if (!probe.ok) {
      log.warn({ path: file, reason: probe.reason }, "cached nats-server is broken; skipped");
      notes.push(`${version} ${probe.reason}`);
      continue;
    }
    if (!isSupportedVersion(probe.version)) {
      notes.push(`${version} reports ${probe.version}, too old`);
      continue;
    }
    log.info({ path: file, version: probe.version }, "using cached nats-server");
    return { path: file, version: probe.version, source: "cache" };
  }
  const old = names.filter((n) => parseNatsVersion(n) === n && !isSupportedVersion(n));
  if (old.length) notes.push(`${old.join(", ")} too old`);
  const finding = notes.length ? notes.join("; ") : "empty";
  log.info({ path: natsCacheDir(cacheRoot), reason: finding }, "no usable nats-server in the cache");
  return { finding };
}

async function fromPath(env: NodeJS.ProcessEnv, log: Logger): Promise<ResolvedNatsServer | { finding: string }> {
  const candidates = await findAllOnPath("nats-server", env);
  const notes: string[] = [];
  for (const file of candidates) {
    const probe = await probeNatsServer(file, env, log);
    if (!probe.ok) {
      log.info({ path: file, reason: probe.reason }, "nats-server on PATH does not run; skipped");
      notes.push(`${file} ${probe.reason}`);
      continue;
    }
    if (!isSupportedVersion(probe.version)) {
      log.info(
        { path: file, version: probe.version, min: MIN_NATS_VERSION },
        "nats-server on PATH is too old; skipped",
      );
      notes.push(`nats-server ${probe.version} is too old (${file})`);
      continue;
    }
    log.info({ path: file, version: probe.version }, "using nats-server from PATH");
    return { path: file, version: probe.version, source: "path" };
  }
  const finding = notes.length ? notes.join("; ") : "no nats-server";
  log.info({ reason: finding }, "no usable nats-server on PATH");
  return { finding };
}
