// Cross-origin calls from browser pages: only the origins the operator lists may read
// answers; preflights are answered before any signature is asked for; no credentials.
import t from "tap";
import { fetch } from "undici";
import { checkCorsOrigins } from "../../lib/control/cors.ts";
import { InvalidArgumentError } from "../../lib/errors.ts";
import { api, member, testBus } from "../helpers/bus.ts";
import { trustingAgent } from "../helpers/http.ts";

const APP = "http://127.0.0.1:5173";

t.test("a listed origin gets its preflight answered and may read answers; others get no CORS header", async (t) => {
  const bus = await testBus(t, { corsOrigins: [APP] });
  const dispatcher = trustingAgent(t, bus.caPem);
  const preflight = await fetch(`${bus.controlUrl}/v1/rooms`, {
    method: "OPTIONS",
    dispatcher,
    headers: { origin: APP, "access-control-request-method": "POST", "access-control-request-headers": "x-unibus-key" },
  });
  t.equal(preflight.status, 204);
  t.equal(preflight.headers.get("access-control-allow-origin"), APP);
  t.match(preflight.headers.get("access-control-allow-headers"), /x-unibus-signature/);
  t.match(preflight.headers.get("access-control-allow-methods"), /PUT/);
  t.equal(preflight.headers.get("access-control-allow-credentials"), null, "never credentials");

  const stranger = await fetch(`${bus.controlUrl}/v1/rooms`, {
    method: "OPTIONS",
    dispatcher,
    headers: { origin: "http://evil.test", "access-control-request-method": "POST" },
  });
  t.equal(stranger.headers.get("access-control-allow-origin"), null, "an unlisted origin is not allowed");
  t.equal(stranger.status, 405, "and its preflight is just an unknown method");

  // a signed request from the listed origin carries the header; a refusal too (the page reads the error)
  const alice = await member(bus, "alice");
  await api(t, bus, alice).request("GET", `/v1/users/${alice.signPub}`);
  const refused = await fetch(`${bus.controlUrl}/v1/users`, { dispatcher, headers: { origin: APP } });
  t.equal(refused.status, 401);
  t.equal(refused.headers.get("access-control-allow-origin"), APP);
  t.match(refused.headers.get("access-control-expose-headers"), /x-request-id/);
  const none = await fetch(`${bus.controlUrl}/v1/users`, { dispatcher });
  t.equal(none.headers.get("access-control-allow-origin"), null, "no Origin, no CORS header");
});

t.test("origins are checked: exactly scheme://host[:port]", async (t) => {
  t.same(checkCorsOrigins(["https://app.example", "http://127.0.0.1:8080"]), [
    "https://app.example",
    "http://127.0.0.1:8080",
  ]);
  for (const bad of ["*", "https://app.example/", "https://app.example/x", "app.example", "null", "file:///x"]) {
    t.throws(() => checkCorsOrigins([bad]), InvalidArgumentError, `${bad} refused`);
  }
  await t.rejects(testBus(t, { corsOrigins: ["https://a.example/path"] }), InvalidArgumentError);
});
