// `unibus user delete --rooms`: a user who owns rooms is deleted only with an explicit
// choice for its rooms (a stopped bus: the CLI edits the store directly).
import path from "node:path";
import t, { type Test } from "tap";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { openStore } from "../../lib/store/index.ts";
import { type CliResult, oneLineError, runCli } from "../helpers/cli.ts";

const ok = (t: Test, r: CliResult, what: string) => t.equal(r.code, 0, `${what}: ${r.stderr}`);

async function addUser(t: Test, dataDir: string, handle: string): Promise<Identity> {
  const id = createIdentity();
  ok(t, await runCli(["user", "add", id.signPub, "--handle", handle, "--kex-pub", id.kexPub, "-d", dataDir]), handle);
  return id;
}

t.test("user delete of an owner: refused without --rooms, then transfer-to or delete", async (t) => {
  const dataDir = path.join(t.testdir(), "bus");
  const alice = await addUser(t, dataDir, "alice");
  const bob = await addUser(t, dataDir, "bob");
  const carol = await addUser(t, dataDir, "carol");
  // A stopped bus: the store is edited directly, as the CLI does.
  const store = await openStore({ backend: "sqlite", file: path.join(dataDir, "store.db") });
  const room = (id: string, owner: Identity) =>
    store.createRoom({
      id,
      subject: `unibus.room.${id}`,
      ownerSignPub: owner.signPub,
      encrypt: false,
      persist: false,
      signMsgs: false,
    });
  await room("one", alice);
  await store.addMember("one", { signPub: bob.signPub });
  await room("two", bob);
  await store.close();
  const d = ["-d", dataDir];

  oneLineError(
    t,
    await runCli(["user", "delete", alice.signPub, ...d]),
    new RegExp(`owns room\\(s\\) one; run \`unibus user delete ${alice.signPub} --rooms delete\``),
    "no choice",
  );
  oneLineError(
    t,
    await runCli(["user", "delete", alice.signPub, "--rooms", "transfer-to", carol.signPub, ...d]),
    /not a member of room\(s\) one/,
    "a new owner outside the room",
  );
  oneLineError(t, await runCli(["user", "delete", alice.signPub, "--rooms", "keep", ...d]), /--rooms takes/, "bad");
  const moved = await runCli(["user", "delete", alice.signPub, "--rooms", "transfer-to", bob.signPub, ...d]);
  ok(t, moved, "transfer-to");
  t.match(moved.stdout, `room(s) one handed to ${bob.signPub}`);
  const gone = await runCli(["user", "delete", bob.signPub, "--rooms", "delete", ...d]);
  ok(t, gone, "delete");
  t.match(gone.stdout, /the bus is not running/);
  const left = await runCli(["room", "list", "--json", ...d]);
  t.same(JSON.parse(left.stdout), [], "both rooms are gone");
  const users = JSON.parse((await runCli(["user", "list", "--json", ...d])).stdout) as { handle: string }[];
  t.same(
    users.map((u) => u.handle),
    ["carol"],
  );
});
