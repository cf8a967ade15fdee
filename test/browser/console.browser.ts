// The admin console in a real chromium against a real bus: every flow end to end, the
// identity that never leaves the page, and the error paths an admin (or an attacker
// who got script into the page) would meet.
import crypto from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import type { Page, Request } from "playwright-core";
import t from "tap";
import { request } from "undici";
import { CONSOLE_CSP } from "../../lib/control/console.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { NotFoundError } from "../../lib/errors.ts";
import { loadOrCreateCa, pemFingerprint } from "../../lib/tls/index.ts";
import { openPage } from "../helpers/browser.ts";
import { api, member, testBus } from "../helpers/bus.ts";
import { runCli } from "../helpers/cli.ts";
import {
  consoleBrowser,
  expectText,
  identityFileBytes,
  openConsole,
  pickIdentity,
  signIn,
} from "../helpers/console.ts";
import { tempDir } from "../helpers/fs.ts";
import { trustingAgent } from "../helpers/http.ts";

const bus = await testBus(t);
const browser = await consoleBrowser(t, bus);
const admin = await member(bus, "root", "admin");
// Screenshots for the docs, when asked for: UNIBUS_CONSOLE_SCREENSHOTS=docs npm run test:browser
const SHOTS = process.env.UNIBUS_CONSOLE_SCREENSHOTS;

async function shoot(page: Page, name: string): Promise<void> {
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `console-${name}.png`), fullPage: true });
}

/** Every request the page sends, with its headers and body, to prove what never leaves it. */
function recordRequests(page: Page): Request[] {
  const seen: Request[] = [];
  page.on("request", (r) => seen.push(r));
  return seen;
}

/**
 * The page as the page-side callbacks see it: they run in chromium, and the tests'
 * tsconfig has no DOM library, so they go through this narrow view of it.
 */
interface PageNode {
  append(...nodes: PageNode[]): void;
  setAttribute(name: string, value: string): void;
  innerHTML: string;
}
interface PageView {
  document: {
    body: PageNode;
    createElement(tag: string): PageNode;
    createTextNode(text: string): PageNode;
    getElementById(id: string): PageNode | null;
    addEventListener(type: "securitypolicyviolation", fn: (e: { effectiveDirective: string }) => void): void;
  };
  getComputedStyle(node: PageNode): { color: string };
  pwned?: string;
  violations: string[];
}

function row(page: Page, table: string, attr: string, value: string) {
  return page.locator(`#${table} tr[${attr}="${value}"]`);
}

t.test(
  "the console is served with a strict CSP; injected inline script, style and third parties are blocked",
  async (t) => {
    const { page, errors, responses } = await openConsole(t, browser, bus);
    const byPath = (p: string) => responses.find((r) => new URL(r.url()).pathname === p)!;
    for (const asset of ["/console/app.js", "/console/signer.js", "/console/console.css"]) {
      t.equal(byPath(asset).headers()["content-security-policy"], CONSOLE_CSP, `${asset} carries the policy too`);
    }
    t.match(byPath("/console/app.js").headers()["content-type"], /^text\/javascript/);
    const doc = byPath("/console/");
    t.match(doc.headers(), {
      "content-security-policy": /default-src 'none'.*script-src 'self'.*frame-ancestors 'none'/,
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
      "referrer-policy": "no-referrer",
    });
    t.notMatch(CONSOLE_CSP, /unsafe|https?:|\*/, "no unsafe-inline, no other origin, no wildcard");
    // Script that got into the page at run time meets Trusted Types and connect-src.
    const outcome = await page.evaluate(async () => {
      const w = globalThis as unknown as PageView;
      const document = w.document;
      const violations: string[] = [];
      document.addEventListener("securitypolicyviolation", (e) => violations.push(e.effectiveDirective));
      const attempt = (fn: () => void) => {
        try {
          fn();
          return "allowed";
        } catch (err) {
          return (err as Error).name;
        }
      };
      const script = document.createElement("script");
      script.append(document.createTextNode("window.pwned = 'script'"));
      const appended = attempt(() => document.body.append(script));
      const handler = attempt(() => document.body.setAttribute("onclick", "window.pwned = 'handler'"));
      const html = attempt(() => {
        document.body.innerHTML = "<img src=x onerror=\"window.pwned = 'markup'\">";
      });
      const thirdParty = await fetch("https://example.com/").then(
        () => "reached",
        (err: Error) => err.name,
      );
      await new Promise((r) => setTimeout(r, 200)); // violation events are dispatched asynchronously
      return { pwned: w.pwned ?? null, appended, handler, html, thirdParty, violations };
    });
    t.equal(outcome.pwned, null, "no injected code ran");
    t.equal(outcome.handler, "TypeError", "Trusted Types refuse an inline handler");
    t.equal(outcome.html, "TypeError", "Trusted Types refuse markup strings");
    t.equal(outcome.thirdParty, "TypeError", "a fetch to another origin is refused");
    t.ok(outcome.violations.includes("require-trusted-types-for"), "the refusals are reported as CSP violations");
    t.ok(outcome.violations.includes("connect-src"), "so is the third-party fetch");
    t.ok(errors.length > 0, "the browser logged the refusals");
  },
);

t.test("markup injected into the served page cannot run script or style (script-src, style-src)", async (t) => {
  const { page, errors } = await openPage(t, browser);
  // What a stored or reflected injection would do: the real answer, its real headers,
  // with attacker markup in the body.
  const real = await request(`${bus.controlUrl}/console/`, { dispatcher: trustingAgent(t, bus.caPem) });
  const headers = Object.fromEntries(Object.entries(real.headers).map(([k, v]) => [k, String(v)]));
  delete headers["content-length"];
  const evil = [
    "<script>window.pwned = 'inline script'</script>",
    `<img id="evil" src="favicon.svg" onload="window.pwned = 'inline handler'">`,
    `<p id="styled" style="color: rgb(255, 0, 0)">styled</p>`,
    `<script src="https://example.com/evil.js"></script>`,
  ].join("");
  const body = (await real.body.text()).replace("</body>", `${evil}</body>`);
  await page.route(`${bus.controlUrl}/console/`, (route) => route.fulfill({ status: 200, headers, body }));
  await page.addInitScript(() => {
    const seen: string[] = [];
    const w = globalThis as unknown as PageView;
    w.violations = seen;
    w.document.addEventListener("securitypolicyviolation", (e) => seen.push(e.effectiveDirective));
  });
  await page.goto(`${bus.controlUrl}/console/`);
  await page.waitForSelector("html[data-ready=true]");
  await page.waitForFunction(() => (globalThis as unknown as PageView).violations.length >= 4);
  const outcome = await page.evaluate(() => {
    const w = globalThis as unknown as PageView;
    return {
      pwned: w.pwned ?? null,
      color: w.getComputedStyle(w.document.getElementById("styled")!).color,
      violations: w.violations,
    };
  });
  t.equal(outcome.pwned, null, "neither the inline script nor the inline handler ran");
  t.not(outcome.color, "rgb(255, 0, 0)", "the inline style was not applied");
  for (const directive of ["script-src-elem", "script-src-attr", "style-src-attr"]) {
    t.ok(outcome.violations.includes(directive), `a ${directive} violation was reported`);
  }
  t.ok(
    errors.some((e) => /Content Security Policy/.test(e)),
    "the browser says why it refused",
  );
  t.equal(await page.locator("#login").isVisible(), true, "the console itself still works");
});

t.test("a wrong identity file gets a clear error and no request", async (t) => {
  const { page } = await openConsole(t, browser, bus);
  const requests = recordRequests(page);
  await pickIdentity(page, Buffer.from("{ this is not json"));
  await expectText(t, page, "#login-error", /not a usable unibus identity file: not JSON/);
  const other = createIdentity().toFile();
  const mixed = { ...admin.toFile(), kexPub: other.kexPub };
  await pickIdentity(page, Buffer.from(JSON.stringify(mixed, null, 2)));
  await expectText(t, page, "#login-error", /public keys do not match the secrets/);
  await pickIdentity(page, Buffer.from(JSON.stringify({ ...admin.toFile(), version: 2 })));
  await expectText(t, page, "#login-error", /unsupported version 2/);
  t.same(
    requests.map((r) => r.url()).filter((u) => u.includes("/v1/")),
    [],
    "a refused file never reaches the control plane",
  );
  t.equal(await page.locator("#app").isHidden(), true);
});

t.test("an identity that is not on the bus, or not an admin, is told so", async (t) => {
  const { page } = await openConsole(t, browser, bus);
  await pickIdentity(page, identityFileBytes(createIdentity()));
  await expectText(t, page, "#login-error", /not allowed on this bus/);
  const plain = await member(bus, "plain");
  await pickIdentity(page, identityFileBytes(plain));
  await expectText(t, page, "#login-error", /not an admin of this bus/);
  t.equal(await page.locator("#app").isHidden(), true, "the console stays closed");
});

t.test("users: add, revoke and delete, signed in the page; the identity file never leaves it", async (t) => {
  const { page, errors } = await openConsole(t, browser, bus);
  page.on("dialog", (d) => void d.accept());
  const requests = recordRequests(page);
  await shoot(page, "login");
  await signIn(page, admin);
  const carol = createIdentity();
  await page.fill("#user-add [name=signPub]", carol.signPub);
  await page.fill("#user-add [name=handle]", "carol");
  await page.fill("#user-add [name=kexPub]", carol.kexPub);
  await page.click("#user-add button[type=submit]");
  await row(page, "users-table", "data-sign-pub", carol.signPub).waitFor();
  t.match(await bus.store.getUser(carol.signPub), {
    handle: "carol",
    role: "member",
    status: "active",
    kexPub: carol.kexPub,
  });

  await row(page, "users-table", "data-sign-pub", carol.signPub).locator("[data-action=revoke]").click();
  await page.locator(`#users-table tr[data-sign-pub="${carol.signPub}"][data-status=revoked]`).waitFor();
  t.equal((await bus.store.getUser(carol.signPub)).status, "revoked");
  await shoot(page, "users");

  await row(page, "users-table", "data-sign-pub", carol.signPub).locator("[data-action=delete]").click();
  await row(page, "users-table", "data-sign-pub", carol.signPub).waitFor({ state: "detached" });
  await t.rejects(bus.store.getUser(carol.signPub), NotFoundError, "deleted from the store");

  // A refusal is shown, and the console keeps going.
  await page.fill("#user-add [name=signPub]", admin.signPub);
  await page.fill("#user-add [name=handle]", "again");
  await page.click("#user-add button[type=submit]");
  await expectText(t, page, "#banner", /Refused: .*\(user_exists\)/);

  const file = identityFileBytes(admin).toString();
  const secrets = [admin.toFile().signSeed, admin.toFile().kexSecret];
  const sent = requests.map((r) => `${r.url()}\n${JSON.stringify(r.headers())}\n${r.postData() ?? ""}`).join("\n");
  t.ok(requests.length > 5, "the page did talk to the control plane");
  for (const s of secrets) t.notOk(sent.includes(s), "no request carries a secret of the identity file");
  t.notOk(sent.includes(file), "nor the file itself");
  const signed = requests.filter((r) => r.url().includes("/v1/"));
  t.ok(
    signed.every(
      (r) =>
        r.headers()["x-unibus-key"] === admin.signPub && /^[\w-]{86}$/.test(r.headers()["x-unibus-signature"] ?? ""),
    ),
    "every control-plane request is signed by the admin's key",
  );
  t.same(
    errors.filter((e) => !/409/.test(e)),
    [],
    "no page errors besides the refused add",
  );
});

t.test("invites: create with a copyable line that the real CLI registers with; cancel another", async (t) => {
  const { page } = await openConsole(t, browser, bus);
  page.on("dialog", (d) => void d.accept());
  await signIn(page, admin);
  await page.fill("#invite-create [name=handle]", "dora");
  await page.click("#invite-create button[type=submit]");
  await page.locator("#invite-created").waitFor();
  const line = await page.locator("#invite-line").inputValue();
  t.match(
    line,
    /^npx unibus register [0-9a-f]{64} --identity me\.json --control-url https:\/\/\S+ --ca ca\.pem --ca-fingerprint [0-9a-f]{64}$/,
  );
  t.ok(line.endsWith(pemFingerprint(bus.caPem)), "the line pins the bus' CA");
  await shoot(page, "invites");

  // The invitee runs the line as given, next to the CA the admin sent along.
  const dir = await tempDir(t);
  await fs.writeFile(path.join(dir, "ca.pem"), bus.caPem);
  const args = line.split(" ").slice(2);
  // A CA swapped on the way to the invitee is refused, and the invite stays unspent.
  const swapped = path.join(dir, "swapped");
  await fs.mkdir(swapped);
  await fs.writeFile(path.join(swapped, "ca.pem"), (await loadOrCreateCa(path.join(dir, "other-ca"))).certPem);
  const refused = await runCli(args, { cwd: swapped });
  t.not(refused.code, 0, "the pinned fingerprint refuses another CA");
  t.match(refused.stderr, /fingerprint/);
  const run = await runCli([...args, "--json"], { cwd: dir });
  t.equal(run.code, 0, run.stderr);
  const dora = JSON.parse(run.stdout) as { signPub: string; handle: string };
  t.match(await bus.store.getUser(dora.signPub), { handle: "dora", status: "active" });
  await page.click("#refresh");
  await row(page, "users-table", "data-sign-pub", dora.signPub).waitFor();
  const spentId = (await bus.store.listInvites()).find((i) => i.handle === "dora")!.id;
  await page.locator(`#invites-table tr[data-invite-id="${spentId}"][data-status=spent]`).waitFor();

  await page.fill("#invite-create [name=handle]", "eve");
  await page.fill("#invite-create [name=ttl]", "1h");
  await page.click("#invite-create button[type=submit]");
  await page.locator("#invite-for", { hasText: "for eve" }).waitFor();
  const eveInvite = (await bus.store.listInvites()).find((i) => i.handle === "eve")!;
  await row(page, "invites-table", "data-invite-id", eveInvite.id).locator("[data-action=cancel]").click();
  await page.locator(`#invites-table tr[data-invite-id="${eveInvite.id}"][data-status=cancelled]`).waitFor();
  t.equal((await bus.store.listInvites()).find((i) => i.id === eveInvite.id)?.status, "cancelled");
  const eveToken = (await page.locator("#invite-line").inputValue()).split(" ")[3]!;
  const late = await runCli(
    ["register", eveToken, "--identity", "eve.json", "--control-url", bus.controlUrl, "--ca", "ca.pem"],
    {
      cwd: dir,
    },
  );
  t.not(late.code, 0, "a cancelled invite's line no longer registers");
  t.match(late.stderr, /cancelled/);
});

t.test("rooms: list every room, read its members, delete it", async (t) => {
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const a = api(t, bus, alice);
  const room = await a.request<{ id: string }>("POST", "/v1/rooms", { encrypt: false, persist: true });
  await a.request("POST", `/v1/rooms/${room.id}/members`, { signPub: bob.signPub, epoch: 1 });
  const other = await a.request<{ id: string }>("POST", "/v1/rooms", {
    ownerSealedKey: crypto.randomBytes(48).toString("base64url"),
  });
  const { page } = await openConsole(t, browser, bus);
  page.on("dialog", (d) => void d.accept());
  await signIn(page, admin);
  const roomRow = row(page, "rooms-table", "data-room-id", room.id);
  await roomRow.waitFor();
  t.match(await roomRow.textContent(), /alice.*cleartext.*history/);
  t.match(await row(page, "rooms-table", "data-room-id", other.id).textContent(), /encrypted, epoch 1/);
  await roomRow.locator("[data-action=members]").click();
  await page.locator(`#members-table tr[data-sign-pub="${bob.signPub}"]`).waitFor();
  t.same(
    await page
      .locator("#members-table tbody tr")
      .evaluateAll((rows) => rows.map((r) => [r.getAttribute("data-sign-pub"), r.children[1]?.textContent])),
    [
      [alice.signPub, "owner"],
      [bob.signPub, "member"],
    ],
  );
  await shoot(page, "rooms");
  await roomRow.locator("[data-action=delete]").click();
  await roomRow.waitFor({ state: "detached" });
  await t.rejects(bus.store.getRoom(room.id), NotFoundError, "gone from the store");
  t.equal(await page.locator("#room-members").isHidden(), true, "the deleted room's members are no longer shown");
});

t.test("the health panel shows the node, its nats-server and replication", async (t) => {
  const { page } = await openConsole(t, browser, bus);
  await signIn(page, admin);
  const node = page.locator("#node[data-healthy=true]");
  await node.waitFor();
  const name = (await api(t, bus, admin).request<{ node: { name: string } }>("GET", "/v1/status")).node.name;
  t.equal(await node.getAttribute("data-node"), name, "the node by its server name");
  t.match(await node.textContent(), /Control planeok.*nats up.*nats-server\d+\.\d+\.\d+, ok.*JetStreamstandalone/);
  t.match(await page.locator("#health-body").textContent(), /No replicated KV buckets/);
  await shoot(page, "health");
});

t.test("an admin revoked mid-session is refused and the console stops", async (t) => {
  const second = await member(bus, "second-admin", "admin");
  const { page } = await openConsole(t, browser, bus);
  await signIn(page, second);
  await bus.store.revokeUser(second.signPub);
  await page.click("#refresh");
  await expectText(t, page, "#login-error", /no longer allowed on this bus/);
  t.equal(await page.locator("#app").isHidden(), true, "the management panels are gone");
  await pickIdentity(page, identityFileBytes(second));
  await expectText(t, page, "#login-error", /not allowed on this bus/, "and it cannot sign in again");
});
