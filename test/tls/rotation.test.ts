// CA rotation on disk: the three phases (rotate, switch, finish), what each node then
// trusts and signs with, and every step refused out of order with the files untouched.
import { X509Certificate } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import t from "tap";
import { KeyFileError } from "../../lib/errors.ts";
import {
  CaRotationError,
  caPhase,
  caRotationStatus,
  clientCaFileSync,
  finishCa,
  loadCaTrust,
  loadOrCreateCa,
  loadOrCreateServerCertificate,
  pemFingerprint,
  rotateCa,
  switchCa,
} from "../../lib/tls/index.ts";
import { tempDir } from "../helpers/fs.ts";
import { modeOf, snapshot } from "./helpers.ts";

function blocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

function issuedBy(leafPem: string, caPem: string): boolean {
  return new X509Certificate(leafPem).verify(new X509Certificate(caPem).publicKey);
}

t.test("rotate, switch, finish: trust widens, the signer changes, trust narrows", async (t) => {
  const dir = path.join(await tempDir(t), "tls");
  const old = await loadOrCreateCa(dir);
  const oldLeaf = await loadOrCreateServerCertificate(dir, old, { name: "route", usage: "peer" });

  let trust = await loadCaTrust(dir, old);
  t.equal(trust.phase, "steady");
  t.equal(trust.file, old.certFile, "one CA: clients are given ca.pem");
  t.equal(clientCaFileSync(dir), old.certFile);

  const rotated = await rotateCa(dir);
  t.equal(rotated.phase, "rotating");
  t.equal(rotated.signing, old.fingerprint, "the old CA still signs");
  t.not(rotated.other, old.fingerprint);
  t.same(
    rotated.copy.map((f) => path.basename(f)),
    ["ca-next.pem", "ca-next-key.pem"],
    "what to copy to the others",
  );
  t.equal(await modeOf(path.join(dir, "ca-next-key.pem")), 0o600, "the new key is owner-only");
  const nextPem = await fs.readFile(path.join(dir, "ca-next.pem"), "utf8");

  // What a node reads at its next start.
  const again = await loadOrCreateCa(dir);
  t.equal(again.fingerprint, old.fingerprint, "ca.pem is untouched");
  trust = await loadCaTrust(dir, again);
  t.equal(trust.phase, "rotating");
  t.equal(path.basename(trust.file), "ca-bundle.pem");
  t.equal(clientCaFileSync(dir), trust.file, "local tools read the bundle");
  t.same(
    blocks(trust.pem).map((b) => pemFingerprint(b)),
    [old.fingerprint, rotated.other],
    "the bundle: signing CA first (what invites pin), then the new one",
  );
  t.equal(await fs.readFile(trust.file, "utf8"), trust.pem);
  const kept = await loadOrCreateServerCertificate(dir, again, { name: "route", usage: "peer" });
  t.equal(kept.certPem, oldLeaf.certPem, "nodes keep serving old-CA certificates: old-CA clients still connect");

  const switched = await switchCa(dir);
  t.equal(switched.phase, "switched");
  t.equal(switched.signing, rotated.other, "the new CA signs");
  t.equal(switched.other, old.fingerprint, "the old one is still trusted");
  t.same((await fs.readdir(dir)).filter((f) => f.startsWith("ca")).sort(), [
    "ca-bundle.pem",
    "ca-key.pem",
    "ca-previous-key.pem",
    "ca-previous.pem",
    "ca.pem",
  ]);
  const now = await loadOrCreateCa(dir);
  t.equal(now.certPem, nextPem, "ca.pem is the new CA");
  t.equal(await modeOf(now.keyFile), 0o600);
  trust = await loadCaTrust(dir, now);
  t.same(
    blocks(trust.pem).map((b) => pemFingerprint(b)),
    [rotated.other, old.fingerprint],
  );
  const fresh = await loadOrCreateServerCertificate(dir, now, { name: "route", usage: "peer" });
  t.ok(issuedBy(fresh.certPem, now.certPem), "a restarted node re-issues its certificate from the new CA");
  t.notOk(issuedBy(fresh.certPem, old.certPem));

  const finished = await finishCa(dir);
  t.equal(finished.phase, "steady");
  t.same(
    (await fs.readdir(dir)).filter((f) => f.startsWith("ca")).sort(),
    ["ca-key.pem", "ca.pem"],
    "the old CA's certificate and key are gone, the bundle too",
  );
  trust = await loadCaTrust(dir, await loadOrCreateCa(dir));
  t.equal(trust.phase, "steady");
  t.same(
    blocks(trust.pem).map((b) => pemFingerprint(b)),
    [rotated.other],
    "only the new CA is trusted",
  );
  t.equal((await caRotationStatus(dir)).phase, "steady");
});

t.test("steps out of order are refused and change nothing", async (t) => {
  const dir = path.join(await tempDir(t), "tls");
  await loadOrCreateCa(dir);
  for (const [name, step] of [
    ["switch", switchCa],
    ["finish", finishCa],
  ] as const) {
    const before = await snapshot(dir);
    const err = await step(dir).catch((e: unknown) => e);
    t.ok(err instanceof CaRotationError, `${name} before rotate`);
    t.equal((err as CaRotationError).code, "CA_ROTATION");
    t.match((err as Error).message, /ca rotate/, "says what to run first");
    t.same(await snapshot(dir), before);
  }
  await rotateCa(dir);
  const before = await snapshot(dir);
  const twice = await rotateCa(dir).catch((e: unknown) => e);
  t.ok(twice instanceof CaRotationError, "a second rotate while one is under way");
  t.equal((twice as CaRotationError).phase, "rotating");
  t.match((twice as Error).message, /ca switch/);
  t.same(await snapshot(dir), before, "the next CA is not replaced");
  const early = await finishCa(dir).catch((e: unknown) => e);
  t.ok(early instanceof CaRotationError, "finish before switch");
  t.same(await snapshot(dir), before);
});

t.test("damaged or half-copied rotation files are named, nothing is moved", async (t) => {
  const dir = path.join(await tempDir(t), "tls");
  const ca = await loadOrCreateCa(dir);
  await fs.writeFile(path.join(dir, "ca-next.pem"), "not a certificate");
  const damaged = await loadCaTrust(dir, ca).catch((e: unknown) => e);
  t.ok(damaged instanceof KeyFileError, "a node refuses to start on a damaged next CA");
  t.match((damaged as Error).message, /ca-next\.pem.*copy it again/);

  // A leaf is not a CA: trusting it would let its holder in as a peer.
  const leaf = await loadOrCreateServerCertificate(dir, ca, { name: "server" });
  await fs.writeFile(path.join(dir, "ca-next.pem"), leaf.certPem);
  const notCa = await loadCaTrust(dir, ca).catch((e: unknown) => e);
  t.match((notCa as Error).message, /not a CA certificate/);

  // The certificate copied without its key: switching would strand the node without a signer.
  await fs.rm(path.join(dir, "ca-next.pem"));
  await rotateCa(dir);
  await fs.rm(path.join(dir, "ca-next-key.pem"));
  const before = await snapshot(dir);
  const noKey = await switchCa(dir).catch((e: unknown) => e);
  t.ok(noKey instanceof KeyFileError, "switch without the next key");
  t.same(await snapshot(dir), before, "ca.pem and ca-key.pem unchanged");

  await fs.writeFile(path.join(dir, "ca-previous.pem"), ca.certPem);
  const both = await caPhase(dir).catch((e: unknown) => e);
  t.ok(both instanceof KeyFileError, "next and previous at once: two rotations overlap");
  t.match((both as Error).message, /overlap/);
});
