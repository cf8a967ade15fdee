/**
 * Small pieces of the control-plane protocol that clients and the CLI share with
 * the server, kept apart from the routes so using them loads no server code.
 */
import { sha256Hex } from "../crypto/index.ts";
import { InvalidArgumentError } from "../errors.ts";

/** What a registrant signs with its new key to prove it holds it. */
export function registrationProofMessage(token: string): Buffer {
  return Buffer.from(`unibus-register:${sha256Hex(token)}`);
}

/** `7d`, `12h`, `30m`, `45s`, `250ms`, or a number of milliseconds → ms. */
export function parseTtl(value: string | number): number {
  if (typeof value === "number") return value;
  const m = /^(\d{1,6})(ms|s|m|h|d)$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError("ttl", `ttl must look like 7d, 12h, 30m or 45s, not ${JSON.stringify(value)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "ms"];
  return Number(m[1]) * unit;
}
