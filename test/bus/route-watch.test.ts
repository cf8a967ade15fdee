// Reading why a route is down from nats-server's own log lines (the lines below are
// copied from a 2.10 node whose peers were on another CA, and from one whose peer was
// not started), and saying it in one line.
import t from "tap";
import {
  describeRoutes,
  mainRouteError,
  missingPeers,
  type RouteReport,
  routeErrorFix,
  routeErrorKind,
  routeErrorsInLog,
} from "../../lib/bus/route-watch.ts";

const line = (lvl: string, msg: string) => `[4242] 2026/12/02 12:49:01.123456 [${lvl}] ${msg}`;
const TLS_OUT = line(
  "ERR",
  "127.0.0.1:41805 - rid:56 - TLS route handshake error: tls: failed to verify certificate: x509: certificate signed by unknown authority (CN=route SHA-256: 78e7131353aa3536)",
);
const TLS_IN = line("ERR", "127.0.0.1:59130 - rid:87 - TLS route handshake error: remote error: tls: bad certificate");
const REFUSED = line(
  "ERR",
  "Error trying to connect to route (attempt 3): dial tcp 127.0.0.1:37655: connect: connection refused",
);
const MADE = (addr: string) => line("INF", `${addr} - rid:12 - Route connection created`);

t.test("each configured address gets its last word: an error, or nothing once a route was made", async (t) => {
  const configured = new Set(["127.0.0.1:41805", "127.0.0.1:37655"]);
  const { byAddress, inbound } = routeErrorsInLog([TLS_OUT, TLS_IN, REFUSED, TLS_IN], configured);
  t.same(byAddress.get("127.0.0.1:41805"), {
    kind: "tls",
    error: "TLS: tls: failed to verify certificate: x509: certificate signed by unknown authority",
  });
  t.same(byAddress.get("127.0.0.1:37655"), {
    kind: "refused",
    error: "connect: connection refused",
  });
  t.same(inbound, [{ kind: "tls", error: "TLS: remote error: tls: bad certificate" }], "the same text once");

  const healed = routeErrorsInLog([REFUSED, MADE("127.0.0.1:37655")], configured).byAddress;
  t.ok(healed.has("127.0.0.1:37655"), "the address is known");
  t.equal(healed.get("127.0.0.1:37655"), undefined, "a route made after the error clears it");
  const again = routeErrorsInLog([MADE("127.0.0.1:37655"), REFUSED], configured).byAddress;
  t.equal(again.get("127.0.0.1:37655")?.kind, "refused", "an error after a made route counts");
});

t.test("lines that are not about routes are ignored", async (t) => {
  const noise = [
    line("INF", "Listening for route connections on 127.0.0.1:44477"),
    line("ERR", "127.0.0.1:44892 - cid:14 - TLS handshake error: EOF"),
    "not a log line at all",
    "",
  ];
  const { byAddress, inbound } = routeErrorsInLog(noise, new Set(["127.0.0.1:44477"]));
  t.equal(byAddress.size, 0, "a client's (cid) handshake error is no route error");
  t.same(inbound, []);
});

t.test("kinds and fixes", async (t) => {
  t.equal(routeErrorKind("x509: certificate signed by unknown authority"), "tls");
  t.equal(routeErrorKind("connect: connection refused"), "refused");
  t.equal(routeErrorKind("i/o timeout"), "timeout");
  t.equal(routeErrorKind("connect: no route to host"), "unreachable");
  t.equal(routeErrorKind("lookup node-c on 10.0.0.1:53: no such host"), "dns");
  t.equal(routeErrorKind("something new"), "other");
  t.match(routeErrorFix("tls"), /same CA/);
  t.match(routeErrorFix("refused"), /nothing answers on that route port/);
  t.match(routeErrorFix(undefined), /unibus doctor/);
  t.match(routeErrorFix("dns"), /does not resolve/);
});

t.test("one line for the operator; TLS named first", async (t) => {
  const cut: RouteReport = {
    planned: 2,
    connected: [],
    quorum: false,
    missing: [
      { url: "127.0.0.1:37655", kind: "refused", error: "connect: connection refused" },
      { url: "127.0.0.1:41805", kind: "tls", error: "TLS: x509: certificate signed by unknown authority" },
    ],
    inbound: [{ kind: "tls", error: "TLS: remote error: tls: bad certificate" }],
  };
  t.equal(
    describeRoutes(cut),
    "routed to 0 of 2 peer(s); 127.0.0.1:37655: connect: connection refused; 127.0.0.1:41805: TLS: x509: certificate signed by unknown authority; peers dialling in: TLS: remote error: tls: bad certificate",
  );
  t.equal(mainRouteError(cut), "tls", "TLS never heals by waiting: it is the one to fix");
  const waiting: RouteReport = { planned: 2, connected: ["n-b"], quorum: true, missing: [{ url: "127.0.0.1:37655" }] };
  t.equal(describeRoutes(waiting), "routed to 1 of 2 peer(s) (n-b); 127.0.0.1:37655: no route yet");
  t.equal(mainRouteError(waiting), undefined);
  t.equal(describeRoutes({ planned: 2, connected: ["n-b", "n-c"], quorum: true, missing: [] }), "", "all routed");
});

t.test("which configured peers are the missing ones", async (t) => {
  const aliases = new Map([
    ["127.0.0.1:41805", ["127.0.0.1:41805"]],
    ["127.0.0.1:37655", ["127.0.0.1:37655"]],
    // A peer configured by name shows up in the log under what the name resolves to.
    ["node-d:6222", ["node-d:6222", "10.0.0.4:6222"]],
  ]);
  const tlsD = line("ERR", "10.0.0.4:6222 - rid:9 - TLS route handshake error: remote error: tls: bad certificate");
  const { missing } = missingPeers(aliases, [TLS_OUT, MADE("127.0.0.1:37655"), tlsD], 2);
  t.same(
    missing.map((m) => [m.url, m.kind]),
    [
      ["127.0.0.1:41805", "tls"],
      ["node-d:6222", "tls"],
    ],
    "both failing, found under the resolved address too; the one routed is not missing",
  );

  // A peer routed long ago has no line left in the log: the failing one accounts for the missing count.
  const one = missingPeers(aliases, [TLS_OUT], 1).missing;
  t.same(
    one.map((m) => m.url),
    ["127.0.0.1:41805"],
    "the silent peers are taken as routed",
  );
  // More missing than failing: the silent ones may be among them, named without a reason.
  const three = missingPeers(aliases, [TLS_OUT], 3).missing;
  t.same(
    three.map((m) => [m.url, m.error ?? "no route yet"]),
    [
      ["127.0.0.1:41805", "TLS: tls: failed to verify certificate: x509: certificate signed by unknown authority"],
      ["127.0.0.1:37655", "no route yet"],
      ["node-d:6222", "no route yet"],
    ],
  );
  t.same(missingPeers(aliases, [], 0).missing, [], "nothing missing, nothing listed");
});
