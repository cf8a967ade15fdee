import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { ChecksumMismatchError, NatsBinaryError } from "../errors.ts";
import { createStaging, discardStaging, promoteIntoCache } from "./binary-cache.ts";
import { type FetchContext, findOnPath, lastLine, probeNatsServer, run, SourceUnavailable } from "./binary-exec.ts";

/** Where nats-io publishes release assets; `UNIBUS_NATS_DOWNLOAD_URL` replaces it (mirrors, tests). */
export const DEFAULT_RELEASE_BASE_URL = "https://github.com/nats-io/nats-server/releases/download";

/** A release archive is ~6 MB; anything far larger is not one, and must not fill the disk. */
const MAX_ARCHIVE_BYTES = 256 * 1024 * 1024;
const MAX_SUMS_BYTES = 1024 * 1024;
/** A stalled connection is given up after this long without a byte. */
const IDLE_TIMEOUT_MS = 30_000;
const PROGRESS_STEP_BYTES = 256 * 1024;

/** The release's os/arch names for this machine, or `undefined` where nats-io ships no archive we use. */
export function releaseTarget(
  platform: NodeJS.Platform = process.platform,
  arch: string = process.arch,
): { os: string; arch: string } | undefined {
  const os = platform === "linux" || platform === "darwin" ? platform : undefined;
  const a = arch === "x64" ? "amd64" : arch === "arm64" ? "arm64" : undefined;
  return os && a ? { os, arch: a } : undefined;
}

/** `nats-server-v<ver>-<os>-<arch>`: the archive's base name and the folder inside it. */
export function releaseAssetBase(version: string, target: { os: string; arch: string }): string {
  return `nats-server-v${version}-${target.os}-${target.arch}`;
}

export function releaseUrls(
  version: string,
  target: { os: string; arch: string },
  baseUrl: string = DEFAULT_RELEASE_BASE_URL,
): { asset: string; archive: string; sums: string } {
  const base = `${baseUrl.replace(/\/+$/, "")}/v${version}`;
  const asset = `${releaseAssetBase(version, target)}.tar.gz`;
  return { asset, archive: `${base}/${asset}`, sums: `${base}/SHA256SUMS` };
}

/** `SHA256SUMS` as published (`<hex>  <file>` per line, `*` marks binary mode) → file → lowercase hex. */
export function parseSha256Sums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^([0-9a-fA-F]{64})\s+\*?(\S+)\s*$/.exec(line.trim());
    if (m?.[1] && m[2]) sums.set(m[2], m[1].toLowerCase());
  }
  return sums;
}

/**
 * Downloads the official archive for this platform, checks it against the release's
 * SHA256SUMS, extracts `nats-server` with the system `tar` and moves it into the cache.
 * Unreachable or incomplete sources throw `SourceUnavailable`; a checksum mismatch throws
 * `ChecksumMismatchError` and leaves nothing behind.
 */
export async function fetchRelease(
  ctx: FetchContext & { version: string; baseUrl?: string },
): Promise<{ path: string; version: string }> {
  const target = releaseTarget();
  if (!target) throw new SourceUnavailable(`no official archive for ${process.platform}/${process.arch}`);
  const tar = await findOnPath("tar", ctx.env);
  if (!tar) throw new SourceUnavailable("`tar` is not on PATH to unpack the archive");
  const urls = releaseUrls(ctx.version, target, ctx.baseUrl);

  const staging = await createStaging(ctx.cacheRoot);
  try {
    ctx.progress({ phase: "download", message: `downloading ${urls.sums}` });
    const sumsFile = path.join(staging, "SHA256SUMS");
    await download(urls.sums, sumsFile, MAX_SUMS_BYTES, () => {});
    const expected = parseSha256Sums(await readFile(sumsFile, "utf8")).get(urls.asset);
    if (!expected) throw new SourceUnavailable(`${urls.sums} lists no checksum for ${urls.asset}`);

    ctx.progress({ phase: "download", message: `downloading ${urls.archive}` });
    const archiveFile = path.join(staging, urls.asset);
    let lastReported = 0;
    const { sha256, bytes } = await download(urls.archive, archiveFile, MAX_ARCHIVE_BYTES, (received, total) => {
      if (received - lastReported < PROGRESS_STEP_BYTES && received !== total) return;
      lastReported = received;
      const of = total ? ` of ${total}` : "";
      ctx.progress({ phase: "download", message: `${urls.asset}: ${received}${of} bytes`, received, total });
    });

    ctx.progress({ phase: "verify", message: `checking sha256 of ${urls.asset} against SHA256SUMS` });
    if (sha256 !== expected) {
      ctx.logger.error({ url: urls.archive, expected, actual: sha256, bytes }, "nats-server archive checksum mismatch");
      throw new ChecksumMismatchError(urls.asset, expected, sha256);
    }

    ctx.progress({ phase: "extract", message: `unpacking ${urls.asset}` });
    const member = `${releaseAssetBase(ctx.version, target)}/nats-server`;
    const outDir = path.join(staging, "x");
    await mkdir(outDir);
    const untar = await run(tar, ["-xzf", archiveFile, "-C", outDir, "--no-same-owner", member], {
      env: ctx.env,
      timeoutMs: 120_000,
    });
    if (untar.code !== 0) {
      throw new SourceUnavailable(`could not unpack ${member} from ${urls.asset} (${lastLine(untar.stderr)})`);
    }

    const extracted = path.join(outDir, member);
    ctx.progress({ phase: "verify", message: "running the unpacked nats-server --version" });
    const probe = await probeNatsServer(extracted, ctx.env, ctx.logger);
    if (!probe.ok) throw new SourceUnavailable(`the archive's nats-server ${probe.reason}`);
    const refused = ctx.refuse(probe.version);
    if (refused) throw new SourceUnavailable(`the archive holds nats-server ${probe.version}, which ${refused}`);
    if (probe.version !== ctx.version) {
      ctx.logger.warn({ expected: ctx.version, actual: probe.version }, "release archive reports another version");
    }
    ctx.progress({ phase: "install", message: `installing nats-server ${probe.version} into the cache` });
    const installed = await promoteIntoCache(ctx.cacheRoot, extracted, probe.version);
    return { path: installed, version: probe.version };
  } finally {
    await discardStaging(staging);
  }
}

/** Streams `url` into a new file, hashing as it goes. Network trouble becomes `SourceUnavailable`. */
async function download(
  url: string,
  dest: string,
  maxBytes: number,
  onBytes: (received: number, total: number | undefined) => void,
): Promise<{ sha256: string; bytes: number }> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(
      () => ac.abort(new NatsBinaryError(`the download stalled: no data for ${IDLE_TIMEOUT_MS / 1000} s`)),
      IDLE_TIMEOUT_MS,
    );
  };
  arm();
  try {
    let res: Response;
    try {
      res = await fetch(url, { signal: ac.signal, redirect: "follow" });
    } catch (err) {
      throw new SourceUnavailable(`${url} is unreachable (${describeNetworkError(err)})`, { cause: err });
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => {});
      throw new SourceUnavailable(`${url} answered HTTP ${res.status}`);
    }
    const total = Number(res.headers.get("content-length")) || undefined;
    if (total !== undefined && total > maxBytes) {
      await res.body.cancel().catch(() => {});
      throw new SourceUnavailable(`${url} is ${total} bytes, more than the ${maxBytes} expected`);
    }
    const hash = createHash("sha256");
    let received = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        received += chunk.length;
        if (received > maxBytes) {
          cb(new SourceUnavailable(`${url} sent more than the ${maxBytes} bytes expected`));
          return;
        }
        arm();
        hash.update(chunk);
        onBytes(received, total);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(
        Readable.fromWeb(res.body as NodeReadableStream<Uint8Array>),
        meter,
        createWriteStream(dest, { flags: "wx", mode: 0o600 }),
      );
    } catch (err) {
      if (err instanceof SourceUnavailable) throw err;
      throw new SourceUnavailable(`download of ${url} broke off (${describeNetworkError(err)})`, { cause: err });
    }
    return { sha256: hash.digest("hex"), bytes: received };
  } finally {
    clearTimeout(timer);
  }
}

function describeNetworkError(err: unknown): string {
  const e = err as { cause?: { code?: string; message?: string }; code?: string; message?: string };
  return e.cause?.code ?? e.cause?.message ?? e.code ?? e.message ?? String(err);
}
