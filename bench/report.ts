/** One figure of a benchmark, with the baseline it is compared to (measured in the same run). */
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  baseline?: string;
  ratio?: number;
  note?: string;
}

/** A benchmark's table: what `run()` returns, for the one Markdown report of `npm run bench`. */
export interface BenchSection {
  title: string;
  rows: BenchRow[];
  notes?: string[];
}
