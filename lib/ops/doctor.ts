/**
 * `unibus doctor`: the checks an operator would otherwise do by hand before (or while)
 * running a bus. Every finding names what is wrong and the command that fixes it.
 * Read-only: it never changes a file or a port.
 */
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { Agent, request } from "undici";
import { compareVersions, MIN_NATS_VERSION, resolveNatsServer } from "../nats/binary.ts";
import { describeFetchError } from "../nats/index.ts";
import { describeCertificate } from "../tls/index.ts";
import { MISSING_STREAMS_FIX, missingStreamsText, roomsWithoutStream } from "./room-streams.ts";
import { checkRoutes } from "./routes.ts";
import { type RunInfo, readRunInfo } from "./run-file.ts";

export type FindingLevel = "ok" | "warn" | "error";

export interface Finding {
  level: FindingLevel;
  /** Which check: "nats-server", "node", "permissions", "certificate", "port", "clock". */
  check: string;
  message: string;
  /** What to do about it; empty for "ok". */
  fix: string;
}

export interface DoctorOptions {
  dataDir: string;
  /** The ports `unibus up` would bind (from the configuration chain); -1 / 0 mean random. */
  ports?: { nats?: number; control?: number; monitoring?: number; websocket?: number };
  /** Bind address `unibus up` would use. Default 127.0.0.1. */
  host?: string;
  /** Environment for the nats-server lookup. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Node version to judge. Default this process'. */
  nodeVersion?: string;
  now?: () => number;
  timeoutMs?: number;
}

export const MIN_NODE_VERSION = "22.13.0";
const DAY_MS = 86_400_000;
/** The server certificate is re-issued at start when it has less than this left. */
export const CERT_WARN_DAYS = 30;
export const MAX_CLOCK_SKEW_MS = 5000;

/** Files whose contents let someone impersonate the bus or read what it guards. */
const SECRET_FILES = ["service-keys.json", "store.db", "store.db-wal", "store.db-shm"];

export async function runDoctor(opts: DoctorOptions): Promise<Finding[]> {
  const dataDir = path.resolve(opts.dataDir);
  const now = opts.now ?? Date.now;
  const run = await readRunInfo(dataDir);
  const groups = await Promise.all([
    checkNatsServer(opts.env ?? process.env),
    [checkNode(opts.nodeVersion ?? process.versions.node)],
    checkPermissions(dataDir),
    checkCertificates(dataDir, now()),
    checkPorts(opts, run),
    checkClock(run, now, opts.timeoutMs ?? 3000),
    checkHistory(dataDir, run, opts.timeoutMs ?? 3000),
    checkRoutes(dataDir, run, opts.timeoutMs ?? 3000),
  ]);
  return groups.flat();
}

/** Persisted rooms whose stream is missing (a running SQLite bus only). */
async function checkHistory(dataDir: string, run: RunInfo | undefined, timeoutMs: number): Promise<Finding[]> {
  const missing = await roomsWithoutStream(dataDir, run, timeoutMs).catch(() => undefined);
  if (missing === undefined) return [];
  if (missing.length === 0)
    return [{ level: "ok", check: "history", message: "every persisted room has its stream", fix: "" }];
  return [{ level: "error", check: "history", message: missingStreamsText(missing), fix: MISSING_STREAMS_FIX }];
}

/** 1 when any finding is an error. */
export function doctorExitCode(findings: Finding[]): number {
  return findings.some((f) => f.level === "error") ? 1 : 0;
}

export function formatFindings(findings: Finding[]): string {
  const mark = { ok: "ok   ", warn: "WARN ", error: "ERROR" } as const;
  const lines = findings.map((f) => `${mark[f.level]} ${f.check}: ${f.message}${f.fix ? `\n      fix: ${f.fix}` : ""}`);
  const errors = findings.filter((f) => f.level === "error").length;
  const warnings = findings.filter((f) => f.level === "warn").length;
  lines.push("", errors || warnings ? `${errors} error(s), ${warnings} warning(s)` : "all checks passed");
  return lines.join("\n");
}

const ok = (check: string, message: string): Finding => ({ level: "ok", check, message, fix: "" });

async function checkNatsServer(env: NodeJS.ProcessEnv): Promise<Finding[]> {
  const check = "nats-server";
  try {
    // Network off: the doctor reports, it does not download.
    const found = await resolveNatsServer({ env, network: false });
    if (compareVersions(found.version, MIN_NATS_VERSION) < 0) {
      return [
        {
          level: "error",
          check,
          message: `${found.path} is version ${found.version}, older than ${MIN_NATS_VERSION}`,
          fix: `run \`npx unibus install\`, or point UNIBUS_NATS_SERVER at nats-server >= ${MIN_NATS_VERSION}`,
        },
      ];
    }
    return [ok(check, `${found.version} at ${found.path} (from ${found.source}; needs >= ${MIN_NATS_VERSION})`)];
  } catch (err) {
    return [
      {
        level: "error",
        check,
        message: (err as Error).message.split("\n")[0] ?? "no usable nats-server",
        fix: `run \`npx unibus install\`, or set UNIBUS_NATS_SERVER to a nats-server >= ${MIN_NATS_VERSION}`,
      },
    ];
  }
}

export function checkNode(version: string): Finding {
  const check = "node";
  if (compareVersions(version.replace(/^v/, ""), MIN_NODE_VERSION) < 0) {
    return {
      level: "error",
      check,
      message: `Node ${version} is older than ${MIN_NODE_VERSION} (node:sqlite and type stripping are needed)`,
      fix: `install Node >= ${MIN_NODE_VERSION}, or run through \`npx\` so the project's pinned Node is used`,
    };
  }
  return ok(check, `Node ${version} (needs >= ${MIN_NODE_VERSION})`);
}

async function modeOf(file: string): Promise<number | undefined> {
  try {
    return (await fs.stat(file)).mode & 0o777;
  } catch {
    return undefined;
  }
}

const octal = (mode: number) => mode.toString(8).padStart(4, "0");

async function checkPermissions(dataDir: string): Promise<Finding[]> {
  const check = "permissions";
  const dirMode = await modeOf(dataDir);
  if (dirMode === undefined) {
    return [
      {
        level: "warn",
        check,
        message: `no data dir at ${dataDir} yet`,
        fix: `run \`npx unibus up --data-dir ${dataDir}\` once, or pass the right --data-dir`,
      },
    ];
  }
  const findings: Finding[] = [];
  if (dirMode & 0o077) {
    findings.push({
      level: "warn",
      check,
      message: `data dir ${dataDir} is mode ${octal(dirMode)}; other users can list it`,
      fix: `chmod 700 ${dataDir}`,
    });
  }
  const tlsDir = path.join(dataDir, "tls");
  const tlsKeys = (await fs.readdir(tlsDir).catch(() => [] as string[]))
    .filter((f) => f.endsWith("-key.pem"))
    .map((f) => path.join(tlsDir, f));
  const files = [...SECRET_FILES.map((f) => path.join(dataDir, f)), ...tlsKeys];
  let checked = 0;
  for (const file of files) {
    const mode = await modeOf(file);
    if (mode === undefined) continue;
    checked++;
    if (mode & 0o077) {
      findings.push({
        level: "error",
        check,
        message: `${file} is mode ${octal(mode)}: readable by other users, and it holds secrets`,
        fix: `chmod 600 ${file}`,
      });
    }
  }
  if (findings.length === 0) findings.push(ok(check, `${dataDir} is 0700 and its ${checked} key file(s) are 0600`));
  return findings;
}

async function checkCertificates(dataDir: string, now: number): Promise<Finding[]> {
  const check = "certificate";
  const tlsDir = path.join(dataDir, "tls");
  const certs = (await fs.readdir(tlsDir).catch(() => [] as string[]))
    .filter((f) => f.endsWith(".pem") && !f.endsWith("-key.pem"))
    .sort((a, b) => (a === "ca.pem" ? -1 : b === "ca.pem" ? 1 : a.localeCompare(b)));
  if (certs.length === 0) {
    return [
      {
        level: "warn",
        check,
        message: `no certificates in ${tlsDir} yet`,
        fix: "`unibus up` creates the CA and the server certificate on first start",
      },
    ];
  }
  const findings: Finding[] = [];
  for (const name of certs) {
    const file = path.join(tlsDir, name);
    // ca.pem, and during a rotation ca-next.pem / ca-previous.pem / ca-bundle.pem.
    const isCa = name.startsWith("ca");
    const renew = isCa
      ? `create a new CA: before it expires, with no downtime, \`unibus ca rotate\`, then switch and finish (docs/operations.md, Rotating the CA); once expired, stop the bus, move ${path.join(tlsDir, "ca.pem")} and ca-key.pem aside, start it again and give clients the new ca.pem`
      : `restart the bus: \`unibus up\` re-issues ${name} from the CA when it is within ${CERT_WARN_DAYS} days of expiry`;
    let desc: ReturnType<typeof describeCertificate>;
    try {
      desc = describeCertificate(await fs.readFile(file, "utf8"));
    } catch (err) {
      findings.push({
        level: "error",
        check,
        message: `${file} cannot be read as a certificate (${(err as Error).message})`,
        fix: isCa ? renew : `delete ${file} and its key; \`unibus up\` issues a new one`,
      });
      continue;
    }
    const left = desc.notAfter.getTime() - now;
    const until = desc.notAfter.toISOString();
    if (left <= 0) {
      findings.push({ level: "error", check, message: `${file} expired on ${until}`, fix: renew });
    } else if (desc.notBefore.getTime() > now) {
      findings.push({
        level: "error",
        check,
        message: `${file} is not valid before ${desc.notBefore.toISOString()}`,
        fix: "check this machine's clock; if it is right, re-issue the certificate",
      });
    } else if (left < CERT_WARN_DAYS * DAY_MS) {
      findings.push({
        level: "warn",
        check,
        message: `${file} expires in ${Math.floor(left / DAY_MS)} day(s), on ${until}`,
        fix: renew,
      });
    } else {
      findings.push(ok(check, `${file} valid until ${until} (${Math.floor(left / DAY_MS)} days)`));
    }
  }
  return findings;
}

function portsOfRun(run: RunInfo | undefined): Set<number> {
  const held = new Set<number>();
  for (const u of [
    ...(run?.natsUrls ?? []),
    ...(run?.wsUrls ?? []),
    ...(run?.controlUrls ?? []),
    ...(run?.monitorUrls ?? []),
  ]) {
    try {
      const port = Number(new URL(u).port);
      if (port) held.add(port);
    } catch {}
  }
  return held;
}

function canListen(port: number, host: string): Promise<true | string> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * A running bus: its ports are the run file's, whatever the configuration says now (it
 * may have been started with other flags). Otherwise the ports `unibus up` would bind.
 */
async function checkPorts(opts: DoctorOptions, run: RunInfo | undefined): Promise<Finding[]> {
  const check = "port";
  const held = portsOfRun(run);
  if (run && held.size > 0) {
    const where = (urls: string[]) => urls.map((u) => new URL(u).port).join(", ");
    return [
      ok(check, `NATS port(s) ${where(run.natsUrls)} held by this bus (pid ${run.pid}), from its run file`),
      ok(check, `control plane port(s) ${where(run.controlUrls)} held by this bus (pid ${run.pid})`),
      ok(check, `monitoring port(s) ${where(run.monitorUrls)} held by this bus (pid ${run.pid})`),
    ];
  }
  return checkWantedPorts(opts, held, run);
}

async function checkWantedPorts(opts: DoctorOptions, held: Set<number>, run: RunInfo | undefined): Promise<Finding[]> {
  const check = "port";
  const host = opts.host ?? "127.0.0.1";
  const wanted = [
    { label: "NATS", flag: "--nats-port", port: opts.ports?.nats ?? 4222, host },
    { label: "control plane", flag: "--control-port", port: opts.ports?.control ?? 8470, host },
    { label: "websocket", flag: "--ws-port", port: opts.ports?.websocket ?? 8443, host },
    // The monitoring endpoint is always loopback.
    { label: "monitoring", flag: "--monitor-port", port: opts.ports?.monitoring ?? 8222, host: "127.0.0.1" },
  ];
  return Promise.all(
    wanted.map(async (w): Promise<Finding> => {
      if (w.port <= 0) return ok(check, `${w.label}: a random port is picked at start`);
      if (held.has(w.port)) return ok(check, `${w.label} port ${w.port} is held by this bus (pid ${run?.pid})`);
      const free = await canListen(w.port, w.host);
      if (free === true) return ok(check, `${w.label} port ${w.port} on ${w.host} is free`);
      if (free === "EADDRINUSE") {
        return {
          level: run ? "warn" : "error",
          check,
          message: `${w.label} port ${w.port} on ${w.host} is in use by another process`,
          fix: `stop that process (\`ss -ltnp 'sport = :${w.port}'\` names it) or choose another port with ${w.flag}`,
        };
      }
      return {
        level: "error",
        check,
        message: `${w.label} port ${w.port} on ${w.host} cannot be bound (${free})`,
        fix:
          free === "EACCES"
            ? `ports below 1024 need privileges; choose another port with ${w.flag}`
            : `check the bind address (--host) and choose another port with ${w.flag}`,
      };
    }),
  );
}

async function checkClock(run: RunInfo | undefined, now: () => number, timeoutMs: number): Promise<Finding[]> {
  const check = "clock";
  const url = run?.controlUrls[0];
  if (!run || !url) return [ok(check, "skipped: no bus is running to compare clocks with")];
  const ca = await fs.readFile(run.caFile, "utf8").catch(() => undefined);
  const agent = new Agent({ connect: ca ? { ca } : {} });
  try {
    const sent = now();
    const res = await request(`${url.replace(/\/+$/, "")}/healthz`, {
      dispatcher: agent,
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body.dump();
    const received = now();
    const date = res.headers.date;
    const serverMs = typeof date === "string" ? Date.parse(date) : Number.NaN;
    if (Number.isNaN(serverMs)) {
      return [{ level: "warn", check, message: `${url} sent no Date header`, fix: "upgrade the bus" }];
    }
    // The Date header has one-second resolution: compare against the request's midpoint
    // and forgive the truncation.
    const skew = serverMs - (sent + received) / 2;
    const abs = Math.max(0, Math.abs(skew) - 1000);
    if (abs > MAX_CLOCK_SKEW_MS) {
      return [
        {
          level: "warn",
          check,
          message: `this machine's clock is ${(Math.abs(skew) / 1000).toFixed(1)} s ${skew > 0 ? "behind" : "ahead of"} the bus at ${url}; signed control-plane requests are refused beyond the allowed skew`,
          fix: "enable time synchronisation (e.g. `timedatectl set-ntp true`) on this machine and the bus host",
        },
      ];
    }
    return [ok(check, `within ${Math.ceil((abs + 1000) / 1000)} s of the bus at ${url}`)];
  } catch (err) {
    return [
      {
        level: "warn",
        check,
        message: `could not reach the control plane at ${url} (${describeFetchError(err)})`,
        fix: "run `unibus status` to see what is wrong with the bus",
      },
    ];
  } finally {
    await agent.close().catch(() => {});
  }
}
