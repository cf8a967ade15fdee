/** Auth callout and `$SYS.REQ.SERVER.<id>.KICK` first shipped in 2.10.0. */
export const MIN_NATS_VERSION = "2.10.0";

/** The release fetched from the official archive; Debian trixie ships the same one. */
export const PINNED_NATS_VERSION = "2.10.27";

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

/** Whether a version is one unibus can run on. */
export function isSupportedVersion(version: string): boolean {
  return compareVersions(version, MIN_NATS_VERSION) >= 0;
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
