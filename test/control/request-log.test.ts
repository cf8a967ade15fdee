// One debug line per request, with the id the caller gets back (x-request-id): built
// only when debug is on, and then complete — route, status, method, address, time.
import t from "tap";
import { api, member, testBus } from "../helpers/bus.ts";
import { trustingAgent } from "../helpers/http.ts";
import { captureLogger } from "../helpers/log.ts";

interface Line {
  msg: string;
  component?: string;
  requestId?: string;
  method?: string;
  route?: string;
  status?: number;
  ip?: string;
  ms?: number;
}

t.test("at debug: one line per request, carrying the id the caller was given", async (t) => {
  const log = captureLogger<Line>("debug");
  const bus = await testBus(t, { logger: log.logger });
  const alice = await member(bus, "alice");
  const room = await api(t, bus, alice).request<{ id: string }>("POST", "/v1/rooms", { encrypt: false });
  const agent = trustingAgent(t, bus.caPem);
  const ids: Record<string, string> = {};
  for (const path of ["/healthz", "/v1/no-such-route", `/v1/rooms/${room.id}`]) {
    const res = await agent.request({ origin: bus.controlUrl, path, method: "GET" });
    await res.body.text();
    ids[path] = String(res.headers["x-request-id"]);
  }
  // The line is written once the response has finished, which may be just after the client read it.
  const lineOf = async (id: string) => {
    for (let i = 0; i < 100; i++) {
      const line = log.lines.find((l) => l.msg === "request" && l.requestId === id);
      if (line) return line;
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  };
  t.match(await lineOf(ids["/healthz"]!), { component: "control", method: "GET", route: "healthz", status: 200 });
  t.match(await lineOf(ids["/v1/no-such-route"]!), { route: "unmatched", status: 404, ip: String, ms: Number });
  t.match(await lineOf(ids[`/v1/rooms/${room.id}`]!), { route: "rooms.get", status: 401 }, "unsigned: refused, logged");
  t.equal(new Set(Object.values(ids)).size, 3, "every request has its own id");
});

t.test("above debug: no request lines, and requests are answered as before", async (t) => {
  const log = captureLogger<Line>("info");
  const bus = await testBus(t, { logger: log.logger });
  const agent = trustingAgent(t, bus.caPem);
  for (let i = 0; i < 3; i++) {
    const res = await agent.request({ origin: bus.controlUrl, path: "/v1/no-such-route", method: "GET" });
    await res.body.text();
    t.equal(res.statusCode, 404);
    t.match(res.headers["x-request-id"], /^[0-9a-f-]{36}$/);
  }
  await new Promise((r) => setTimeout(r, 100));
  t.same(
    log.lines.filter((l) => l.msg === "request"),
    [],
  );
});
