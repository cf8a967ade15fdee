import {
  createHash,
  createPrivateKey,
  KeyObject,
  X509Certificate as NodeX509,
  randomBytes,
  webcrypto,
} from "node:crypto";
import type * as X509 from "@peculiar/x509";
import { InvalidArgumentError } from "../errors.ts";
import { type HostName, parseHost, parseHosts } from "./hosts.ts";
import { x509 } from "./x509.ts";

/** "server": serverAuth only. "peer": serverAuth + clientAuth, for mutual TLS such as NATS routes. */
export type CertificateUsage = "server" | "peer";

export interface IssueOptions {
  /** Subject CN; informational (clients match hosts against the SANs). */
  commonName: string;
  /** DNS names and IPv4/IPv6 addresses; each becomes a DNS or IP subjectAltName. */
  hosts: readonly string[];
  usage: CertificateUsage;
  /** Days from now; default 825, and never past the CA's own expiry. */
  validityDays?: number;
  /** Explicit validity window, overriding validityDays (tests use it to make expired certificates). */
  notBefore?: Date;
  notAfter?: Date;
}

export interface IssuedCertificate {
  certPem: string;
  /** PEM PKCS#8 — secret. */
  keyPem: string;
}

/** What a CA needs to sign; `CertificateAuthority` satisfies it. */
export interface SigningAuthority {
  certPem: string;
  keyPem: string;
}

export interface CertificateDescription {
  subject: string;
  issuer: string;
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  /** "DNS:name" and "IP:address" entries, in certificate order. */
  sans: string[];
  /** Extended key usages by name ("serverAuth", "clientAuth") or OID; empty when the extension is absent. */
  extKeyUsage: string[];
  isCa: boolean;
  /** SHA-256 of the DER certificate, lower-case hex. */
  fingerprint: string;
}

export const DEFAULT_LEAF_VALIDITY_DAYS = 825;
const DAY_MS = 86_400_000;
/** Certificates start an hour back so a peer whose clock runs a little behind still accepts them. */
export const BACKDATE_MS = 3_600_000;
const MAX_VALIDITY_DAYS = 36_500;

const EKU_NAMES: Record<string, string> = {
  [x509.ExtendedKeyUsage.serverAuth]: "serverAuth",
  [x509.ExtendedKeyUsage.clientAuth]: "clientAuth",
  [x509.ExtendedKeyUsage.codeSigning]: "codeSigning",
  [x509.ExtendedKeyUsage.emailProtection]: "emailProtection",
  [x509.ExtendedKeyUsage.timeStamping]: "timeStamping",
  [x509.ExtendedKeyUsage.ocspSigning]: "ocspSigning",
};

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
/** A WebCrypto signature algorithm as @peculiar/x509 takes it. */
export type SignatureAlgorithm = { name: string; hash: string };

const EC_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;

/** The first CERTIFICATE block of a PEM text (a chain file describes its leaf). */
function firstPemBlock(pem: string): string | undefined {
  if (typeof pem !== "string") return undefined;
  return /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(pem)?.[0];
}

/** Parses a PEM certificate; throws `InvalidArgumentError` or node:crypto's error (callers wrap it in their own error type). */
export function parseCertificatePem(pem: string): { cert: X509.X509Certificate; node: NodeX509; der: Buffer } {
  const block = firstPemBlock(pem);
  if (!block) throw new InvalidArgumentError("pem", "no -----BEGIN CERTIFICATE----- block found");
  const node = new NodeX509(block);
  return { cert: new x509.X509Certificate(node.raw), node, der: node.raw };
}

export function fingerprintOf(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("hex");
}

/** The SHA-256 fingerprint (hex) of a PEM certificate's first block: what an invite pins. */
export function pemFingerprint(pem: string): string {
  return fingerprintOf(parseCertificatePem(pem).der);
}

/** The certificate's SANs we issue (DNS and IP), canonicalised like requested hosts so they compare. */
export function sanHostsOf(cert: X509.X509Certificate): HostName[] {
  const ext = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (!ext) return [];
  const out: HostName[] = [];
  for (const n of ext.names.toJSON()) {
    if (n.type !== "dns" && n.type !== "ip") continue;
    try {
      out.push(parseHost(n.value));
    } catch {
      // A SAN we would not issue (a wildcard, say) cannot cover a requested host.
    }
  }
  return out;
}

export function extKeyUsageOf(cert: X509.X509Certificate): string[] {
  const ext = cert.getExtension(x509.ExtendedKeyUsageExtension);
  return ext ? Array.from(ext.usages, (u) => EKU_NAMES[String(u)] ?? String(u)) : [];
}

export function isCaCertificate(cert: X509.X509Certificate): boolean {
  return cert.getExtension(x509.BasicConstraintsExtension)?.ca === true;
}

function describeSans(cert: X509.X509Certificate, node: NodeX509): string[] {
  try {
    const ext = cert.getExtension(x509.SubjectAlternativeNameExtension);
    if (!ext) return [];
    const label: Record<string, string> = { dns: "DNS", ip: "IP", email: "email", url: "URI" };
    return ext.names.toJSON().map((n) => `${label[n.type] ?? n.type}:${n.value}`);
  } catch {
    // Name forms @peculiar/x509 cannot decode (otherName, X.400): show Node's rendering.
    return (node.subjectAltName ?? "").split(", ").filter(Boolean);
  }
}

/** Reads the facts `unibus doctor` reports. Throws InvalidArgumentError when `pem` holds no certificate. */
export function describeCertificate(pem: string): CertificateDescription {
  let parsed: ReturnType<typeof parseCertificatePem>;
  try {
    parsed = parseCertificatePem(pem);
  } catch (err) {
    throw new InvalidArgumentError("pem", `not a PEM X.509 certificate: ${(err as Error).message}`);
  }
  const { cert, node, der } = parsed;
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    serialNumber: cert.serialNumber,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    sans: describeSans(cert, node),
    extKeyUsage: extKeyUsageOf(cert),
    isCa: isCaCertificate(cert),
    fingerprint: fingerprintOf(der),
  };
}

export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
}

export function privateKeyPem(key: CryptoKey): string {
  return KeyObject.from(key).export({ format: "pem", type: "pkcs8" }).toString();
}

/** A private key ready to sign certificates, with the signature algorithm that fits it. */
export interface SigningKey {
  keyObject: KeyObject;
  cryptoKey: CryptoKey;
  algorithm: SignatureAlgorithm;
}

const CURVES: Record<string, { curve: string; hash: string }> = {
  prime256v1: { curve: "P-256", hash: "SHA-256" },
  secp384r1: { curve: "P-384", hash: "SHA-384" },
  secp521r1: { curve: "P-521", hash: "SHA-512" },
};

/**
 * Parses a PEM private key for signing. ECDSA P-256/384/521 (what unibus makes) and
 * RSA (what an imported CA may use). Throws `InvalidArgumentError` or node:crypto's
 * error; callers wrap it.
 */
export async function loadSigningKey(pem: string): Promise<SigningKey> {
  const keyObject = createPrivateKey({ key: pem, format: "pem" });
  if (keyObject.asymmetricKeyType === "ec") {
    const named = CURVES[keyObject.asymmetricKeyDetails?.namedCurve ?? ""];
    if (!named) {
      const curve = keyObject.asymmetricKeyDetails?.namedCurve;
      throw new InvalidArgumentError("pem", `unsupported EC curve ${curve}; use P-256, P-384 or P-521`);
    }
    const cryptoKey = await keyObject.toCryptoKey({ name: "ECDSA", namedCurve: named.curve }, false, ["sign"]);
    return { keyObject, cryptoKey, algorithm: { name: "ECDSA", hash: named.hash } };
  }
  if (keyObject.asymmetricKeyType === "rsa") {
    const algorithm = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    const cryptoKey = await keyObject.toCryptoKey(algorithm, false, ["sign"]);
    return { keyObject, cryptoKey, algorithm };
  }
  throw new InvalidArgumentError("pem", `unsupported key type ${keyObject.asymmetricKeyType}; use an ECDSA or RSA key`);
}

/** 128 random bits, top bit clear: a positive serial that never repeats in practice (RFC 5280 allows 20 octets). */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString("hex");
}

function invalid(field: string, message: string): never {
  throw new InvalidArgumentError(field, message);
}

export function checkCommonName(commonName: unknown, field = "commonName"): string {
  if (typeof commonName !== "string" || commonName.trim() === "") invalid(field, `${field} must be a non-empty string`);
  if (/[\x00-\x1f\x7f]/.test(commonName)) invalid(field, `${field} must not contain control characters`);
  // X.520 upper bound for a common name.
  if (commonName.length > 64) invalid(field, `${field} is at most 64 characters`);
  return commonName;
}

export function checkValidityDays(days: unknown, field = "validityDays"): number {
  if (typeof days !== "number" || !Number.isInteger(days) || days < 1 || days > MAX_VALIDITY_DAYS) {
    invalid(field, `${field} must be a whole number of days from 1 to ${MAX_VALIDITY_DAYS}, got ${String(days)}`);
  }
  return days;
}

function checkDate(d: unknown, field: string): Date {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) invalid(field, `${field} must be a valid Date`);
  return d;
}

/** Resolves the validity window: explicit dates win; otherwise backdated now .. now + days. */
export function validityWindow(
  opts: { validityDays?: number; notBefore?: Date; notAfter?: Date },
  defaultDays: number,
  now = Date.now(),
): { notBefore: Date; notAfter: Date; explicitEnd: boolean } {
  const days = opts.validityDays === undefined ? defaultDays : checkValidityDays(opts.validityDays);
  const notBefore = opts.notBefore === undefined ? new Date(now - BACKDATE_MS) : checkDate(opts.notBefore, "notBefore");
  const notAfter = opts.notAfter === undefined ? new Date(now + days * DAY_MS) : checkDate(opts.notAfter, "notAfter");
  if (notAfter.getTime() <= notBefore.getTime()) {
    invalid(
      "notAfter",
      `notAfter (${notAfter.toISOString()}) must be later than notBefore (${notBefore.toISOString()})`,
    );
  }
  return { notBefore, notAfter, explicitEnd: opts.notAfter !== undefined };
}

/** Parses and cross-checks a CA handed to issueCertificate. */
async function openAuthority(ca: SigningAuthority): Promise<{ cert: X509.X509Certificate; key: SigningKey }> {
  if (!ca || typeof ca.certPem !== "string" || typeof ca.keyPem !== "string") {
    invalid("ca", "ca must be the CertificateAuthority returned by loadOrCreateCa");
  }
  let parsed: ReturnType<typeof parseCertificatePem>;
  let key: SigningKey;
  try {
    parsed = parseCertificatePem(ca.certPem);
    key = await loadSigningKey(ca.keyPem);
  } catch (err) {
    invalid("ca", `the CA certificate or key cannot be read: ${(err as Error).message}`);
  }
  if (!isCaCertificate(parsed.cert))
    invalid("ca", "the CA certificate is not a CA (basicConstraints CA:TRUE is missing)");
  if (!parsed.node.checkPrivateKey(key.keyObject)) invalid("ca", "the CA key does not belong to the CA certificate");
  return { cert: parsed.cert, key };
}

/**
 * Issues a TLS leaf certificate signed by `ca`, with a fresh ECDSA P-256 key.
 * Hosts become DNS or IP subjectAltNames; "peer" adds clientAuth for mutual TLS.
 */
export async function issueCertificate(ca: SigningAuthority, opts: IssueOptions): Promise<IssuedCertificate> {
  if (!opts || typeof opts !== "object") invalid("options", "issueCertificate needs { commonName, hosts, usage }");
  const commonName = checkCommonName(opts.commonName);
  const hosts = parseHosts(opts.hosts);
  if (hosts.length === 0) invalid("hosts", "at least one host (DNS name or IP address) is needed");
  if (opts.usage !== "server" && opts.usage !== "peer") {
    invalid("usage", `usage must be "server" or "peer", got ${JSON.stringify(opts.usage)}`);
  }
  const window = validityWindow(opts, DEFAULT_LEAF_VALIDITY_DAYS);
  const authority = await openAuthority(ca);
  let { notAfter } = window;
  // A leaf outliving its CA would only fail later and more confusingly.
  if (!window.explicitEnd && notAfter > authority.cert.notAfter) notAfter = authority.cert.notAfter;
  if (notAfter <= window.notBefore) {
    invalid("ca", `the CA expired on ${authority.cert.notAfter.toISOString()}; create a new CA before issuing`);
  }

  const keys = await generateKeyPair();
  const caKeyId = authority.cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const usages: string[] = [x509.ExtendedKeyUsage.serverAuth];
  if (opts.usage === "peer") usages.push(x509.ExtendedKeyUsage.clientAuth);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [commonName] }],
    issuer: authority.cert.subjectName,
    notBefore: window.notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: authority.key.cryptoKey,
    signingAlgorithm: authority.key.algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(usages, false),
      new x509.SubjectAlternativeNameExtension(
        hosts.map((h) => ({ type: h.kind, value: h.value })),
        false,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      caKeyId
        ? new x509.AuthorityKeyIdentifierExtension(caKeyId)
        : await x509.AuthorityKeyIdentifierExtension.create(authority.cert.publicKey),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: privateKeyPem(keys.privateKey) };
}
