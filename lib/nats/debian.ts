import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { createStaging, discardStaging, promoteIntoCache } from "./binary-cache.ts";
import {
  type FetchContext,
  findOnPath,
  isExecutableFile,
  lastLine,
  probeNatsServer,
  run,
  SourceUnavailable,
} from "./binary-exec.ts";

/**
 * The suites that carry nats-server >= 2.10, in the order a default install tries them:
 * unstable has the maintained line (2.15.1 at the end of 2026), trixie the floor (2.10.27).
 * Both binaries are linked against glibc only and run on bookworm, whose own 2.9.10 lacks
 * the auth callout.
 */
export const DEBIAN_SUITES = ["unstable", "trixie"] as const;

/** One archive the machine already trusts: where it is and which keyring signs it. */
export interface AptArchive {
  uri: string;
  /** A keyring path, a list of them, or an inline armored key, exactly as configured. */
  signedBy?: string;
  /** The file it was read from, for messages. */
  file: string;
}

interface AptEntry {
  types: string[];
  uris: string[];
  suites: string[];
  signedBy?: string;
  enabled: boolean;
  file: string;
}

/** Some mirrors fail (wrong distribution, offline); a few are worth trying, not all. */
const MAX_ARCHIVES_TRIED = 3;

/**
 * The main archives configured on this machine (`sources.list.d/*.sources`, `*.list`,
 * `sources.list`): enabled `deb` entries with a plain codename suite, so security and
 * update pockets, which carry no full release, are left out.
 */
export async function readAptArchives(etcApt = "/etc/apt"): Promise<AptArchive[]> {
  const entries: AptEntry[] = [];
  const partsDir = path.join(etcApt, "sources.list.d");
  let parts: string[] = [];
  try {
    parts = (await readdir(partsDir)).sort();
  } catch {
    // No sources.list.d: only the one-line file, if any.
  }
  for (const name of parts) {
    const file = path.join(partsDir, name);
    if (name.endsWith(".sources")) entries.push(...parseDeb822(await readText(file), file));
    else if (name.endsWith(".list")) entries.push(...parseOneLine(await readText(file), file));
  }
  const listFile = path.join(etcApt, "sources.list");
  entries.push(...parseOneLine(await readText(listFile), listFile));

  const seen = new Set<string>();
  const archives: AptArchive[] = [];
  for (const e of entries) {
    if (!e.enabled || !e.types.includes("deb")) continue;
    if (!e.suites.some((s) => /^[a-z]+$/.test(s))) continue;
    for (const uri of e.uris) {
      if (!/^(https?|mirror\+\w+|tor\+https?):/.test(uri)) continue;
      const key = `${uri}\0${e.signedBy ?? ""}`;
      if (seen.has(key)) continue;
      seen.add(key);
      archives.push(e.signedBy === undefined ? { uri, file: e.file } : { uri, signedBy: e.signedBy, file: e.file });
    }
  }
  return archives;
}

/** A deb822 `.sources` stanza for one archive and suite, with the archive's own key. */
export function renderSourcesStanza(archive: AptArchive, suite: string): string {
  const lines = ["Types: deb", `URIs: ${archive.uri}`, `Suites: ${suite}`, "Components: main"];
  if (archive.signedBy !== undefined) {
    const keyLines = archive.signedBy.split("\n");
    if (keyLines.length === 1) {
      lines.push(`Signed-By: ${archive.signedBy}`);
    } else {
      // An inline armored key: apt wants it as continuation lines, blank ones written " .".
      lines.push("Signed-By:");
      for (const l of keyLines) lines.push(l.trim() === "" ? " ." : ` ${l}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/**
 * `apt-get download nats-server` from one Debian suite (default: the first of
 * `DEBIAN_SUITES`), under a throwaway apt configuration pointing at the mirror this machine
 * already uses. The system's apt state is never read for writing nor locked; apt checks the
 * signature and the package hash. Every failure is `SourceUnavailable`.
 */
export async function fetchDebian(
  ctx: FetchContext & { suite?: string; etcApt?: string },
): Promise<{ path: string; version: string }> {
  if (process.platform !== "linux") throw new SourceUnavailable("not Linux");
  const aptGet = await findOnPath("apt-get", ctx.env);
  if (!aptGet) throw new SourceUnavailable("`apt-get` is not on PATH");
  const dpkgDeb = await findOnPath("dpkg-deb", ctx.env);
  if (!dpkgDeb) throw new SourceUnavailable("`dpkg-deb` is not on PATH");
  const suite = ctx.suite ?? DEBIAN_SUITES[0];
  const etcApt = ctx.etcApt ?? "/etc/apt";
  const archives = (await readAptArchives(etcApt)).slice(0, MAX_ARCHIVES_TRIED);
  if (archives.length === 0) throw new SourceUnavailable(`no Debian archive is configured in ${etcApt}`);

  const staging = await createStaging(ctx.cacheRoot);
  try {
    const failures: string[] = [];
    for (const [i, archive] of archives.entries()) {
      try {
        return await fromArchive(ctx, { aptGet, dpkgDeb, suite, archive, dir: path.join(staging, `apt-${i}`) });
      } catch (err) {
        if (!(err instanceof SourceUnavailable)) throw err;
        ctx.logger.info({ uri: archive.uri, suite, reason: err.reason }, "Debian archive did not deliver nats-server");
        failures.push(`${archive.uri} ${suite}: ${err.reason}`);
      }
    }
    throw new SourceUnavailable(failures.join("; "));
  } finally {
    await discardStaging(staging);
  }
}

async function fromArchive(
  ctx: FetchContext,
  job: { aptGet: string; dpkgDeb: string; suite: string; archive: AptArchive; dir: string },
): Promise<{ path: string; version: string }> {
  const { dir, suite, archive } = job;
  const sourcesDir = path.join(dir, "sources");
  const downloads = path.join(dir, "download");
  for (const d of [sourcesDir, path.join(dir, "lists", "partial"), path.join(dir, "cache", "archives", "partial")]) {
    await mkdir(d, { recursive: true });
  }
  await mkdir(downloads);
  await writeFile(path.join(sourcesDir, "unibus.sources"), renderSourcesStanza(archive, suite));

  // Every path apt would write to points into our temp dir; the system's lists, cache and locks stay untouched.
  const aptOptions = [
    "-q",
    "-o",
    "Dir::Etc::SourceList=/dev/null",
    "-o",
    `Dir::Etc::SourceParts=${sourcesDir}`,
    "-o",
    `Dir::State::Lists=${path.join(dir, "lists")}`,
    "-o",
    `Dir::Cache=${path.join(dir, "cache")}`,
    "-o",
    "Debug::NoLocking=1",
  ];
  const env = { ...ctx.env, LC_ALL: "C" };

  ctx.progress({ phase: "apt-get update", message: `apt-get update (${archive.uri} ${suite} main)` });
  const update = await run(job.aptGet, [...aptOptions, "update"], { env, cwd: dir, timeoutMs: 300_000 });
  ctx.logger.debug({ code: update.code, stderr: update.stderr.trim() }, "apt-get update finished");
  if (update.code !== 0) throw new SourceUnavailable(`apt-get update failed (${aptReason(update)})`);

  ctx.progress({ phase: "apt-get download", message: `apt-get download nats-server (${suite})` });
  const dl = await run(job.aptGet, [...aptOptions, "download", "nats-server"], {
    env,
    cwd: downloads,
    timeoutMs: 300_000,
  });
  ctx.logger.debug({ code: dl.code, stderr: dl.stderr.trim() }, "apt-get download finished");
  if (dl.code !== 0) throw new SourceUnavailable(`apt-get download nats-server failed (${aptReason(dl)})`);
  const deb = (await readdir(downloads)).find((n) => n.startsWith("nats-server_") && n.endsWith(".deb"));
  if (!deb) throw new SourceUnavailable("apt-get download reported success but left no nats-server .deb");

  ctx.progress({ phase: "extract", message: `unpacking ${deb}` });
  const root = path.join(dir, "root");
  const x = await run(job.dpkgDeb, ["-x", path.join(downloads, deb), root], { env, timeoutMs: 120_000 });
  if (x.code !== 0) throw new SourceUnavailable(`dpkg-deb -x ${deb} failed (${lastLine(x.stderr)})`);
  const binary = path.join(root, "usr", "sbin", "nats-server");
  if (!(await isExecutableFile(binary))) throw new SourceUnavailable(`${deb} holds no usr/sbin/nats-server`);

  ctx.progress({ phase: "verify", message: "running the unpacked nats-server --version" });
  const probe = await probeNatsServer(binary, ctx.env, ctx.logger);
  if (!probe.ok) throw new SourceUnavailable(`the packaged nats-server ${probe.reason}`);
  const refused = ctx.refuse(probe.version);
  if (refused) throw new SourceUnavailable(`${suite} ships nats-server ${probe.version}, which ${refused}`);
  ctx.progress({ phase: "install", message: `installing nats-server ${probe.version} into the cache` });
  const installed = await promoteIntoCache(ctx.cacheRoot, binary, probe.version);
  return { path: installed, version: probe.version };
}

/** apt's own error line (`E: …`) says most; fall back to the last line of output. */
function aptReason(r: { code: number | null; signal: string | null; stdout: string; stderr: string }): string {
  const errors = r.stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("E:"));
  const text = errors[0] ?? (lastLine(r.stderr) || lastLine(r.stdout));
  const status = r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
  return text ? `${status}: ${text}` : status;
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch {
    return "";
  }
}

/** deb822 stanzas: `Field: value`, continuation lines indented, ` .` for a blank line, `#` comments. */
function parseDeb822(text: string, file: string): AptEntry[] {
  const entries: AptEntry[] = [];
  let fields = new Map<string, string>();
  let current: string | undefined;
  const flush = () => {
    if (fields.size > 0) {
      const words = (k: string) => (fields.get(k) ?? "").split(/\s+/).filter(Boolean);
      const signedBy = fields.get("signed-by");
      entries.push({
        types: words("types"),
        uris: words("uris"),
        suites: words("suites"),
        enabled: (fields.get("enabled") ?? "yes").trim().toLowerCase() !== "no",
        file,
        ...(signedBy === undefined ? {} : { signedBy: signedBy.trim() }),
      });
    }
    fields = new Map();
    current = undefined;
  };
  for (const raw of text.split(/\r?\n/)) {
    if (raw.startsWith("#")) continue;
    if (raw.trim() === "") {
      flush();
      continue;
    }
    if (/^[ \t]/.test(raw)) {
      if (current === undefined) continue;
      const cont = raw.trim() === "." ? "" : raw.trim();
      fields.set(current, `${fields.get(current) ?? ""}\n${cont}`);
      continue;
    }
    const colon = raw.indexOf(":");
    if (colon <= 0) continue;
    current = raw.slice(0, colon).trim().toLowerCase();
    fields.set(current, raw.slice(colon + 1).trim());
  }
  flush();
  return entries;
}

/** `deb [signed-by=/k.gpg arch=amd64] http://mirror/debian bookworm main` lines. */
function parseOneLine(text: string, file: string): AptEntry[] {
  const entries: AptEntry[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/#.*$/, "").trim();
    const m = /^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (!m?.[1] || !m[3] || !m[4]) continue;
    let signedBy: string | undefined;
    for (const opt of (m[2] ?? "").split(/\s+/)) {
      const eq = opt.indexOf("=");
      if (eq > 0 && opt.slice(0, eq).toLowerCase() === "signed-by") signedBy = opt.slice(eq + 1);
    }
    entries.push({
      types: [m[1]],
      uris: [m[3]],
      suites: [m[4]],
      enabled: true,
      file,
      ...(signedBy === undefined ? {} : { signedBy }),
    });
  }
  return entries;
}
