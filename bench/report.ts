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

/** What the figures of one run depend on. */
export interface RunInfo {
  date: string;
  node: string;
  natsServer: string;
  cores: number;
  cpu: string;
  benches: string[];
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

export function renderReport(info: RunInfo, sections: BenchSection[]): string {
  const head = [
    "# unibus benchmarks",
    "",
    `Written by \`npm run bench${info.benches.length ? ` -- ${info.benches.join(" ")}` : ""}\` on ${info.date}.`,
    "",
    `- Node ${info.node}, nats-server ${info.natsServer}`,
    `- ${info.cores} cores (${info.cpu})`,
    "- ratio: the row's value divided by its baseline's, measured in the same run",
  ];
  return `${[head.join("\n"), ...sections.map(renderSection)].join("\n\n")}\n`;
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

export async function runInfo(benches: string[]): Promise<RunInfo> {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    natsServer: await natsServerVersion(),
    cores: os.availableParallelism(),
    cpu: cpus[0]?.model.trim() || "unknown cpu",
    benches,
  };
}

/** Writes the report (temp file, then rename: a reader never sees half of it) and returns its path. */
export async function writeReport(file: string, info: RunInfo, sections: BenchSection[]): Promise<string> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, renderReport(info, sections));
  await fs.rename(tmp, file);
  return file;
}
