import fs from "node:fs/promises";
import path from "node:path";
import t from "tap";
import { InvalidArgumentError, KeyFileError } from "../../lib/errors.ts";
import {
  type CertificateAuthority,
  describeCertificate,
  issueCertificate,
  loadOrCreateCa,
  loadOrCreateServerCertificate,
} from "../../lib/tls/index.ts";
import { tempDir } from "../helpers/fs.ts";
import { captureLogger } from "../helpers/log.ts";
import { modeOf, rejection, snapshot } from "./helpers.ts";

const DAY = 86_400_000;

/** A logger whose lines land in an array, to see why a certificate was (re-)issued. */
const capture = () => captureLogger<{ msg: string; reason?: string; certFile?: string }>();

async function setup(t: Parameters<typeof tempDir>[0]) {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  return { dir, ca };
}

t.test("issues once, then reuses the same files", async (t) => {
  const { dir, ca } = await setup(t);
  const log = capture();
  const first = await loadOrCreateServerCertificate(dir, ca, { name: "nats", logger: log.logger });
  t.equal(first.certFile, path.join(dir, "nats.pem"));
  t.equal(first.keyFile, path.join(dir, "nats-key.pem"));
  t.equal(await fs.readFile(first.certFile, "utf8"), first.certPem);
  t.equal(await fs.readFile(first.keyFile, "utf8"), first.keyPem);
  t.equal(await modeOf(first.keyFile), 0o600);
  t.equal(await modeOf(first.certFile), 0o644);
  const d = describeCertificate(first.certPem);
  t.same(d.sans, ["DNS:localhost", "IP:127.0.0.1", "IP:::1"], "the loopback names are always there");
  t.same(d.extKeyUsage, ["serverAuth"], "usage defaults to server");
  t.equal(d.subject, "CN=nats");
  t.match(log.lines, [{ msg: "issuing TLS certificate", reason: "no certificate yet" }]);

  const files = await snapshot(dir);
  const again = await loadOrCreateServerCertificate(dir, ca, {
    name: "nats",
    hosts: ["LOCALHOST", "0:0::1"],
    logger: log.logger,
  });
  t.same(again, first, "unchanged request: same certificate and key");
  t.same(await snapshot(dir), files, "files not rewritten");
  t.equal(log.lines.length, 1, "nothing issued the second time");
});

t.test("a new host re-issues with every host", async (t) => {
  const { dir, ca } = await setup(t);
  const log = capture();
  const first = await loadOrCreateServerCertificate(dir, ca, { name: "nats", hosts: ["10.0.0.7"] });
  const second = await loadOrCreateServerCertificate(dir, ca, {
    name: "nats",
    hosts: ["10.0.0.7", "bus.example.org"],
    logger: log.logger,
  });
  t.not(second.certPem, first.certPem);
  t.not(second.keyPem, first.keyPem, "a fresh key too");
  t.same(describeCertificate(second.certPem).sans, [
    "DNS:localhost",
    "IP:127.0.0.1",
    "IP:::1",
    "IP:10.0.0.7",
    "DNS:bus.example.org",
  ]);
  t.match(log.lines, [{ reason: "hosts not covered: bus.example.org" }]);
  t.equal(await fs.readFile(second.certFile, "utf8"), second.certPem);
  // Dropping a host is fine: the certificate still covers every requested one.
  const third = await loadOrCreateServerCertificate(dir, ca, { name: "nats" });
  t.equal(third.certPem, second.certPem);
});

/** Replaces nats.pem / nats-key.pem, then checks the next call re-issues and says why. */
async function reissues(
  t: Parameters<typeof tempDir>[0] & Pick<typeof import("tap").t, "match" | "not" | "equal" | "ok">,
  damage: (ctx: { dir: string; ca: CertificateAuthority; certFile: string; keyFile: string }) => Promise<void>,
  reason: RegExp,
  usage: "server" | "peer" = "server",
) {
  const { dir, ca } = await setup(t);
  const first = await loadOrCreateServerCertificate(dir, ca, { name: "nats" });
  await damage({ dir, ca, certFile: first.certFile, keyFile: first.keyFile });
  const damaged = await fs.readFile(first.certFile, "utf8").catch(() => "");
  const log = capture();
  const next = await loadOrCreateServerCertificate(dir, ca, { name: "nats", usage, logger: log.logger });
  t.match(log.lines, [{ msg: "issuing TLS certificate", reason }]);
  t.not(next.certPem, damaged);
  const d = describeCertificate(next.certPem);
  t.ok(d.notAfter.getTime() - Date.now() > 800 * DAY, "a fresh, long-lived certificate");
  t.equal(await fs.readFile(next.certFile, "utf8"), next.certPem);
  t.equal(await fs.readFile(next.keyFile, "utf8"), next.keyPem);
  t.equal(await modeOf(next.keyFile), 0o600);
  return next;
}

const hosts = ["localhost", "127.0.0.1", "::1"];

t.test("an expired certificate is re-issued", (t) =>
  reissues(
    t,
    async ({ ca, certFile, keyFile }) => {
      const old = await issueCertificate(ca, {
        commonName: "nats",
        hosts,
        usage: "server",
        notBefore: new Date(Date.now() - 30 * DAY),
        notAfter: new Date(Date.now() - DAY),
      });
      t.ok(describeCertificate(old.certPem).notAfter.getTime() < Date.now(), "describeCertificate sees the expiry");
      await fs.writeFile(certFile, old.certPem);
      await fs.writeFile(keyFile, old.keyPem);
    },
    /^expired on /,
  ),
);

t.test("a certificate expiring within 30 days is re-issued", (t) =>
  reissues(
    t,
    async ({ ca, certFile, keyFile }) => {
      const old = await issueCertificate(ca, { commonName: "nats", hosts, usage: "server", validityDays: 29 });
      await fs.writeFile(certFile, old.certPem);
      await fs.writeFile(keyFile, old.keyPem);
    },
    /within 30 days/,
  ),
);

t.test("a certificate from another CA is re-issued", (t) =>
  reissues(
    t,
    async ({ certFile, keyFile }) => {
      const stranger = await loadOrCreateCa(await tempDir(t));
      const old = await issueCertificate(stranger, { commonName: "nats", hosts, usage: "server" });
      await fs.writeFile(certFile, old.certPem);
      await fs.writeFile(keyFile, old.keyPem);
    },
    /^not issued by this CA$/,
  ),
);

t.test("a key that does not match is re-issued", (t) =>
  reissues(
    t,
    async ({ ca, keyFile }) => {
      const other = await issueCertificate(ca, { commonName: "nats", hosts, usage: "server" });
      await fs.writeFile(keyFile, other.keyPem);
    },
    /^key does not match certificate$/,
  ),
);

t.test("a corrupt certificate is re-issued", (t) =>
  reissues(t, ({ certFile }) => fs.writeFile(certFile, "garbage"), /^certificate unreadable/),
);

t.test("a corrupt key is re-issued", (t) =>
  reissues(t, ({ keyFile }) => fs.writeFile(keyFile, "garbage"), /^key unreadable/),
);

t.test("a missing key is re-issued", (t) => reissues(t, ({ keyFile }) => fs.rm(keyFile), /^key file missing$/));

t.test("a missing certificate is re-issued", (t) =>
  reissues(t, ({ certFile }) => fs.rm(certFile), /^certificate file missing$/),
);

t.test("a different usage is re-issued", async (t) => {
  const peer = await reissues(
    t,
    async () => {},
    /extended key usage is \[serverAuth\], wanted \[clientAuth,serverAuth\]/,
    "peer",
  );
  t.same(describeCertificate(peer.certPem).extKeyUsage, ["serverAuth", "clientAuth"]);
});

t.test("a key readable by others is an error, and nothing is touched", async (t) => {
  const { dir, ca } = await setup(t);
  const first = await loadOrCreateServerCertificate(dir, ca, { name: "nats" });
  await fs.chmod(first.keyFile, 0o644);
  const before = await snapshot(dir);
  const err = await rejection(loadOrCreateServerCertificate(dir, ca, { name: "nats" }), KeyFileError);
  t.equal(err.file, first.keyFile);
  t.match(err.message, /chmod 600/);
  t.same(await snapshot(dir), before);
});

t.test("concurrent calls issue one certificate", async (t) => {
  const { dir, ca } = await setup(t);
  const log = capture();
  const all = await Promise.all(
    Array.from({ length: 4 }, () => loadOrCreateServerCertificate(dir, ca, { name: "nats", logger: log.logger })),
  );
  t.equal(new Set(all.map((c) => c.certPem)).size, 1);
  t.equal(log.lines.length, 1);
  t.same((await fs.readdir(dir)).sort(), ["ca-key.pem", "ca.pem", "nats-key.pem", "nats.pem"], "no temp files");
});

t.test("bad input is refused before anything is written", async (t) => {
  const { dir, ca } = await setup(t);
  const cases: [string, Record<string, unknown>][] = [
    ["name", { name: "" }],
    ["name", { name: "ca" }],
    ["name", { name: "nats-key" }],
    ["name", { name: "../escape" }],
    ["name", { name: ".hidden" }],
    ["name", { name: "a/b" }],
    ["hosts", { name: "nats", hosts: ["not a host"] }],
    ["hosts", { name: "nats", hosts: ["0.0.0.0"] }],
    ["usage", { name: "nats", usage: "client" }],
  ];
  for (const [field, opts] of cases) {
    const err = await rejection(loadOrCreateServerCertificate(dir, ca, opts as never), InvalidArgumentError);
    t.equal(err.field, field, JSON.stringify(opts));
  }
  t.equal(
    (await rejection(loadOrCreateServerCertificate("", ca, { name: "nats" }), InvalidArgumentError)).field,
    "dir",
  );
  t.same((await fs.readdir(dir)).sort(), ["ca-key.pem", "ca.pem"]);
});
