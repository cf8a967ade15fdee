// `unibus room list|show|delete|transfer` and `unibus user delete --rooms`: host-trusted
// room administration of a running bus and of a stopped one.
import fs from "node:fs";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import t, { type Test } from "tap";
import { connectAsService } from "../../lib/auth/service-connection.ts";
import { loadServiceKeys } from "../../lib/auth/service-keys.ts";
import { connect, type UnibusClient } from "../../lib/client/connect.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { nextReconnect } from "../helpers/bus.ts";
import { type CliResult, oneLineError, runCli, upOn } from "../helpers/cli.ts";
import { collector } from "../helpers/room.ts";

const ok = (t: Test, r: CliResult, what: string) => t.equal(r.code, 0, `${what}: ${r.stderr}`);

async function addUser(t: Test, dataDir: string, handle: string): Promise<Identity> {
  const id = createIdentity();
  ok(t, await runCli(["user", "add", id.signPub, "--handle", handle, "--kex-pub", id.kexPub, "-d", dataDir]), handle);
  return id;
}

async function hasStream(dataDir: string, natsUrl: string, caPem: string, roomId: string): Promise<boolean> {
  const keys = await loadServiceKeys(dataDir);
  const nc = await connectAsService({ servers: [natsUrl], caPem, key: keys.app, name: "test" });
  try {
    const jsm = await jetstreamManager(nc);
    return await jsm.streams.info(`ROOM_${roomId}`).then(
      () => true,
      () => false,
    );
  } finally {
    await nc.close();
  }
}

t.test("room list, show, transfer and delete on a running bus; members lose the room at once", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const alice = await addUser(t, dataDir, "alice");
  const bob = await addUser(t, dataDir, "bob");
  const { ready } = await upOn(t, dataDir);
  const opts = { natsUrl: ready.natsUrls[0]!, controlUrl: ready.controlUrls[0]!, caFile: ready.caFile };
  const a: UnibusClient = await connect({ ...opts, identity: alice });
  const b: UnibusClient = await connect({ ...opts, identity: bob });
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const room = await a.createRoom({ persist: true });
  const bobBack = nextReconnect(b.nc);
  await room.addMember(bob);
  await bobBack;
  const bobRoom = await b.openRoom(room.id);
  const atBob = collector(bobRoom);
  await b.nc.flush();
  await room.publish("one");
  await atBob.until(1);
  const d = ["-d", dataDir];

  const list = await runCli(["room", "list", "--json", ...d]);
  ok(t, list, "list");
  t.match(JSON.parse(list.stdout), [{ id: room.id, ownerSignPub: alice.signPub, persist: true }]);
  const show = await runCli(["room", "show", room.id, ...d]);
  ok(t, show, "show");
  t.match(show.stdout, new RegExp(`owner\\s+${alice.signPub}`));
  t.match(show.stdout, new RegExp(`member\\s+${bob.signPub}`));

  oneLineError(t, await runCli(["room", "transfer", room.id, createIdentity().signPub, ...d]), /not found/, "stranger");
  const moved = await runCli(["room", "transfer", room.id, bob.signPub, ...d]);
  ok(t, moved, "transfer");
  t.match(moved.stdout, `now belongs to ${bob.signPub}`);

  const caPem = fs.readFileSync(ready.caFile, "utf8");
  t.ok(await hasStream(dataDir, opts.natsUrl, caPem, room.id), "history before the delete");
  const kicked = nextReconnect(b.nc);
  const del = await runCli(["room", "delete", room.id, ...d]);
  ok(t, del, "delete");
  t.match(del.stdout, /deleted room .*2 member\(s\) kicked, 1 history stream/);
  await kicked;
  const sub = b.nc.subscribe(room.subject);
  t.match(String(await sub.closed), /Permissions Violation/, "the former member's subscription is refused");
  t.notOk(await hasStream(dataDir, opts.natsUrl, caPem, room.id), "history gone");
  t.same(atBob.texts(), ["one"]);
  oneLineError(t, await runCli(["room", "show", room.id, ...d]), /not found/, "show a deleted room");
  oneLineError(t, await runCli(["room", "delete", room.id, ...d]), /not found/, "delete twice");
});
