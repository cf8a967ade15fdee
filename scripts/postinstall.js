// Fetches nats-server at `npm install` time so the first `unibus up` starts at once.
// Plain JavaScript on purpose: npm may run this with an old system Node (20), which can
// neither strip types nor know newer flags. It must never fail the install: every path
// ends with exit code 0, and `unibus up` retries the fetch later anyway.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const FAILED =
  "unibus: nats-server could not be fetched now; the first `unibus up` will retry, or run `npx unibus install`";
/** A hung mirror must not hang `npm install` forever. */
const TIMEOUT_MS = 10 * 60 * 1000;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function nodeVersion() {
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
  return { major, minor };
}

/** The repository pins Node 24 as a devDependency; a consumer's install has only the running Node. */
function chooseNode() {
  const pinned = path.join(root, "node_modules", ".bin", process.platform === "win32" ? "node.cmd" : "node");
  if (existsSync(pinned)) return { node: pinned, pinned: true };
  return { node: process.execPath, pinned: false };
}

/** Node refuses to strip types under node_modules, so an installed package runs its compiled JS. */
function chooseEntry() {
  const insideNodeModules = root.split(path.sep).includes("node_modules");
  const compiled = path.join(root, "dist", "nats", "binary-main.js");
  if (insideNodeModules && existsSync(compiled)) return { kind: "js", file: compiled };
  const source = path.join(root, "scripts", "install-nats.ts");
  if (existsSync(source)) return { kind: "ts", file: source };
  if (existsSync(compiled)) return { kind: "js", file: compiled };
  return undefined;
}

function buildArgs(entry, pinned) {
  const { major, minor } = nodeVersion();
  const args = [];
  // Known to the pinned Node 24; on the running Node only from 20.11 / 21.3.
  if (pinned || major > 21 || (major === 21 && minor >= 3) || (major === 20 && minor >= 11)) {
    args.push("--disable-warning=ExperimentalWarning");
  }
  if (entry.kind === "ts") {
    if (!pinned) {
      if (major < 22 || (major === 22 && minor < 6)) return undefined;
      // Type stripping is on by default only from 22.18 / 23.6.
      if ((major === 22 && minor < 18) || (major === 23 && minor < 6)) args.push("--experimental-strip-types");
    }
    args.push(entry.file);
  } else {
    const code =
      "const m = await import(process.argv[1]); process.exitCode = await m.runInstallCommand(process.argv.slice(2));";
    args.push("--input-type=module", "-e", code, pathToFileURL(entry.file).href);
  }
  return args;
}

function main() {
  if (process.env.UNIBUS_SKIP_NATS_INSTALL === "1") return Promise.resolve();
  const entry = chooseEntry();
  const { node, pinned } = chooseNode();
  const args = entry && buildArgs(entry, pinned);
  if (!args) {
    console.error(FAILED);
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok) => {
      if (done) return;
      done = true;
      if (!ok) console.error(FAILED);
      resolve();
    };
    try {
      const child = spawn(node, args, {
        cwd: root,
        stdio: ["ignore", "inherit", "inherit"],
        timeout: TIMEOUT_MS,
        killSignal: "SIGKILL",
      });
      child.on("error", () => finish(false));
      child.on("close", (code) => finish(code === 0));
    } catch {
      finish(false);
    }
  });
}

main()
  .catch(() => console.error(FAILED))
  .finally(() => {
    process.exitCode = 0;
  });
