import path from "node:path";
import type { Command } from "commander";
import { startCluster, type UnibusCluster } from "../../bus/cluster.ts"; // cluster
import { startUnibus, type Unibus } from "../../bus/unibus.ts";
import { describeConfig, resolveConfig, SETTINGS } from "../../config/index.ts";
import { createLogger } from "../../log/index.ts";
import { removeRunInfo, runningPid, writeRunInfo } from "../../ops/run-file.ts";
import { CliError, collect, printJson } from "../output.ts";

interface UpOptions {
  json?: boolean;
  printConfig?: boolean;
  config?: string;
  // ---- cluster ----
  cluster?: string;
  clusterPort?: string;
  clusterName?: string;
  serverName?: string;
  route?: string[];
  clusterAdvertise?: string;
  replicas?: string;
  // ---- end cluster ----
}

export function upCommand(program: Command): void {
  program
    .command("up")
    .description("start a bus: nats-server with TLS, the auth callout and the control plane")
    .option(
      "-d, --data-dir <dir>",
      `where the CA, keys and store live, kept between runs (default ${SETTINGS.dataDir.default})`,
    )
    .option(
      "--host <addr>",
      "bind address; anything but loopback requires TLS (always on) and encrypted rooms (default 127.0.0.1)",
    )
    .option("--nats-port <port>", "NATS client port, -1 for a random one (default 4222)")
    .option("--control-port <port>", "control-plane HTTPS port, 0 for a random one (default 8470)")
    .option("--monitor-port <port>", "nats-server monitoring port, loopback only, -1 for random (default 8222)")
    .option("--hostname <name>", "extra host name or address for the server certificate (repeatable)", collect)
    .option("--store <backend>", "sqlite, kv or auto (default auto: sqlite alone, kv in a cluster)")
    .option("--log-level <level>", "trace, debug, info, warn, error (default info)")
    .option("--log-format <format>", "json, pretty or auto (default auto: pretty on a terminal)")
    .option("--config <file>", "read settings from this JSON file instead of ./unibus.config.json")
    .option("--print-config", "print the effective configuration (and where each value came from), then exit")
    .option("--json", "print one JSON line when ready; logs as JSON on stderr")
    // ---- cluster ----
    .option("--cluster <n>", "start n nodes on this machine as one cluster; node i listens on each port + i")
    .option("--cluster-port <port>", "first route port, -1 for random (default 6222)")
    .option("--cluster-name <name>", "cluster name, the same on every node (default unibus)")
    .option("--server-name <name>", "this node's unique name in a cluster of machines (default unibus-1)")
    .option(
      "--route <url>",
      "nats-route://host:port of every node, this one included; makes this node a cluster member (repeatable)",
      collect,
    )
    .option("--cluster-advertise <host:port>", "where the other nodes reach this one's route port")
    .option("--replicas <n>", "JetStream replicas of room streams (default: min(3, nodes))")
    // ---- end cluster ----
    .action(async (opts: UpOptions, cmd: Command) => {
      const flags: Record<string, unknown> = {};
      for (const key of Object.keys(SETTINGS)) {
        const option = key === "hostnames" ? "hostname" : key;
        if (cmd.getOptionValueSource(option) === "cli") flags[key] = cmd.getOptionValue(option);
      }
      const resolved = resolveConfig({ flags, ...(opts.config ? { configFile: opts.config } : {}) });
      if (opts.printConfig) {
        printJson({ ...(resolved.file ? { file: resolved.file } : {}), settings: describeConfig(resolved) });
        return;
      }
      const cfg = resolved.config;
      // Text mode: a failed start is one line (the error names the cause), so logs stay
      // quiet until the bus is ready; JSON mode is for machines and logs everything.
      const level = opts.json || cfg.logLevel !== "info" ? cfg.logLevel : "warn";
      const logger = createLogger({
        level: opts.json ? level : "silent",
        format: opts.json ? "json" : (cfg.logFormat as "json" | "pretty" | "auto"),
      });
      const dataDir = path.resolve(cfg.dataDir);
      await refuseIfRunning(dataDir);
      let bus: Unibus | undefined;
      let cluster: UnibusCluster | undefined; // cluster
      let stopping = false;
      const stop = async (signal: string) => {
        // A signal can arrive twice (a process-group kill plus the launcher forwarding
        // it); stopping is bounded by the children's stop timeouts, so just carry on.
        if (stopping) return;
        stopping = true;
        if (!opts.json) process.stderr.write(`\nunibus: ${signal} received, stopping…\n`);
        await bus?.stop();
        await cluster?.stop(); // cluster
        await removeRunInfo(dataDir);
        process.exit(0);
      };
      process.on("SIGINT", () => void stop("SIGINT"));
      process.on("SIGTERM", () => void stop("SIGTERM"));
      // ---- cluster ----
      if (opts.cluster !== undefined) {
        if (opts.route || opts.serverName || opts.clusterAdvertise) {
          throw new CliError(
            "--cluster starts every node on this machine; --route, --server-name and --cluster-advertise are for one node of a cluster of machines (see docs/clustering.md)",
          );
        }
        cluster = await startCluster({
          nodes: intOption(opts.cluster, "--cluster"),
          dataDir,
          host: cfg.host,
          hostnames: cfg.hostnames,
          ports: {
            nats: cfg.natsPort,
            control: cfg.controlPort,
            monitoring: cfg.monitorPort,
            cluster: opts.clusterPort === undefined ? 6222 : intOption(opts.clusterPort, "--cluster-port"),
          },
          ...(opts.clusterName ? { name: opts.clusterName } : {}),
          ...(opts.replicas ? { replicas: intOption(opts.replicas, "--replicas") } : {}),
          ...(cfg.store !== "auto" ? { store: cfg.store as "sqlite" | "kv" } : {}),
          logger,
        });
        const ready = {
          event: "ready",
          natsUrls: cluster.natsUrls,
          controlUrls: cluster.controlUrls,
          caFile: cluster.caFile,
          dataDir: cluster.dataDir,
          store: cluster.store,
        };
        await writeRunInfo(dataDir, cluster);
        logger.level = level;
        if (opts.json) return printJson(ready);
        const lines = [`unibus is up: a cluster of ${cluster.nodes.length} nodes (${cluster.name}).`];
        cluster.nodes.forEach((n, i) => {
          lines.push(`  ${n.serverName}: NATS ${cluster?.natsUrls[i]}  control plane ${n.controlUrl}`);
        });
        lines.push(`  CA file:  ${cluster.caFile}   (clients trust this CA)`, `  data dir: ${cluster.dataDir}`);
        lines.push("", "Clients: pass every NATS URL so they fail over. Press Ctrl-C to stop.");
        process.stdout.write(`${lines.join("\n")}\n`);
        return;
      }
      const member =
        opts.route !== undefined || opts.clusterName !== undefined
          ? {
              cluster: {
                name: opts.clusterName ?? "unibus",
                port: opts.clusterPort === undefined ? 6222 : intOption(opts.clusterPort, "--cluster-port"),
                routes: opts.route ?? [],
                ...(opts.clusterAdvertise ? { advertise: opts.clusterAdvertise } : {}),
              },
              ...(opts.replicas ? { replicas: intOption(opts.replicas, "--replicas") } : {}),
            }
          : {};
      // ---- end cluster ----
      const store = cfg.store === "auto" ? ("cluster" in member ? "kv" : "sqlite") : (cfg.store as "sqlite" | "kv");
      bus = await startUnibus({
        ...member, // cluster
        store,
        ...(opts.serverName ? { serverName: opts.serverName } : {}), // cluster
        dataDir,
        host: cfg.host,
        hostnames: cfg.hostnames,
        ports: { nats: cfg.natsPort, control: cfg.controlPort, monitoring: cfg.monitorPort },
        logger,
      });
      const ready = {
        event: "ready",
        natsUrls: [bus.natsUrl],
        controlUrls: [bus.controlUrl],
        caFile: bus.caFile,
        dataDir: bus.dataDir,
        store,
      };
      await writeRunInfo(dataDir, bus);
      logger.level = level;
      if (opts.json) return printJson(ready);
      // A cluster member's KV store may still wait for its peers: no hint then, rather than a wrong one.
      const hasAdmin = await bus.store.hasAdmin().catch(() => undefined);
      const rel = path.relative(process.cwd(), dataDir) || ".";
      const lines = [
        "unibus is up.",
        `  NATS:          ${bus.natsUrl}`,
        `  control plane: ${bus.controlUrl}`,
        `  CA file:       ${bus.caFile}   (clients trust this CA)`,
        `  data dir:      ${bus.dataDir}`,
      ];
      if (hasAdmin === false) {
        lines.push(
          "",
          "No admin yet. Create your identity and add it as the first admin:",
          "  npx unibus identity new --out me.json",
          `  npx unibus user add <signing key printed above> --handle you --role admin --data-dir ${rel}${store === "kv" ? " --store kv" : ""}`,
        );
      }
      lines.push("", "Press Ctrl-C to stop.");
      process.stdout.write(`${lines.join("\n")}\n`);
    });
}

// cluster
function intOption(value: string, flag: string): number {
  const n = Number(value);
  if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(n))
    throw new CliError(`${flag} must be a whole number; got ${value}`);
  return n;
}

async function refuseIfRunning(dataDir: string): Promise<void> {
  const pid = await runningPid(dataDir);
  if (pid === undefined) return;
  throw new CliError(`a bus is already running on ${dataDir} (pid ${pid}); stop it first or use another --data-dir`);
}
