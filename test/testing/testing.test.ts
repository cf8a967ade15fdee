// `unibus/testing`: one bus per run, members and rooms made on the fly from the plain
// JSON a runner hands its workers.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import { promisify } from "node:util";
import t from "tap";
import { ControlPlaneError, InvalidArgumentError, KeyFileError } from "../../lib/errors.ts";
import { isProcessAlive } from "../../lib/nats/process.ts";
import { startTestBus, type TestBusInfo, testMember, testRoom } from "../../lib/testing/index.ts";
import { tempDir } from "../helpers/fs.ts";
import { waitFor } from "../helpers/wait.ts";

t.test("startTestBus: members and a shared encrypted room, from info that crossed a process boundary", async (t) => {
  const dataDir = await tempDir(t);
  const testBus = await startTestBus({ dataDir });
  t.teardown(() => testBus.stop());
  // What a worker gets: the info through JSON, as vitest's provide or an env variable carries it.
  const info = JSON.parse(JSON.stringify(testBus.info)) as TestBusInfo;

  const seeded = await testRoom(info, ["alice", "bob"], { encrypt: true });
  t.teardown(() => seeded.close());
  const got = seeded.rooms.bob!.subscribe()[Symbol.asyncIterator]();
  await seeded.members.bob!.nc.flush(); // the subscription is on the server before alice publishes
  await seeded.rooms.alice!.publish("hello bob");
  const { value } = await got.next();
  t.equal(new TextDecoder().decode(value?.data), "hello bob", "bob reads alice's encrypted message");
  t.equal(value?.sender, seeded.members.alice!.identity.signPub);
  const members = (await seeded.rooms.alice!.members()).map((m) => m.signPub).sort();
  t.same(members, [seeded.members.alice!.identity.signPub, seeded.members.bob!.identity.signPub].sort());

  const carol = await testMember(info, { handle: "carol" });
  t.teardown(() => carol.close());
  const users = await testBus.bus.store.listUsers();
  t.match(
    users.find((u) => u.signPub === carol.identity.signPub),
    { handle: "carol", role: "member", status: "active" },
  );
  t.equal(users.filter((u) => u.role === "admin").length, 1, "one admin, made for the run");
  // Carol is not in the room: the broker refuses her, whatever the test helper made.
  await t.rejects(carol.openRoom(seeded.rooms.alice!.id), ControlPlaneError, "a non-member cannot open the room");
});

t.test("the edges: default handles are unique; one-member rooms work", async (t) => {
  const testBus = await startTestBus({ dataDir: await tempDir(t) });
  t.teardown(() => testBus.stop());
  const [a, b] = await Promise.all([testBus.member(), testBus.member()]);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const handles = (await testBus.bus.store.listUsers()).map((u) => u.handle).filter((h) => h.startsWith("member-"));
  t.equal(new Set(handles).size, 2, "two members, two handles");
  const solo = await testRoom(testBus.info, ["solo"]);
  t.teardown(() => solo.close());
  t.same(Object.keys(solo.rooms), ["solo"]);
});

t.test("bad input: a clear error, and nothing is left connected", async (t) => {
  const testBus = await startTestBus({ dataDir: await tempDir(t) });
  t.teardown(() => testBus.stop());
  const info = testBus.info;
  await t.rejects(testMember({ ...info, natsUrl: "" }), InvalidArgumentError, "missing URL");
  await t.rejects(testMember({} as TestBusInfo), {
    code: "INVALID_ARGUMENT",
    message: /natsUrl, controlUrl, caPem, admin/,
  });
  await t.rejects(testRoom(info, []), InvalidArgumentError, "no handles");
  await t.rejects(testRoom(info, ["x", "x"]), InvalidArgumentError, "a handle twice");
  // An admin file whose secrets do not match its public keys is refused before any request.
  const tampered = { ...info, admin: { ...info.admin, signPub: "0".repeat(64) } };
  await t.rejects(testMember(tampered), KeyFileError);
  // A member is no admin: info carrying a member's identity cannot allowlist anyone.
  const member = await testMember(info);
  t.teardown(() => member.close());
  const asMember = { ...info, admin: member.identity.toFile() };
  await t.rejects(testMember(asMember), { status: 403, code: "FORBIDDEN" }, "a member cannot add users");
  const dup = await testMember(info, { handle: "dup" });
  t.teardown(() => dup.close());
  await t.rejects(
    testMember(info, { handle: "dup" }),
    { status: 409, message: /already taken/ },
    "a taken handle is refused",
  );
  const users = (await testBus.bus.store.listUsers()).length;
  t.equal(users, 3, "the admin, the member and dup: the refused calls added no one");
});

t.test("stop is guaranteed when the test process dies without its teardown", async (t) => {
  const script = `
    import { startTestBus } from ${JSON.stringify(new URL("../../lib/testing/index.ts", import.meta.url).href)};
    const b = await startTestBus();
    console.log(JSON.stringify({ pid: b.bus.natsPid, dataDir: b.bus.dataDir }));
    process.kill(process.pid, "SIGKILL");
  `;
  const child = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script]).catch(
    (err: { stdout: string }) => err,
  );
  const { pid, dataDir } = JSON.parse(child.stdout.trim().split("\n").at(-1)!) as { pid: number; dataDir: string };
  t.type(pid, "number");
  const exists = () =>
    fs.stat(dataDir).then(
      () => true,
      () => false,
    );
  await waitFor("nats-server to end with its parent", () => !isProcessAlive(pid));
  await waitFor("the temp data dir to be removed", async () => !(await exists()));
  t.notOk(isProcessAlive(pid), "no nats-server outlives a SIGKILLed test process");
  t.notOk(await exists(), "nor its data dir");
});
