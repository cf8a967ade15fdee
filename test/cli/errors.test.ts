// Whole errors: the CLI prints every line of a message (the fix is often on the later
// ones), and --json answers in JSON on every command, failures included.
import path from "node:path";
import t from "tap";
import { errorJson, errorLine } from "../../lib/cli/output.ts";
import { NatsBinaryError } from "../../lib/errors.ts";
import { runCli } from "../helpers/cli.ts";
import { tempDir } from "../helpers/fs.ts";

t.test("errorLine keeps every line of the message, the fix included", async (t) => {
  const err = new NatsBinaryError("no usable nats-server found.\nLooked at:\n  - the cache\nSet UNIBUS_NATS_SERVER");
  t.equal(errorLine(err), "unibus: no usable nats-server found.\nLooked at:\n  - the cache\nSet UNIBUS_NATS_SERVER");
  t.equal(errorLine("plain\n"), "unibus: plain", "a trailing newline is not doubled");
});

t.test("errorJson carries the typed error's code, or ERROR", async (t) => {
  t.same(errorJson(new NatsBinaryError("x")), { error: { code: "NATS_BINARY", message: "x" } });
  t.same(errorJson(new Error("boom")), { error: { code: "ERROR", message: "boom" } });
  t.same(errorJson("text"), { error: { code: "ERROR", message: "text" } });
});

t.test("--json: a failing command answers {error:{code,message}} on stdout, the line on stderr", async (t) => {
  const dir = path.join(await tempDir(t, "errors"), "none");
  const r = await runCli(["user", "list", "--json", "--data-dir", dir]);
  t.equal(r.code, 1);
  const out = JSON.parse(r.stdout);
  t.equal(out.error.code, "CLI");
  t.match(out.error.message, /no bus store in .*run `unibus up --data-dir/);
  t.match(r.stderr, /^unibus: no bus store in /);

  const usage = await runCli(["user", "add", "--json"]);
  t.equal(usage.code, 2);
  t.same(Object.keys(JSON.parse(usage.stdout).error), ["code", "message"]);
  t.equal(JSON.parse(usage.stdout).error.code, "USAGE");

  const plain = await runCli(["user", "list", "--data-dir", dir]);
  t.equal(plain.stdout, "", "without --json nothing goes to stdout");
});
