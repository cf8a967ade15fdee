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
// run(): Promise<BenchSection | BenchSection[] | void>
