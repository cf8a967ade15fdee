// The console's signer and identity reader, run in chromium against the golden vectors
// (fixtures/vectors): the canonical requests, signatures and headers byte for byte, the
// requests that cannot be signed, and every identity file a reader must refuse.
import fs from "node:fs";
import t from "tap";
import { launchBrowser, openPage, servePages } from "../helpers/browser.ts";

const requests = JSON.parse(fs.readFileSync("fixtures/vectors/requests.json", "utf8"));
const identities = JSON.parse(fs.readFileSync("fixtures/vectors/identity.json", "utf8"));
const js = (name: string) => ({ type: "text/javascript", body: fs.readFileSync(`console/${name}`, "utf8") });

const browser = await launchBrowser(t);
const origin = await servePages(t, {
  "/": { type: "text/html", body: "<!doctype html><title>vectors</title>" },
  "/signer.js": js("signer.js"),
  "/identity.js": js("identity.js"),
});

interface Vector {
  name: string;
  signSeed: string;
  signPub: string;
  method: string;
  uri: string;
  timestamp: string;
  nonce: string;
  bodySha256: string;
  canonical: string;
  headers: Record<string, string>;
}

t.test("signer.js signs every request vector byte for byte", async (t) => {
  const { page, errors } = await openPage(t, browser);
  await page.goto(origin);
  const vectors = requests.vectors as Vector[];
  t.ok(vectors.length >= 4, "the vectors are there");
  const results = await page.evaluate(
    async ({ vectors, origin }) => {
      const signer = await import(`${origin}/signer.js`);
      const { importSigningKey } = await import(`${origin}/identity.js`);
      const out = [];
      for (const v of vectors) {
        const key = await importSigningKey(signer.fromHex(v.signSeed));
        const canonical = signer.canonicalRequest(v);
        const headers = await signer.signedHeaders({ signPub: v.signPub, key }, v);
        out.push({ name: v.name, canonical, headers });
      }
      return out;
    },
    { vectors, origin },
  );
  for (const [i, v] of vectors.entries()) {
    t.equal(results[i]!.canonical, v.canonical, `${v.name}: canonical request`);
    t.same(results[i]!.headers, v.headers, `${v.name}: the five headers, signature included`);
  }
  t.same(errors, []);
});

t.test("signer.js refuses what cannot be signed, naming the field", async (t) => {
  const { page } = await openPage(t, browser);
  await page.goto(origin);
  const unsignable = requests.unsignable as Array<Vector & { field: string }>;
  const fields = await page.evaluate(
    async ({ list, origin }) => {
      const signer = await import(`${origin}/signer.js`);
      return list.map((v) => {
        try {
          signer.canonicalRequest(v);
          return "signed";
        } catch (err) {
          return (err as { field?: string }).field ?? String(err);
        }
      });
    },
    { list: unsignable, origin },
  );
  t.same(
    fields,
    unsignable.map((v) => v.field),
    "each refused for the field the vectors name",
  );
});

t.test("identity.js reads the identity vectors and refuses every corrupt file with its reason", async (t) => {
  const { page, errors } = await openPage(t, browser);
  await page.goto(origin);
  const valid = identities.vectors as Array<{ file: string; signPub: string; kexPub: string }>;
  const invalid = identities.invalid as Array<{ name: string; file: string; reason: string }>;
  const out = await page.evaluate(
    async ({ valid, invalid, origin }) => {
      const { readIdentityFile } = await import(`${origin}/identity.js`);
      const read = [];
      for (const v of valid) {
        const id = await readIdentityFile(v.file);
        let exported = "exported";
        await crypto.subtle.exportKey("pkcs8", id.key).catch((err: Error) => {
          exported = err.name;
        });
        read.push({ signPub: id.signPub, kexPub: id.kexPub, extractable: id.key.extractable, exported });
      }
      const refused = [];
      for (const v of invalid) {
        refused.push(
          await readIdentityFile(v.file).then(
            () => "accepted",
            (err: { reason?: string }) => err.reason,
          ),
        );
      }
      return { read, refused };
    },
    { valid, invalid, origin },
  );
  t.same(
    out.read,
    valid.map((v) => ({ signPub: v.signPub, kexPub: v.kexPub, extractable: false, exported: "InvalidAccessError" })),
    "the keys match, and the signing key cannot be exported",
  );
  t.same(
    out.refused,
    invalid.map((v) => v.reason),
    "each corrupt file refused for its reason",
  );
  t.same(errors, []);
});
