#!/usr/bin/env node
// The `unibus` command. Plain JavaScript so it starts on any Node. An installed package
// runs its compiled JS (Node refuses to strip types under node_modules); a checkout runs
// the TypeScript sources, so a dist/ left by `npm pack` can never shadow newer sources.
// Where this Node cannot strip types or lacks node:sqlite, a checkout re-runs on the
// Node pinned in its devDependencies.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import module from "node:module";
import { constants, tmpdir } from "node:os";
import { dirname, join, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const compiled = join(root, "dist", "cli", "main.js");
const source = join(root, "lib", "cli", "main.ts");
const [major, minor] = process.versions.node.split(".").map(Number);
const hasSqlite = major > 22 || (major === 22 && minor >= 13);
const stripsTypes = Boolean(process.features?.typescript);
const checkout = !root.split(sep).includes("node_modules") && existsSync(source);
/** Signals a process manager or a terminal uses to stop a service. */
const STOP_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"];

// node:sqlite and type stripping announce themselves as experimental on every run;
// the CLI's users should not see that.
const emitWarning = process.emitWarning;
process.emitWarning = (warning, ...rest) => {
  const type = typeof rest[0] === "string" ? rest[0] : rest[0]?.type;
  if (type === "ExperimentalWarning") return;
  return emitWarning.call(process, warning, ...rest);
};

// The CLI loads a few hundred modules; caching their compiled code (in the OS temp
// dir, keyed by content) cuts every later start by more than half.
module.enableCompileCache?.();

if (checkout && stripsTypes && hasSqlite) {
  await import(pathToFileURL(source).href);
} else if (!checkout && existsSync(compiled) && hasSqlite) {
  await import(pathToFileURL(compiled).href);
} else if (checkout) {
  runOnPinnedNode();
} else if (!existsSync(compiled)) {
  console.error(`unibus: ${root} has neither dist/ nor lib/; it was packed without \`npm run build\`, reinstall it`);
  process.exit(1);
} else {
  console.error(`unibus: Node ${process.versions.node} is too old (need >= 22.13); install Node 22.13 or later`);
  process.exit(1);
}

function runOnPinnedNode() {
  const pinned = join(root, "node_modules", "node", "bin", "node");
  if (!existsSync(pinned)) {
    console.error(
      `unibus: Node ${process.versions.node} is too old (need >= 22.13 with type stripping); run \`npm install\` in ${root} to fetch the pinned Node, or install Node 24`,
    );
    process.exit(1);
  }
  const child = spawn(pinned, ["--disable-warning=ExperimentalWarning", source, ...process.argv.slice(2)], {
    stdio: "inherit",
    env: { NODE_COMPILE_CACHE: join(tmpdir(), "node-compile-cache"), ...process.env },
  });
  // A stop signal sent to this launcher alone (a process manager, `kill <pid>`) must
  // reach the CLI, or it would run on without a parent. A terminal's Ctrl-C reaches
  // both; `up` treats the second delivery as a no-op.
  for (const signal of STOP_SIGNALS) process.on(signal, () => child.kill(signal));
  child.on("exit", (code, signal) => process.exit(code ?? 128 + (constants.signals[signal] ?? 1)));
}
