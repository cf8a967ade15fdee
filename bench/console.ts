// The admin console's first load in chromium, against /healthz loaded the same way in
// the same browser and run (the baseline: one TLS connection and one small answer).
// Each load uses a fresh browser context, so nothing is cached between rounds.
//   page:      GET /console/ until its modules ran (html[data-ready]);
//   signed in: the page, then the identity file picked, its key imported, and the four
//              panels (users, invites, rooms, health) filled by signed requests.
import crypto from "node:crypto";
import type { Browser } from "playwright-core";
import { startUnibus, type Unibus } from "../lib/bus/unibus.ts";
import { createIdentity, type Identity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import { consoleBrowser, identityFileBytes, pickIdentity } from "../test/helpers/console.ts";
import type { BenchSection } from "./report.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

const ROUNDS = 15;

type Kind = "healthz" | "page" | "signedIn";

/** One cold load of `kind` in a fresh context; ms from navigation to done. */
async function load(browser: Browser, bus: Unibus, admin: Identity, kind: Kind): Promise<number> {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const t0 = performance.now();
    if (kind === "healthz") {
      const res = await page.goto(`${bus.controlUrl}/healthz`);
      if (res?.status() !== 200) throw new Error(`healthz answered ${res?.status()}`);
      return performance.now() - t0;
    }
    await page.goto(`${bus.controlUrl}/console/`);
    await page.waitForSelector("html[data-ready=true]");
    if (kind === "signedIn") {
      await pickIdentity(page, identityFileBytes(admin));
      await page.waitForSelector("#node[data-healthy]");
      await page.waitForSelector("#rooms-table tr[data-room-id]");
      await page.waitForSelector("#invites-table tr[data-invite-id]");
    }
    return performance.now() - t0;
  } finally {
    await context.close();
  }
}

/** A bus with what a small team's console lists: 30 users, 10 rooms, 5 invites. */
async function populate(bus: Unibus): Promise<Identity> {
  const admin = createIdentity();
  await bus.addUser(admin.signPub, { handle: "root", role: "admin", kexPub: admin.kexPub });
  for (let i = 0; i < 30; i++) {
    const u = createIdentity();
    await bus.addUser(u.signPub, { handle: `user${i}`, kexPub: u.kexPub });
    if (i < 10) {
      const id = crypto.randomBytes(12).toString("hex");
      await bus.store.createRoom({
        id,
        subject: `unibus.room.${id}`,
        ownerSignPub: u.signPub,
        encrypt: true,
        persist: false,
        signMsgs: false,
        ownerSealedKey: crypto.randomBytes(48).toString("base64url"),
      });
    }
  }
  for (let i = 0; i < 5; i++) {
    const token = crypto.randomBytes(32).toString("hex");
    await bus.store.createInvite({
      token,
      handle: `invitee${i}`,
      role: "member",
      createdBy: admin.signPub,
      ttlMs: 86_400_000,
    });
  }
  return admin;
}

export async function run(): Promise<BenchSection> {
  const binary = (await resolveNatsServer()).path;
  const bus = await startUnibus({ natsServer: binary, rateLimit: { ratePerSec: 1e9, burst: 1e9 } });
  const cleanups: Array<() => unknown> = [];
  try {
    const admin = await populate(bus);
    const browser = await consoleBrowser({ teardown: (fn) => void cleanups.push(fn) }, bus);
    const samples: Record<Kind, number[]> = { healthz: [], page: [], signedIn: [] };
    await load(browser, bus, admin, "signedIn"); // warm-up: the browser's own first start
    // Interleaved, so drift on a shared machine hits every kind alike.
    for (let i = 0; i < ROUNDS; i++) {
      for (const kind of ["healthz", "page", "signedIn"] as const)
        samples[kind].push(await load(browser, bus, admin, kind));
    }
    const s = {
      healthz: summarize(samples.healthz),
      page: summarize(samples.page),
      signedIn: summarize(samples.signedIn),
    };
    console.log(`console: first load in chromium, p50 of ${ROUNDS} cold loads (fresh context each)`);
    console.log(`  /healthz (baseline)  ${fmt(s.healthz.p50, 1)} ms`);
    console.log(`  /console/ page       ${fmt(s.page.p50, 1)} ms  (${fmt(s.page.p50 / s.healthz.p50, 1)}x)`);
    console.log(`  signed in, 4 panels  ${fmt(s.signedIn.p50, 1)} ms  (${fmt(s.signedIn.p50 / s.healthz.p50, 1)}x)`);
    console.log(`  -> ${await writeResult("console", { rounds: ROUNDS, ...s })}`);
    return {
      title: "Admin console first load (chromium)",
      rows: [
        { name: "/healthz", value: s.healthz.p50, unit: "ms p50" },
        {
          name: "console page",
          value: s.page.p50,
          unit: "ms p50",
          baseline: "/healthz",
          ratio: s.page.p50 / s.healthz.p50,
        },
        {
          name: "console signed in",
          value: s.signedIn.p50,
          unit: "ms p50",
          baseline: "/healthz",
          ratio: s.signedIn.p50 / s.healthz.p50,
          note: "identity imported, 30 users, 10 rooms, 5 invites, health",
        },
      ],
      notes: [`${ROUNDS} cold loads each, a fresh browser context per load, interleaved`],
    };
  } finally {
    for (const fn of cleanups.reverse()) await fn();
    await bus.stop();
  }
}
