// The service recipes shipped in contrib/: the systemd unit is one systemd accepts, and
// both start the installed bin in exec form with a private data dir.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { REPO, run } from "./helpers.ts";

const UNIT = path.join(REPO, "contrib", "unibus.service");
const CONTAINERFILE = path.join(REPO, "contrib", "Containerfile");

function which(cmd: string): string | undefined {
  try {
    return execFileSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** `Key=value` lines of the unit; a key given twice keeps its last value, as systemd does. */
function unitSettings(text: string): Map<string, string> {
  const settings = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) settings.set(m[1]!, m[2]!);
  }
  return settings;
}

const analyze = which("systemd-analyze");
const noAnalyze = "systemd-analyze is not installed on this machine: the unit is not verified here";

t.test(
  "systemd-analyze verify accepts the unit without a warning",
  { skip: analyze ? false : noAnalyze },
  async (t) => {
    const r = await run(analyze!, ["verify", UNIT], { cwd: path.dirname(UNIT), env: process.env });
    t.equal(r.code, 0, "verify succeeds", { output: r.stderr });
    // Unknown keys and bad values are only warnings (exit 0) to systemd: none may be left.
    t.equal(r.stderr.trim(), "", "no warning");
  },
);

t.test("the unit runs the installed bin as its own user, stops it in order, keeps its data private", async (t) => {
  const unit = unitSettings(fs.readFileSync(UNIT, "utf8"));
  t.match(unit.get("ExecStart"), /^\/usr\/bin\/env node \/opt\/unibus\/node_modules\/\.bin\/unibus up /);
  t.notMatch(unit.get("ExecStart"), /npx/, "not through npx");
  t.match(Object.fromEntries(unit), {
    User: "unibus",
    KillMode: "mixed",
    KillSignal: "SIGTERM",
    Restart: "on-failure",
    StateDirectory: "unibus",
    StateDirectoryMode: "0700",
    UMask: "0077",
    NoNewPrivileges: "yes",
    ProtectSystem: "strict",
  });
  t.match(unit.get("ExecStart"), /--data-dir \/var\/lib\/unibus\b/, "the data dir is the state directory");
});

t.test(
  "the Containerfile starts node on the installed bin in exec form, as a user with a private data dir",
  async (t) => {
    const lines = fs
      .readFileSync(CONTAINERFILE, "utf8")
      .split("\n")
      .filter((l) => !l.trimStart().startsWith("#"));
    const cmd = lines.find((l) => l.startsWith("CMD "));
    t.ok(cmd, "has a CMD");
    const argv = JSON.parse(cmd!.slice(4)) as string[];
    t.same(argv.slice(0, 3), ["node", "node_modules/.bin/unibus", "up"], "exec form, node itself");
    t.same(
      lines.filter((l) => /\bnpx\b/.test(l)),
      [],
      "no npx",
    );
    t.match(lines.join("\n"), /^USER unibus$/m, "runs as its own user");
    t.match(lines.join("\n"), /install -d -o unibus -g unibus -m 0700 \/var\/lib\/unibus/, "data dir 0700");
    t.match(lines.join("\n"), /UNIBUS_DATA_DIR=\/var\/lib\/unibus/, "the data dir is the volume");
  },
);
