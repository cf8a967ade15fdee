// A full disk under a running bus, for real: the data dir on a small tmpfs (we mount it;
// skipped, saying why, where mounting is not allowed). What a user sees: a persisted room
// JetStream cannot hold is refused with 507 STORAGE_FULL and not left half-made; once the
// disk fills, health says `storage` is down (503) while the bus keeps running, control
// writes fail with a typed error, nothing stored before is lost; once space is freed the
// bus reopens nats-server's stores by itself and history is written again.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t, { type Test } from "tap";
import { Agent, request } from "undici";
import { type StartUnibusOptions, startUnibus, type Unibus } from "../../lib/bus/unibus.ts";
import type { PublishAck } from "../../lib/client/room.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { StorageFullError, UnibusError } from "../../lib/errors.ts";
import { client, member } from "../helpers/bus.ts";

const SIZE_MB = 48;

/**
 * A bus whose data dir is on a fresh tmpfs of SIZE_MB; or why there is none. One teardown
 * stops the bus first, then unmounts (a mount under the test's own dir would outlive it).
 */
async function busOnSmallDisk(
  t: Test,
  opts: StartUnibusOptions = {},
): Promise<{ bus: Unibus; disk: string } | { skip: string }> {
  if (process.platform !== "linux") return { skip: "tmpfs mounts need Linux" };
  const disk = fs.mkdtempSync(path.join(os.tmpdir(), "unibus-disk-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${SIZE_MB}m,mode=0700`, "tmpfs", disk], { stdio: "pipe" });
  } catch (err) {
    fs.rmdirSync(disk);
    return { skip: `cannot mount a tmpfs here (${String((err as { stderr?: Buffer }).stderr ?? err).trim()})` };
  }
  const unmount = () => {
    execFileSync("umount", [disk]);
    fs.rmdirSync(disk);
  };
  let bus: Unibus;
  try {
    bus = await startUnibus({ ...opts, dataDir: path.join(disk, "bus") });
  } catch (err) {
    unmount();
    throw err;
  }
  t.teardown(async () => {
    await bus.stop();
    unmount();
  });
  return { bus, disk };
}

/** Fills the filesystem of `dir` to the last byte with one file; returns its path. */
function fill(dir: string): string {
  const file = path.join(dir, "filler");
  const fd = fs.openSync(file, "w");
  const chunk = Buffer.alloc(1024 * 1024);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

async function health(bus: Unibus, agent: Agent, probe = "/healthz") {
  const res = await request(`${bus.controlUrl}${probe}`, { dispatcher: agent });
  return {
    status: res.statusCode,
    body: (await res.body.json()) as { down?: string[]; parts?: Record<string, string> },
  };
}

async function historyOf(room: { history(): AsyncIterable<{ data: Uint8Array }> }): Promise<string[]> {
  const out: string[] = [];
  for await (const m of room.history()) out.push(new TextDecoder().decode(m.data));
  return out;
}

t.test("a persisted room JetStream has no room for: 507 STORAGE_FULL, and no room is left behind", async (t) => {
  // The default cap (64 MiB per room) is more than JetStream's share of a 48 MiB disk.
  const on = await busOnSmallDisk(t);
  if ("skip" in on) return void t.plan(0, on.skip); // reported as skipped, with the reason
  const { bus } = on;
  const alice = await member(bus, "alice", "admin");
  const c = await client(t, bus, alice);
  const err = (await c.createRoom({ encrypt: true, persist: true }).catch((e: unknown) => e)) as {
    status?: number;
    code?: string;
    message?: string;
  };
  t.match(err, { status: 507, code: "STORAGE_FULL" }, "refused as a full store, not a 500");
  t.match(err.message, /no storage left/);
  t.same(await bus.store.listRoomsFor(alice.signPub), [], "the room was taken back");
  const room = await c.createRoom({ encrypt: true, persist: false });
  t.ok(room.id, "a room without history is still fine");
});

t.test("the disk fills up, then is freed: 503 naming storage, typed errors, no loss, recovery", async (t) => {
  const on = await busOnSmallDisk(t, { retention: { maxBytes: 4 * 1024 * 1024 } });
  if ("skip" in on) return void t.plan(0, on.skip); // reported as skipped, with the reason
  const { bus, disk } = on;
  const agent = new Agent({ connect: { ca: bus.caPem } });
  t.teardown(() => agent.close());
  const c = await client(t, bus, await member(bus, "alice", "admin"));
  const room = await c.createRoom({ encrypt: true, persist: true });
  /** Every message the room's stream acknowledged: none of them may be lost. */
  const acked: string[] = [];
  await room.publish("before");
  await room.flush();
  await room.publish("acked-before", { ack: true });
  acked.push("acked-before");
  t.match(await health(bus, agent), { status: 200, body: { parts: { storage: "up" } } });

  const filler = fill(disk);
  const big = "x".repeat(64 * 1024);
  // Acknowledged publishes into the full disk: each is stored (and counted) or refused as
  // StorageFullError; past the first refusal every later one is refused too. (nats-server
  // does not answer a write that failed for lack of space: each refusal waits timeoutMs.)
  const refusals: unknown[] = [];
  for (let i = 0; i < 40 && refusals.length < 3; i++) {
    const text = `full-${i}:${big}`;
    const outcome = await room.publish(text, { ack: true, timeoutMs: 1000 }).catch((e: unknown) => e);
    if (outcome instanceof Error) refusals.push(outcome);
    else if (refusals.length === 0) acked.push(text);
    else t.fail(`message ${i} was stored after an earlier one was refused for lack of space`);
  }
  t.ok(refusals.length > 0, "the full disk refused acknowledged publishes");
  t.ok(
    refusals.every((e) => e instanceof StorageFullError),
    `every refusal is a StorageFullError (${[...new Set(refusals.map((e) => String(e)))].join(" | ")})`,
  );
  t.match(refusals[0], { code: "STORAGE_FULL", stored: 0, message: /no storage left|storage full/ });
  t.notMatch((refusals[0] as Error).message, disk, "the server's paths stay out of the message");
  // Small messages may still fit (nats-server 2.10 takes them into the block it has open);
  // whatever is acknowledged counts, and must survive.
  const batch = await room.publishMany(["many-0", "many-1"], { ack: true, timeoutMs: 1000 }).catch((e: unknown) => e);
  if (batch instanceof Error) t.match(batch, { code: "STORAGE_FULL" }, "a batch: refused typed");
  else acked.push("many-0", "many-1");
  for (let i = 0; i < 20; i++) await room.publish(`full-plain-${i}:${big}`);
  await room.flush();
  let h = await health(bus, agent);
  while (!h.body.down?.includes("storage")) {
    await sleep(100);
    h = await health(bus, agent);
  }
  t.equal(h.status, 503, "503 while the disk is full");
  t.match(h.body.parts, { storage: "down", nats: "up" }, "storage named, nats-server still up");
  t.equal((await health(bus, agent, "/livez")).status, 200, "alive: a full disk is not a reason to restart");
  t.equal(bus.state, "running", "the bus did not crash");
  const write = await bus.addUser(createIdentity().signPub, { handle: "bob" }).catch((e: unknown) => e);
  t.match(write, { code: "STORE_UNAVAILABLE" }, "a control write fails typed");
  t.same((await historyOf(room)).slice(0, 2), ["before", "acked-before"], "what was stored before is still there");

  fs.rmSync(filler);
  await room.publish("flush"); // a write after the space came back still fails until the stores reopen
  while ((await health(bus, agent)).status !== 200) await sleep(100);
  t.equal(bus.state, "running");
  t.equal((await bus.addUser(createIdentity().signPub, { handle: "carol" })).handle, "carol", "control writes work");
  // The reopen restarted nats-server: the client reconnects meanwhile, so an acknowledged
  // publish may fail (typed) a few times before one is stored — with no operator action.
  const meanwhile = new Set<string>();
  let after: number | undefined;
  for (let i = 0; after === undefined && i < 100; i++) {
    const outcome = await room.publish("after", { ack: true, timeoutMs: 2000 }).catch((e: unknown) => e);
    if (outcome instanceof Error) {
      t.ok(outcome instanceof UnibusError, `typed while recovering: ${(outcome as Error).name}`);
      meanwhile.add((outcome as UnibusError).code);
      await sleep(100);
    } else after = (outcome as PublishAck).seq;
  }
  t.ok(
    after,
    `an acknowledged publish succeeds again (typed errors meanwhile: ${[...meanwhile].join(", ") || "none"})`,
  );
  acked.push("after");
  const history = await historyOf(room);
  t.equal(history[0], "before", "history kept its first message");
  const missing = acked.filter((m) => !history.includes(m));
  t.same(
    missing.map((m) => m.slice(0, 20)),
    [],
    `every acknowledged message is in the history (${acked.length} acknowledged)`,
  );
});
