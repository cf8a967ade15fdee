import { createPrivateKey } from "node:crypto";
import path from "node:path";
import { InvalidArgumentError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import {
  type CertificateUsage,
  extKeyUsageOf,
  issueCertificate,
  parseCertificatePem,
  type SigningAuthority,
  sanHostsOf,
} from "./certificate.ts";
import {
  assertPrivateMode,
  CERT_MODE,
  ensureDir,
  KEY_MODE,
  readIfExists,
  serialized,
  writeFileAtomic,
} from "./files.ts";
import { type HostName, parseHosts } from "./hosts.ts";

/** Every server certificate names the loopback so local clients and tools can always verify it. */
export const DEFAULT_SERVER_HOSTS: readonly string[] = ["localhost", "127.0.0.1", "::1"];
/** Renew this long before expiry, so a running deployment never meets an expired certificate. */
const RENEW_BEFORE_MS = 30 * 86_400_000;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface ServerCertificateOptions {
  /** File stem: `<name>.pem` and `<name>-key.pem`; also the subject CN. */
  name: string;
  /** Extra DNS names / IP addresses; DEFAULT_SERVER_HOSTS are always included. */
  hosts?: readonly string[];
  /** Default "server"; "peer" for mutual TLS (NATS routes). */
  usage?: CertificateUsage;
  logger?: Logger;
}

export interface ServerCertificate {
  certFile: string;
  keyFile: string;
  certPem: string;
  /** PEM PKCS#8 — secret; never log it. */
  keyPem: string;
}

/**
 * Returns the certificate `<name>.pem` in `dir`, issuing (or re-issuing) it from `ca`
 * unless the one on disk is this CA's, matches its key, names every host, has the
 * requested usage and is more than 30 days from expiry. The files are a cache of what
 * the CA can always issue again, so a stale or damaged pair is replaced — except a
 * key readable by others, which is an error (it may have leaked; someone should know).
 */
export async function loadOrCreateServerCertificate(
  dir: string,
  ca: SigningAuthority,
  opts: ServerCertificateOptions,
): Promise<ServerCertificate> {
  if (typeof dir !== "string" || dir.trim() === "") {
    throw new InvalidArgumentError("dir", "the certificate directory must be a non-empty path");
  }
  const name = opts?.name;
  if (typeof name !== "string" || !NAME.test(name) || name === "ca" || name.endsWith("-key")) {
    throw new InvalidArgumentError(
      "name",
      `certificate name ${JSON.stringify(name)} must be 1-64 letters, digits, '.', '_' or '-', start with a letter or digit, not end in "-key" and not be "ca"`,
    );
  }
  const usage = opts.usage ?? "server";
  if (usage !== "server" && usage !== "peer") {
    throw new InvalidArgumentError("usage", `usage must be "server" or "peer", got ${JSON.stringify(usage)}`);
  }
  const hosts = parseHosts([...DEFAULT_SERVER_HOSTS, ...(opts.hosts ?? [])]);
  const log = opts.logger ?? silentLogger;
  const abs = path.resolve(dir);
  const certFile = path.join(abs, `${name}.pem`);
  const keyFile = path.join(abs, `${name}-key.pem`);

  return serialized(`cert:${certFile}`, async () => {
    await ensureDir(abs);
    const existing = await inspect(certFile, keyFile, ca, hosts, usage);
    if (existing.ok) return { certFile, keyFile, certPem: existing.certPem, keyPem: existing.keyPem };
    log.info({ certFile, reason: existing.reason }, "issuing TLS certificate");
    const issued = await issueCertificate(ca, {
      commonName: name,
      hosts: hosts.map((h) => h.value),
      usage,
    });
    // Key first: a crash in between leaves a mismatched pair, which the next call re-issues.
    await writeFileAtomic(keyFile, issued.keyPem, { mode: KEY_MODE });
    await writeFileAtomic(certFile, issued.certPem, { mode: CERT_MODE });
    return { certFile, keyFile, ...issued };
  });
}

type Inspection = { ok: true; certPem: string; keyPem: string } | { ok: false; reason: string };

async function inspect(
  certFile: string,
  keyFile: string,
  ca: SigningAuthority,
  hosts: readonly HostName[],
  usage: CertificateUsage,
): Promise<Inspection> {
  const [certPem, keyPem] = await Promise.all([readIfExists(certFile), readIfExists(keyFile)]);
  if (certPem === undefined && keyPem === undefined) return { ok: false, reason: "no certificate yet" };
  if (certPem === undefined) return { ok: false, reason: "certificate file missing" };
  if (keyPem === undefined) return { ok: false, reason: "key file missing" };
  await assertPrivateMode(keyFile);

  let leaf: ReturnType<typeof parseCertificatePem>;
  let caCert: ReturnType<typeof parseCertificatePem>;
  try {
    leaf = parseCertificatePem(certPem);
  } catch (err) {
    return { ok: false, reason: `certificate unreadable: ${(err as Error).message}` };
  }
  try {
    caCert = parseCertificatePem(ca.certPem);
  } catch (err) {
    throw new InvalidArgumentError("ca", `the CA certificate cannot be read: ${(err as Error).message}`);
  }
  try {
    if (!leaf.node.checkPrivateKey(createPrivateKey(keyPem))) {
      return { ok: false, reason: "key does not match certificate" };
    }
  } catch (err) {
    return { ok: false, reason: `key unreadable: ${(err as Error).message}` };
  }
  if (!leaf.node.checkIssued(caCert.node) || !leaf.node.verify(caCert.node.publicKey)) {
    return { ok: false, reason: "not issued by this CA" };
  }
  const have = new Set(sanHostsOf(leaf.cert).map((h) => `${h.kind}:${h.value}`));
  const missing = hosts.filter((h) => !have.has(`${h.kind}:${h.value}`)).map((h) => h.value);
  if (missing.length) return { ok: false, reason: `hosts not covered: ${missing.join(", ")}` };
  const want = usage === "peer" ? "clientAuth,serverAuth" : "serverAuth";
  const got = extKeyUsageOf(leaf.cert).sort().join(",");
  if (got !== want) return { ok: false, reason: `extended key usage is [${got}], wanted [${want}]` };
  const now = Date.now();
  const { notBefore, notAfter } = leaf.cert;
  if (notBefore.getTime() > now) return { ok: false, reason: `not valid until ${notBefore.toISOString()}` };
  if (notAfter.getTime() <= now) return { ok: false, reason: `expired on ${notAfter.toISOString()}` };
  if (notAfter.getTime() - now < RENEW_BEFORE_MS) {
    return { ok: false, reason: `expires on ${notAfter.toISOString()}, within 30 days` };
  }
  return { ok: true, certPem, keyPem };
}
