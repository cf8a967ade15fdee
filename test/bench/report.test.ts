// The bench report: sections from every bench, rendered into one Markdown file whose
// tables survive any text a bench puts in a name or note.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import t from "tap";
import {
  type BenchSection,
  formatValue,
  mergeParts,
  type ReportPart,
  type RunInfo,
  readParts,
  renderReport,
  renderSection,
  reportJsonPath,
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
  load: [1.234, 0.5, 0.25],
};

const messaging: BenchSection = {
  title: "Messaging",
  rows: [
    { name: "raw", value: 113_000, unit: "msg/s" },
    { name: "cleartext room", value: 104_500.4, unit: "msg/s", baseline: "raw", ratio: 0.9248, note: "rounds 1, 2, 3" },
  ],
  notes: ["target: >= 90 %"],
};
const part = (bench: string, sections: BenchSection[], date = info.date): ReportPart => ({
  bench,
  info: { ...info, date },
  sections,
});

t.test("a report: what it is, then each bench's part with its run's facts and its tables", async (t) => {
  t.equal(
    renderReport([part("messaging", [messaging])], ["start", "messaging"]),
    [
      "# unibus benchmarks",
      "",
      "`npm run bench` measures every bench and rewrites this file; `npm run bench -- NAME ...`",
      "measures the named ones again and replaces only their parts. Each part says when and on",
      "what it was measured.",
      "",
      "- ratio: the row's value divided by its baseline's, measured in the same run",
      "- not measured yet: start",
      "",
      "# messaging",
      "",
      "Measured by `npm run bench -- messaging` on 2026-01-02T03:04:05.000Z: Node v24.0.0, nats-server v2.15.1, 2 cores (Test CPU), load average 1.2, 0.5, 0.3 when it started.",
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
  t.notMatch(renderReport([part("start", [])], ["start"]), /not measured yet/, "nothing missing: no such line");
});

t.test("parts follow the benches' order, whatever order they were measured in", async (t) => {
  const out = renderReport([part("b", []), part("a", []), part("c", [])], ["a", "b", "c"]);
  t.ok(out.indexOf("# a\n") < out.indexOf("# b\n") && out.indexOf("# b\n") < out.indexOf("# c\n"));
});

t.test("a partial run replaces its own parts and keeps the others", async (t) => {
  const old = [part("start", [messaging], "old"), part("messaging", [messaging], "old")];
  const merged = mergeParts(old, [part("messaging", [], "new")], ["start", "messaging"]);
  t.same(
    merged.map((p) => [p.bench, p.info.date]),
    [
      ["start", "old"],
      ["messaging", "new"],
    ],
  );
  t.same(mergeParts([], [part("x", [])], ["x"]).length, 1, "into an empty report");
  t.same(
    mergeParts([part("gone", [])], [part("x", [])], ["x"]).map((p) => p.bench),
    ["x"],
    "a bench that no longer exists is dropped",
  );
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

t.test("writeReport writes the Markdown and its parts (creating the folder); readParts reads them back", async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-report-"));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, "results", "latest.md");
  const parts = [part("messaging", [messaging])];
  t.equal(await writeReport(file, parts, ["messaging"]), file);
  t.equal(await fs.readFile(file, "utf8"), renderReport(parts, ["messaging"]));
  t.equal(reportJsonPath(file), path.join(dir, "results", "latest.json"));
  t.same(await readParts(reportJsonPath(file)), parts, "the parts round-trip");
  t.same((await fs.readdir(path.dirname(file))).sort(), ["latest.json", "latest.md"], "no temp file left behind");
});

t.test("readParts: no file is an empty report; a damaged one is named and left out", async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-report-"));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const warnings: string[] = [];
  const warn = (m: string) => warnings.push(m);
  t.same(await readParts(path.join(dir, "none.json"), warn), []);
  t.same(warnings, [], "a missing file is no warning");
  const damaged: Array<[string, string]> = [
    ["truncated.json", '{"parts": [{"bench"'],
    ["other.json", '{"something": 1}'],
  ];
  for (const [name, text] of damaged) {
    await fs.writeFile(path.join(dir, name), text);
    t.same(await readParts(path.join(dir, name), warn), [], name);
  }
  t.equal(warnings.length, 2);
  t.match(warnings[0], /truncated\.json is not a bench report .*starting a new one/);
  const mixed = { parts: [part("ok", []), { bench: "broken" }, null] };
  await fs.writeFile(path.join(dir, "mixed.json"), JSON.stringify(mixed));
  t.same(
    (await readParts(path.join(dir, "mixed.json"), warn)).map((p) => p.bench),
    ["ok"],
    "malformed parts are left out, good ones kept",
  );
});

t.test("runInfo reads the machine and the nats-server binary", async (t) => {
  const r = await runInfo();
  t.equal(r.node, process.version);
  t.equal(r.cores, os.availableParallelism());
  t.match(r.natsServer, /^v?\d+\.\d+\.\d+|^unknown \(/, "a version, or why not");
  t.equal(r.load.length, 3, "three load averages");
  t.ok(!Number.isNaN(Date.parse(r.date)), "an ISO date");
});
