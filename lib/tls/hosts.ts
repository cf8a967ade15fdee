import { isIPv4, isIPv6 } from "node:net";
import { InvalidArgumentError } from "../errors.ts";

/** A host as it goes into a certificate: an IP SAN or a DNS SAN, in canonical form. */
export type HostName = { kind: "ip"; value: string } | { kind: "dns"; value: string };

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

function refuse(host: string, why: string): never {
  return bail(`host ${JSON.stringify(host)} cannot go into a certificate: ${why}`);
}

function bail(message: string): never {
  throw new InvalidArgumentError("hosts", message);
}

/** The one spelling of an IPv6 address (compressed, lower case), so `::1` and `0:0::1` compare equal. */
function canonicalIPv6(ip: string): string {
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

/** `::ffff:a.b.c.d` is how an IPv4 peer appears on a dual-stack socket; like Go, certify it as the IPv4 address clients dial. */
function unmapIPv4(ip: string): string | undefined {
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(ip);
  if (!m) return undefined;
  const hi = Number.parseInt(m[1]!, 16);
  const lo = Number.parseInt(m[2]!, 16);
  return [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff].join(".");
}

/**
 * Parses a DNS name or an IPv4/IPv6 address for a subjectAltName. Refuses what a
 * TLS client could never match: wildcards, zone ids, bind-all addresses, numeric
 * "names" that are really malformed addresses, non-ASCII (use punycode).
 */
export function parseHost(host: string): HostName {
  if (typeof host !== "string") bail(`a host must be a string, got ${typeof host}`);
  let h = host.trim();
  if (h === "") refuse(host, "it is empty");
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h.includes("%"))
    refuse(host, "IPv6 zone ids (the part after %) are local to one machine; give the address alone");
  if (isIPv4(h)) {
    if (h === "0.0.0.0") refuse(host, "0.0.0.0 only means 'every interface'; list the names or addresses clients dial");
    return { kind: "ip", value: h };
  }
  if (isIPv6(h)) {
    const canonical = canonicalIPv6(h);
    const v4 = unmapIPv4(canonical);
    if (v4 !== undefined) return parseHost(v4);
    if (canonical === "::") refuse(host, ":: only means 'every interface'; list the names or addresses clients dial");
    return { kind: "ip", value: canonical };
  }
  if (h.includes("*")) refuse(host, "wildcard names are not issued; list each host name");
  if (/[^\x00-\x7f]/.test(h)) refuse(host, "it has non-ASCII characters; give the punycode form (xn--…)");
  h = h.toLowerCase();
  if (h.endsWith(".")) h = h.slice(0, -1);
  if (h.length > 253) refuse(host, "a DNS name is at most 253 characters");
  const labels = h.split(".");
  for (const label of labels) {
    if (!LABEL.test(label)) {
      refuse(
        host,
        "each dot-separated part of a DNS name must be 1-63 letters, digits or inner hyphens (this is neither a valid name nor an IP address)",
      );
    }
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? "")) {
    refuse(host, "it looks like an IP address but is not a valid one");
  }
  return { kind: "dns", value: h };
}

/**
 * Checks that `host` can be a subjectAltName and returns its canonical form
 * (lower-case DNS name, compressed IPv6). Throws InvalidArgumentError otherwise.
 */
export function validateHost(host: string): string {
  return parseHost(host).value;
}

/** Parses and de-duplicates, keeping first-seen order. */
export function parseHosts(hosts: readonly string[]): HostName[] {
  if (!Array.isArray(hosts)) bail("hosts must be an array of DNS names or IP addresses");
  const seen = new Set<string>();
  const out: HostName[] = [];
  for (const h of hosts) {
    const parsed = parseHost(h);
    const key = `${parsed.kind}:${parsed.value}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(parsed);
  }
  return out;
}

/** `localhost`, `::1` (bracketed or not) or any 127.x address. */
export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127\./.test(host);
}

/** A bind address meaning "every interface" (or none given): clients on this machine dial 127.0.0.1. */
export function isUnspecifiedHost(host: string): boolean {
  return host === "0.0.0.0" || host === "::" || host === "";
}

/**
 * A host as it goes into a URL: IPv6 in brackets (once), a bind-all address replaced by
 * 127.0.0.1 — what a client on this machine dials for a server listening everywhere.
 */
export function urlHost(host: string): string {
  const h = isUnspecifiedHost(host) ? "127.0.0.1" : host;
  return h.includes(":") && !h.startsWith("[") ? `[${h}]` : h;
}
