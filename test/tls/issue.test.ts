import { createPrivateKey, X509Certificate } from "node:crypto";
import t from "tap";
import { InvalidArgumentError } from "../../lib/errors.ts";
import { describeCertificate, issueCertificate, loadOrCreateCa, validateHost } from "../../lib/tls/index.ts";
import { x509 } from "../../lib/tls/x509.ts";
import { tempDir } from "../helpers/fs.ts";
import { rejection } from "./helpers.ts";

const DAY = 86_400_000;

t.test("a server certificate: SAN types, usages, extensions, key", async (t) => {
  const ca = await loadOrCreateCa(await tempDir(t));
  const hosts = [
    "localhost",
    "127.0.0.1",
    "::1",
    "Bus.Example.ORG.",
    "2001:DB8:0:0::5",
    "::ffff:10.1.2.3",
    "localhost",
  ];
  const { certPem, keyPem } = await issueCertificate(ca, { commonName: "nats-1", hosts, usage: "server" });

  const d = describeCertificate(certPem);
  t.equal(d.subject, "CN=nats-1");
  t.equal(d.issuer, describeCertificate(ca.certPem).subject);
  t.same(
    d.sans,
    ["DNS:localhost", "IP:127.0.0.1", "IP:::1", "DNS:bus.example.org", "IP:2001:db8::5", "IP:10.1.2.3"],
    "IP SANs for addresses (IPv4-mapped as IPv4), DNS SANs for names, canonical and de-duplicated",
  );
  t.same(d.extKeyUsage, ["serverAuth"]);
  t.equal(d.isCa, false);
  const days = (d.notAfter.getTime() - Date.now()) / DAY;
  t.ok(days > 824 && days <= 825, `825 days by default (got ${days})`);

  const node = new X509Certificate(certPem);
  const caNode = new X509Certificate(ca.certPem);
  t.ok(node.checkIssued(caNode) && node.verify(caNode.publicKey), "signed by the CA");
  t.equal(d.fingerprint, node.fingerprint256.replaceAll(":", "").toLowerCase());
  t.equal(node.checkHost("bus.example.org"), "bus.example.org");
  t.equal(node.checkIP("10.1.2.3"), "10.1.2.3");
  t.equal(node.checkIP("::1"), "::1");
  t.equal(node.checkIP("10.9.9.9"), undefined);
  t.equal(node.checkHost("127.0.0.1"), undefined, "an address is not also a DNS name");

  const key = createPrivateKey(keyPem);
  t.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/, "PKCS#8 PEM");
  t.equal(key.asymmetricKeyType, "ec");
  t.equal(key.asymmetricKeyDetails?.namedCurve, "prime256v1");
  t.ok(node.checkPrivateKey(key), "the key belongs to the certificate");

  const cert = new x509.X509Certificate(certPem);
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  t.equal(bc?.ca, false);
  t.equal(bc?.critical, true);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  t.ok(ku && ku.usages & x509.KeyUsageFlags.digitalSignature, "digitalSignature");
  t.notOk(ku && ku.usages & x509.KeyUsageFlags.keyCertSign, "cannot sign certificates");
  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension);
  const caSki = new x509.X509Certificate(ca.certPem).getExtension(x509.SubjectKeyIdentifierExtension);
  t.ok(ski?.keyId, "subjectKeyIdentifier");
  t.equal(aki?.keyId, caSki?.keyId, "authorityKeyIdentifier is the CA's key id");
});

t.test("a peer certificate carries serverAuth and clientAuth", async (t) => {
  const ca = await loadOrCreateCa(await tempDir(t));
  const { certPem } = await issueCertificate(ca, { commonName: "route", hosts: ["127.0.0.1"], usage: "peer" });
  t.same(describeCertificate(certPem).extKeyUsage, ["serverAuth", "clientAuth"]);
});

t.test("every issue is a new key and serial", async (t) => {
  const ca = await loadOrCreateCa(await tempDir(t));
  const opts = { commonName: "x", hosts: ["localhost"], usage: "server" as const };
  const [a, b] = await Promise.all([issueCertificate(ca, opts), issueCertificate(ca, opts)]);
  t.not(a.keyPem, b.keyPem);
  t.not(describeCertificate(a.certPem).serialNumber, describeCertificate(b.certPem).serialNumber);
});

t.test("validity: days, explicit dates, never past the CA", async (t) => {
  const ca = await loadOrCreateCa(await tempDir(t), { validityDays: 100 });
  const caEnd = describeCertificate(ca.certPem).notAfter;
  const base = { commonName: "x", hosts: ["localhost"], usage: "server" as const };

  const short = describeCertificate((await issueCertificate(ca, { ...base, validityDays: 7 })).certPem);
  const days = (short.notAfter.getTime() - Date.now()) / DAY;
  t.ok(days > 6 && days <= 7, `7 days (got ${days})`);
  t.ok(short.notBefore.getTime() < Date.now(), "already valid (backdated for clock skew)");

  const capped = describeCertificate((await issueCertificate(ca, base)).certPem);
  t.same(capped.notAfter, caEnd, "825 days capped at the CA's expiry");

  const notBefore = new Date(Date.now() - 10 * DAY);
  const notAfter = new Date(Date.now() - DAY);
  const expired = describeCertificate((await issueCertificate(ca, { ...base, notBefore, notAfter })).certPem);
  t.equal(
    expired.notAfter.getTime(),
    Math.floor(notAfter.getTime() / 1000) * 1000,
    "explicit notAfter (second precision)",
  );
  t.ok(expired.notAfter.getTime() < Date.now(), "describeCertificate shows it expired");

  const err = await rejection(
    issueCertificate(ca, { ...base, notBefore: notAfter, notAfter: notBefore }),
    InvalidArgumentError,
  );
  t.equal(err.field, "notAfter");
  for (const validityDays of [0, -1, 2.5]) {
    t.equal(
      (await rejection(issueCertificate(ca, { ...base, validityDays }), InvalidArgumentError)).field,
      "validityDays",
    );
  }
  t.equal(
    (await rejection(issueCertificate(ca, { ...base, notAfter: new Date("nope") }), InvalidArgumentError)).field,
    "notAfter",
  );
});

t.test("bad input is refused with InvalidArgumentError", async (t) => {
  const ca = await loadOrCreateCa(await tempDir(t));
  const base = { commonName: "x", hosts: ["localhost"], usage: "server" as const };
  const cases: [string, Record<string, unknown>][] = [
    ["hosts", { hosts: [] }],
    ["hosts", { hosts: ["bad_host"] }],
    ["hosts", { hosts: ["localhost", "*.example.org"] }],
    ["hosts", { hosts: "localhost" }],
    ["commonName", { commonName: "" }],
    ["usage", { usage: "client" }],
  ];
  for (const [field, patch] of cases) {
    const err = await rejection(issueCertificate(ca, { ...base, ...patch } as never), InvalidArgumentError);
    t.equal(err.field, field, JSON.stringify(patch));
  }
  const other = await loadOrCreateCa(await tempDir(t));
  const mixed = { ...ca, keyPem: other.keyPem };
  const err = await rejection(issueCertificate(mixed, base), InvalidArgumentError);
  t.equal(err.field, "ca");
  t.match(err.message, /does not belong/);
  const leaf = await issueCertificate(ca, base);
  t.match((await rejection(issueCertificate(leaf, base), InvalidArgumentError)).message, /not a CA/);
});

t.test("describeCertificate", async (t) => {
  const ca = await loadOrCreateCa(await tempDir(t));
  const leaf = await issueCertificate(ca, { commonName: "x", hosts: ["localhost"], usage: "server" });
  t.same(
    describeCertificate(`${leaf.certPem}${ca.certPem}`),
    describeCertificate(leaf.certPem),
    "a chain describes its leaf",
  );
  for (const bad of ["", "hello", leaf.keyPem, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]) {
    t.equal(rejectionSync(() => describeCertificate(bad)).field, "pem");
  }
});

function rejectionSync(fn: () => unknown): InvalidArgumentError {
  try {
    fn();
  } catch (err) {
    if (err instanceof InvalidArgumentError) return err;
    throw err;
  }
  throw new Error("expected InvalidArgumentError");
}

t.test("validateHost", async (t) => {
  const good: [string, string][] = [
    ["localhost", "localhost"],
    ["Bus.Example.com.", "bus.example.com"],
    ["nats-1", "nats-1"],
    ["xn--bcher-kva.de", "xn--bcher-kva.de"],
    ["10.0.0.1", "10.0.0.1"],
    ["[::1]", "::1"],
    ["2001:DB8::0:1", "2001:db8::1"],
    ["::ffff:192.168.1.2", "192.168.1.2"],
    ["1a.example", "1a.example"],
  ];
  for (const [input, canonical] of good) t.equal(validateHost(input), canonical, input);
  const bad = [
    "",
    " ",
    "under_score",
    "-lead.example",
    "trail-.example",
    "a..b",
    "*.example.org",
    "bücher.de",
    "0.0.0.0",
    "::",
    "fe80::1%eth0",
    "1.2.3",
    "256.1.1.1",
    "127.000.0.1",
    "host name",
    "x".repeat(64),
    `${"a".repeat(63)}.`.repeat(4),
    "http://example.org",
    "example.org:4222",
  ];
  for (const input of bad) {
    const err = rejectionSync(() => validateHost(input));
    t.equal(err.field, "hosts", input);
    t.match(err.message, /cannot go into a certificate/);
  }
  t.equal(rejectionSync(() => validateHost(42 as never)).field, "hosts");
});
