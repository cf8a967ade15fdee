import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { InvalidArgumentError, KeyFileError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import {
  checkCommonName,
  checkValidityDays,
  fingerprintOf,
  generateKeyPair,
  isCaCertificate,
  loadSigningKey,
  parseCertificatePem,
  privateKeyPem,
  randomSerial,
  validityWindow,
} from "./certificate.ts";
import {
  assertPrivateMode,
  CERT_MODE,
  ensureDir,
  exists,
  KEY_MODE,
  readIfExists,
  serialized,
  writeFileAtomic,
} from "./files.ts";
import { x509 } from "./x509.ts";

export interface CertificateAuthority {
  certPem: string;
  /** PEM PKCS#8 — secret; never log it. */
  keyPem: string;
  certFile: string;
  keyFile: string;
  /** SHA-256 of the DER certificate, lower-case hex. */
  fingerprint: string;
}

export interface CaOptions {
  /** Subject CN of a newly created CA; default "unibus CA <random>". Ignored when the CA exists. */
  commonName?: string;
  /** Lifetime of a newly created CA; default 3650. Ignored when the CA exists. */
  validityDays?: number;
  logger?: Logger;
}

export const CA_CERT_FILE = "ca.pem";
export const CA_KEY_FILE = "ca-key.pem";
export const DEFAULT_CA_VALIDITY_DAYS = 3650;
const WARN_BEFORE_MS = 30 * 86_400_000;
/** How long a key without its certificate may be another process still creating the CA. */
const HALF_WRITTEN_RETRIES = 10;
const HALF_WRITTEN_WAIT_MS = 100;

const RESET_HINT =
  "move ca.pem and ca-key.pem out of the directory to create a new CA (every client must then trust the new ca.pem)";

/**
 * Loads the CA in `dir` (ca.pem + ca-key.pem), creating it on first use. An
 * existing CA is never replaced: a missing, corrupt, mismatched or exposed key is a
 * KeyFileError that says how to recover, and the files are left as they are.
 */
export async function loadOrCreateCa(dir: string, opts: CaOptions = {}): Promise<CertificateAuthority> {
  if (typeof dir !== "string" || dir.trim() === "") {
    throw new InvalidArgumentError("dir", "the CA directory must be a non-empty path");
  }
  const commonName = checkCommonName(opts.commonName ?? `unibus CA ${randomBytes(4).toString("hex")}`);
  const validityDays = checkValidityDays(opts.validityDays ?? DEFAULT_CA_VALIDITY_DAYS);
  const log = opts.logger ?? silentLogger;
  const abs = path.resolve(dir);
  return serialized(`ca:${abs}`, () => loadOrCreate(abs, commonName, validityDays, log));
}

async function loadOrCreate(dir: string, commonName: string, validityDays: number, log: Logger) {
  await ensureDir(dir);
  const certFile = path.join(dir, CA_CERT_FILE);
  const keyFile = path.join(dir, CA_KEY_FILE);
  for (let attempt = 0; ; attempt++) {
    const [hasCert, hasKey] = await Promise.all([exists(certFile), exists(keyFile)]);
    if (hasCert && hasKey) return loadCa(certFile, keyFile, log);
    if (hasCert) {
      throw new KeyFileError(
        keyFile,
        `the CA certificate ${certFile} exists but its key ${keyFile} is missing; restore ca-key.pem from a backup, or ${RESET_HINT}`,
      );
    }
    if (hasKey) {
      // createCa publishes the key first; another process may be about to publish the certificate.
      if (attempt < HALF_WRITTEN_RETRIES) {
        await sleep(HALF_WRITTEN_WAIT_MS);
        continue;
      }
      throw new KeyFileError(
        certFile,
        `the CA key ${keyFile} exists but its certificate ${certFile} is missing; restore ca.pem from a backup, or ${RESET_HINT}`,
      );
    }
    const created = await createCa(certFile, keyFile, commonName, validityDays);
    if (created) {
      log.info({ certFile, fingerprint: created.fingerprint }, "created a new TLS certificate authority");
      return created;
    }
    // Another process created the CA first; loop to load theirs.
  }
}

/** An existing CA pair with every check of a start (key mode, match, expiry); never creates one. */
export function loadCaPair(certFile: string, keyFile: string, logger: Logger = silentLogger) {
  return loadCa(certFile, keyFile, logger);
}

async function loadCa(certFile: string, keyFile: string, log: Logger): Promise<CertificateAuthority> {
  await assertPrivateMode(keyFile);
  const [certPem = "", keyPem = ""] = await Promise.all([readIfExists(certFile), readIfExists(keyFile)]);
  let key: Awaited<ReturnType<typeof loadSigningKey>>;
  try {
    key = await loadSigningKey(keyPem);
  } catch (err) {
    throw new KeyFileError(
      keyFile,
      `the CA key ${keyFile} is not a usable unencrypted PEM private key (${(err as Error).message}); restore it from a backup, or ${RESET_HINT}`,
      { cause: err },
    );
  }
  let parsed: ReturnType<typeof parseCertificatePem>;
  try {
    parsed = parseCertificatePem(certPem);
  } catch (err) {
    throw new KeyFileError(
      certFile,
      `the CA certificate ${certFile} is not a readable PEM certificate (${(err as Error).message}); restore it from a backup, or ${RESET_HINT}`,
      { cause: err },
    );
  }
  if (!isCaCertificate(parsed.cert)) {
    throw new KeyFileError(
      certFile,
      `${certFile} is not a CA certificate (basicConstraints CA:TRUE is missing); put the CA certificate there, or ${RESET_HINT}`,
    );
  }
  if (!parsed.node.checkPrivateKey(key.keyObject)) {
    throw new KeyFileError(
      keyFile,
      `the CA key ${keyFile} does not belong to the CA certificate ${certFile}; restore the matching pair from a backup, or ${RESET_HINT}`,
    );
  }
  const notAfter = parsed.cert.notAfter;
  if (notAfter.getTime() <= Date.now()) {
    throw new KeyFileError(
      certFile,
      `the CA certificate ${certFile} expired on ${notAfter.toISOString()}; ${RESET_HINT}`,
    );
  }
  if (notAfter.getTime() - Date.now() < WARN_BEFORE_MS) {
    log.warn({ certFile, notAfter: notAfter.toISOString() }, `the TLS CA expires soon; ${RESET_HINT}`);
  }
  return { certPem, keyPem, certFile, keyFile, fingerprint: fingerprintOf(parsed.der) };
}

/**
 * Creates and publishes a new CA in the given files; undefined when another process
 * published one first. Also makes the next CA of a rotation (rotation.ts).
 */
export async function createCa(
  certFile: string,
  keyFile: string,
  commonName: string,
  validityDays: number,
): Promise<CertificateAuthority | undefined> {
  const keys = await generateKeyPair();
  const { notBefore, notAfter } = validityWindow({ validityDays }, validityDays);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [commonName] }],
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [
      // pathLen 0: this CA signs leaves only, never another CA.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certPem = cert.toString("pem");
  const keyPem = privateKeyPem(keys.privateKey);
  // Key first: loaders treat "certificate without key" as fatal but wait out "key without certificate".
  try {
    await writeFileAtomic(keyFile, keyPem, { mode: KEY_MODE, exclusive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return undefined;
    throw new KeyFileError(keyFile, `cannot write the CA key ${keyFile}: ${(err as Error).message}`, { cause: err });
  }
  try {
    await writeFileAtomic(certFile, certPem, { mode: CERT_MODE, exclusive: true });
  } catch (err) {
    // Our key is useless without our certificate; nobody else can be using it yet.
    await fs.rm(keyFile, { force: true });
    const why =
      (err as NodeJS.ErrnoException).code === "EEXIST"
        ? `${certFile} appeared while a new CA was being created (did something else write it?); check the directory and retry`
        : `cannot write the CA certificate ${certFile}: ${(err as Error).message}`;
    throw new KeyFileError(certFile, why, { cause: err });
  }
  return { certPem, keyPem, certFile, keyFile, fingerprint: fingerprintOf(new Uint8Array(cert.rawData)) };
}
