// The client library in a real browser (Debian's chromium, headless): a page holding a
// non-extractable identity talks to a bus over wss and its control plane over fetch, and
// exchanges end-to-end encrypted messages and blobs with a Node member both ways.
import type { Page } from "playwright-core";
import t, { type Test } from "tap";
import type { Unibus } from "../../lib/bus/unibus.ts";
import type { Room } from "../../lib/client/room.ts";
import { encodeFrame } from "../../lib/crypto/frame.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { newRoomKey } from "../../lib/crypto/room-key.ts";
import { launchBrowser, pageWithBundle, presentedCert, servedBundle } from "../helpers/browser-client.ts";
import { client, member, testBus } from "../helpers/bus.ts";

type PageState = Record<string, unknown>;

/** A bus whose control plane lets the test page's origin in, and a browser that trusts its certificate. */
async function setup(t: Test) {
  const served = await servedBundle(t);
  const bus = await testBus(t, { corsOrigins: [served.url] });
  const cert = await presentedCert(bus.controlUrl, bus.caPem);
  const browser = await launchBrowser(t, { trust: [cert] });
  const { page, errors } = await pageWithBundle(t, browser, served);
  return { bus, page, errors, served };
}

/** Imports `identity`'s file into the page and connects it as `globalThis.state.c`. */
async function browserMember(page: Page, bus: Unibus, identity: Identity): Promise<void> {
  const file = `${JSON.stringify(identity.toFile(), null, 2)}\n`;
  await page.evaluate(
    async ({ file, wsUrl, controlUrl }) => {
      const u = (globalThis as unknown as { unibus: typeof import("../../lib/browser/index.ts") }).unibus;
      const state: PageState = {};
      (globalThis as unknown as { state: PageState }).state = state;
      const id = await u.importIdentity(file);
      state.id = id;
      state.c = await u.connect({ wsUrl, controlUrl, identity: id, timeoutMs: 5000 });
    },
    { file, wsUrl: bus.wsUrl, controlUrl: bus.controlUrl },
  );
}

/**
 * Adds the page's member to a room. The bus then re-authenticates the page's connection:
 * this resolves once it is back with the room's permissions, so the page can subscribe at
 * once (a flush during the reconnect would reject).
 */
async function addToPage(page: Page, room: Room, signPub: string): Promise<void> {
  await page.evaluate(() => {
    const g = globalThis as unknown as { state: PageState };
    const c = g.state.c as import("../../lib/browser/index.ts").BrowserClient;
    g.state.back = (async () => {
      for await (const s of c.nc.status()) if (s.type === "reconnect") return;
    })();
  });
  await room.addMember(signPub);
  await page.evaluate(() => (globalThis as unknown as { state: PageState }).state.back);
}

t.test("a browser member and a Node member exchange encrypted messages, history and blobs both ways", async (t) => {
  const { bus, page, errors } = await setup(t);
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  await browserMember(page, bus, bob);
  const a = await client(t, bus, alice);
  const room = await a.createRoom({ persist: true, signMsgs: true });
  await addToPage(page, room, bob.signPub);
  const got: string[] = [];
  const nodeSub = room.subscribe({ callback: (m) => void got.push(`${m.sender.slice(0, 8)}:${Buffer.from(m.data)}`) });

  // the browser opens the room (found through listMyRooms), subscribes, and publishes
  await page.evaluate(async (roomId) => {
    const g = globalThis as unknown as { state: PageState };
    const c = g.state.c as import("../../lib/browser/index.ts").BrowserClient;
    const mine = await c.listMyRooms();
    if (!mine.some((r) => r.id === roomId)) throw new Error("room not listed");
    const r = await c.openRoom(roomId);
    g.state.room = r;
    g.state.got = [];
    r.subscribe({
      callback: (m) => (g.state.got as string[]).push(`${m.verified}:${new TextDecoder().decode(m.data)}`),
    });
    await c.nc.flush();
    await r.publish("hello from the browser");
  }, room.id);
  await waitFor(() => got.length >= 1, "the Node member receives the browser's frame");
  t.same(got, [`${bob.signPub.slice(0, 8)}:hello from the browser`]);

  await room.publish("hello from node");
  await page.waitForFunction(() => ((globalThis as unknown as { state: PageState }).state.got as string[]).length >= 2);
  const inPage = await page.evaluate(() => (globalThis as unknown as { state: PageState }).state.got);
  t.same(inPage, ["true:hello from the browser", "true:hello from node"], "verified frames both ways");

  // history, read in the browser: both frames, in order
  const history = await page.evaluate(async () => {
    const r = (globalThis as unknown as { state: PageState }).state
      .room as import("../../lib/browser/index.ts").BrowserRoom;
    const out: string[] = [];
    for await (const m of r.history()) out.push(new TextDecoder().decode(m.data));
    return out;
  });
  t.same(history, ["hello from the browser", "hello from node"]);

  // an acknowledged publish from the browser resolves with the stream's sequence, which
  // the page checked by reading the frame back; Node reads it at that sequence
  const acked = await page.evaluate(async () => {
    const r = (globalThis as unknown as { state: PageState }).state
      .room as import("../../lib/browser/index.ts").BrowserRoom;
    return (await r.publish("stored for sure", { ack: true })).seq;
  });
  t.ok(Number.isSafeInteger(acked) && acked >= 3, `the browser's acked publish has a stream sequence (${acked})`);
  const atSeq: string[] = [];
  for await (const m of room.history({ fromSeq: acked })) atSeq.push(Buffer.from(m.data).toString());
  t.same(atSeq, ["stored for sure"], "the acknowledged message is in the history at that sequence");

  // a blob encrypted in the browser opens in Node, and one from Node opens in the browser
  const blob = await page.evaluate(async () => {
    const r = (globalThis as unknown as { state: PageState }).state
      .room as import("../../lib/browser/index.ts").BrowserRoom;
    const bytes = new Uint8Array(200_000).map((_, i) => i % 251);
    return (await r.putBlob(bytes, { mimetype: "application/octet-stream" })).id;
  });
  const fromBrowser = await room.getBlob(blob);
  const chunks: Buffer[] = [];
  for await (const c of fromBrowser.data) chunks.push(Buffer.from(c));
  const all = Buffer.concat(chunks);
  t.equal(all.length, 200_000);
  t.ok(
    all.every((b, i) => b === i % 251),
    "the browser's blob decrypts in Node",
  );
  const nodeBlob = await room.putBlob(Buffer.from("a file from node"), { mimetype: "text/plain" });
  const opened = await page.evaluate(async (id) => {
    const r = (globalThis as unknown as { state: PageState }).state
      .room as import("../../lib/browser/index.ts").BrowserRoom;
    const b = await r.getBlob(id);
    return { mimetype: b.mimetype, text: new TextDecoder().decode(b.data) };
  }, nodeBlob.id);
  t.same(opened, { mimetype: "text/plain", text: "a file from node" });
  nodeSub.unsubscribe();
  t.same(errors, []);
});

t.test("a revoked browser identity is cut off and refused again", async (t) => {
  const { bus, page } = await setup(t);
  const admin = await member(bus, "root", "admin");
  const mallory = await member(bus, "mallory");
  await browserMember(page, bus, mallory);
  const ended = page.evaluate(async () => {
    const c = (globalThis as unknown as { state: PageState }).state
      .c as import("../../lib/browser/index.ts").BrowserClient;
    const err = await c.closed();
    return { name: err?.name, code: (err as { code?: string } | undefined)?.code, closed: c.nc.isClosed() };
  });
  await client(t, bus, admin).then((a) => a.control.request("POST", `/v1/users/${mallory.signPub}/revoke`));
  t.same(await ended, { name: "AuthDeniedError", code: "AUTH_DENIED", closed: true });
  const again = await page.evaluate(
    async ({ wsUrl }) => {
      const g = globalThis as unknown as { state: PageState; unibus: typeof import("../../lib/browser/index.ts") };
      const id = g.state.id as import("../../lib/browser/index.ts").BrowserIdentity;
      return g.unibus.connect({ wsUrl, identity: id, timeoutMs: 5000 }).then(
        () => "admitted",
        (e: { code?: string }) => e.code,
      );
    },
    { wsUrl: bus.wsUrl },
  );
  t.equal(again, "AUTH_DENIED");
});

t.test("a wrong identity file is refused, and an identity not on the allowlist is denied", async (t) => {
  const { bus, page } = await setup(t);
  const stranger = createIdentity();
  const other = createIdentity();
  const swapped = { ...stranger.toFile(), kexPub: other.kexPub };
  const results = await page.evaluate(
    async ({ files, wsUrl }) => {
      const u = (globalThis as unknown as { unibus: typeof import("../../lib/browser/index.ts") }).unibus;
      const out: unknown[] = [];
      for (const f of files) {
        out.push(
          await u.importIdentity(f, "me.json").then(
            () => "imported",
            (e: { code?: string; message: string }) => `${e.code}: ${e.message}`,
          ),
        );
      }
      const id = await u.importIdentity(files[files.length - 1]!);
      out.push(
        await u.connect({ wsUrl, identity: id, timeoutMs: 5000 }).then(
          () => "admitted",
          (e: { code?: string }) => e.code,
        ),
      );
      out.push(
        await u.connect({ wsUrl: wsUrl.replace("wss:", "ws:"), identity: id }).then(
          () => "admitted",
          (e: { code?: string }) => e.code,
        ),
      );
      return out;
    },
    {
      files: ["not json", JSON.stringify(swapped), `${JSON.stringify(stranger.toFile(), null, 2)}\n`],
      wsUrl: bus.wsUrl,
    },
  );
  t.match(results[0], /^KEY_FILE: me\.json is corrupt \(not JSON\)/);
  t.match(results[1], /^KEY_FILE: me\.json is corrupt \(public keys do not match the secrets\)/);
  t.equal(results[2], "imported", "a well-formed file imports");
  t.equal(results[3], "AUTH_DENIED", "but its key is not on the allowlist: the bus denies it");
  t.equal(results[4], "INVALID_ARGUMENT", "plain ws:// is refused before any connection");
});

t.test("a browser that does not trust the bus certificate cannot connect, nor reach the control plane", async (t) => {
  const served = await servedBundle(t);
  const bus = await testBus(t, { corsOrigins: [served.url] });
  const alice = await member(bus, "alice");
  const browser = await launchBrowser(t); // no pin: the bus CA is unknown to it
  const { page } = await pageWithBundle(t, browser, served);
  const file = `${JSON.stringify(alice.toFile(), null, 2)}\n`;
  const got = await page.evaluate(
    async ({ file, wsUrl, controlUrl }) => {
      const u = (globalThis as unknown as { unibus: typeof import("../../lib/browser/index.ts") }).unibus;
      const id = await u.importIdentity(file);
      const nats = await u.connect({ wsUrl, identity: id, timeoutMs: 3000 }).then(
        () => "admitted",
        (e: { code?: string }) => e.code,
      );
      const control = await new u.BrowserControl(controlUrl, id).request("GET", `/v1/users/${id.signPub}`).then(
        () => "answered",
        (e: { code?: string }) => e.code,
      );
      return { nats, control };
    },
    { file, wsUrl: bus.wsUrl, controlUrl: bus.controlUrl },
  );
  t.same(got, { nats: "CONNECT", control: "CONTROL_UNREACHABLE" });
});

t.test("a frame that does not decrypt is dropped and counted in the browser; the next one arrives", async (t) => {
  const { bus, page } = await setup(t);
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  await browserMember(page, bus, bob);
  const a = await client(t, bus, alice);
  const room = await a.createRoom();
  await addToPage(page, room, bob.signPub);
  await page.evaluate(async (roomId) => {
    const g = globalThis as unknown as { state: PageState };
    const c = g.state.c as import("../../lib/browser/index.ts").BrowserClient;
    const r = await c.openRoom(roomId);
    g.state.room = r;
    g.state.got = [];
    g.state.drops = [];
    r.subscribe({
      callback: (m) => (g.state.got as string[]).push(new TextDecoder().decode(m.data)),
      onDrop: (d) => (g.state.drops as string[]).push(d.reason),
    });
    await c.nc.flush();
  }, room.id);
  // alice's frame at the right epoch, sealed with a key that is not the room's
  const forged = encodeFrame({
    roomId: room.id,
    epoch: room.epoch,
    sender: alice,
    plaintext: "forged",
    roomKey: newRoomKey(),
    sign: false,
  });
  a.nc.publish(room.subject, forged);
  a.nc.publish(room.subject, Buffer.from("not a frame"));
  await room.publish("genuine");
  await page.waitForFunction(() => ((globalThis as unknown as { state: PageState }).state.got as string[]).length >= 1);
  const state = await page.evaluate(() => {
    const s = (globalThis as unknown as { state: PageState }).state;
    return { got: s.got, drops: s.drops, dropped: (s.room as { dropped: Record<string, number> }).dropped };
  });
  t.same(state.got, ["genuine"]);
  t.same(state.drops, ["undecryptable", "unsupported-version"]);
  t.same(state.dropped, { undecryptable: 1, "unsupported-version": 1 });

  // this room keeps no history: an acknowledged publish is refused before anything is sent
  const refused = await page.evaluate(async () => {
    const r = (globalThis as unknown as { state: PageState }).state
      .room as import("../../lib/browser/index.ts").BrowserRoom;
    return r.publish("nowhere to store", { ack: true }).then(
      () => "resolved",
      (err: { code?: string; message?: string }) => `${err.code}: ${err.message}`,
    );
  });
  t.match(refused, /^INVALID_ARGUMENT: .*keeps no history/, "ack on a room without history is a typed error");
  await room.publish("after the refusal");
  await page.waitForFunction(() => ((globalThis as unknown as { state: PageState }).state.got as string[]).length >= 2);
  t.same(
    await page.evaluate(() => (globalThis as unknown as { state: PageState }).state.got),
    ["genuine", "after the refusal"],
    "nothing was sent by the refused publish",
  );
});

/** Polls `ok` (no timing claim: the bound only turns a hang into a named failure). */
async function waitFor(ok: () => boolean, what: string, ms = 15_000): Promise<void> {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
