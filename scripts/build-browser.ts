// `npm run build` (after tsc): the browser build of the client library, one ES module
// with its dependencies inside (nats.js's websocket transport, @noble/ciphers), at
// dist/browser/unibus.js. platform "browser" makes any node: import a build error, so
// nothing of the Node library can slip into the page.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export async function buildBrowser(outfile = path.join(root, "dist", "browser", "unibus.js")): Promise<string> {
  await build({
    entryPoints: [path.join(root, "lib", "browser", "index.ts")],
    outfile,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    sourcemap: true,
    legalComments: "linked",
    logLevel: "warning",
  });
  return outfile;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`browser bundle: ${path.relative(root, await buildBrowser())}\n`);
}
