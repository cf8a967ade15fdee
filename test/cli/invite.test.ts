import fs from "node:fs";
import path from "node:path";
import t, { type Test } from "tap";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity, loadIdentity, saveIdentity } from "../../lib/crypto/identity.ts";
import { loadOrCreateCa, pemFingerprint } from "../../lib/tls/index.ts";
import { testBus } from "../helpers/bus.ts";
import { oneLineError, runCli, upOn } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";
import { freePort } from "../helpers/net.ts";

interface Created {
  token: string;
  command: string;
  controlUrl: string;
  caFile: string;
  invite: { id: string; handle: string; role: string; status: string; expiresAt: number; createdBy: string };
}

// Each CLI run loads the whole TypeScript tree; a shared compile cache halves that.
const compileCache = await tempDir(t, "cache");

/** Runs the CLI in `cwd` with no stray UNIBUS_* settings from the caller's environment. */
function cli(cwd: string) {
  const env: NodeJS.ProcessEnv = { NODE_COMPILE_CACHE: compileCache };
  for (const k of Object.keys(process.env))
    if (k.startsWith("UNIBUS_") && k !== "UNIBUS_NATS_SERVER") env[k] = undefined;
  return (args: string[]) => runCli(args, { cwd, env });
}

async function createInvite(run: ReturnType<typeof cli>, args: string[]): Promise<Created> {
  const r = await run(["invite", "create", "--json", ...args]);
  if (r.code !== 0) throw new Error(`invite create failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The printed `npx unibus register …` command, as arguments for the CLI. */
function argsOf(command: string): string[] {
  const words = command.split(" ");
  if (words[0] !== "npx" || words[1] !== "unibus") throw new Error(`unexpected command ${command}`);
  return words.slice(2);
}

/** `unibus up --json` as a user runs it; it writes the run file `invite create` reads. */
async function up(t: Test, dataDir: string) {
  const { ready, child, exited } = await upOn(t, dataDir);
  const stop = async () => {
    child.kill("SIGTERM");
    return exited;
  };
  return { ready, stop };
}

t.test("golden path: invite create on a running bus → the printed command registers → the user connects", async (t) => {
  const dir = await tempDir(t);
  const dataDir = path.join(dir, "bus");
  const run = cli(dir);
  const bus = await up(t, dataDir);

  const text = await run(["invite", "create", "--handle", "Alice", "--data-dir", dataDir]);
  t.equal(text.code, 0, text.stderr);
  const token = /^token: ([0-9a-f]{64})$/m.exec(text.stdout)?.[1];
  t.ok(token, "prints the token");
  const printed = /^ {2}(npx unibus register .*)$/m.exec(text.stdout)?.[1];
  t.equal(
    printed,
    `npx unibus register ${token} --identity me.json --control-url ${bus.ready.controlUrls[0]} --ca-fingerprint ${pemFingerprint(fs.readFileSync(bus.ready.caFile, "utf8"))}`,
    "the exact command, with the running bus' control URL and CA fingerprint: no CA file to carry",
  );
  t.match(text.stdout, /^created invite [0-9a-f]{12} for alice \(member\), valid until \d{4}-/m);

  // the invitee runs exactly what it was sent, in its own directory
  const reg = await run(argsOf(printed!));
  t.equal(reg.code, 0, reg.stderr);
  const file = path.join(dir, "me.json");
  const me = await loadIdentity(file);
  t.equal(fs.statSync(file).mode & 0o777, 0o600, "identity created 0600");
  t.match(reg.stdout, "registered alice (member)");
  t.match(reg.stdout, `user id (signing key): ${me.signPub}`);
  t.notMatch(reg.stdout, JSON.parse(fs.readFileSync(file, "utf8")).signSeed, "no secret printed");

  const c = await connect({ natsUrl: bus.ready.natsUrls[0]!, caFile: bus.ready.caFile, identity: me, timeoutMs: 5000 });
  await c.close();

  const [list, users, again] = await Promise.all([
    run(["invite", "list", "--json", "--data-dir", dataDir]),
    run(["user", "list", "--json", "--data-dir", dataDir]),
    run(argsOf(printed!)),
  ]);
  t.equal(list.code, 0, list.stderr);
  t.match(JSON.parse(list.stdout), [{ handle: "alice", role: "member", status: "spent", spentBy: me.signPub }]);
  t.notMatch(list.stdout, token!, "the token is never stored or listed");
  t.match(JSON.parse(users.stdout), [{ handle: "alice", signPub: me.signPub, kexPub: me.kexPub, status: "active" }]);
  oneLineError(t, again, /^unibus: registration refused: this invite token has already been used/, "spent token");
  t.equal(await bus.stop(), 0, "the bus stops cleanly");
});

t.test("invite create without a running bus; list shows each status; cancel", async (t) => {
  const dir = await tempDir(t);
  const dataDir = path.join(dir, "bus");
  const run = cli(dir);
  const bus = await testBus(t, { dataDir });
  const d = ["--data-dir", dataDir];
  const caFile = path.join(dataDir, "tls", "ca.pem");

  // a run file whose process is gone (a crashed `up`) is ignored: the config says where
  fs.writeFileSync(
    path.join(dataDir, "run.json"),
    JSON.stringify({ pid: 2 ** 22 + 7, controlUrls: ["https://127.0.0.1:1"], caFile: "/nowhere/ca.pem" }),
  );
  const [bob, carol, erin, gina] = await Promise.all([
    createInvite(run, ["--handle", "bob", "--role", "admin", "--ttl", "12h", ...d]),
    createInvite(run, ["--handle", "carol", ...d]),
    // UNIBUS_* settings move it, as they move `up`; a wildcard bind sends its public name
    runCli(["invite", "create", "--json", "--handle", "erin", ...d], {
      cwd: dir,
      env: {
        NODE_COMPILE_CACHE: compileCache,
        UNIBUS_CONTROL_PORT: "9443",
        UNIBUS_HOST: "0.0.0.0",
        UNIBUS_HOSTNAMES: "bus.example.org",
      },
    }).then((r) => JSON.parse(r.stdout || "{}") as Created),
    createInvite(run, ["--handle", "gina", "--ttl", "1ms", ...d]),
  ]);
  fs.rmSync(path.join(dataDir, "run.json"));
  t.equal(bob.controlUrl, "https://127.0.0.1:8470", "the default control port");
  t.equal(bob.caFile, caFile);
  t.ok(fs.existsSync(caFile), "the CA file it names exists");
  t.equal(
    bob.command,
    `npx unibus register ${bob.token} --identity me.json --control-url https://127.0.0.1:8470 --ca-fingerprint ${pemFingerprint(fs.readFileSync(caFile, "utf8"))}`,
  );
  t.match(bob.invite, { handle: "bob", role: "admin", status: "open", createdBy: "host" });
  t.ok(Math.abs(bob.invite.expiresAt - Date.now() - 12 * 3_600_000) < 60_000, "12h ttl");
  t.ok(Math.abs(carol.invite.expiresAt - Date.now() - 7 * 86_400_000) < 60_000, "7d by default");
  t.equal(carol.invite.role, "member", "member by default");
  t.equal(erin.controlUrl, "https://bus.example.org:9443");

  const register = (token: string) =>
    run(["register", token, "--identity", path.join(dir, "me.json"), "--control-url", bus.controlUrl, "--ca", caFile]);
  const [cancelBob, cancelCarol, unknown, malformed, expired] = await Promise.all([
    run(["invite", "cancel", bob.invite.id, ...d]),
    // by token works too, and never echoes it
    run(["invite", "cancel", carol.token, "--json", ...d]),
    run(["invite", "cancel", "0123456789ab", ...d]),
    run(["invite", "cancel", "nope", ...d]),
    register(gina.token),
  ]);
  t.equal(cancelBob.code, 0, cancelBob.stderr);
  t.equal(cancelBob.stdout, `cancelled invite ${bob.invite.id} for bob\n`);
  t.equal(cancelCarol.code, 0, cancelCarol.stderr);
  t.match(JSON.parse(cancelCarol.stdout), { id: carol.invite.id, status: "cancelled" });
  t.notMatch(cancelCarol.stdout, carol.token);
  oneLineError(t, unknown, /invite 0123456789ab not found/, "unknown id");
  oneLineError(t, malformed, /12-character id/, "malformed id");
  oneLineError(t, expired, /^unibus: registration refused: this invite has expired/, "expired token");
  t.ok(fs.existsSync(path.join(dir, "me.json")), "the identity it created is kept");

  const [twice, cancelled, json, table] = await Promise.all([
    run(["invite", "cancel", bob.invite.id, ...d]),
    register(bob.token),
    run(["invite", "list", "--json", ...d]),
    run(["invite", "list", ...d]),
  ]);
  oneLineError(t, twice, new RegExp(`invite ${bob.invite.id} is already cancelled`), "cancel twice");
  oneLineError(t, cancelled, /^unibus: registration refused: this invite was cancelled/, "cancelled token");
  t.same((JSON.parse(json.stdout) as Created["invite"][]).map((i) => [i.handle, i.status]).sort(), [
    ["bob", "cancelled"],
    ["carol", "cancelled"],
    ["erin", "open"],
    ["gina", "expired"],
  ]);
  t.match(table.stdout, /^ID\s+HANDLE\s+ROLE\s+STATUS\s+EXPIRES$/m);
  t.match(table.stdout, new RegExp(`^${bob.invite.id}\\s+bob\\s+admin\\s+cancelled\\s+\\d{4}-`, "m"));
  t.match(table.stdout, new RegExp(`^${gina.invite.id}\\s+gina\\s+member\\s+expired\\s+\\d{4}-`, "m"));
});

t.test("invite refusals", async (t) => {
  const dir = await tempDir(t);
  const dataDir = path.join(dir, "bus");
  const run = cli(dir);
  const bus = await testBus(t, { dataDir });
  const d = ["--data-dir", dataDir];
  await bus.addUser(createIdentity().signPub, { handle: "taken" });
  await createInvite(run, ["--handle", "pending", ...d]);
  const elsewhere = path.join(dir, "nothing-here");

  const cases: [string[], RegExp, string][] = [
    [["create", "--handle", "x", "--role", "owner"], /--role must be admin or member, not owner/, "bad role"],
    [["create", "--handle", "x", "--ttl", "7w"], /--ttl must look like 7d, 12h, 30m or 45s/, "bad ttl unit"],
    [["create", "--handle", "x", "--ttl", "-1d"], /--ttl must look like/, "negative ttl"],
    [["create", "--handle", "x", "--ttl", "0d"], /--ttl must be more than 0 and at most 90d/, "zero ttl"],
    [["create", "--handle", "x", "--ttl", "91d"], /at most 90d/, "ttl too long"],
    [["create", "--handle", "Not A Handle!"], /handle/, "bad handle"],
    [["create", "--handle", "taken"], /"taken" is already taken by a user/, "handle of a user"],
    [["create", "--handle", "pending"], /an open invite for the handle "pending" already exists/, "open invite"],
    [["create"], /required option '--handle <handle>'/, "no handle"],
    [["cancel"], /missing required argument 'id'/, "cancel without id"],
  ];
  const wrongDir: [string[], RegExp, string][] = [
    ["create", "--handle", "x"],
    ["list"],
    ["cancel", "0123456789ab"],
  ].map((sub) => [
    [...sub, "--data-dir", elsewhere],
    /no bus store in .*nothing-here/,
    `${sub[0]} on a wrong data dir`,
  ]);
  const results = await Promise.all(
    [...cases.map(([a, p, w]) => [[...a, ...d], p, w] as const), ...wrongDir].map(
      async ([args, pattern, what]) => [await run(["invite", ...args]), pattern, what] as const,
    ),
  );
  for (const [r, pattern, what] of results) oneLineError(t, r, pattern, what);
  t.notOk(fs.existsSync(elsewhere), "a wrong --data-dir is not created");
  const invites = JSON.parse((await run(["invite", "list", "--json", ...d])).stdout) as Created["invite"][];
  t.same(
    invites.map((i) => i.handle),
    ["pending"],
    "no refusal wrote anything",
  );
});

t.test("register refusals: one line, non-zero, the identity file kept", async (t) => {
  const dir = await tempDir(t);
  const dataDir = path.join(dir, "bus");
  const run = cli(dir);
  const bus = await testBus(t, { dataDir });
  const ca = path.join(dataDir, "tls", "ca.pem");
  const url = bus.controlUrl;
  const d = ["--data-dir", dataDir];
  const reg = (token: string, identity: string, extra: { url?: string; ca?: string } = {}) =>
    run(["register", token, "--identity", identity, "--control-url", extra.url ?? url, "--ca", extra.ca ?? ca]);
  const [hank, ivy, jay] = await Promise.all(
    ["hank", "ivy", "jay"].map((h) => createInvite(run, ["--handle", h, ...d])),
  );
  t.equal(hank!.controlUrl, "https://127.0.0.1:8470", "no run file: the configured URL");

  // everything checkable locally is checked before an identity file is created
  const fresh = path.join(dir, "fresh.json");
  fs.writeFileSync(path.join(dir, "junk.pem"), "not a certificate");
  const local = await Promise.all([
    reg("abc123", fresh),
    reg(`${hank!.token}0`, fresh),
    reg(hank!.token, fresh, { ca: path.join(dir, "no-ca.pem") }),
    reg(hank!.token, fresh, { ca: path.join(dir, "junk.pem") }),
    reg(hank!.token, fresh, { url: "not a url" }),
    reg(hank!.token, fresh, { url: url.replace("https:", "http:") }),
    run(["register", hank!.token, "--control-url", url, "--ca", ca]),
  ]);
  oneLineError(t, local[0]!, /an invite token is 64 hex characters/, "bad token format");
  oneLineError(t, local[1]!, /an invite token is 64 hex characters/, "token too long");
  oneLineError(t, local[2]!, /CA file .*no-ca\.pem does not exist/, "no CA file");
  oneLineError(t, local[3]!, /CA file .*junk\.pem is not a PEM certificate/, "junk CA file");
  oneLineError(t, local[4]!, /--control-url must be a URL/, "bad URL");
  oneLineError(t, local[5]!, /--control-url must be an https:\/\/ URL/, "cleartext URL");
  oneLineError(t, local[6]!, /required option '--identity <file>'/, "no --identity");
  t.notOk(fs.existsSync(fresh), "no identity created for a refusal found locally");

  // the invite pins its CA: another CA handed over on the way is refused, before any request
  const swapped = (await loadOrCreateCa(await tempDir(t))).certFile;
  const realFp = pemFingerprint(fs.readFileSync(ca, "utf8"));
  const pinned = await Promise.all([
    run([
      ...["register", hank!.token, "--identity", fresh, "--control-url", url],
      "--ca",
      swapped,
      "--ca-fingerprint",
      realFp,
    ]),
    run([
      ...["register", hank!.token, "--identity", fresh, "--control-url", url],
      "--ca",
      ca,
      "--ca-fingerprint",
      "abc",
    ]),
  ]);
  oneLineError(
    t,
    pinned[0]!,
    new RegExp(`has fingerprint [0-9a-f]{64}, not the invite's ${realFp}: refusing it`),
    "swapped CA",
  );
  oneLineError(t, pinned[1]!, /--ca-fingerprint must be the 64 hex characters/, "bad fingerprint");
  t.notOk(fs.existsSync(fresh), "no identity created for a swapped CA");
  t.equal((await bus.store.listInvites()).find((i) => i.handle === "hank")?.status, "open", "the token is not spent");

  // unreachable: the identity is created and kept for the retry
  const unreachable = await reg(hank!.token, fresh, { url: `https://127.0.0.1:${await freePort()}` });
  oneLineError(t, unreachable, /could not reach the control plane at https:\/\/127\.0\.0\.1:\d+/, "unreachable");
  t.ok(fs.existsSync(fresh), "identity kept");
  const before = fs.readFileSync(fresh, "utf8");

  // a CA that is not the bus' own: TLS refuses before anything is sent
  const otherCa = await loadOrCreateCa(path.join(dir, "other-ca"));
  const [wrongCa, unknown] = await Promise.all([
    reg(hank!.token, fresh, { ca: otherCa.certFile }),
    reg("ab".repeat(32), fresh),
  ]);
  oneLineError(t, wrongCa, /could not reach the control plane/, "wrong CA");
  oneLineError(t, unknown, /^unibus: registration refused: this invite token is not valid/, "unknown token");
  t.equal(fs.readFileSync(fresh, "utf8"), before, "the same identity after every refusal");

  // the retry with the same identity succeeds; upper-case hex is accepted
  const ok = await reg(hank!.token.toUpperCase(), fresh);
  t.equal(ok.code, 0, ok.stderr);
  const id = await loadIdentity(fresh);
  const users = JSON.parse((await run(["user", "list", "--json", ...d])).stdout);
  t.match(users, [{ handle: "hank", signPub: id.signPub, kexPub: id.kexPub, role: "member" }]);
  t.equal(fs.readFileSync(fresh, "utf8"), before, "the existing identity was used, not replaced");

  // an already-registered key spends the token and is refused; a corrupt identity is
  // reported, never replaced; an identity made beforehand registers as itself (--json)
  const corrupt = path.join(dir, "corrupt.json");
  fs.writeFileSync(corrupt, "{", { mode: 0o600 });
  const kim = createIdentity();
  await saveIdentity(kim, path.join(dir, "kim.json"));
  const [twice, broken, kimReg] = await Promise.all([
    reg(ivy!.token, fresh),
    reg(jay!.token, corrupt),
    run(["register", jay!.token, "--identity", path.join(dir, "kim.json"), "--control-url", url, "--ca", ca, "--json"]),
  ]);
  oneLineError(t, twice, /^unibus: registration refused: a user with signing key [0-9a-f]{64} already exists/, "twice");
  oneLineError(t, broken, /identity file .*corrupt\.json is corrupt/, "corrupt identity");
  t.equal(fs.readFileSync(corrupt, "utf8"), "{", "corrupt file untouched");
  t.equal(kimReg.code, 0, kimReg.stderr);
  t.match(JSON.parse(kimReg.stdout), {
    identity: path.join(dir, "kim.json"),
    signPub: kim.signPub,
    kexPub: kim.kexPub,
    handle: "jay",
    role: "member",
    status: "active",
  });
  const invites = JSON.parse((await run(["invite", "list", "--json", ...d])).stdout) as Created["invite"][];
  t.same(
    invites.map((i) => [i.handle, i.status]).sort(),
    [
      ["hank", "spent"],
      ["ivy", "spent"],
      ["jay", "spent"],
    ],
    "the already-registered key spent ivy's token",
  );
});
