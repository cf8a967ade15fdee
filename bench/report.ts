// The shape every bench module's run() returns, for the Markdown report of issue 19.
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
