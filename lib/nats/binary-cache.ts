import { chmod, mkdir, mkdtemp, readdir, rename, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Logger } from "../log/index.ts";

/** Staging dirs start with this so a sweep can tell them from installed versions. */
const STAGING_PREFIX = ".tmp-";
/** A staging dir this old belongs to an install that died; no real install takes this long. */
const STALE_STAGING_MS = 60 * 60 * 1000;

/** `cacheDir` option, else `UNIBUS_CACHE_DIR`, else `$XDG_CACHE_HOME/unibus`, else `~/.cache/unibus`. */
export function resolveCacheRoot(cacheDir: string | undefined, env: NodeJS.ProcessEnv): string {
  if (cacheDir) return path.resolve(cacheDir);
  if (env.UNIBUS_CACHE_DIR) return path.resolve(env.UNIBUS_CACHE_DIR);
  if (env.XDG_CACHE_HOME) return path.resolve(env.XDG_CACHE_HOME, "unibus");
  return path.join(env.HOME || os.homedir(), ".cache", "unibus");
}

export function natsCacheDir(cacheRoot: string): string {
  return path.join(cacheRoot, "nats-server");
}

export function cachedBinaryPath(cacheRoot: string, version: string): string {
  return path.join(natsCacheDir(cacheRoot), version, "nats-server");
}

/** Names of the version folders in the cache (unsorted, unchecked). */
export async function listCachedVersions(cacheRoot: string): Promise<string[]> {
  try {
    const entries = await readdir(natsCacheDir(cacheRoot), { withFileTypes: true });
    return entries.filter((e) => e.isDirectory() && !e.name.startsWith(".")).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

/**
 * A fresh private dir inside the cache. Downloads and extraction happen here so the final
 * rename stays on one filesystem and is atomic; the caller removes it with `discardStaging`.
 */
export async function createStaging(cacheRoot: string): Promise<string> {
  const dir = natsCacheDir(cacheRoot);
  await mkdir(dir, { recursive: true });
  return mkdtemp(path.join(dir, STAGING_PREFIX));
}

export async function discardStaging(staging: string): Promise<void> {
  await rm(staging, { recursive: true, force: true });
}

/**
 * Moves a verified binary into `<cacheRoot>/nats-server/<version>/nats-server`. rename()
 * replaces atomically, so concurrent installers each land a complete file and a reader
 * never sees a partial one.
 */
export async function promoteIntoCache(cacheRoot: string, staged: string, version: string): Promise<string> {
  const target = cachedBinaryPath(cacheRoot, version);
  await chmod(staged, 0o755);
  await mkdir(path.dirname(target), { recursive: true });
  await rename(staged, target);
  return target;
}

/** Removes staging dirs left behind by installs that were killed. */
export async function sweepStaleStaging(cacheRoot: string, logger: Logger, now = Date.now()): Promise<void> {
  const dir = natsCacheDir(cacheRoot);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(STAGING_PREFIX)) continue;
    const full = path.join(dir, name);
    try {
      const st = await stat(full);
      if (now - st.mtimeMs > STALE_STAGING_MS) {
        await rm(full, { recursive: true, force: true });
        logger.debug({ dir: full }, "removed a stale nats-server staging dir");
      }
    } catch {
      // Another process removed it first.
    }
  }
}
