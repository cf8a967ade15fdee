import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { nkeySigner } from "../auth/authenticator.ts";
import { loadServiceKeys } from "../auth/service-keys.ts";
import { busLayout } from "../bus/layout.ts";
import { resolveConfig, type UnibusConfig } from "../config/index.ts";
import { readRunInfo } from "../ops/run-file.ts";
import { chooseStoreBackend, type KvStore, openStore, type Role, type Store } from "../store/index.ts";
import { CA_CERT_FILE } from "../tls/ca.ts";
import { isLoopbackHost } from "../tls/hosts.ts";
import { clientCaFileSync } from "../tls/rotation.ts";
import { CliError, collect } from "./output.ts";
import { configOption } from "./settings.ts";

/** Where an admin command finds the store: the data dir's SQLite file, or a running cluster's KV buckets. */
export interface StoreTargetOptions {
  dataDir?: string;
  store?: string;
  server?: string[];
  ca?: string;
  config?: string;
}

/**
 * The settings through the same chain as `up`: --data-dir and --store, `UNIBUS_*`,
 * --config (or ./unibus.config.json), the defaults. `dataDir` comes back absolute.
 */
export function targetConfig(target: StoreTargetOptions): UnibusConfig {
  const { config } = resolveConfig({
    flags: { dataDir: target.dataDir, store: target.store },
    ...(target.config ? { configFile: target.config } : {}),
  });
  return { ...config, dataDir: path.resolve(config.dataDir) };
}

/** Adds the options every store-editing command shares. */
export function storeTargetOptions(cmd: Command): Command {
  cmd
    .option("-d, --data-dir <dir>", "the bus' data dir (default: as `unibus up` resolves it)")
    .option(
      "--store <backend>",
      "sqlite (the data dir's file) or kv (the running cluster's replicated store); default: what the bus in the data dir runs",
    )
    .option("--server <url>", "with --store kv: a NATS URL of the cluster, tls://host:4222 (repeatable)", collect)
    .option("--ca <file>", `with --store kv: the bus CA certificate (default: <data dir>/tls/${CA_CERT_FILE})`);
  return configOption(cmd);
}

/** `--role`, checked before anything is read or written. */
export function roleOf(value: string): Role {
  if (value !== "admin" && value !== "member") throw new CliError(`--role must be admin or member, not ${value}`);
  return value;
}

function isLoopbackUrl(url: string): boolean {
  try {
    return isLoopbackHost(new URL(url.includes("://") ? url : `tls://${url}`).hostname);
  } catch {
    throw new CliError(`--server ${url} is not a NATS URL; use tls://host:4222`);
  }
}

/**
 * Host-trusted access to a bus' store, running or not. SQLite: the data dir's file (WAL
 * mode lets the CLI and a running bus share it); without `create`, a data dir with no
 * store is an error rather than a silently created empty one. KV: the cluster's buckets,
 * reached as the bus itself (the data dir's service key, 0600) over TLS verified against
 * the bus CA — never without it; the buckets must exist (bound, never created). After a
 * write (`write`), KV prints each bucket's replication state.
 */
export async function withStore<T>(
  target: StoreTargetOptions,
  fn: (store: Store) => Promise<T>,
  opts: {
    create?: boolean;
    /** A write: on KV, the buckets' replication state is reported after `print`. */
    write?: boolean;
    /** Prints the outcome (before the replication report). */
    print?: (result: T) => void;
    /** Where the replication report goes; default stdout. */
    report?: NodeJS.WritableStream;
  } = {},
): Promise<T> {
  const { dataDir, store: choice } = targetConfig(target);
  const run = await readRunInfo(dataDir);
  // "auto" follows the bus running in the data dir; --server names a cluster's, so KV.
  const backend = chooseStoreBackend(choice, Boolean(target.server?.length) || run?.store === "kv");
  const store =
    backend === "kv"
      ? await openKv(target, dataDir, run?.natsUrls ?? [])
      : await openSqlite(dataDir, opts.create === true);
  try {
    const result = await fn(store);
    opts.print?.(result);
    if (opts.write && store.backend === "kv") await reportReplication(store, opts.report ?? process.stdout);
    return result;
  } finally {
    await store.close();
  }
}

async function openSqlite(dataDir: string, create: boolean): Promise<Store> {
  const file = busLayout(dataDir, "").storeFile;
  if (!create && !fs.existsSync(file)) {
    throw new CliError(
      `no bus store in ${dataDir}; run \`unibus up --data-dir ${dataDir}\` first or pass the right --data-dir (a cluster: --store kv)`,
    );
  }
  return openStore({ backend: "sqlite", file });
}

async function openKv(target: StoreTargetOptions, dataDir: string, running: string[]): Promise<Store> {
  const servers = target.server?.length ? target.server : running;
  if (servers.length === 0) {
    throw new CliError(
      `no running bus found in ${dataDir}; pass --server tls://<node>:4222 (and --ca) to reach a cluster's KV store`,
    );
  }
  const remote = servers.filter((s) => !isLoopbackUrl(s));
  const caFile = target.ca ?? clientCaFileSync(busLayout(dataDir, "").tlsDir);
  let caPem: string;
  try {
    caPem = fs.readFileSync(caFile, "utf8");
  } catch {
    // The bus' certificates come from its own CA: without it nothing can be verified, and
    // an unverified connection would hand the service key's signature to whoever answers.
    throw new CliError(
      remote.length
        ? `refusing to reach ${remote[0]} without the bus CA (${caFile} not found); pass --ca <file> with the CA certificate from a node's data dir`
        : `the bus CA ${caFile} was not found; pass --ca <file> or the right --data-dir`,
    );
  }
  const keys = await loadServiceKeys(dataDir);
  try {
    return await openStore({
      backend: "kv",
      servers: servers.map((s) => (s.includes("://") ? s : `tls://${s}`)),
      caPem,
      authenticator: nkeySigner(keys.app.publicKey, (d) => keys.app.sign(d)),
      bind: true,
      openTimeoutMs: 10_000,
    });
  } catch (err) {
    if (!untrustedCertificate(err)) throw err;
    throw new CliError(
      `the TLS certificate of ${servers.join(", ")} was not trusted: it is not signed by the CA in ${caFile}; pass --ca <file> with the bus CA (tls/${CA_CERT_FILE} of a node's data dir)`,
    );
  }
}

/** A TLS verification failure anywhere in the cause chain (Node's codes for an unknown or wrong CA). */
function untrustedCertificate(err: unknown): boolean {
  for (
    let e = err as { code?: unknown; cause?: unknown } | undefined, i = 0;
    e && i < 8;
    e = e.cause as typeof e, i++
  ) {
    const code = typeof e.code === "string" ? e.code : "";
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)) return true;
    if (
      /self[- ]signed certificate|unable to verify|certificate signature failure|unable to get (local )?issuer/i.test(
        String((e as Error).message),
      )
    )
      return true;
  }
  return false;
}

async function reportReplication(store: Store, out: NodeJS.WritableStream): Promise<void> {
  const state = await (store as KvStore).replicationState().catch((err: Error) => err);
  if (state instanceof Error) {
    out.write(`replication: unknown (${state.message})\n`);
    return;
  }
  const behind = state.filter((b) => b.current < b.replicas);
  const r = state[0]?.replicas ?? 0;
  const what = state.length === 1 ? "1 bucket" : `${state.length} buckets`;
  out.write(
    behind.length === 0
      ? `replication: ${what} at R${r}, every replica current\n`
      : `replication: ${what} at R${r}; behind: ${behind.map((b) => `${b.bucket} ${b.current}/${b.replicas} current`).join(", ")}\n`,
  );
}
