import type { Readable } from "node:stream";
import type { NatsStartReason } from "../errors.ts";
import type { NatsConfigOptions } from "./config.ts";

/** Reading and making sense of nats-server's output. */

const MAX_LINE = 4096;

/** `[pid] date time [LVL] ` at the start of a server log line; group 1 is the level. */
export const LEVEL = /^\[\d+\] \S+ \S+ \[([A-Z]{3})\] /;

/** A bounded buffer of the last lines of output. */
export class LogRing {
  readonly #max: number;
  readonly #lines: string[] = [];
  total = 0;
  constructor(max: number) {
    this.#max = max;
  }
  push(line: string): void {
    this.#lines.push(line);
    this.total++;
    if (this.#lines.length > this.#max) this.#lines.shift();
  }
  /** Lines pushed since `total` was `mark` (as many as are still held). */
  since(mark: number): string[] {
    const n = Math.min(this.total - mark, this.#lines.length);
    return n > 0 ? this.#lines.slice(-n) : [];
  }
  all(): string[] {
    return [...this.#lines];
  }
}

/** Calls `onLine` for every line of `stream` (an overlong line is cut); resolves once it is closed. */
export function readLines(stream: Readable, onLine: (line: string) => void): Promise<void> {
  let buf = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    buf += chunk;
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      onLine(buf.slice(0, i).replace(/\r$/, ""));
      buf = buf.slice(i + 1);
    }
    if (buf.length > MAX_LINE) {
      onLine(buf.slice(0, MAX_LINE));
      buf = "";
    }
  });
  return new Promise((resolve) => {
    stream.once("close", () => {
      if (buf) onLine(buf);
      buf = "";
      resolve();
    });
  });
}

/** Maps the server's last words to a reason. The fatal lines were found by making each case happen. */
export function classify(lines: readonly string[], conf: NatsConfigOptions): NatsStartReason {
  // "[FTL] Error listening on port: …: bind: address already in use" (also monitor and route ports)
  if (lines.some((l) => l.includes("address already in use"))) return "port_in_use";
  // Config errors come before logging starts, as "nats-server: <file>:<line>:<col>: <error>" or
  // "nats-server: Parse error on line …"; startup failures as "[FTL] …".
  const fatal = lines.filter((l) => l.startsWith("nats-server: ") || LEVEL.exec(l)?.[1] === "FTL");
  if (fatal.length === 0) return "exited";
  const tlsFiles = [conf.tls?.certFile, conf.tls?.keyFile, conf.tls?.caFile, conf.cluster?.tls?.certFile]
    .concat([conf.cluster?.tls?.keyFile, conf.cluster?.tls?.caFile])
    .filter((f): f is string => typeof f === "string");
  const tlsLike = /x509|certificate|\btls\b|PEM|private key/i;
  if (fatal.some((l) => tlsLike.test(l) || tlsFiles.some((f) => l.includes(f)))) return "tls";
  return "bad_config";
}

/**
 * A server line saying its disk is full (seen: "Filestore [ROOM_…] Critical write error:
 * … no space left on device"). The stream's file store keeps failing after space comes
 * back, until the server reopens it.
 */
export function isStorageFault(line: string): boolean {
  return /no space left on device|disk quota exceeded/i.test(line);
}
