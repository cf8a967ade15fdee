import fs from "node:fs";
import { execSync } from "node:child_process";
import { startUnibus } from "./lib/bus/index.ts";
import { createLogger } from "./lib/log/index.ts";
import { connect } from "./lib/client/connect.ts";
import { createIdentity } from "./lib/crypto/identity.ts";
const mnt = "/tmp/unibus-diskfull-probe";
fs.mkdirSync(mnt, { recursive: true });
execSync(`mount -t tmpfs -o size=48m tmpfs ${mnt}`);
try {
  const bus = await startUnibus({ dataDir: `${mnt}/bus`, logger: createLogger({ level: "warn", format: "pretty" }) });
  const id = createIdentity();
  await bus.addUser(id.signPub, { handle: "alice", role: "admin", kexPub: id.kexPub });
  const c = await connect({ natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, identity: id });
  try { await c2.createRoom({ encrypt: true, persist: true }); } catch (e) { console.log("createRoom default caps:", (e as any).status, (e as any).code, (e as Error).message); }
  console.log("rooms after refusal", (await bus.store.listRooms?.() ?? []).length);
  await bus.stop();
  const bus2 = await startUnibus({ dataDir: `${mnt}/bus`, retention: { maxBytes: 4 * 1024 * 1024 }, logger: createLogger({ level: "warn", format: "pretty" }) });
  (globalThis as any).bus = bus2;
  await c.close();
  const c2 = await connect({ natsUrl: bus2.natsUrl, controlUrl: bus2.controlUrl, ca: bus2.caPem, identity: id });
  const room = await c2.createRoom({ encrypt: true, persist: true });
  console.log("room with 4 MiB cap created");
  await room.publish("before");
  await c2.nc.flush();
  console.log("df", execSync(`df -k ${mnt} | tail -1`).toString().trim());
  // fill
  try { execSync(`dd if=/dev/zero of=${mnt}/filler bs=1M count=100 2>&1`); } catch (e) { console.log("dd stopped"); }
  console.log("df", execSync(`df -k ${mnt} | tail -1`).toString().trim());
  const big = "x".repeat(32 * 1024);
  for (let i = 0; i < 100; i++) await room.publish(`${i}:${big}`);
  await c2.nc.flush();
  await new Promise((r) => setTimeout(r, 1500));
  let n = 0;
  try { for await (const _m of room.history()) n++; console.log("history", n); } catch (e) { console.log("history err", (e as Error).message); }
  console.log("health", JSON.stringify(await bus2.health()));
  try { await bus2.addUser(createIdentity().signPub, { handle: "bob" }); console.log("addUser ok"); } catch (e) { console.log("addUser err", (e as any).code, (e as Error).message); }
  try { await c2.createRoom({ encrypt: true, persist: true }); console.log("createRoom ok"); } catch (e) { console.log("createRoom err", (e as any).code, (e as any).status, (e as Error).message); }
  const jsz = await (await fetch(`${bus2.monitorUrl}/jsz`)).json();
  console.log("jsz", JSON.stringify({ disabled: jsz.disabled, storage: jsz.storage, reserved: jsz.reserved_storage, cfg: jsz.config?.max_storage }));
  const hz = await fetch(`${bus2.monitorUrl}/healthz?js-enabled-only=true`); console.log("nats healthz", hz.status, await hz.text());
  fs.rmSync(`${mnt}/filler`);
  console.log("freed; df", execSync(`df -k ${mnt} | tail -1`).toString().trim());
  await new Promise((r) => setTimeout(r, 3000));
  for (let i = 0; i < 5; i++) await room.publish(`after-${i}`);
  await c2.nc.flush();
  await new Promise((r) => setTimeout(r, 1000));
  n = 0;
  try { for await (const _m of room.history()) n++; console.log("history after", n); } catch (e) { console.log("history err", (e as Error).message); }
  console.log("health after", JSON.stringify(await bus2.health()));
  try { await c2.createRoom({ encrypt: true, persist: true }); console.log("createRoom ok after"); } catch (e) { console.log("createRoom err after", (e as Error).message); }
  await c2.close();
  await bus2.stop();
} finally {
  execSync(`umount -l ${mnt}`);
}
