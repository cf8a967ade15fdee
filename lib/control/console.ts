/**
 * The admin console: a handful of static files (the repository's `console/` folder)
 * served under `/console/`. Read once at start into memory and served by exact name,
 * so no request path ever reaches the filesystem. Every answer carries a strict
 * Content-Security-Policy: scripts and styles from this origin only, no inline code,
 * no third party, no framing, no plugins, Trusted Types for DOM sinks; and the page
 * talks only to this control plane (`connect-src 'self'`). The console signs its
 * requests in the page with a key it cannot export; the server serves files only.
 */
import fs from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { HttpError } from "./http-error.ts";

export const CONSOLE_PATH = "/console/";

export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "object-src 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join("; ");

/** Headers on every console answer (and its redirects): the page's whole security posture. */
export const CONSOLE_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": CONSOLE_CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=(), clipboard-read=()",
  // Files change with the package; revalidating is cheap and never shows a stale page.
  "cache-control": "no-cache",
};

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

interface Asset {
  type: string;
  body: Buffer;
}

/** The console's files by their name under /console/, read once; `dir` defaults to the package's `console/`. */
export function loadConsoleAssets(dir = new URL("../../console/", import.meta.url)): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of fs.readdirSync(dir)) {
    const type = TYPES[name.slice(name.lastIndexOf("."))];
    if (type) assets.set(name, { type, body: fs.readFileSync(new URL(name, dir)) });
  }
  if (!assets.has("index.html")) throw new Error(`the console's files are missing (no index.html in ${dir})`);
  return assets;
}

/**
 * Answers a request for `/console` or anything under `/console/`; false for any other
 * path. GET and HEAD only; an unknown file is a 404 like any other path.
 */
export function serveConsole(
  assets: ReadonlyMap<string, Asset>,
  req: IncomingMessage,
  res: ServerResponse,
  pathname: string,
): boolean {
  if (pathname !== "/console" && !pathname.startsWith(CONSOLE_PATH)) return false;
  if (req.method !== "GET" && req.method !== "HEAD") {
    throw new HttpError(405, `${req.method} is not allowed here; use GET`, { headers: { allow: "GET, HEAD" } });
  }
  if (pathname === "/console") {
    res.writeHead(308, { ...CONSOLE_HEADERS, location: CONSOLE_PATH, "content-length": 0 });
    res.end();
    return true;
  }
  const asset = assets.get(pathname.slice(CONSOLE_PATH.length) || "index.html");
  if (!asset) throw new HttpError(404, `no such console file: ${pathname.slice(0, 200)}`);
  res.writeHead(200, { ...CONSOLE_HEADERS, "content-type": asset.type, "content-length": asset.body.length });
  res.end(req.method === "HEAD" ? undefined : asset.body);
  return true;
}
