import { X509Certificate } from "node:crypto";
import tls from "node:tls";
import type { Browser, Page, Response } from "playwright-core";
import type { Test } from "tap";
import type { Unibus } from "../../lib/bus/unibus.ts";
import type { Identity } from "../../lib/crypto/identity.ts";
import { launchBrowser, openPage } from "./browser.ts";
import type { Teardown } from "./fs.ts";

/** The identity file's bytes, exactly as `saveIdentity` writes them. */
export function identityFileBytes(identity: Identity): Buffer {
  return Buffer.from(`${JSON.stringify(identity.toFile(), null, 2)}\n`);
}

/**
 * Chromium trusting this bus' control-plane certificate, as the bus' CA verified it
 * (chromium pins a key the server presents; the control plane does not send its CA).
 */
export async function consoleBrowser(t: Teardown, bus: Unibus): Promise<Browser> {
  return launchBrowser(t, { trust: [await serverCertificate(bus)] });
}

/** The certificate the control plane presents, fetched over a connection that verifies it against the bus CA. */
function serverCertificate(bus: Unibus): Promise<string> {
  const url = new URL(bus.controlUrl);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: url.hostname, port: Number(url.port), ca: bus.caPem }, () => {
      const der = socket.getPeerCertificate().raw;
      socket.end();
      resolve(new X509Certificate(der).toString());
    });
    socket.once("error", reject);
  });
}

/** A fresh page on the bus' console, its handlers in place, with every response it loaded. */
export async function openConsole(
  t: Test,
  browser: Browser,
  bus: Unibus,
): Promise<{ page: Page; errors: string[]; responses: Response[] }> {
  const opened = await openPage(t, browser);
  const responses: Response[] = [];
  opened.page.on("response", (r) => responses.push(r));
  await opened.page.goto(`${bus.controlUrl}/console/`);
  await opened.page.waitForSelector("html[data-ready=true]");
  return { ...opened, responses };
}

/**
 * Asserts that `selector` comes to show text matching `pattern` (the page updates it
 * asynchronously); fails with the text it shows instead when it does not within 15 s.
 */
export async function expectText(t: Test, page: Page, selector: string, pattern: RegExp, what?: string): Promise<void> {
  const node = page.locator(selector, { hasText: pattern });
  const shown = await node.waitFor({ timeout: 15_000 }).then(
    () => node.textContent(),
    () => page.locator(selector).textContent(),
  );
  t.match(shown, pattern, what ?? `${selector} says ${pattern}`);
}

/** Picks `file` in the console's identity input, as an admin would. */
export async function pickIdentity(page: Page, file: Buffer, name = "me.json"): Promise<void> {
  await page.setInputFiles("#identity-file", { name, mimeType: "application/json", buffer: file });
}

/** Loads an admin identity and waits for the console to show its users. */
export async function signIn(page: Page, identity: Identity): Promise<void> {
  await pickIdentity(page, identityFileBytes(identity));
  await page.waitForSelector(`#users-table tr[data-sign-pub="${identity.signPub}"]`);
  // Every panel's first load done: a request still in flight would otherwise meet whatever
  // the test does next (a revocation ends the session before the test's own click).
  await page.waitForSelector("html:not([data-busy])");
}
