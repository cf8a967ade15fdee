// `npm run bench`: every benchmark, one after another (they share two cores), then one
// report of every figure they returned: bench/results/latest.md.
// `npm run bench -- start` runs only the named ones and replaces only their parts of the
// report: the others keep the figures (and the facts) of the run that measured them.
import path from "node:path";
import {
  type BenchResult,
  mergeParts,
  type ReportPart,
  readParts,
  reportJsonPath,
  runInfo,
  sectionsOf,
  writeReport,
} from "./report.ts";

const all: Record<string, () => Promise<{ run: () => Promise<BenchResult> }>> = {
  start: () => import("./start.ts"),
  connect: () => import("./connect.ts"),
  control: () => import("./control.ts"),
  messaging: () => import("./messaging.ts"),
  ack: () => import("./ack.ts"),
  hotpath: () => import("./hotpath.ts"),
  acl: () => import("./acl.ts"),
  cluster: () => import("./cluster.ts"),
  store: () => import("./store.ts"),
  kvscale: () => import("./kvscale.ts"),
  failover: () => import("./failover.ts"),
  heal: () => import("./heal.ts"),
  abuse: () => import("./abuse.ts"),
  blobs: () => import("./blobs.ts"),
  tls: () => import("./tls.ts"),
  membership: () => import("./membership.ts"),
  browser: () => import("./browser.ts"),
  console: () => import("./console.ts"),
  streams: () => import("./streams.ts"),
};
const wanted = process.argv.slice(2).filter((a) => !a.startsWith("-"));
for (const name of wanted) {
  if (!all[name]) {
    console.error(`unknown benchmark ${name}; choose from ${Object.keys(all).join(", ")}`);
    process.exit(2);
  }
}
const order = Object.keys(all);
const names = wanted.length ? wanted : order;
const file = path.resolve("bench", "results", "latest.md");
// A full run starts the report over; a partial one keeps the parts it did not measure.
let parts = wanted.length ? await readParts(reportJsonPath(file)) : [];
let failed = 0;
for (const name of names) {
  const info = await runInfo();
  let part: ReportPart;
  try {
    part = { bench: name, info, sections: sectionsOf([await (await all[name]!()).run()]) };
  } catch (err) {
    // One broken bench must not cost the figures of the others: the report says what failed.
    failed++;
    console.error(`bench ${name} failed: ${(err as Error).stack ?? err}`);
    part = {
      bench: name,
      info,
      sections: [{ title: `${name}: failed`, rows: [], notes: [`failed: ${(err as Error).message}`] }],
    };
  }
  // Written after every bench: a run stopped half-way keeps what it measured.
  parts = mergeParts(parts, [part], order);
  await writeReport(file, parts, order);
}
console.log(`\nreport -> ${path.relative(process.cwd(), file)}`);
if (failed) process.exitCode = 1;
