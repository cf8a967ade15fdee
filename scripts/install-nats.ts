// Fetches nats-server into the unibus cache ahead of time; run by scripts/postinstall.js.
import { runInstallCommand } from "../lib/nats/binary-main.ts";

process.exitCode = await runInstallCommand(process.argv.slice(2));
