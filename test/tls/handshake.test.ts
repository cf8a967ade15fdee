import t from "tap";
import { issueCertificate, loadOrCreateCa, loadOrCreateServerCertificate } from "../../lib/tls/index.ts";
import { tempDir } from "../helpers/fs.ts";
import { hasIPv6Loopback, startTlsServer, tlsConnect } from "./helpers.ts";

// Real node:tls handshakes (OpenSSL) against certificates from a real CA on disk.

t.test("a server certificate verifies against the CA", async (t) => {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  const cert = await loadOrCreateServerCertificate(dir, ca, { name: "server" });
  const { port } = await startTlsServer(t, { cert: cert.certPem, key: cert.keyPem });

  t.match(
    await tlsConnect({ host: "127.0.0.1", port, ca: ca.certPem }),
    { ok: true, authorized: true },
    "IP SAN 127.0.0.1",
  );
  t.match(
    await tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ca: ca.certPem }),
    { ok: true, authorized: true },
    "DNS SAN localhost",
  );
  t.match(
    await tlsConnect({ host: "127.0.0.1", port }),
    { ok: false, code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" },
    "a client that does not trust the CA fails the handshake",
  );
  const stranger = await loadOrCreateCa(await tempDir(t));
  t.match(
    await tlsConnect({ host: "127.0.0.1", port, ca: stranger.certPem }),
    { ok: false, code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" },
    "trusting another unibus CA is not enough",
  );
  t.match(
    await tlsConnect({ host: "127.0.0.1", port, servername: "other.example", ca: ca.certPem }),
    { ok: false, code: "ERR_TLS_CERT_ALTNAME_INVALID" },
    "a host name not in the SANs fails hostname verification",
  );
});

const ipv6 = await hasIPv6Loopback();
t.test("over the IPv6 loopback", { skip: ipv6 ? false : "this machine has no IPv6 loopback" }, async (t) => {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  const cert = await loadOrCreateServerCertificate(dir, ca, { name: "server" });
  const { port } = await startTlsServer(t, { cert: cert.certPem, key: cert.keyPem }, "::1");
  t.match(await tlsConnect({ host: "::1", port, ca: ca.certPem }), { ok: true, authorized: true }, "IP SAN ::1");
});

t.test("an address not in the SANs fails verification", async (t) => {
  const ca = await loadOrCreateCa(await tempDir(t));
  const onlyName = await issueCertificate(ca, { commonName: "x", hosts: ["localhost"], usage: "server" });
  const { port } = await startTlsServer(t, { cert: onlyName.certPem, key: onlyName.keyPem });
  t.match(await tlsConnect({ host: "127.0.0.1", port, ca: ca.certPem }), {
    ok: false,
    code: "ERR_TLS_CERT_ALTNAME_INVALID",
  });
  t.match(await tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ca: ca.certPem }), { ok: true });
});

t.test("an expired certificate fails verification", async (t) => {
  const ca = await loadOrCreateCa(await tempDir(t));
  const expired = await issueCertificate(ca, {
    commonName: "x",
    hosts: ["127.0.0.1"],
    usage: "server",
    notBefore: new Date(Date.now() - 10 * 86_400_000),
    notAfter: new Date(Date.now() - 86_400_000),
  });
  const { port } = await startTlsServer(t, { cert: expired.certPem, key: expired.keyPem });
  t.match(await tlsConnect({ host: "127.0.0.1", port, ca: ca.certPem }), { ok: false, code: "CERT_HAS_EXPIRED" });
});

t.test("mutual TLS with peer certificates", async (t) => {
  const dir = await tempDir(t);
  const ca = await loadOrCreateCa(dir);
  const serverPeer = await loadOrCreateServerCertificate(dir, ca, { name: "route-a", usage: "peer" });
  const clientPeer = await loadOrCreateServerCertificate(dir, ca, { name: "route-b", usage: "peer" });
  const serverOnly = await loadOrCreateServerCertificate(dir, ca, { name: "plain", usage: "server" });
  const client = (c?: { certPem: string; keyPem: string }) =>
    c ? { host: "127.0.0.1", ca: ca.certPem, cert: c.certPem, key: c.keyPem } : { host: "127.0.0.1", ca: ca.certPem };

  const strict = await startTlsServer(t, {
    cert: serverPeer.certPem,
    key: serverPeer.keyPem,
    ca: ca.certPem,
    requestCert: true,
    rejectUnauthorized: true,
  });
  t.match(await tlsConnect({ ...client(clientPeer), port: strict.port }), { ok: true, authorized: true });
  t.match(strict.seen, [{ authorized: true, peerCN: "route-b" }], "the server verified the client's peer certificate");
  t.match(
    await tlsConnect({ ...client(serverOnly), port: strict.port }),
    { ok: false },
    "a serverAuth-only certificate is refused as a client certificate",
  );
  t.match(await tlsConnect({ ...client(), port: strict.port }), { ok: false }, "no client certificate is refused");
  t.equal(strict.seen.length, 1, "the strict server accepted only the peer certificate");

  // The same server, but recording its verdict instead of hanging up, to show why.
  const lenient = await startTlsServer(t, {
    cert: serverPeer.certPem,
    key: serverPeer.keyPem,
    ca: ca.certPem,
    requestCert: true,
    rejectUnauthorized: false,
  });
  await tlsConnect({ ...client(clientPeer), port: lenient.port });
  await tlsConnect({ ...client(serverOnly), port: lenient.port });
  t.match(lenient.seen, [
    { authorized: true, peerCN: "route-b" },
    // OpenSSL checks the client certificate's extended key usage for clientAuth.
    { authorized: false, authorizationError: "INVALID_PURPOSE", peerCN: "plain" },
  ]);

  const stranger = await loadOrCreateCa(await tempDir(t));
  const foreign = await issueCertificate(stranger, { commonName: "intruder", hosts: ["127.0.0.1"], usage: "peer" });
  t.match(await tlsConnect({ ...client(foreign), port: strict.port }), { ok: false }, "a peer cert from another CA");
});
