// Service-key rotation in the key file: the three phases, what each node's nats-server
// then lets in, and every step refused out of order with the file untouched.
import fs from "node:fs/promises";
import path from "node:path";
import t from "tap";
import {
  finishServiceKeys,
  loadOrCreateServiceKeys,
  loadServiceKeys,
  rotateServiceKeys,
  SERVICE_KEYS_FILE,
  ServiceKeysRotationError,
  switchServiceKeys,
} from "../../lib/auth/index.ts";
import { busLayout, natsConfigFor } from "../../lib/bus/layout.ts";
import { tempDir } from "../helpers/fs.ts";

async function configOf(dataDir: string) {
  const keys = await loadServiceKeys(dataDir);
  const conf = natsConfigFor({
    serverName: "n1",
    host: "127.0.0.1",
    port: -1,
    monitoringPort: -1,
    websocketPort: -1,
    layout: busLayout(dataDir, "n1"),
    cert: { certFile: "/c.pem", keyFile: "/k.pem" },
    caFile: "/ca.pem",
    keys,
  });
  const users = (acc: string) => (conf.accounts?.[acc]?.users ?? []).map((u) => u.nkey).sort();
  return { keys, conf, users };
}

t.test("rotate, switch, finish: both sets let in during the rollover, only the new one after", async (t) => {
  const dir = await tempDir(t);
  const old = await loadOrCreateServiceKeys(dir);
  t.equal(old.phase, "steady");
  t.notOk(old.alternate);

  const rotated = await rotateServiceKeys(dir);
  t.equal(rotated.phase, "rotating");
  t.equal(rotated.issuer, old.issuer.publicKey, "the bus still signs with the old issuer");
  t.ok(rotated.otherIssuer && rotated.otherIssuer !== old.issuer.publicKey);
  t.equal((await fs.stat(path.join(dir, SERVICE_KEYS_FILE))).mode & 0o777, 0o600, "still owner-only");
  let { keys, conf, users } = await configOf(dir);
  t.equal(keys.service.publicKey, old.service.publicKey, "services still connect with the old keys");
  const next = keys.alternate!;
  t.same(users("APP"), [old.app.publicKey, next.app.publicKey].sort(), "both app keys are users");
  t.same(users("SYS"), [old.system.publicKey, next.system.publicKey].sort());
  t.same(users("AUTH"), [old.service.publicKey, next.service.publicKey].sort());
  t.equal(conf.authCallout?.issuer, old.issuer.publicKey);
  t.equal(conf.authCallout?.authUsers.length, 6, "both sets bypass the callout");

  const switched = await switchServiceKeys(dir);
  t.equal(switched.issuer, next.issuer.publicKey, "the new issuer signs");
  t.equal(switched.otherIssuer, old.issuer.publicKey, "the old one is still honoured");
  ({ keys, conf, users } = await configOf(dir));
  t.equal(keys.app.seedText(), next.app.seedText(), "services connect with the new keys");
  t.equal(keys.alternate?.app.seedText(), old.app.seedText());
  t.equal(conf.authCallout?.issuer, next.issuer.publicKey, "nats-server expects the new issuer");
  t.same(users("APP"), [old.app.publicKey, next.app.publicKey].sort(), "old users still let in");

  const finished = await finishServiceKeys(dir);
  t.equal(finished.phase, "steady");
  t.notOk(finished.otherIssuer);
  ({ keys, conf, users } = await configOf(dir));
  t.notOk(keys.alternate);
  t.same(users("APP"), [next.app.publicKey]);
  t.same(conf.authCallout?.authUsers.sort(), [next.service, next.system, next.app].map((k) => k.publicKey).sort());
  const text = await fs.readFile(path.join(dir, SERVICE_KEYS_FILE), "utf8");
  for (const k of [old.issuer, old.service, old.system, old.app]) {
    t.notOk(text.includes(k.seedText()), "no old seed is left in the file");
  }
});

t.test("steps out of order are refused and leave the file as it was", async (t) => {
  const dir = await tempDir(t);
  await loadOrCreateServiceKeys(dir);
  const file = path.join(dir, SERVICE_KEYS_FILE);
  for (const [name, step] of [
    ["switch", switchServiceKeys],
    ["finish", finishServiceKeys],
  ] as const) {
    const before = await fs.readFile(file, "utf8");
    const err = await step(dir).catch((e: unknown) => e);
    t.ok(err instanceof ServiceKeysRotationError, `${name} before rotate`);
    t.equal((err as ServiceKeysRotationError).code, "SERVICE_KEYS_ROTATION");
    t.match((err as Error).message, /service-keys rotate/);
    t.equal(await fs.readFile(file, "utf8"), before);
  }
  await rotateServiceKeys(dir);
  const before = await fs.readFile(file, "utf8");
  const twice = await rotateServiceKeys(dir).catch((e: unknown) => e);
  t.ok(twice instanceof ServiceKeysRotationError, "a second rotate would throw the first one's keys away");
  t.equal(await fs.readFile(file, "utf8"), before);

  const missing = await rotateServiceKeys(path.join(dir, "nowhere")).catch((e: unknown) => e);
  t.equal((missing as { code?: string }).code, "KEY_FILE", "no key file: nothing is created");
});
