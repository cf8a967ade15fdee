import path from "node:path";
import type { Command } from "commander";
import { startCluster, type UnibusCluster } from "../../bus/cluster.ts"; // cluster
import { startUnibus, type Unibus } from "../../bus/unibus.ts";
import { describeConfig } from "../../config/index.ts";
import { createLogger } from "../../log/index.ts";
import { removeRunInfo, runningPid, writeRunInfo } from "../../ops/run-file.ts";
import { chooseStoreBackend } from "../../store/index.ts";
import { CliError, printJson } from "../output.ts";
import { configOption, resolveCommandConfig, settingOptions } from "../settings.ts";

interface UpOptions {
  json?: boolean;
  printConfig?: boolean;
}

export function upCommand(program: Command): void {
  const up = program
    .command("up")
    .description("start a bus: nats-server with TLS, the auth callout and the control plane");
  configOption(settingOptions(up))
    .option("--print-config", "print the effective configuration (and where each value came from), then exit")
    .option("--json", "print one JSON line when ready; logs as JSON on stderr")
    .action(async (opts: UpOptions, cmd: Command) => {
      const resolved = resolveCommandConfig(cmd);
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
        format: opts.json ? "json" : cfg.logFormat,
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
      if (cfg.cluster !== undefined) {
        if (cfg.routes.length > 0 || cfg.serverName !== undefined || cfg.clusterAdvertise !== undefined) {
          throw new CliError(
            "--cluster starts every node on this machine; --route, --server-name and --cluster-advertise are for one node of a cluster of machines (see docs/clustering.md)",
          );
        }
        cluster = await startCluster({
          nodes: cfg.cluster,
          dataDir,
          host: cfg.host,
          hostnames: cfg.hostnames,
          ports: {
            nats: cfg.natsPort,
            control: cfg.controlPort,
            monitoring: cfg.monitorPort,
            cluster: cfg.clusterPort,
          },
          ...(cfg.clusterName !== undefined ? { name: cfg.clusterName } : {}),
          ...(cfg.replicas !== undefined ? { replicas: cfg.replicas } : {}),
          store: chooseStoreBackend(cfg.store, true),
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
        cfg.routes.length > 0 || cfg.clusterName !== undefined
          ? {
              cluster: {
                name: cfg.clusterName ?? "unibus",
                port: cfg.clusterPort,
                routes: cfg.routes,
                ...(cfg.clusterAdvertise !== undefined ? { advertise: cfg.clusterAdvertise } : {}),
              },
              ...(cfg.replicas !== undefined ? { replicas: cfg.replicas } : {}),
            }
          : {};
      // ---- end cluster ----
      const store = chooseStoreBackend(cfg.store, "cluster" in member);
      bus = await startUnibus({
        ...member, // cluster
        store,
        ...(cfg.serverName !== undefined ? { serverName: cfg.serverName } : {}),
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

/** Two buses on one data dir would fight over the store and the ports. */
async function refuseIfRunning(dataDir: string): Promise<void> {
  const pid = await runningPid(dataDir);
  if (pid === undefined) return;
  throw new CliError(`a bus is already running on ${dataDir} (pid ${pid}); stop it first or use another --data-dir`);
}
