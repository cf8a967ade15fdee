import { KeyObject, webcrypto, X509Certificate } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import t from "tap";
import { InvalidArgumentError, KeyFileError } from "../../lib/errors.ts";
import { describeCertificate, issueCertificate, loadOrCreateCa } from "../../lib/tls/index.ts";
import { x509 } from "../../lib/tls/x509.ts";
import { tempDir } from "../helpers/fs.ts";
import { modeOf, rejection, snapshot } from "./helpers.ts";

const DAY = 86_400_000;
type Asserts = Pick<typeof t, "equal" | "match" | "notOk" | "same" | "teardown">;

t.test("creates the CA once and reuses it", async (t) => {
  const dir = path.join(await tempDir(t), "tls");
  const first = await loadOrCreateCa(dir);
  t.equal(first.certFile, path.join(dir, "ca.pem"));
  t.equal(first.keyFile, path.join(dir, "ca-key.pem"));
  t.match(first.fingerprint, /^[0-9a-f]{64}$/);
  t.match(first.certPem, /^-----BEGIN CERTIFICATE-----/);
  t.match(first.keyPem, /^-----BEGIN PRIVATE KEY-----/, "PKCS#8");
  t.equal(await modeOf(dir), 0o700, "a created directory is private");
  t.equal(await modeOf(first.keyFile), 0o600, "the key is owner-only");
  t.equal(await modeOf(first.certFile), 0o644);
  t.equal(await fs.readFile(first.keyFile, "utf8"), first.keyPem);
  t.same((await fs.readdir(dir)).sort(), ["ca-key.pem", "ca.pem"], "no temp files left behind");

  const d = describeCertificate(first.certPem);
  t.equal(d.isCa, true);
  t.equal(d.subject, d.issuer, "self-signed");
  t.match(d.subject, /^CN=unibus CA [0-9a-f]{8}$/);
  t.equal(d.fingerprint, first.fingerprint);
  const days = (d.notAfter.getTime() - Date.now()) / DAY;
  t.ok(days > 3649 && days <= 3650, `valid for 3650 days by default (got ${days})`);

  const again = await loadOrCreateCa(dir, { commonName: "ignored once the CA exists" });
  t.same(again, first, "same files, same fingerprint");
});

t.test("options apply when the CA is created", async (t) => {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir, { commonName: "Acme, Inc. CA", validityDays: 30 });
  const d = describeCertificate(ca.certPem);
  t.equal(d.subject, "CN=Acme\\, Inc. CA", "special characters are escaped, not parsed");
  const days = (d.notAfter.getTime() - Date.now()) / DAY;
  t.ok(days > 29 && days <= 30, `valid for 30 days (got ${days})`);
});

t.test("concurrent first calls create exactly one CA", async (t) => {
  const dir = await tempDir(t);
  const all = await Promise.all(Array.from({ length: 5 }, () => loadOrCreateCa(dir)));
  t.equal(new Set(all.map((ca) => ca.fingerprint)).size, 1);
  t.same((await fs.readdir(dir)).sort(), ["ca-key.pem", "ca.pem"]);
});

t.test("bad arguments are refused before touching the disk", async (t) => {
  const dir = path.join(await tempDir(t), "never");
  await rejection(loadOrCreateCa(""), InvalidArgumentError);
  for (const commonName of ["", "a\nb", "x".repeat(65)]) {
    const err = await rejection(loadOrCreateCa(dir, { commonName }), InvalidArgumentError);
    t.equal(err.field, "commonName");
  }
  for (const validityDays of [0, -1, 1.5, Number.NaN]) {
    const err = await rejection(loadOrCreateCa(dir, { validityDays }), InvalidArgumentError);
    t.equal(err.field, "validityDays");
  }
  await t.rejects(fs.stat(dir), { code: "ENOENT" });
});

/** Runs `damage` on a fresh CA dir, then checks loadOrCreateCa refuses it and leaves the files as they were. */
async function refuses(
  t: Asserts,
  damage: (files: { dir: string; certFile: string; keyFile: string }) => Promise<void>,
  expect: { file: "ca.pem" | "ca-key.pem"; message: RegExp },
) {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  await damage({ dir, certFile: ca.certFile, keyFile: ca.keyFile });
  const before = await snapshot(dir);
  const err = await rejection(loadOrCreateCa(dir), KeyFileError);
  t.equal(err.code, "KEY_FILE");
  t.equal(err.file, path.join(dir, expect.file));
  t.match(err.message, expect.message);
  const keyBody = ca.keyPem.split("\n")[1]!;
  t.notOk(err.message.includes(keyBody), "no key material in the message");
  t.same(await snapshot(dir), before, "files untouched, nothing regenerated");
}

t.test("a certificate without its key is refused", (t) =>
  refuses(t, ({ keyFile }) => fs.rm(keyFile), {
    file: "ca-key.pem",
    message: /key .* is missing; restore ca-key\.pem/,
  }),
);

t.test("a key without its certificate is refused", (t) =>
  refuses(t, ({ certFile }) => fs.rm(certFile), {
    file: "ca.pem",
    message: /certificate .* is missing; restore ca\.pem/,
  }),
);

t.test("a corrupt key is refused", (t) =>
  refuses(
    t,
    ({ keyFile }) => fs.writeFile(keyFile, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"),
    {
      file: "ca-key.pem",
      message: /not a usable unencrypted PEM private key/,
    },
  ),
);

t.test("a truncated key is refused", (t) =>
  refuses(
    t,
    async ({ keyFile }) => {
      const pem = await fs.readFile(keyFile, "utf8");
      await fs.writeFile(keyFile, pem.slice(0, pem.length / 2));
    },
    { file: "ca-key.pem", message: /not a usable/ },
  ),
);

t.test("a key from another CA is refused", async (t) => {
  const other = await loadOrCreateCa(await tempDir(t));
  await refuses(t, ({ keyFile }) => fs.writeFile(keyFile, other.keyPem), {
    file: "ca-key.pem",
    message: /does not belong to the CA certificate/,
  });
});

t.test("a key readable by group or others is refused, not fixed", async (t) => {
  for (const mode of [0o644, 0o640, 0o604]) {
    await refuses(t, ({ keyFile }) => fs.chmod(keyFile, mode), {
      file: "ca-key.pem",
      message: new RegExp(`accessible by group or others \\(mode 0${mode.toString(8)}\\); .*chmod 600`),
    });
  }
});

t.test("a corrupt certificate is refused", (t) =>
  refuses(t, ({ certFile }) => fs.writeFile(certFile, "not a certificate\n"), {
    file: "ca.pem",
    message: /not a readable PEM certificate/,
  }),
);

t.test("a leaf certificate in place of the CA is refused", async (t) => {
  await refuses(
    t,
    async ({ dir, certFile, keyFile }) => {
      const ca = await loadOrCreateCa(dir);
      const leaf = await issueCertificate(ca, { commonName: "leaf", hosts: ["localhost"], usage: "server" });
      await fs.writeFile(certFile, leaf.certPem);
      await fs.writeFile(keyFile, leaf.keyPem);
    },
    { file: "ca.pem", message: /not a CA certificate/ },
  );
});

t.test("an expired CA is refused", async (t) => {
  await refuses(
    t,
    async ({ certFile, keyFile }) => {
      // Re-sign the CA's own key into a certificate that ended yesterday.
      const keyPem = await fs.readFile(keyFile, "utf8");
      const der = Buffer.from(keyPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
      const alg = { name: "ECDSA", namedCurve: "P-256" };
      const privateKey = await crypto.subtle.importKey("pkcs8", der, alg, true, ["sign"]);
      const old = new x509.X509Certificate(await fs.readFile(certFile, "utf8"));
      const publicKey = await old.publicKey.export(alg, ["verify"]);
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        name: "CN=expired CA",
        notBefore: new Date(Date.now() - 10 * DAY),
        notAfter: new Date(Date.now() - DAY),
        keys: { privateKey, publicKey },
        signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
        extensions: [new x509.BasicConstraintsExtension(true, 0, true)],
      });
      await fs.writeFile(certFile, cert.toString("pem"));
    },
    { file: "ca.pem", message: /expired on .*move ca\.pem and ca-key\.pem/ },
  );
});

t.test("a CA made elsewhere (RSA) is loaded and issues working certificates", async (t) => {
  const dir = await tempDir(t);
  const alg = {
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256",
  };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: "CN=Corp Root, O=Corp",
    notAfter: new Date(Date.now() + 365 * DAY),
    keys,
    signingAlgorithm: alg,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  const keyPem = KeyObject.from(keys.privateKey).export({ format: "pem", type: "pkcs8" }).toString();
  await fs.writeFile(path.join(dir, "ca.pem"), cert.toString("pem"));
  await fs.writeFile(path.join(dir, "ca-key.pem"), keyPem, { mode: 0o600 });

  const ca = await loadOrCreateCa(dir);
  t.equal(ca.keyPem, keyPem);
  const leaf = await issueCertificate(ca, { commonName: "x", hosts: ["localhost"], usage: "server" });
  const d = describeCertificate(leaf.certPem);
  t.equal(d.issuer, "CN=Corp Root, O=Corp");
  const node = new X509Certificate(leaf.certPem);
  t.ok(node.verify(new X509Certificate(ca.certPem).publicKey), "signed with the RSA key");
});

t.test("a directory that cannot be created is a KeyFileError", async (t) => {
  const file = path.join(await tempDir(t), "a-file");
  await fs.writeFile(file, "");
  const err = await rejection(loadOrCreateCa(path.join(file, "tls")), KeyFileError);
  t.match(err.message, /cannot create the TLS directory/);
});
