// `unibus ca …` and `unibus service-keys …` on a data dir: each step's output names what
// to copy and what comes next; a step out of order is one line saying which to run.
import fs from "node:fs/promises";
import path from "node:path";
import t from "tap";
import { loadOrCreateServiceKeys } from "../../lib/auth/index.ts";
import { loadOrCreateCa } from "../../lib/tls/index.ts";
import { oneLineError, runCli } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";

// Fifteen CLI processes, each a Node start: slow on a busy machine.
t.setTimeout(300_000);

t.test("ca rotate, switch, finish through the CLI", async (t) => {
  const dir = await tempDir(t);
  const old = await loadOrCreateCa(path.join(dir, "tls"));

  const rotate = await runCli(["ca", "rotate", "--data-dir", dir]);
  t.equal(rotate.code, 0, rotate.stderr);
  t.match(rotate.stdout, /CA rotation: rotating/);
  t.match(rotate.stdout, new RegExp(`signing CA: +sha256 ${old.fingerprint}`));
  t.match(rotate.stdout, /ca-next\.pem .*ca-next-key\.pem/, "names the files to copy");
  t.match(rotate.stdout, /clients trust: +.*ca-bundle\.pem/);

  const status = await runCli(["ca", "status", "--data-dir", dir, "--json"]);
  const s = JSON.parse(status.stdout) as { phase: string; signing: string; other: string; next: string };
  t.equal(s.phase, "rotating");
  t.equal(s.signing, old.fingerprint);
  t.match(s.next, /ca switch/);

  oneLineError(t, await runCli(["ca", "finish", "--data-dir", dir]), /no previous CA.*ca switch/, "finish too early");

  const sw = await runCli(["ca", "switch", "--data-dir", dir, "--json"]);
  t.equal((JSON.parse(sw.stdout) as { signing: string }).signing, s.other, "the new CA signs");
  const fin = await runCli(["ca", "finish", "--data-dir", dir]);
  t.equal(fin.code, 0, fin.stderr);
  t.match(fin.stdout, /CA rotation: steady/);
  t.same((await fs.readdir(path.join(dir, "tls"))).filter((f) => f.startsWith("ca")).sort(), ["ca-key.pem", "ca.pem"]);
  oneLineError(
    t,
    await runCli(["ca", "switch", "--data-dir", dir]),
    /no next CA.*ca rotate/,
    "switch with nothing to switch to",
  );
  oneLineError(t, await runCli(["ca", "rotate", "--data-dir", path.join(dir, "nowhere")]), /no CA in/, "no CA there");
});

t.test("service-keys rotate, switch, finish through the CLI", async (t) => {
  const dir = await tempDir(t);
  const old = await loadOrCreateServiceKeys(dir);
  const rotate = await runCli(["service-keys", "rotate", "--data-dir", dir]);
  t.equal(rotate.code, 0, rotate.stderr);
  t.match(rotate.stdout, new RegExp(`callout issuer: +${old.issuer.publicKey}`));
  t.match(rotate.stdout, /copy .*service-keys\.json \(mode 0600\) to every other node/);
  t.notOk(rotate.stdout.includes(old.issuer.seedText()), "no seed is printed");
  oneLineError(
    t,
    await runCli(["service-keys", "rotate", "--data-dir", dir]),
    /rotating.*service-keys switch/,
    "rotate twice",
  );
  const sw = JSON.parse((await runCli(["service-keys", "switch", "--data-dir", dir, "--json"])).stdout) as {
    issuer: string;
    otherIssuer: string;
  };
  t.equal(sw.otherIssuer, old.issuer.publicKey, "the old issuer is still accepted");
  t.not(sw.issuer, old.issuer.publicKey);
  const fin = await runCli(["service-keys", "finish", "--data-dir", dir]);
  t.equal(fin.code, 0, fin.stderr);
  t.match(fin.stdout, /service-key rotation: steady/);
  t.match(fin.stdout, /old keys are refused/);
});
