// The shipped Grafana dashboard: valid JSON Grafana imports, a Prometheus data-source
// variable, and every metric it queries exists in lib/metrics (and every metric is shown).
import fs from "node:fs";
import t from "tap";
import { BusMetrics } from "../../lib/metrics/index.ts";

interface Target {
  expr: string;
  refId: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
}

const dashboard = JSON.parse(fs.readFileSync("docs/grafana-dashboard.json", "utf8")) as {
  schemaVersion: number;
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: unknown }> };
};
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JS template
const DS_VAR = "${datasource}";
const HISTOGRAM_SUFFIX = /_(bucket|sum|count)$/;

t.test("it is a Grafana dashboard with a Prometheus data-source variable", async (t) => {
  t.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, `schemaVersion ${dashboard.schemaVersion}`);
  t.ok(dashboard.uid && dashboard.title);
  const ds = dashboard.templating.list.find((v) => v.type === "datasource");
  t.match(ds, { name: "datasource", query: "prometheus" });
  const ids = dashboard.panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, "panel ids are unique");
  for (const p of dashboard.panels) {
    t.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the 24-column grid`);
    if (p.type === "row") continue;
    t.same(p.datasource, { type: "prometheus", uid: DS_VAR }, `${p.title} uses the variable`);
    t.ok(p.targets?.length, `${p.title} has queries`);
    for (const target of p.targets ?? []) t.equal(target.datasource?.uid, DS_VAR);
  }
});

t.test("every unibus_* metric it queries exists, with the right type, and every metric is on it", async (t) => {
  const metrics = await new BusMetrics().registry.getMetricsAsJSON();
  const types = new Map(metrics.map((m) => [m.name, String(m.type)]));
  const referenced = new Set<string>();
  for (const p of dashboard.panels) {
    for (const target of p.targets ?? []) {
      for (const [name] of target.expr.matchAll(/\bunibus_[a-z0-9_]+/g)) {
        if (types.has(name)) {
          referenced.add(name);
          continue;
        }
        const base = name.replace(HISTOGRAM_SUFFIX, "");
        t.ok(
          base !== name && types.get(base) === "histogram",
          `${name} (panel "${p.title}") is a metric of lib/metrics, or a series of one of its histograms`,
        );
        referenced.add(base);
      }
      if (/histogram_quantile/.test(target.expr)) t.match(target.expr, /_bucket\{/, "quantiles read _bucket series");
    }
  }
  t.same([...referenced].sort(), [...types.keys()].sort(), "every metric has a panel");
});
