// The readable log format: one line per event, fields as key=value, nothing lost that
// says why, secrets still redacted (redaction happens before the line is rewritten).
import { PassThrough } from "node:stream";
import t from "tap";
import { createLogger, formatLogLine } from "../../lib/log/index.ts";

const TIME = Date.UTC(2026, 11, 2, 5, 6, 7, 89);

t.test("a line: time, level, component, message, then fields", async (t) => {
  const line = formatLogLine(
    JSON.stringify({
      level: "info",
      time: TIME,
      pid: 1,
      component: "auth",
      msg: "connection denied",
      reason: "unknown key",
      cid: 7,
    }),
  );
  t.equal(line, '05:06:07.089 INFO  auth: connection denied reason="unknown key" cid=7');
});

t.test("nested fields flatten, errors show their message, arrays their size and last item", async (t) => {
  const line = formatLogLine(
    JSON.stringify({
      level: "error",
      time: TIME,
      component: "nats",
      msg: "nats-server exited unexpectedly",
      signal: "SIGKILL",
      code: null,
      err: { type: "Error", message: "boom\nsecond line", stack: "Error: boom\n    at x" },
      ports: { nats: 4222, monitoring: 8222 },
      log: ["[1] [INF] Starting", "[1] [ERR] disk full"],
    }),
  );
  t.equal(
    line,
    '05:06:07.089 ERROR nats: nats-server exited unexpectedly signal=SIGKILL code=null err="boom\\nsecond line" ports.nats=4222 ports.monitoring=8222 log=(2 item(s), last "[1] [ERR] disk full")',
  );
  t.notMatch(line, /\n/, "one line, whatever the fields hold");
  t.notMatch(line, /stack|at x/, "no stack in a line for people");
});

t.test("edges: a multi-line message, a long value, an unknown level, a line that is not JSON", async (t) => {
  const multi = formatLogLine(JSON.stringify({ level: "warn", time: TIME, msg: "first\n  second" }));
  t.equal(multi, "05:06:07.089 WARN  first | second");
  const long = formatLogLine(JSON.stringify({ level: "info", time: TIME, msg: "m", v: "x".repeat(500) }));
  t.match(long, /v=x{200}…$/, "a long value is cut");
  t.match(formatLogLine(JSON.stringify({ level: "odd", msg: "m" })), /^ ODD m$/);
  t.equal(formatLogLine("not json {"), "not json {", "passed through as written");
});

t.test("createLogger pretty: readable lines, redaction kept, levels obeyed", async (t) => {
  const out = new PassThrough();
  let text = "";
  out.on("data", (d) => (text += d));
  const log = createLogger({ level: "info", format: "pretty", destination: out });
  log.info({ component: "bus", seed: "SUAAAA", identity: { secret: "s3cret" }, dataDir: "/srv/bus" }, "bus ready");
  log.debug("not shown at info");
  log.warn({ component: "nats" }, "Plaintext passwords detected");
  await new Promise((r) => setImmediate(r));
  const lines = text.trim().split("\n");
  t.equal(lines.length, 2, "debug is below the level");
  t.match(
    lines[0],
    /^\d\d:\d\d:\d\d\.\d{3} INFO {2}bus: bus ready seed=\[redacted\] identity\.secret=\[redacted\] dataDir=\/srv\/bus$/,
  );
  t.notMatch(text, /SUAAAA|s3cret/, "no secret reaches the line");
  t.match(lines[1], /WARN {2}nats: Plaintext passwords detected$/);
  t.notMatch(text, /\{"/, "no JSON blob");
});
