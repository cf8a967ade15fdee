// Publish → receive in a browser (Debian's chromium, headless) beside Node, in one run
// on one bus: a cleartext and an encrypted room, 256-byte messages, one client
// publishing to its own subscription (the browser over wss, Node over TLS). Ratios are
// browser / Node, measured here, now.
import crypto from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Page } from "playwright-core";
import { startUnibus } from "../lib/bus/unibus.ts";
import { connect } from "../lib/client/connect.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import { buildBrowser } from "../scripts/build-browser.ts";
import { launchBrowser, openPage, servePages } from "../test/helpers/browser.ts";
import { presentedCert } from "../test/helpers/browser-client.ts";
import type { BenchSection } from "./report.ts";
import { fmt } from "./stats.ts";

const N = Number(process.env.BENCH_BROWSER_MESSAGES ?? 5_000);
const SIZE = 256;

/** Node: one client publishes N frames to a room it subscribes to; messages per second. */
async function nodeRate(room: import("../lib/client/room.ts").Room, flush: () => Promise<void>): Promise<number> {
  let got = 0;
  const sub = room.subscribe({ callback: () => void got++ });
  await flush();
  const payload = crypto.randomBytes(SIZE);
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    await room.publish(payload);
    if (i % 1000 === 999) await flush();
  }
  await flush();
  while (got < N) await new Promise((r) => setImmediate(r));
  const rate = N / ((performance.now() - t0) / 1000);
  sub.unsubscribe();
  return rate;
}

/** The same in the page, with the browser build. */
function browserRate(page: Page, roomId: string): Promise<number> {
  return page.evaluate(
    async ({ roomId, n, size }) => {
      const g = globalThis as unknown as { client: import("../lib/browser/index.ts").BrowserClient };
      const room = await g.client.openRoom(roomId);
      let got = 0;
      const sub = room.subscribe({ callback: () => void got++ });
      await g.client.nc.flush();
      const payload = crypto.getRandomValues(new Uint8Array(size));
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        await room.publish(payload);
        if (i % 1000 === 999) await g.client.nc.flush();
      }
      await g.client.nc.flush();
      while (got < n) await new Promise((r) => setTimeout(r, 1));
      const rate = n / ((performance.now() - t0) / 1000);
      sub.unsubscribe();
      return rate;
    },
    { roomId, n: N, size: SIZE },
  );
}

export async function run(): Promise<BenchSection> {
  const downs: (() => unknown)[] = [];
  const t = { teardown: (f: () => unknown) => void downs.push(f) };
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-browser-"));
  try {
    const bundle = await fs.readFile(await buildBrowser(path.join(dir, "unibus.js")), "utf8");
    const page0 = `<!doctype html><title>bench</title><script type="module">import * as u from "/unibus.js"; globalThis.unibus = u;</script>`;
    const origin = await servePages(t, {
      "/": { type: "text/html", body: page0 },
      "/unibus.js": { type: "text/javascript", body: bundle },
    });
    const bus = await startUnibus({ corsOrigins: [origin] });
    downs.push(() => bus.stop());
    const node = createIdentity();
    const web = createIdentity();
    await bus.addUser(node.signPub, { handle: "node", kexPub: node.kexPub });
    await bus.addUser(web.signPub, { handle: "web", kexPub: web.kexPub });
    const c = await connect({ natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, identity: node });
    downs.push(() => c.close());
    const browser = await launchBrowser(t, { trust: [await presentedCert(bus.controlUrl, bus.caPem)] });
    const { page } = await openPage(t, browser);
    await page.goto(origin);
    await page.waitForFunction(() => (globalThis as { unibus?: unknown }).unibus !== undefined);
    await page.evaluate(
      async ({ file, wsUrl, controlUrl }) => {
        const u = (globalThis as unknown as { unibus: typeof import("../lib/browser/index.ts") }).unibus;
        const id = await u.importIdentity(file);
        (globalThis as unknown as { client: unknown }).client = await u.connect({ wsUrl, controlUrl, identity: id });
      },
      { file: `${JSON.stringify(web.toFile(), null, 2)}\n`, wsUrl: bus.wsUrl, controlUrl: bus.controlUrl },
    );
    const rows: BenchSection["rows"] = [];
    for (const encrypt of [false, true]) {
      const kind = encrypt ? "encrypted" : "cleartext";
      const nodeRoom = await c.createRoom({ encrypt });
      const nodeMsgs = await nodeRate(nodeRoom, () => c.nc.flush());
      const webRoom = await c.createRoom({ encrypt });
      await webRoom.addMember(web.signPub);
      const webMsgs = await browserRate(page, webRoom.id);
      const ratio = webMsgs / nodeMsgs;
      rows.push({ name: `${kind} room, Node (TLS)`, value: Math.round(nodeMsgs), unit: "msg/s" });
      rows.push({
        name: `${kind} room, browser (wss)`,
        value: Math.round(webMsgs),
        unit: "msg/s",
        baseline: `${kind} room, Node (TLS)`,
        ratio,
      });
      console.log(
        `browser ${kind}: ${fmt(webMsgs, 0)} msg/s in chromium vs ${fmt(nodeMsgs, 0)} msg/s in Node (${fmt(ratio)}x), ${N} x ${SIZE} B`,
      );
    }
    return {
      title: "Browser publish → receive (chromium, wss) beside Node (TLS)",
      rows,
      notes: [`${N} messages of ${SIZE} B, one client publishing to its own subscription, one bus, same run`],
    };
  } finally {
    for (const d of downs.reverse()) await d();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
