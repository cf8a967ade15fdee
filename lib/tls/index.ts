/**
 * TLS for unibus: a local certificate authority and the server / route
 * certificates it issues (ECDSA P-256, PEM files, keys 0600).
 */
export { CA_CERT_FILE, type CaOptions, type CertificateAuthority, loadOrCreateCa } from "./ca.ts";
export {
  type CertificateDescription,
  type CertificateUsage,
  describeCertificate,
  type IssuedCertificate,
  type IssueOptions,
  issueCertificate,
  pemFingerprint,
  type SigningAuthority,
} from "./certificate.ts";
export { isLoopbackHost, isUnspecifiedHost, urlHost, validateHost } from "./hosts.ts";
export { CaFetchError, CaPinError, fetchPinnedCa, normalizeFingerprint } from "./pin.ts";
export {
  CA_BUNDLE_FILE,
  type CaPhase,
  CaRotationError,
  type CaRotationStep,
  type CaTrust,
  caPhase,
  caRotationStatus,
  clientCaFileSync,
  finishCa,
  loadCaTrust,
  rotateCa,
  switchCa,
} from "./rotation.ts";
export {
  DEFAULT_SERVER_HOSTS,
  loadOrCreateServerCertificate,
  type ServerCertificate,
  type ServerCertificateOptions,
} from "./server-cert.ts";
