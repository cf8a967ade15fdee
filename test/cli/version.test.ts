// `unibus --version`: the package's version, read from the package itself.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import t from "tap";
import { oneLineError, runCli } from "../helpers/cli.ts";

const pkg = JSON.parse(fs.readFileSync("package.json", "utf8")) as { version: string };

t.test("--version and -V print package.json's version, from any directory", async (t) => {
  const cwd = t.testdir({ "package.json": JSON.stringify({ name: "someone-else", version: "9.9.9" }) });
  for (const flag of ["--version", "-V"]) {
    const r = await runCli([flag], { cwd });
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, `${pkg.version}\n`, `${flag} prints unibus' version, not the working directory's`);
    t.equal(r.stderr, "");
  }
  const help = await runCli(["--help"]);
  t.match(help.stdout, /-V, --version\s+print the unibus version/);
});

t.test("a command's own --version stays the command's", async (t) => {
  oneLineError(t, await runCli(["user", "list", "--version"]), /unknown option '--version'/, "user list --version");
});

t.test("an installed package finds its own package.json beside dist/", async (t) => {
  const root = t.testdir({
    "package.json": JSON.stringify({ name: "unibus", version: "7.7.7-installed", type: "module" }),
    dist: {},
  });
  const copy = path.join(root, "dist", "version.ts");
  fs.copyFileSync("lib/version.ts", copy);
  const { packageVersion } = (await import(pathToFileURL(copy).href)) as typeof import("../../lib/version.ts");
  t.equal(packageVersion(), "7.7.7-installed");
  fs.rmSync(path.join(root, "package.json"));
  t.equal(packageVersion(), "unknown", "a package without its package.json still runs");
});
