/** Auth callout and `$SYS.REQ.SERVER.<id>.KICK` first shipped in 2.10.0. */
export const MIN_NATS_VERSION = "2.10.0";

/**
 * The default: the maintained release line. Fetched from the official archive (SHA256SUMS
 * checked); where that is unreachable, Debian unstable carries the same release.
 */
export const PINNED_NATS_VERSION = "2.15.1";

/** The floor release CI also runs on: Debian trixie's, the last fallback of a default install. */
export const FLOOR_NATS_VERSION = "2.10.27";

const VERSION_RE = /v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?/;

/**
 * The version in `nats-server --version` output (`nats-server: v2.10.27`), without the `v`;
 * `undefined` when the text holds none.
 */
export function parseNatsVersion(output: string): string | undefined {
  const m = VERSION_RE.exec(output);
  if (!m) return undefined;
  return m[4] ? `${m[1]}.${m[2]}.${m[3]}-${m[4]}` : `${m[1]}.${m[2]}.${m[3]}`;
}

/** Orders like semver: numbers numerically, a pre-release before its release. Negative, zero or positive. */
export function compareVersions(a: string, b: string): number {
  const pa = splitVersion(a);
  const pb = splitVersion(b);
  for (let i = 0; i < 3; i++) {
    const d = (pa.core[i] ?? 0) - (pb.core[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  if (pa.pre === pb.pre) return 0;
  if (pa.pre === undefined) return 1;
  if (pb.pre === undefined) return -1;
  return comparePrerelease(pa.pre, pb.pre);
}

/** Whether a version is at least the floor (advisories aside: see `judgeNatsVersion`). */
export function isSupportedVersion(version: string): boolean {
  return compareVersions(version, MIN_NATS_VERSION) >= 0;
}

/** Whether a version is older than the default line: it runs, but a fetch would bring a newer one. */
export function isBelowDefault(version: string): boolean {
  return compareVersions(version, PINNED_NATS_VERSION) < 0;
}

export type NatsVersionVerdict =
  /** `advisories`: those that hold this version but do not reach a bus (logged, not refused). */
  | { ok: true; version: string; advisories: NatsAdvisory[] }
  | { ok: false; version: string; reason: string; advisory?: NatsAdvisory };

/**
 * Whether unibus runs on a version: at least the floor, and no advisory in `NATS_ADVISORIES`
 * that reaches a bus. `reason` completes "nats-server <version> …" and names the advisory and
 * the release that fixed it.
 */
export function judgeNatsVersion(version: string): NatsVersionVerdict {
  if (!isSupportedVersion(version)) return { ok: false, version, reason: `is older than ${MIN_NATS_VERSION}` };
  const hits = advisoriesAffecting(version);
  const refusal = hits.find((a) => a.refused);
  if (refusal) {
    const fixed = fixedVersionFor(refusal, version);
    return {
      ok: false,
      version,
      advisory: refusal,
      reason:
        `is affected by security advisory ${refusal.id} (${refusal.cve}: ${refusal.summary}); ` +
        `fixed in ${fixed} (the default is ${PINNED_NATS_VERSION})`,
    };
  }
  return { ok: true, version, advisories: hits };
}

/** The advisories in `NATS_ADVISORIES` whose affected ranges hold `version`. */
export function advisoriesAffecting(version: string): NatsAdvisory[] {
  return NATS_ADVISORIES.filter((a) => a.affected.some((r) => inRange(version, r)));
}

/** The release that fixed `advisory` on `version`'s line (the end of the range holding it). */
export function fixedVersionFor(advisory: NatsAdvisory, version: string): string {
  const range = advisory.affected.find((r) => inRange(version, r));
  return range ? range[1] : advisory.affected.map((r) => r[1]).join(" / ");
}

function inRange(version: string, [introduced, fixed]: readonly [string, string]): boolean {
  return compareVersions(version, introduced) >= 0 && compareVersions(version, fixed) < 0;
}

function splitVersion(v: string): { core: number[]; pre: string | undefined } {
  const s = v.trim().replace(/^v/, "");
  const dash = s.indexOf("-");
  const core = (dash === -1 ? s : s.slice(0, dash)).split(".").map((n) => Number.parseInt(n, 10) || 0);
  return { core, pre: dash === -1 ? undefined : s.slice(dash + 1) };
}

function comparePrerelease(a: string, b: string): number {
  const xa = a.split(".");
  const xb = b.split(".");
  for (let i = 0; i < Math.max(xa.length, xb.length); i++) {
    const x = xa[i];
    const y = xb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d+$/.test(x);
    const ny = /^\d+$/.test(y);
    if (nx && ny) {
      const d = Number(x) - Number(y);
      if (d !== 0) return Math.sign(d);
    } else if (nx !== ny) {
      return nx ? -1 : 1;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

/** A published nats-server security advisory and the releases it affects. */
export interface NatsAdvisory {
  /** The GitHub advisory id, or the CVE where the record names none. */
  id: string;
  cve: string;
  summary: string;
  /** Half-open ranges `[introduced, fixed)`; "0" means every earlier release. */
  affected: ReadonlyArray<readonly [string, string]>;
  /** Whether versions in range are refused: true when the hole is reachable on a bus unibus configures. */
  refused: boolean;
  /** Why it reaches a bus, or why it does not. */
  why: string;
}

/**
 * Advisories from the NATS maintainers (advisories.nats.io, GHSA, CVE records), with the
 * affected ranges as published. A version in a `refused` range is never run, from any source.
 * The rest sit in parts of nats-server that the configuration unibus renders never turns on
 * (leafnodes, websockets, MQTT, `no_auth_user`, `verify_and_map`, credentials on the command
 * line, deny rules): a version in those ranges still runs, and the advisories are logged. The
 * 2.10 line got no fixes for the 2026 advisories, so the floor 2.10.27 sits in every range of
 * the second kind and in none of the first.
 */
export const NATS_ADVISORIES: readonly NatsAdvisory[] = [
  {
    // secnote-2023-01; CVE record: "before 2.9.23 and 2.10.x before 2.10.2".
    id: "GHSA-fr2g-9hjm-wr23",
    cve: "CVE-2023-47090",
    summary: "an implicit $G user next to an authorization block allows unauthenticated access",
    affected: [
      ["2.2.0", "2.9.23"],
      ["2.10.0", "2.10.2"],
    ],
    refused: true,
    why: "unibus renders an authorization block (the auth callout) next to its accounts",
  },
  {
    // secnote-2025-01; GO-2025-3600: introduced 2.2.0 fixed 2.10.27, introduced 2.11.0 fixed 2.11.1.
    id: "GHSA-fhg8-qxh5-7q3w",
    cve: "CVE-2025-30215",
    summary: "JetStream admin APIs (account purge, server remove, stream move) are not limited to the system account",
    affected: [
      ["2.2.0", "2.10.27"],
      ["2.11.0", "2.11.1"],
    ],
    refused: true,
    why: "JetStream is on and the bus's service identities may publish on $JS.API subjects",
  },
  {
    // secnote-2026-15; CVE record: ">= 2.11.0, < 2.11.15" and ">= 2.12.0-preview.1, < 2.12.6".
    id: "GHSA-8m2x-3m6q-6w8j",
    cve: "CVE-2026-33249",
    summary: "message tracing sends trace messages to subjects the client may not publish to",
    affected: [
      ["2.11.0", "2.11.15"],
      ["2.12.0-preview.1", "2.12.6"],
    ],
    refused: true,
    why: "any member could write into another room's subject, past the per-room publish ACL",
  },
  ...unreachedMarch2026([
    ["GHSA-vprv-35vv-q339", "CVE-2026-33218", "pre-auth panic via the leafnode port", "no leafnode listener"],
    ["GHSA-8r68-gvr4-jh7j", "CVE-2026-33219", "pre-auth memory use via websockets", "no websocket listener"],
    ["GHSA-fcjp-h8cc-6879", "CVE-2026-33215", "MQTT sessions hijacked via the client ID", "MQTT is off"],
    ["GHSA-v722-jcv5-w7mc", "CVE-2026-33216", "MQTT passwords shown on monitoring endpoints", "MQTT is off"],
    ["GHSA-jxxm-27vp-c3m5", "CVE-2026-33217", "MQTT clients bypass subject ACLs", "MQTT is off"],
    [
      "GHSA-9983-vrx2-fg9c",
      "CVE-2026-33222",
      "a user allowed to restore one stream can restore others",
      "no identity is granted the stream restore API",
    ],
    [
      "GHSA-pwx7-fx9r-hr4h",
      "CVE-2026-33223",
      "clients can spoof the Nats-Request-Info identity header",
      "unibus never reads Nats-Request-Info (identity comes from the callout and signed frames); an application on the bus that trusts the header is affected",
    ],
    ["GHSA-55h8-8g96-x4hj", "CVE-2026-33246", "leafnodes can spoof Nats-Request-Info", "no leafnode listener"],
    [
      "GHSA-x6g4-f6q3-fqvv",
      "CVE-2026-33247",
      "credentials given on the command line are shown on the monitoring port",
      "nats-server gets only `-c <file>`",
    ],
    [
      "GHSA-3f24-pcvm-5jqc",
      "CVE-2026-33248",
      "verify_and_map matches certificate DNs wrongly",
      "verify_and_map is not used",
    ],
  ]),
  {
    // secnote-2026-04; CVE record: "< 2.11.14" and ">= 2.12.0-RC.1, < 2.12.5".
    id: "GHSA-52jh-2xxh-pwh6",
    cve: "CVE-2026-29785",
    summary: "pre-auth panic via compression on the leafnode port",
    affected: [
      ["0", "2.11.14"],
      ["2.12.0-RC.1", "2.12.5"],
    ],
    refused: false,
    why: "no leafnode listener",
  },
  {
    // GO-2026-4533: fixed 2.11.12 and, from 2.12.0-RC.1, 2.12.3.
    id: "GHSA-qrvq-68c2-7grw",
    cve: "CVE-2026-27571",
    summary: "pre-auth memory exhaustion via websocket compression",
    affected: [
      ["0", "2.11.12"],
      ["2.12.0-RC.1", "2.12.3"],
    ],
    refused: false,
    why: "no websocket listener",
  },
  ...unreachedJuly2026(),
];

/** The 2026-03 batch: every one fixed in 2.11.15 and 2.12.6 (CVE records: "< 2.11.15", ">= 2.12.0-RC.1, < 2.12.6"). */
function unreachedMarch2026(rows: Array<[string, string, string, string]>): NatsAdvisory[] {
  return rows.map(([id, cve, summary, why]) => ({
    id,
    cve,
    summary,
    affected: [
      ["0", "2.11.15"],
      ["2.12.0-RC.1", "2.12.6"],
    ],
    refused: false,
    why,
  }));
}

/** The 2026-07 batch, by CVE (the records found name no GHSA id); the first two fixed in 2.11.16, 2.12.7 and 2.14.0. */
function unreachedJuly2026(): NatsAdvisory[] {
  const affected: Array<[string, string]> = [
    ["0", "2.11.16"],
    ["2.12.0", "2.12.7"],
    ["2.13.0", "2.14.0"],
  ];
  return [
    {
      id: "CVE-2026-58253",
      cve: "CVE-2026-58253",
      summary: "with no_auth_user set, route and leafnode peers skip CONNECT authentication",
      affected,
      refused: false,
      why: "no_auth_user is not set",
    },
    {
      id: "CVE-2026-58251",
      cve: "CVE-2026-58251",
      summary: "a queue subscription bypasses a subscribe deny rule",
      affected,
      refused: false,
      why: "unibus grants allow lists only, with no deny rules",
    },
    {
      // Fixed in 2.14.3 and 2.12.12.
      id: "CVE-2026-58210",
      cve: "CVE-2026-58210",
      summary: "partial MQTT CONNECT packets exhaust memory before authentication",
      affected: [
        ["0", "2.12.12"],
        ["2.13.0", "2.14.3"],
      ],
      refused: false,
      why: "MQTT is off",
    },
  ];
}
