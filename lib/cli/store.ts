import fs from "node:fs";
import path from "node:path";
import { busLayout } from "../bus/layout.ts";
import { resolveConfig } from "../config/index.ts";
import { openStore, type Store } from "../store/index.ts";
import { CliError } from "./output.ts";

/** The data dir through the same chain as `up`: --data-dir, UNIBUS_DATA_DIR, the config file, the default. */
export function resolveDataDir(flag: string | undefined): string {
  return path.resolve(resolveConfig({ flags: { dataDir: flag } }).config.dataDir);
}

/**
 * Host-trusted access to the data dir's store, bus running or not (SQLite in WAL
 * mode lets the CLI and a running bus share the file). Without `create`, a data dir
 * with no store is an error rather than a silently created empty one.
 */
export async function withStore<T>(
  dataDir: string,
  fn: (store: Store) => Promise<T>,
  opts: { create?: boolean } = {},
): Promise<T> {
  const file = busLayout(dataDir, "").storeFile;
  if (!opts.create && !fs.existsSync(file)) {
    throw new CliError(
      `no bus store in ${dataDir}; run \`unibus up --data-dir ${dataDir}\` first or pass the right --data-dir`,
    );
  }
  const store = await openStore({ backend: "sqlite", file });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}
