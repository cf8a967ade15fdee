import { Writable } from "node:stream";
import { createLogger } from "../log/index.ts";
import { FLOOR_NATS_VERSION, installNatsServer, PINNED_NATS_VERSION } from "./binary.ts";

const USAGE = `usage: install-nats [--json]

Finds or downloads the default nats-server (${PINNED_NATS_VERSION}; the floor, ${FLOOR_NATS_VERSION}, as the last
resort) into the unibus cache and prints where it is.
  --json   print one JSON line {"path","version","source"} instead of a sentence`;

export interface InstallCommandIO {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

/**
 * The body of `scripts/install-nats.ts` (run by postinstall): human progress lines on
 * stderr, the result on stdout. Returns the exit code instead of exiting, so it can be
 * embedded (the CLI's `unibus install` may reuse it).
 */
export async function runInstallCommand(
  argv: readonly string[],
  io: InstallCommandIO = { stdout: process.stdout, stderr: process.stderr, env: process.env },
): Promise<number> {
  let json = false;
  for (const arg of argv) {
    if (arg === "--json") json = true;
    else if (arg === "--help" || arg === "-h") {
      io.stdout.write(`${USAGE}\n`);
      return 0;
    } else {
      io.stderr.write(`unibus: unknown argument ${arg}\n${USAGE}\n`);
      return 2;
    }
  }

  const logger = createLogger({ level: io.env.UNIBUS_LOG_LEVEL ?? "info", destination: humanLines(io.stderr) });
  try {
    const result = await installNatsServer({ logger, env: io.env });
    io.stdout.write(
      json ? `${JSON.stringify(result)}\n` : `nats-server ${result.version} (from ${result.source}): ${result.path}\n`,
    );
    return 0;
  } catch (err) {
    io.stderr.write(`unibus: ${(err as Error).message}\n`);
    return 1;
  }
}

/** pino's JSON lines, turned into `unibus: <message> (key=value …)` for a person at a terminal. */
function humanLines(out: NodeJS.WritableStream): Writable {
  const shown = ["version", "path", "source", "reason"];
  return new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      for (const line of chunk.toString().split("\n")) {
        if (!line.trim()) continue;
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          const details = shown
            .filter((k) => rec[k] !== undefined)
            .map((k) => `${k}=${String(rec[k])}`)
            .join(" ");
          out.write(`unibus: ${String(rec.msg ?? "")}${details ? ` (${details})` : ""}\n`);
        } catch {
          out.write(`${line}\n`);
        }
      }
      cb();
    },
  });
}
