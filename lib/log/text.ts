/**
 * Log lines for people: `HH:MM:SS.mmm LEVEL component: message key=value …`, one line
 * per event whatever the fields hold. pino writes its JSON line here; each is rewritten
 * once, at the edge, so every call site logs structured fields as before.
 */
import { Writable } from "node:stream";

const LEVELS: Record<string, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO ",
  warn: "WARN ",
  error: "ERROR",
  fatal: "FATAL",
};
/** Fields every line has, shown in the prefix or not at all. */
const SKIP = new Set(["level", "time", "pid", "hostname", "msg", "component"]);
/** Longest value shown; the rest is cut with an ellipsis so one field cannot flood the line. */
const MAX_VALUE = 200;

function clip(s: string): string {
  return s.length > MAX_VALUE ? `${s.slice(0, MAX_VALUE)}…` : s;
}

/** A value as `key=value` shows it: words bare, text with spaces quoted, nested things flattened. */
function valueText(v: unknown): string {
  if (typeof v === "string") return /^[\w.:/@+[\]-]+$/.test(v) ? clip(v) : JSON.stringify(clip(v));
  if (typeof v === "number" || typeof v === "boolean" || v === null) return String(v);
  if (Array.isArray(v)) {
    // A server's last output: how many lines, and the last, which usually says why.
    const last = v.at(-1);
    return v.length === 0 ? "[]" : `(${v.length} item(s), last ${valueText(typeof last === "string" ? last : "…")})`;
  }
  const o = v as Record<string, unknown>;
  if (typeof o.message === "string") return valueText(o.message); // an Error as pino serialises it
  return JSON.stringify(clip(JSON.stringify(v)));
}

function fieldsText(fields: Record<string, unknown>, prefix = ""): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (!prefix && SKIP.has(k)) continue;
    const plain =
      v && typeof v === "object" && !Array.isArray(v) && typeof (v as { message?: unknown }).message !== "string";
    if (plain && !prefix) out.push(...fieldsText(v as Record<string, unknown>, `${k}.`));
    else out.push(`${prefix}${k}=${valueText(v)}`);
  }
  return out;
}

/** One pino JSON line as one readable line (a line that is not JSON passes through). */
export function formatLogLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = typeof rec.time === "number" ? new Date(rec.time).toISOString().slice(11, 23) : "";
  const level = LEVELS[String(rec.level)] ?? String(rec.level).toUpperCase();
  const component = typeof rec.component === "string" ? `${rec.component}: ` : "";
  const msg = typeof rec.msg === "string" ? rec.msg.replace(/\s*\n\s*/g, " | ") : "";
  return [`${time} ${level} ${component}${msg}`, ...fieldsText(rec)].join(" ");
}

/** A destination for pino that writes readable lines to `out` (stderr by default). */
export function textDestination(out: NodeJS.WritableStream = process.stderr): Writable {
  let partial = "";
  return new Writable({
    write(chunk, _enc, cb) {
      partial += chunk.toString();
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      const text = lines
        .filter(Boolean)
        .map((l) => `${formatLogLine(l)}\n`)
        .join("");
      if (text) out.write(text);
      cb();
    },
  });
}
