// Instructions per message that a cleartext room adds to raw nats.js, counted by
// valgrind (callgrind). Only the client's JavaScript path is compared: both lanes run
// on plain TCP to a bare nats-server (no TLS, no login, so nothing waits on a handshake
// deadline under valgrind), publisher and subscriber in one process, 256 B pipelined.
// The room is a cleartext Room over that connection; nothing on its publish and receive
// path asks the control plane (its client here refuses every request, so a call would
// show). Each lane runs twice, with N1 and N2 messages after the same warm-up, so
// start-up and compilation cancel out of (Ir2 - Ir1) / (N2 - N1).
// Not free of timing: how many messages arrive per socket read depends on how fast
// nats-server (at native speed) and the client (under valgrind) run, and the same raw
// lane has counted 11k and 20k instructions/msg in two runs. Compare a lane across
// code versions over several runs, not one run's ratio.
//   node bench/hotpath-instructions.ts     (valgrind on PATH; a few minutes)
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { ControlClient } from "../lib/client/control.ts";
import { Room } from "../lib/client/room.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import { resolveNatsServer } from "../lib/nats/binary.ts";
import { NatsServerProcess } from "../lib/nats/process.ts";
import { fmt } from "./stats.ts";

const SIZE = 256;
const WARMUP = 3_000;
const N1 = Number(process.env.HOTPATH_N1 ?? 3_000);
const N2 = Number(process.env.HOTPATH_N2 ?? 13_000);
const SUBJECT = "bench.hotpath";
const BURST = 500;

/** A control client that refuses: the hot path must never need one. */
const noControl = new Proxy({} as ControlClient, {
  get() {
    throw new Error("the cleartext hot path asked the control plane");
  },
});

async function child(url: string, lane: "raw" | "room", n: number): Promise<void> {
  const pub = await natsConnect({ servers: url });
  const sub = await natsConnect({ servers: url });
  const id = createIdentity();
  const info = {
    id: "hotpath",
    subject: SUBJECT,
    ownerSignPub: id.signPub,
    encrypt: false,
    persist: false,
    signMsgs: false,
    epoch: 1,
    createdAt: 0,
  };
  const room = new Room(info, { nc: pub, control: noControl, identity: id });
  const reader = new Room(info, { nc: sub, control: noControl, identity: id });
  const payload = crypto.randomBytes(SIZE);
  const send = async (count: number) => {
    let got = 0;
    let allIn = () => {};
    const done = new Promise<void>((r) => {
      allIn = r;
    });
    const onMessage = () => {
      if (++got === count) allIn();
    };
    const s =
      lane === "raw"
        ? sub.subscribe(SUBJECT, { callback: onMessage })
        : reader.subscribe({ callback: onMessage, maxPending: 4 * count });
    await sub.flush();
    // In bursts with a turn between them: under valgrind one long synchronous loop keeps
    // the subscriber from reading past nats-server's write deadline (a slow consumer).
    for (let i = 0; i < count; i += BURST) {
      const end = Math.min(count, i + BURST);
      if (lane === "raw") for (let j = i; j < end; j++) pub.publish(SUBJECT, payload);
      else for (let j = i; j < end; j++) await room.publish(payload);
      await new Promise((r) => setImmediate(r));
    }
    const stalled = setTimeout(() => {
      console.error(`${lane}: ${count - got} of ${count} messages never arrived`);
      process.exit(1);
    }, 120_000);
    await done;
    clearTimeout(stalled);
    s.unsubscribe();
  };
  await send(WARMUP);
  await send(n);
  await pub.close();
  await sub.close();
}

function instructions(dir: string, url: string, lane: string, n: number): number {
  const out = path.join(dir, `callgrind.${lane}.${n}`);
  const r = spawnSync(
    "valgrind",
    [
      "--tool=callgrind",
      `--callgrind-out-file=${out}`,
      process.execPath,
      "--disable-warning=ExperimentalWarning",
      import.meta.filename,
      "--child",
      url,
      lane,
      String(n),
    ],
    { stdio: ["ignore", "inherit", "pipe"], encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`valgrind ${lane} ${n}: exit ${r.status}\n${r.stderr.slice(-2000)}`);
  const totals = /^(?:summary|totals): (\d+)/m.exec(fs.readFileSync(out, "utf8"));
  if (!totals) throw new Error(`no instruction total in ${out}`);
  return Number(totals[1]);
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "unibus-hotpath-"));
  const server = new NatsServerProcess({
    binary: (await resolveNatsServer()).path,
    workDir: dir,
    config: { serverName: "bare", host: "127.0.0.1", port: -1, http: { host: "127.0.0.1", port: -1 } },
  });
  const ports = await server.start();
  const url = `nats://127.0.0.1:${ports.nats}`;
  try {
    const per: Record<string, number> = {};
    for (const lane of ["raw", "room"]) {
      const i1 = instructions(dir, url, lane, N1);
      const i2 = instructions(dir, url, lane, N2);
      per[lane] = (i2 - i1) / (N2 - N1);
      console.log(
        `  ${lane.padEnd(5)} ${fmt(per[lane]!, 0).padStart(7)} instructions/msg (${i1} at ${N1}, ${i2} at ${N2})`,
      );
    }
    console.log(
      `  room / raw: ${fmt((100 * per.room!) / per.raw!, 0)} % (publish + receive, plain TCP, client JS path)`,
    );
  } finally {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const [mode, ...args] = process.argv.slice(2);
if (mode === "--child") await child(args[0]!, args[1] as "raw" | "room", Number(args[2]));
else await main();
