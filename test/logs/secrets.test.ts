// No secret reaches a log line: a representative workload runs with the library logger at
// "trace", and every captured line is scanned for every secret the workload handled.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import { connect } from "../../lib/client/connect.ts";
import { ControlClient } from "../../lib/client/control.ts";
import type { Room } from "../../lib/client/room.ts";
import { registrationProofMessage } from "../../lib/control/routes.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { client, connectOnce, member, reconnected, testBus } from "../helpers/bus.ts";
import { captureLogger } from "../helpers/log.ts";
import { collector } from "../helpers/room.ts";

/** Every textual form a secret's bytes could take in a log line. */
function forms(bytes: Uint8Array): string[] {
  const b = Buffer.from(bytes);
  return [b.toString("hex"), b.toString("base64url"), b.toString("base64").replace(/=+$/, "")];
}

function identitySecrets(id: Identity): string[] {
  const file = id.toFile();
  return [
    file.signSeed,
    file.kexSecret,
    id.nkeySeed(),
    ...forms(Buffer.from(file.signSeed, "base64url")),
    ...forms(Buffer.from(file.kexSecret, "base64url")),
  ];
}

/** The base64 body lines of a PEM private key. */
function pemKeyLines(file: string): string[] {
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.length >= 40 && !l.startsWith("-----"));
}

const JWT = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/;

/** Lines that contain any of the secrets, with which secret (by label) — never the secret itself. */
function leaks(lines: string[], secrets: Map<string, string>): string[] {
  const found: string[] = [];
  for (const [i, line] of lines.entries()) {
    for (const [secret, label] of secrets) if (line.includes(secret)) found.push(`line ${i + 1}: ${label}`);
    if (JWT.test(line)) found.push(`line ${i + 1}: a JWT`);
  }
  return found;
}

t.test("the scanner finds a secret and a JWT when they are there", async (t) => {
  const id = createIdentity();
  const secrets = new Map(identitySecrets(id).map((s) => [s, "seed"] as const));
  const { text: lines, logger } = captureLogger("trace");
  logger.info({ leaked: id.nkeySeed() }, "oops");
  logger.info("token eyJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJYWFhYWFhYWCJ9.sig");
  t.same(leaks(lines, secrets), ["line 1: seed", "line 2: a JWT"]);
});

t.test("a full workload at trace level logs no seed, key, sealed key, token or JWT", async (t) => {
  const { text: lines, logger } = captureLogger("trace");
  const bus = await testBus(t, { logger });
  const secrets = new Map<string, string>();
  const add = (values: string[], label: string) => {
    for (const v of values) if (v.length >= 16) secrets.set(v, label);
  };

  // identities connecting, and connections denied
  const adminId = await member(bus, "admin", "admin");
  const admin = await client(t, bus, adminId);
  add(identitySecrets(adminId), "admin identity secret");
  const stranger = createIdentity();
  add(identitySecrets(stranger), "stranger identity secret");
  await t.rejects(connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: stranger, timeoutMs: 5000 }), {
    code: "AUTH_DENIED",
  });
  await t.rejects(
    connectOnce(
      bus,
      nkeySigner(adminId.nkey, (d) => stranger.sign(d)),
    ),
    /Authorization Violation/,
  );

  // an invite through the signed control plane, a registration with it, a replay refused
  const { token } = await admin.control.request<{ token: string }>("POST", "/v1/invites", { handle: "bob" });
  add([token, token.toUpperCase()], "invite token");
  const bobId = createIdentity();
  add(identitySecrets(bobId), "bob identity secret");
  const registration = {
    token,
    signPub: bobId.signPub,
    kexPub: bobId.kexPub,
    proof: bobId.sign(registrationProofMessage(token)).toString("base64url"),
  };
  const anon = new ControlClient({ baseUrl: bus.controlUrl, ca: bus.caPem, identity: bobId });
  try {
    await anon.request("POST", "/v1/register", registration, { signed: false });
    const replay = await anon.request("POST", "/v1/register", registration, { signed: false }).catch((e) => e);
    t.match(replay, { status: 409 }, "a spent token is refused");
  } finally {
    await anon.close();
  }
  const bob = await client(t, bus, bobId);

  // an encrypted, persisted room; a member added (sealed key), messages both ways, a rekey
  const carolId = await member(bus, "carol");
  add(identitySecrets(carolId), "carol identity secret");
  const room: Room = await admin.createRoom({ persist: true });
  await reconnected(bob, () => room.addMember(bobId));
  await room.addMember(carolId);
  const bobRoom = await bob.openRoom(room.id);
  const { got, until } = collector(bobRoom);
  await bob.nc.flush();
  await room.publish("hello bob");
  await bobRoom.publish("hello admin");
  await until(2);
  t.equal(got.length, 2, "messages flowed");
  await room.removeMember(carolId);
  await room.publish("after rekey");
  await until(3);
  t.equal(got.length, 3);

  for (const epoch of [1, 2]) {
    const key = await room.keyFor(epoch);
    t.ok(key, `room key of epoch ${epoch} known to its owner`);
    if (key) add(forms(key), `room key epoch ${epoch}`);
  }
  const snapshot = await bus.store.snapshot();
  t.ok(snapshot.sealedKeys.length >= 4, "sealed keys were stored");
  add(
    snapshot.sealedKeys.map((k) => k.sealed),
    "sealed key",
  );
  const serviceKeys = JSON.parse(fs.readFileSync(path.join(bus.dataDir, "service-keys.json"), "utf8"));
  add(
    ["issuer", "service", "system", "app"].map((k) => serviceKeys[k]).filter((v): v is string => typeof v === "string"),
    "service key seed",
  );
  for (const f of ["ca-key.pem", "server-key.pem"]) add(pemKeyLines(path.join(bus.dataDir, "tls", f)), `TLS ${f}`);
  t.ok(secrets.size >= 40, `${secrets.size} secrets to look for`);

  await bob.close();
  await admin.close();
  await bus.stop();

  t.ok(lines.length > 20, `${lines.length} log lines captured`);
  const levels = new Set(lines.map((l) => (JSON.parse(l) as { level: string }).level));
  t.ok(levels.has("debug") || levels.has("trace"), "verbose levels were on");
  t.same(leaks(lines, secrets), [], "no secret in any log line");
});
