// /metrics: valid Prometheus text, loopback only, counters that move with what happens.
import t from "tap";
import { request } from "undici";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { client, member, testBus } from "../helpers/bus.ts";
import { trustingAgent } from "../helpers/http.ts";

/** Every sample line of the exposition format: name, optional labels, a number. */
const SAMPLE =
  /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/;

function parse(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
    if (!SAMPLE.test(line)) throw new Error(`not Prometheus text: ${line}`);
    const i = line.lastIndexOf(" ");
    samples.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return samples;
}

t.test("/metrics is Prometheus text; callout and store counters move", async (t) => {
  const bus = await testBus(t);
  const dispatcher = trustingAgent(t, bus.caPem);
  const scrape = async () => {
    const res = await request(`${bus.controlUrl}/metrics`, { dispatcher });
    t.equal(res.statusCode, 200);
    t.match(res.headers["content-type"], /^text\/plain; version=0\.0\.4/);
    return parse(await res.body.text());
  };

  const alice = await member(bus, "alice");
  const before = await scrape();
  t.equal(before.get('unibus_callout_decisions_total{result="deny",reason="not on the allowlist"}') ?? 0, 0);

  await t.rejects(connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: createIdentity(), timeoutMs: 5000 }));
  await client(t, bus, alice);
  const after = await scrape();
  t.equal(
    after.get('unibus_callout_decisions_total{result="deny",reason="not on the allowlist"}'),
    1,
    "the denial is counted",
  );
  t.equal(after.get('unibus_callout_decisions_total{result="admit",reason="active"}'), 1, "the admission is counted");
  t.equal(after.get("unibus_callout_decision_seconds_count"), 2);
  t.ok(
    (after.get('unibus_store_operation_seconds_count{op="getUser",backend="sqlite"}') ?? 0) >= 2,
    "store reads timed",
  );
  t.equal(after.get("unibus_nats_connections"), 1, "alice's connection (the callout's own is not counted)");
});

t.test("/metrics refuses non-loopback clients", async (t) => {
  // Bind on every address and come in through a non-loopback address of this machine, if there is one.
  const os = await import("node:os");
  const external = Object.values(os.networkInterfaces())
    .flat()
    .find((i) => i && i.family === "IPv4" && !i.internal)?.address;
  if (!external) {
    t.comment("no non-loopback IPv4 address on this machine; the loopback check is covered by isLoopback's unit test");
    const { isLoopback } = await import("../../lib/control/server.ts");
    t.ok(isLoopback("127.0.0.1"));
    t.ok(isLoopback("::ffff:127.0.0.1"));
    t.ok(isLoopback("::1"));
    t.notOk(isLoopback("10.0.0.1"));
    t.notOk(isLoopback(undefined));
    return;
  }
  const bus = await testBus(t, { host: "0.0.0.0", hostnames: [external] });
  const port = new URL(bus.controlUrl).port;
  const dispatcher = trustingAgent(t, bus.caPem);
  const res = await request(`https://${external}:${port}/metrics`, { dispatcher });
  t.equal(res.statusCode, 403);
  t.match(await res.body.json(), { message: /loopback clients only/ });
});

t.test("rate-limited requests are counted", async (t) => {
  const bus = await testBus(t, { rateLimit: { ratePerSec: 1, burst: 3 } });
  const dispatcher = trustingAgent(t, bus.caPem);
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) {
    const res = await request(`${bus.controlUrl}/v1/rooms/x`, { dispatcher });
    statuses.push(res.statusCode);
    await res.body.dump();
  }
  t.ok(statuses.includes(429), `a flood gets 429 (${statuses.join(",")})`);
  // the scrape itself is rate-limited too; wait for a token
  await new Promise((r) => setTimeout(r, 1100));
  const res = await request(`${bus.controlUrl}/metrics`, { dispatcher });
  const samples = parse(await res.body.text());
  t.ok((samples.get('unibus_http_rejections_total{reason="rate_limit"}') ?? 0) >= 1, "rate_limit rejections counted");
  t.ok(
    (samples.get('unibus_http_requests_total{route="unmatched",status="429"}') ?? 0) >= 1,
    "and the 429s by route and status",
  );
});
