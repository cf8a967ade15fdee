// `npm run bench`: every benchmark, one after another (they share two cores).
// `npm run bench -- start` runs only the named ones.
const all: Record<string, () => Promise<{ run: () => Promise<unknown> }>> = {
  start: () => import("./start.ts"),
  connect: () => import("./connect.ts"),
  control: () => import("./control.ts"),
  messaging: () => import("./messaging.ts"),
  acl: () => import("./acl.ts"),
  cluster: () => import("./cluster.ts"),
  store: () => import("./store.ts"),
  kvscale: () => import("./kvscale.ts"),
  failover: () => import("./failover.ts"),
  heal: () => import("./heal.ts"),
  abuse: () => import("./abuse.ts"),
  blobs: () => import("./blobs.ts"),
};
const wanted = process.argv.slice(2).filter((a) => !a.startsWith("-"));
for (const name of wanted.length ? wanted : Object.keys(all)) {
  const load = all[name];
  if (!load) {
    console.error(`unknown benchmark ${name}; choose from ${Object.keys(all).join(", ")}`);
    process.exit(2);
  }
  await (await load()).run();
}
