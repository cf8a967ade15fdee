// The bench report: sections from every bench, rendered into one Markdown file whose
// tables survive any text a bench puts in a name or note.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import t from "tap";
import {
  type BenchSection,
  formatValue,
  type RunInfo,
  renderReport,
  renderSection,
  runInfo,
  sectionsOf,
  writeReport,
} from "../../bench/report.ts";

const info: RunInfo = {
  date: "2026-01-02T03:04:05.000Z",
  node: "v24.0.0",
  natsServer: "v2.15.1",
  cores: 2,
  cpu: "Test CPU",
  benches: ["messaging"],
};

const messaging: BenchSection = {
  title: "Messaging",
  rows: [
    { name: "raw", value: 113_000, unit: "msg/s" },
    { name: "cleartext room", value: 104_500.4, unit: "msg/s", baseline: "raw", ratio: 0.9248, note: "rounds 1, 2, 3" },
  ],
  notes: ["target: >= 90 %"],
};

t.test("a report: run facts, then each section as a table with baseline and ratio", async (t) => {
  t.equal(
    renderReport(info, [messaging]),
    [
      "# unibus benchmarks",
      "",
      "Written by `npm run bench -- messaging` on 2026-01-02T03:04:05.000Z.",
      "",
      "- Node v24.0.0, nats-server v2.15.1",
      "- 2 cores (Test CPU)",
      "- ratio: the row's value divided by its baseline's, measured in the same run",
      "",
      "## Messaging",
      "",
      "| row | value | unit | baseline | ratio | note |",
      "|---|---:|---|---|---:|---|",
      "| raw | 113,000 | msg/s |  |  |  |",
      "| cleartext room | 104,500 | msg/s | raw | 92 % | rounds 1, 2, 3 |",
      "",
      "- target: >= 90 %",
      "",
    ].join("\n"),
  );
  t.match(renderReport({ ...info, benches: [] }, []), /Written by `npm run bench` on/, "all benches: no names");
});

t.test("sections: one, several or none per bench, in order", async (t) => {
  const other: BenchSection = { title: "Other", rows: [] };
  t.same(sectionsOf([messaging, undefined, [other, messaging]]), [messaging, other, messaging]);
  t.same(sectionsOf([]), []);
  t.match(renderSection(other), /## Other\n\n_no figures_/, "an empty section says so");
});

t.test("text that would break a table row is escaped; odd numbers stay readable", async (t) => {
  const s = renderSection({
    title: "A | B",
    rows: [{ name: "a|b\nc", value: Number.NaN, unit: "x", ratio: Number.POSITIVE_INFINITY, note: "p|q" }],
  });
  t.match(s, "## A \\| B");
  t.match(s, "| a\\|b c | n/a | x |  | n/a | p\\|q |");
  t.equal(formatValue(0.01234), "0.012");
  t.equal(formatValue(5.678), "5.68");
  t.equal(formatValue(42.42), "42.4");
  t.equal(formatValue(1234567.8), "1,234,568");
});

t.test("writeReport writes the whole file (creating its folder) and says where", async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-report-"));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, "results", "latest.md");
  t.equal(await writeReport(file, info, [messaging]), file);
  t.equal(await fs.readFile(file, "utf8"), renderReport(info, [messaging]));
  t.same(await fs.readdir(path.dirname(file)), ["latest.md"], "no temp file left behind");
});

t.test("runInfo reads the machine and the nats-server binary", async (t) => {
  const r = await runInfo(["a", "b"]);
  t.equal(r.node, process.version);
  t.equal(r.cores, os.availableParallelism());
  t.match(r.natsServer, /^v?\d+\.\d+\.\d+|^unknown \(/, "a version, or why not");
  t.same(r.benches, ["a", "b"]);
  t.ok(!Number.isNaN(Date.parse(r.date)), "an ISO date");
});
