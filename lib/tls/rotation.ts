/**
 * Rotating the bus CA without refusing a client or a route: three phases, each followed
 * by a rolling restart (docs/operations.md, "Rotating the CA").
 *
 *   rotate  ca-next.pem appears: every node trusts old + new, still serves old-CA certificates.
 *           Clients are handed ca-bundle.pem (both CAs) meanwhile.
 *   switch  ca-next becomes ca.pem (the signing CA), the old one ca-previous.pem: nodes serve
 *           new-CA certificates and still trust both, so routes to a node not yet restarted hold.
 *   finish  ca-previous.pem goes: only the new CA is trusted; the old CA's key mints nothing
 *           a node accepts.
 *
 * The phase is the set of files in `<data-dir>/tls/`, so each node reads its own at start
 * and the operator copies the same files to every node.
 */
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { KeyFileError, UnibusError } from "../errors.ts";
import { CA_CERT_FILE, CA_KEY_FILE, type CertificateAuthority, createCa, loadCaPair } from "./ca.ts";
import { isCaCertificate, parseCertificatePem, pemFingerprint } from "./certificate.ts";
import { CERT_MODE, exists, readIfExists, serialized, writeFileAtomic } from "./files.ts";

export const CA_NEXT_CERT_FILE = "ca-next.pem";
export const CA_NEXT_KEY_FILE = "ca-next-key.pem";
export const CA_PREVIOUS_CERT_FILE = "ca-previous.pem";
export const CA_PREVIOUS_KEY_FILE = "ca-previous-key.pem";
/** What clients trust during a rotation: the signing CA first, then the other one. */
export const CA_BUNDLE_FILE = "ca-bundle.pem";

/** steady: one CA. rotating: a next CA is trusted. switched: the previous CA is still trusted. */
export type CaPhase = "steady" | "rotating" | "switched";

/** The step asked for does not follow from the phase the files are in. */
export class CaRotationError extends UnibusError {
  readonly phase: CaPhase;
  constructor(phase: CaPhase, message: string) {
    super("CA_ROTATION", message);
    this.phase = phase;
  }
}

export interface CaTrust {
  phase: CaPhase;
  /** The CA certificates a node accepts, the signing CA first (one PEM text). */
  pem: string;
  /** ca.pem when steady, ca-bundle.pem during a rotation: what clients and routes are given. */
  file: string;
  /** SHA-256 fingerprints: the CA that signs, and the other one trusted meanwhile. */
  signing: string;
  other?: string;
}

const NEXT_STEP: Record<CaPhase, string> = {
  steady: "start one with `unibus ca rotate`",
  rotating:
    "once every node runs on the bundle and every client holds ca-bundle.pem, run `unibus ca switch` on every node",
  switched: "once every node serves its new certificate, run `unibus ca finish` on every node",
};

/** The phase the files in `tlsDir` are in; KeyFileError when they mix two phases. */
export async function caPhase(tlsDir: string): Promise<CaPhase> {
  const [next, previous] = await Promise.all([
    exists(path.join(tlsDir, CA_NEXT_CERT_FILE)),
    exists(path.join(tlsDir, CA_PREVIOUS_CERT_FILE)),
  ]);
  if (next && previous) {
    throw new KeyFileError(
      path.join(tlsDir, CA_NEXT_CERT_FILE),
      `${tlsDir} holds both ${CA_NEXT_CERT_FILE} and ${CA_PREVIOUS_CERT_FILE}: two rotations overlap; finish the older one (remove ${CA_PREVIOUS_CERT_FILE} once every node serves a certificate from ca.pem) and retry`,
    );
  }
  return next ? "rotating" : previous ? "switched" : "steady";
}

/**
 * What a node trusts, given its signing CA: that CA alone, or during a rotation the
 * bundle of both, which is (re)written to ca-bundle.pem. A stale bundle of a finished
 * rotation is removed, so nothing hands out a CA the nodes no longer trust.
 */
export function loadCaTrust(tlsDir: string, ca: CertificateAuthority): Promise<CaTrust> {
  return serialized(`ca-trust:${path.resolve(tlsDir)}`, async () => {
    const phase = await caPhase(tlsDir);
    const bundleFile = path.join(tlsDir, CA_BUNDLE_FILE);
    if (phase === "steady") {
      await fs.rm(bundleFile, { force: true });
      return { phase, pem: ca.certPem, file: ca.certFile, signing: ca.fingerprint };
    }
    const otherFile = path.join(tlsDir, phase === "rotating" ? CA_NEXT_CERT_FILE : CA_PREVIOUS_CERT_FILE);
    const otherPem = await readCaCertificate(otherFile);
    const pem = `${ca.certPem.trimEnd()}\n${otherPem.trimEnd()}\n`;
    if ((await readIfExists(bundleFile)) !== pem) await writeFileAtomic(bundleFile, pem, { mode: CERT_MODE });
    return { phase, pem, file: bundleFile, signing: ca.fingerprint, other: pemFingerprint(otherPem) };
  });
}

async function readCaCertificate(file: string): Promise<string> {
  const pem = (await readIfExists(file)) ?? "";
  let parsed: ReturnType<typeof parseCertificatePem>;
  try {
    parsed = parseCertificatePem(pem);
  } catch (err) {
    throw new KeyFileError(
      file,
      `${file} is not a readable PEM certificate (${(err as Error).message}); copy it again from the node where the rotation began`,
    );
  }
  if (!isCaCertificate(parsed.cert)) throw new KeyFileError(file, `${file} is not a CA certificate; copy it again`);
  if (parsed.cert.notAfter.getTime() <= Date.now()) {
    throw new KeyFileError(file, `${file} expired on ${parsed.cert.notAfter.toISOString()}; remove it`);
  }
  return pem;
}

export interface CaRotationStep {
  phase: CaPhase;
  /** Fingerprint of the CA that signs node certificates after this step (at the next start). */
  signing: string;
  /** Fingerprint of the other CA still trusted, if any. */
  other?: string;
  /** Files to copy to every other node's tls/ directory (the same ones, byte for byte). */
  copy: string[];
  /** Clients' trust file after this step. */
  clientCaFile: string;
}

/** Phase 1: a new CA in ca-next.pem / ca-next-key.pem, trusted from each node's next start. */
export async function rotateCa(tlsDir: string, opts: { commonName?: string; validityDays?: number } = {}) {
  return serialized(`ca:${path.resolve(tlsDir)}`, async (): Promise<CaRotationStep> => {
    const phase = await caPhase(tlsDir);
    if (phase !== "steady") {
      throw new CaRotationError(phase, `a CA rotation is already under way (${phase}); ${NEXT_STEP[phase]}`);
    }
    const current = await currentCa(tlsDir);
    const created = await createCa(
      path.join(tlsDir, CA_NEXT_CERT_FILE),
      path.join(tlsDir, CA_NEXT_KEY_FILE),
      opts.commonName ?? `unibus CA ${new Date().toISOString().slice(0, 10)}`,
      opts.validityDays ?? 3650,
    );
    if (!created) throw new CaRotationError("rotating", `another process began a rotation in ${tlsDir} meanwhile`);
    const trust = await loadCaTrust(tlsDir, current);
    return {
      phase: "rotating",
      signing: trust.signing,
      other: created.fingerprint,
      copy: [created.certFile, created.keyFile],
      clientCaFile: trust.file,
    };
  });
}

/** Phase 2: the next CA signs (ca.pem), the old one stays trusted (ca-previous.pem). */
export async function switchCa(tlsDir: string) {
  return serialized(`ca:${path.resolve(tlsDir)}`, async (): Promise<CaRotationStep> => {
    const phase = await caPhase(tlsDir);
    if (phase !== "rotating") {
      throw new CaRotationError(phase, `there is no next CA to switch to (${phase}); ${NEXT_STEP[phase]}`);
    }
    const file = (name: string) => path.join(tlsDir, name);
    // Checked before anything moves: a missing or damaged next key must not strand the node.
    await currentCa(tlsDir, CA_NEXT_CERT_FILE, CA_NEXT_KEY_FILE);
    const old = await currentCa(tlsDir);
    await writeFileAtomic(file(CA_PREVIOUS_KEY_FILE), old.keyPem, { mode: 0o600 });
    await writeFileAtomic(file(CA_PREVIOUS_CERT_FILE), old.certPem, { mode: CERT_MODE });
    await fs.rename(file(CA_NEXT_KEY_FILE), file(CA_KEY_FILE));
    await fs.rename(file(CA_NEXT_CERT_FILE), file(CA_CERT_FILE));
    const trust = await loadCaTrust(tlsDir, await currentCa(tlsDir));
    return {
      phase: "switched",
      signing: trust.signing,
      ...(trust.other ? { other: trust.other } : {}),
      copy: [],
      clientCaFile: trust.file,
    };
  });
}

/** Phase 3: the previous CA (certificate and key) is removed; only ca.pem is trusted. */
export async function finishCa(tlsDir: string) {
  return serialized(`ca:${path.resolve(tlsDir)}`, async (): Promise<CaRotationStep> => {
    const phase = await caPhase(tlsDir);
    if (phase !== "switched") {
      throw new CaRotationError(phase, `there is no previous CA to drop (${phase}); ${NEXT_STEP[phase]}`);
    }
    await fs.rm(path.join(tlsDir, CA_PREVIOUS_CERT_FILE), { force: true });
    await fs.rm(path.join(tlsDir, CA_PREVIOUS_KEY_FILE), { force: true });
    const trust = await loadCaTrust(tlsDir, await currentCa(tlsDir));
    return { phase: "steady", signing: trust.signing, copy: [], clientCaFile: trust.file };
  });
}

/** Where a rotation stands, for `unibus ca status`. */
export async function caRotationStatus(tlsDir: string): Promise<CaRotationStep & { next: string }> {
  const trust = await loadCaTrust(tlsDir, await currentCa(tlsDir));
  return {
    phase: trust.phase,
    signing: trust.signing,
    ...(trust.other ? { other: trust.other } : {}),
    copy: trust.phase === "rotating" ? [CA_NEXT_CERT_FILE, CA_NEXT_KEY_FILE].map((f) => path.join(tlsDir, f)) : [],
    clientCaFile: trust.file,
    next: NEXT_STEP[trust.phase],
  };
}

/** An existing CA pair, checked like the bus checks it at start; never creates one. */
async function currentCa(tlsDir: string, certName = CA_CERT_FILE, keyName = CA_KEY_FILE) {
  const certFile = path.join(tlsDir, certName);
  if (!(await exists(certFile))) {
    throw new KeyFileError(certFile, `no CA in ${tlsDir} (${certName} is missing); pass the data dir of a node`);
  }
  const keyFile = path.join(tlsDir, keyName);
  if (!(await exists(keyFile))) {
    throw new KeyFileError(
      keyFile,
      `${keyFile} is missing beside ${certName}; copy both files (the key with mode 0600) from the node where the rotation began`,
    );
  }
  return loadCaPair(certFile, keyFile);
}

/** The trust file in `tlsDir` a local tool should read: the bundle during a rotation, else ca.pem. */
export function clientCaFileSync(tlsDir: string): string {
  const bundle = path.join(tlsDir, CA_BUNDLE_FILE);
  return existsSync(bundle) ? bundle : path.join(tlsDir, CA_CERT_FILE);
}
