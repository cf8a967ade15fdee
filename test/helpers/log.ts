import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../lib/log/index.ts";

/** A logger whose output a test reads back: each line parsed (`lines`) and as written (`text`). */
export interface CapturedLog<T> {
  logger: Logger;
  lines: T[];
  text: string[];
}

/**
 * The library's own logger (redaction and all) at `level`, writing into arrays.
 * A line split across writes is held until its newline, so nothing is parsed half.
 */
export function captureLogger<T = Record<string, unknown>>(level = "info"): CapturedLog<T> {
  const lines: T[] = [];
  const text: string[] = [];
  let partial = "";
  const destination = new Writable({
    write(chunk, _enc, cb) {
      partial += chunk.toString();
      const complete = partial.split("\n");
      partial = complete.pop() ?? "";
      for (const line of complete.filter(Boolean)) {
        text.push(line);
        lines.push(JSON.parse(line));
      }
      cb();
    },
  });
  return { logger: createLogger({ level, destination }), lines, text };
}
