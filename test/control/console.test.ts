// The console's static files as the control plane serves them: exact names only, GET and
// HEAD only, every answer with the strict policy; nothing else on disk is reachable.
import t from "tap";
import { CONSOLE_CSP, CONSOLE_HEADERS } from "../../lib/control/console.ts";
import { testBus } from "../helpers/bus.ts";
import { trustingAgent } from "../helpers/http.ts";

const bus = await testBus(t);
const agent = trustingAgent(t, bus.caPem);

/** The path goes on the request line exactly as written (a URL would resolve its dot segments first). */
async function get(path: string, method: "GET" | "HEAD" | "POST" = "GET") {
  const res = await agent.request({ origin: bus.controlUrl, path, method });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

t.test("the page and its assets, each with the policy and the hardening headers", async (t) => {
  for (const [path, type] of [
    ["/console/", /^text\/html/],
    ["/console/index.html", /^text\/html/],
    ["/console/app.js", /^text\/javascript/],
    ["/console/signer.js", /^text\/javascript/],
    ["/console/console.css", /^text\/css/],
    ["/console/favicon.svg", /^image\/svg\+xml/],
  ] as const) {
    const res = await get(path);
    t.equal(res.status, 200, path);
    t.match(res.headers["content-type"], type, `${path}: its type`);
    t.match(res.headers, CONSOLE_HEADERS, `${path}: every hardening header`);
    t.equal(Number(res.headers["content-length"]), Buffer.byteLength(res.body), `${path}: its length`);
  }
  t.match(CONSOLE_CSP, /default-src 'none'/);
  t.match(CONSOLE_CSP, /script-src 'self'/);
  t.match(CONSOLE_CSP, /style-src 'self'/);
  t.match(CONSOLE_CSP, /frame-ancestors 'none'/);
  const page = await get("/console/");
  t.notMatch(page.body, /<script>|<style|\sstyle=|\son[a-z]+=/i, "the page itself has no inline script or style");
  t.notMatch(page.body, /https?:\/\//, "and names no other origin");
  const head = await get("/console/", "HEAD");
  t.equal(head.status, 200);
  t.equal(head.body, "", "HEAD has no body");
  t.equal(head.headers["content-length"], page.headers["content-length"]);
});

t.test("/console redirects to /console/ with the same headers", async (t) => {
  const res = await get("/console");
  t.equal(res.status, 308);
  t.equal(res.headers.location, "/console/");
  t.equal(res.headers["content-security-policy"], CONSOLE_CSP);
});

t.test("nothing but the console's own files: other names, other methods, paths out of it", async (t) => {
  for (const path of [
    "/console/nope.js",
    "/console/tsconfig.json",
    "/console/%2e%2e/package.json",
    "/console/sub/app.js",
  ]) {
    const res = await get(path);
    t.equal(res.status, 404, `${path}: 404`);
    t.match(JSON.parse(res.body), { error: "not_found" }, `${path}: a JSON refusal`);
  }
  for (const path of ["/console/../package.json", "/console//app.js", "/console/./app.js"]) {
    t.equal((await get(path)).status, 400, `${path}: dot and empty segments are refused`);
  }
  const post = await get("/console/", "POST");
  t.equal(post.status, 405);
  t.equal(post.headers.allow, "GET, HEAD");
  t.equal((await get("/consoles")).status, 404, "a path that only starts like it is not the console");
});
