import { type Logger, pino } from "pino";
import { textDestination } from "./text.ts";

export type { Logger } from "pino";
export { formatLogLine, textDestination } from "./text.ts";

/**
 * Paths that must never reach a log line. pino replaces them before serialising,
 * so a careless `log.info({ identity })` still leaks nothing.
 */
const REDACT = [
  "seed",
  "*.seed",
  "secret",
  "*.secret",
  "privateKey",
  "*.privateKey",
  "token",
  "*.token",
  "sealedKey",
  "*.sealedKey",
  "jwt",
  "*.jwt",
  "sig",
  "*.sig",
];

export interface LogOptions {
  /** pino level; defaults to `UNIBUS_LOG_LEVEL` or `warn` (the library is quiet unless asked). */
  level?: string;
  /** Where lines go; defaults to stderr. */
  destination?: NodeJS.WritableStream;
  /** `json` (one object per line), `pretty` (one readable line per event), `auto` (pretty on a terminal). */
  format?: "json" | "pretty" | "auto";
}

/** One JSON object per line: level, time, component, message and structured fields. */
export function createLogger(options: LogOptions = {}): Logger {
  const level = options.level ?? process.env.UNIBUS_LOG_LEVEL ?? "warn";
  const pretty =
    options.format === "pretty" || (options.format === "auto" && !options.destination && process.stderr.isTTY);
  const destination = pretty
    ? textDestination(options.destination)
    : (options.destination ?? pino.destination({ fd: 2, sync: true }));
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACT, censor: "[redacted]" },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination as pino.DestinationStream,
  );
}

/** A logger that writes nothing — the default for code paths that were handed none. */
export const silentLogger: Logger = pino({ level: "silent" });
