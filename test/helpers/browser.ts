import { createHash, X509Certificate } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { type Browser, chromium, type Page } from "playwright-core";
import type { Teardown } from "./fs.ts";

/**
 * Debian's chromium, headless. A browser download at install time does not work on
 * the machines we test on, so the executable is the system's: UNIBUS_CHROMIUM names
 * another one. The flags keep it from reaching out to the network at start (a closed
 * network refuses those connections, many at a time).
 */
export const CHROMIUM_PATH = process.env.UNIBUS_CHROMIUM ?? "/usr/bin/chromium";

/**
 * `trust`: server certificates (PEM) the browser accepts although it does not know their
 * CA — a bus CA cannot be installed into a throwaway profile, so its certificates are
 * pinned by public key instead (chromium's --ignore-certificate-errors-spki-list, which
 * accepts exactly those keys and nothing else).
 */
export async function launchBrowser(t: Teardown, opts: { trust?: string[] } = {}): Promise<Browser> {
  const pins = (opts.trust ?? []).map(spkiPin);
  // Playwright gives every launch a fresh temporary profile of its own.
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...(pins.length ? [`--ignore-certificate-errors-spki-list=${pins.join(",")}`] : []),
    ],
  });
  t.teardown(() => browser.close());
  return browser;
}

/**
 * Chromium's way to trust one server certificate without touching the system's store:
 * the base64 SHA-256 of its public key. Only a server presenting that key is accepted in
 * place of a publicly trusted chain; every other certificate is checked as usual.
 */

/** A fresh page whose console errors and uncaught exceptions are collected for assertions. */
export async function openPage(t: Teardown, browser: Browser): Promise<{ page: Page; errors: string[] }> {
  const context = await browser.newContext({ ignoreHTTPSErrors: false });
  t.teardown(() => context.close());
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(err.message));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  return { page, errors };
}

/** Serves fixed documents on a random loopback port (a page to run code in; not the bus). */
export async function servePages(t: Teardown, pages: Record<string, { type: string; body: string }>): Promise<string> {
  const server = http.createServer((req, res) => {
    const pathname = new URL(req.url ?? "/", "http://x").pathname;
    const doc = pages[pathname];
    // The browser asks for a favicon on its own; a 404 would show up as a console error.
    if (!doc && pathname === "/favicon.ico") {
      res.writeHead(204).end();
      return;
    }
    if (!doc) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": doc.type }).end(doc.body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo: chromium's pin form. */
export function spkiPin(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}
