import path from "node:path";
import type { Command } from "commander";
import { createBackup } from "../../ops/backup.ts";
import { restoreBackup } from "../../ops/restore.ts";
import { packageVersion } from "../../version.ts";
import { printJson } from "../output.ts";
import { configOption, resolveCommandConfig } from "../settings.ts";

const progress = (line: string) => void process.stderr.write(`${line}\n`);

export function backupCommand(program: Command): void {
  const backup = program
    .command("backup")
    .description(
      "a consistent copy of a bus, taken while it runs: store, CA and service keys, room history, blobs (0600, with a manifest)",
    )
    .argument("<dir>", "a new directory to write the backup into")
    .option("-d, --data-dir <dir>", "the bus' data dir (default: as `unibus up` resolves it)");
  configOption(backup)
    .option("--json", "print the manifest as one JSON object")
    .action(async (dir: string, opts: { json?: boolean }, cmd: Command) => {
      const dataDir = path.resolve(resolveCommandConfig(cmd).config.dataDir);
      const manifest = await createBackup({ dataDir, out: dir, unibusVersion: packageVersion(), onProgress: progress });
      if (opts.json) return printJson({ dir: path.resolve(dir), ...manifest });
      const c = manifest.counts;
      process.stdout.write(
        `backup of ${dataDir} written to ${path.resolve(dir)}: ${c.users} users, ${c.rooms} rooms, ${c.messages} messages in ${c.streams} room histories, ${c.blobs} blobs\n`,
      );
    });
}

export function restoreCommand(program: Command): void {
  program
    .command("restore")
    .description(
      "restore a backup into a new data dir, after checking it against its manifest (a KV cluster's: its keys first, then its state into the cluster started on them)",
    )
    .argument("<backup>", "the directory `unibus backup` wrote")
    .requiredOption(
      "-d, --data-dir <dir>",
      "the new data dir (must not exist, or be empty); for a KV backup's second step, the data dir the restored cluster runs on",
    )
    .option("--json", "print the restored manifest as one JSON object")
    .action(async (backup: string, opts: { dataDir: string; json?: boolean }) => {
      const manifest = await restoreBackup({ backup, dataDir: opts.dataDir, onProgress: progress });
      if (opts.json) return printJson({ dataDir: path.resolve(opts.dataDir), ...manifest });
      const c = manifest.counts;
      if (manifest.next) {
        process.stdout.write(`the CA and service keys are in ${path.resolve(opts.dataDir)}; ${manifest.next}\n`);
        return;
      }
      process.stdout.write(
        `restored ${c.users} users, ${c.rooms} rooms, ${c.messages} messages and ${c.blobs} blobs into ${path.resolve(opts.dataDir)}\n`,
      );
    });
}
