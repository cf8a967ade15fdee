/**
 * Trust on a fingerprint: an invitee holds the bus CA's SHA-256 fingerprint (from the
 * invite line) but not the CA itself. The control plane sends its chain, CA included,
 * in the TLS handshake; we read it without trusting it, keep the certificate whose
 * fingerprint is the pinned one, and close — the only bytes sent are the handshake's.
 * The caller then connects again trusting that CA alone, so from there on every byte
 * goes to a server whose certificate the pinned CA issued.
 */
import net from "node:net";
import tls from "node:tls";
import { UnibusError } from "../errors.ts";
import { fingerprintOf } from "./certificate.ts";

/** The server's chain holds no certificate with the pinned fingerprint: not the bus the invite names. */
export class CaPinError extends UnibusError {
  readonly pinned: string;
  /** The fingerprints the server presented, leaf first. */
  readonly presented: string[];
  constructor(url: string, pinned: string, presented: string[]) {
    super(
      "CA_PIN_MISMATCH",
      `the control plane at ${url} presents no CA with the invite's fingerprint ${pinned} (it presents ${presented.join(", ") || "no certificate"}): refusing it, nothing was sent; check the --control-url and ask the admin for a new invite line`,
    );
    this.pinned = pinned;
    this.presented = presented;
  }
}

/** The handshake could not be made: nothing answered, or not TLS. */
export class CaFetchError extends UnibusError {
  constructor(url: string, why: string, cause?: unknown) {
    super("CA_FETCH", `could not reach the control plane at ${url} to fetch its CA (${why})`, { cause });
  }
}

/** `sha256:AB:CD…`, `ab cd…`, any case: the 64 hex characters, lowercase; undefined when it is not one. */
export function normalizeFingerprint(text: string): string | undefined {
  const hex = text
    .trim()
    .toLowerCase()
    .replace(/^sha256:/, "")
    .replace(/[:\s]/g, "");
  return /^[0-9a-f]{64}$/.test(hex) ? hex : undefined;
}

/**
 * Fetches the CA whose SHA-256 fingerprint is `pinned` from the TLS chain of the server
 * at `url` (https://host:port). Answers its PEM; CaPinError when the chain holds no such
 * certificate, CaFetchError when no handshake could be made.
 */
export function fetchPinnedCa(url: string, pinned: string, timeoutMs = 10_000): Promise<string> {
  const { hostname, port } = new URL(url);
  const host = hostname.replace(/^\[|\]$/g, "");
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port: Number(port || 443),
      // Read, not trusted: the fingerprint decides, and nothing is written on this socket.
      rejectUnauthorized: false,
      ...(net.isIP(host) ? {} : { servername: host }),
      timeout: timeoutMs,
    });
    const fail = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.once("timeout", () => fail(new CaFetchError(url, "timed out")));
    socket.once("error", (err: NodeJS.ErrnoException) => fail(new CaFetchError(url, err.code ?? err.message, err)));
    socket.once("secureConnect", () => {
      const chain = chainOf(socket.getPeerCertificate(true));
      socket.destroy();
      const match = chain.find((c) => c.fingerprint === pinned);
      if (match) resolve(derToPem(match.raw));
      else
        reject(
          new CaPinError(
            url,
            pinned,
            chain.map((c) => c.fingerprint),
          ),
        );
    });
  });
}

/** The presented certificates, leaf first; Node links a self-signed root to itself, so the walk stops at a repeat. */
function chainOf(leaf: tls.DetailedPeerCertificate): { raw: Buffer; fingerprint: string }[] {
  const out: { raw: Buffer; fingerprint: string }[] = [];
  let cert: tls.DetailedPeerCertificate | undefined = leaf;
  while (cert?.raw && !out.some((c) => c.raw.equals(cert!.raw))) {
    out.push({ raw: cert.raw, fingerprint: fingerprintOf(cert.raw) });
    cert = cert.issuerCertificate;
  }
  return out;
}

function derToPem(der: Buffer): string {
  const b64 = der.toString("base64").replace(/.{1,64}/g, "$&\n");
  return `-----BEGIN CERTIFICATE-----\n${b64}-----END CERTIFICATE-----\n`;
}
