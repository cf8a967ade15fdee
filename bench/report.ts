// The one report of `npm run bench`: every section the benchmarks return, with its
// baseline and ratio, in one Markdown file (bench/results/latest.md), headed by what
// the figures depend on — date, Node, nats-server, cores.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  baseline?: string;
  ratio?: number;
  note?: string;
}
export interface BenchSection {
  title: string;
  rows: BenchRow[];
  notes?: string[];
}

/** What a bench module's run() may return (void: a bench that reports nothing yet). */
// biome-ignore lint/suspicious/noConfusingVoidType: the contract every bench's run() is typed against
export type BenchResult = BenchSection | BenchSection[] | void;

/** What the figures of one bench's run depend on. */
export interface RunInfo {
  date: string;
  node: string;
  natsServer: string;
  cores: number;
  cpu: string;
  /** The machine's load averages (1, 5, 15 min) when the bench started: what else was running. */
  load: number[];
}

/** One bench's figures in the report, with what they were measured on. */
export interface ReportPart {
  bench: string;
  info: RunInfo;
  sections: BenchSection[];
}

/** Every section of a run's results, in order; a bench that returned nothing adds none. */
export function sectionsOf(results: BenchResult[]): BenchSection[] {
  return results.flatMap((r) => (r ? (Array.isArray(r) ? r : [r]) : []));
}

/** Table cells must not break the row: pipes escaped, line breaks flattened. */
function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\r?\n/g, " ");
}

/** Figures to three significant digits at most, grouped by thousands. */
export function formatValue(value: number): string {
  if (!Number.isFinite(value)) return "n/a";
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ratioText(ratio: number | undefined): string {
  if (ratio === undefined) return "";
  return Number.isFinite(ratio) ? `${(100 * ratio).toFixed(0)} %` : "n/a";
}

export function renderSection(s: BenchSection): string {
  const lines = [`## ${cell(s.title)}`, ""];
  if (s.rows.length > 0) {
    lines.push("| row | value | unit | baseline | ratio | note |", "|---|---:|---|---|---:|---|");
    for (const r of s.rows) {
      lines.push(
        `| ${cell(r.name)} | ${formatValue(r.value)} | ${cell(r.unit)} | ${cell(r.baseline ?? "")} | ${ratioText(r.ratio)} | ${cell(r.note ?? "")} |`,
      );
    }
  } else {
    lines.push("_no figures_");
  }
  for (const n of s.notes ?? []) lines.push("", `- ${n.replace(/\r?\n/g, " ")}`);
  return lines.join("\n");
}

function partHeading(p: ReportPart): string {
  const i = p.info;
  const load = i.load.map((l) => l.toFixed(1)).join(", ");
  return [
    `# ${cell(p.bench)}`,
    "",
    `Measured by \`npm run bench -- ${p.bench}\` on ${i.date}: Node ${i.node}, nats-server ${i.natsServer}, ${i.cores} cores (${i.cpu}), load average ${load} when it started.`,
  ].join("\n");
}

/**
 * The report: every bench's part, in `order`. A part keeps the facts of its own run, so a
 * report assembled from several runs says which figures were measured when, on what.
 */
export function renderReport(parts: ReportPart[], order: string[]): string {
  const byName = new Map(parts.map((p) => [p.bench, p]));
  const present = order.filter((n) => byName.has(n));
  const missing = order.filter((n) => !byName.has(n));
  const head = [
    "# unibus benchmarks",
    "",
    "`npm run bench` measures every bench and rewrites this file; `npm run bench -- NAME ...`",
    "measures the named ones again and replaces only their parts. Each part says when and on",
    "what it was measured.",
    "",
    "- ratio: the row's value divided by its baseline's, measured in the same run",
    ...(missing.length > 0 ? [`- not measured yet: ${missing.join(", ")}`] : []),
  ];
  const body = present.flatMap((n) => {
    const p = byName.get(n)!;
    return [partHeading(p), ...p.sections.map(renderSection)];
  });
  return `${[head.join("\n"), ...body].join("\n\n")}\n`;
}

/**
 * The parts of the last report (its JSON beside the Markdown), or none when there is no
 * file yet. A file that cannot be read as a report is named and left out: a long run must
 * not lose its own figures to an older file.
 */
export async function readParts(file: string, warn: (m: string) => void = console.error): Promise<ReportPart[]> {
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as { parts?: unknown };
    if (!Array.isArray(parsed.parts)) throw new Error("no parts list");
    return parsed.parts.filter(isPart);
  } catch (err) {
    warn(`${file} is not a bench report (${(err as Error).message}); starting a new one`);
    return [];
  }
}

function isPart(p: unknown): p is ReportPart {
  const q = p as ReportPart;
  return (
    typeof q === "object" &&
    q !== null &&
    typeof q.bench === "string" &&
    typeof q.info === "object" &&
    q.info !== null &&
    Array.isArray(q.info.load) &&
    Array.isArray(q.sections)
  );
}

/** The earlier parts with the fresh ones in place of theirs; a bench no longer in `order` is dropped. */
export function mergeParts(earlier: ReportPart[], fresh: ReportPart[], order: string[]): ReportPart[] {
  const byName = new Map(earlier.map((p) => [p.bench, p]));
  for (const p of fresh) byName.set(p.bench, p);
  return order.flatMap((n) => byName.get(n) ?? []);
}

/** The nats-server the benches run (`--version`), or why it could not be told. */
async function natsServerVersion(): Promise<string> {
  try {
    const { resolveNatsServer } = await import("../lib/nats/binary.ts");
    const { path: binary } = await resolveNatsServer({ network: false });
    const { stdout } = await promisify(execFile)(binary, ["--version"]);
    return stdout.trim().replace(/^nats-server:\s*/, "");
  } catch (err) {
    return `unknown (${(err as Error).message.split("\n")[0]})`;
  }
}

export async function runInfo(): Promise<RunInfo> {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    natsServer: await natsServerVersion(),
    cores: os.availableParallelism(),
    cpu: cpus[0]?.model.trim() || "unknown cpu",
    load: os.loadavg(),
  };
}

/**
 * Writes the report — `<file>` in Markdown and `<file minus .md>.json`, which the next
 * partial run merges into — each through a temp file and a rename, so a reader never sees
 * half of one. Returns the Markdown file's path.
 */
export async function writeReport(file: string, parts: ReportPart[], order: string[]): Promise<string> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const put = async (target: string, text: string) => {
    const tmp = `${target}.${process.pid}.tmp`;
    await fs.writeFile(tmp, text);
    await fs.rename(tmp, target);
  };
  await put(reportJsonPath(file), `${JSON.stringify({ parts }, null, 1)}\n`);
  await put(file, renderReport(parts, order));
  return file;
}

/** Where the report's parts are kept beside its Markdown. */
export function reportJsonPath(file: string): string {
  return file.replace(/\.md$/, "") + ".json";
}
