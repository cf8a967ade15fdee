import fs from "node:fs/promises";
import path from "node:path";
import tls from "node:tls";
import type { Browser, Page } from "playwright-core";
import type { Test } from "tap";
import { buildBrowser } from "../../scripts/build-browser.ts";
import { launchBrowser, openPage, servePages } from "./browser.ts";

let bundle: Promise<string> | undefined;

/** The browser build, made once per test process into a temp dir (what `npm run build` ships). */
export function browserBundle(dir: string): Promise<string> {
  bundle ??= buildBrowser(path.join(dir, "unibus.js")).then((file) => fs.readFile(file, "utf8"));
  return bundle;
}

/** The certificate a TLS server at `url` presents (trusting `ca`): what a browser is told to accept. */
export async function presentedCert(url: string, ca: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: hostname, port: Number(port), ca, servername: "localhost" }, () => {
      const cert = socket.getPeerX509Certificate();
      socket.end();
      if (cert) resolve(cert.toString());
      else reject(new Error("no certificate"));
    });
    socket.once("error", reject);
  });
}

/** A page at its own origin that has loaded the bundle as `window.unibus`. */
export async function pageWithBundle(
  t: Test,
  browser: Browser,
  origin: { url: string; bundle: string } | undefined,
): Promise<{ page: Page; errors: string[]; url: string }> {
  const url =
    origin?.url ??
    (await servePages(t, {
      "/": { type: "text/html", body: PAGE },
      "/unibus.js": { type: "text/javascript", body: origin?.bundle ?? (await browserBundle(t.testdir())) },
    }));
  const { page, errors } = await openPage(t, browser);
  await page.goto(url);
  await page.waitForFunction(() => (globalThis as { unibus?: unknown }).unibus !== undefined);
  return { page, errors, url };
}

/** Serves the test page and the bundle; the origin is known before the bus starts (its CORS list). */
export async function servedBundle(t: Test): Promise<{ url: string; bundle: string }> {
  const bundle = await browserBundle(t.testdir());
  const url = await servePages(t, {
    "/": { type: "text/html", body: PAGE },
    "/unibus.js": { type: "text/javascript", body: bundle },
  });
  return { url, bundle };
}

const PAGE = `<!doctype html><title>unibus test page</title>
<script type="module">import * as unibus from "/unibus.js"; globalThis.unibus = unibus;</script>`;

export { launchBrowser };
