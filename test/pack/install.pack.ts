// `npm pack` yields a package a fresh project can use: the tarball installs from the
// registry's dependencies, its types compile a TypeScript consumer, and the library
// and the `unibus` command both run from node_modules on Node 22 and on Node 24.
// Slow (it installs from the registry), so it runs as `npm run test:pack`, not in `npm test`.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { isProcessAlive } from "../../lib/nats/process.ts";
import { RANDOM_PORTS } from "../helpers/cli.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { descendants, executableOf, pathOutsideRepo, REPO, REPO_NODE, run, startUp } from "./helpers.ts";

const CONSUMER = `import { connect, createIdentity, type RoomMessage, startUnibus, UnibusError } from "unibus";

const bus = await startUnibus();
const dataDir: string = bus.dataDir;
try {
  const me = createIdentity();
  await bus.addUser(me.signPub, { handle: "me", role: "admin", kexPub: me.kexPub });
  const client = await connect({ natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem, identity: me });
  const room = await client.createRoom({ encrypt: true });
  const messages: AsyncIterator<RoomMessage> = room.subscribe()[Symbol.asyncIterator]();
  await room.publish("hello from a packed install");
  const { value } = await messages.next();
  console.log(
    JSON.stringify({
      node: process.versions.node,
      text: new TextDecoder().decode(value?.data),
      typedErrors: new UnibusError("x", "y") instanceof Error,
      dataDir,
    }),
  );
  await client.close();
} finally {
  await bus.stop();
}
`;

const TSCONFIG = {
  compilerOptions: {
    module: "nodenext",
    moduleResolution: "nodenext",
    target: "es2023",
    strict: true,
    noEmit: true,
    verbatimModuleSyntax: true,
    allowImportingTsExtensions: true,
    // The package's own declarations are checked too, as a strict consumer would.
    skipLibCheck: false,
    types: ["node"],
  },
  files: ["consumer.ts"],
};

const work = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-pack-"));
t.teardown(() => fs.rm(work, { recursive: true, force: true }));
const project = path.join(work, "project");
const env = { ...process.env, PATH: pathOutsideRepo(), UNIBUS_NATS_SERVER: NATS_SERVER };

interface Packed {
  filename: string;
  files: { path: string }[];
}

t.test("npm pack builds dist/ and ships what an installed package runs, nothing else", async (t) => {
  const r = await run("npm", ["pack", "--json", "--pack-destination", work], { cwd: REPO, env: process.env });
  t.equal(r.code, 0, "npm pack succeeds", { stderr: r.stderr.slice(-4000) });
  const [packed] = JSON.parse(r.stdout.slice(r.stdout.indexOf("["))) as Packed[];
  const files = packed!.files.map((f) => f.path).sort();
  for (const needed of [
    "bin/unibus.js",
    "dist/index.js",
    "dist/index.d.ts",
    "dist/testing/index.js",
    "dist/testing/index.d.ts",
    "dist/cli/main.js",
    "dist/nats/binary-main.js",
    "migrations/0001_users.sql",
    "scripts/postinstall.js",
    "contrib/unibus.service",
    "contrib/Containerfile",
    "package.json",
    "README.md",
  ]) {
    t.ok(files.includes(needed), `ships ${needed}`);
  }
  const unwanted = files.filter((f) => /^(lib|test|bench|fixtures|docs)\//.test(f) || /(?<!\.d)\.ts$/.test(f));
  t.same(unwanted, [], "no tests, benchmarks or TypeScript sources");
  await fs.rename(path.join(work, packed!.filename), path.join(work, "unibus.tgz"));

  const dist = path.join(REPO, "dist");
  const index = await fs.readFile(path.join(dist, "index.js"), "utf8");
  t.match(index, /from "\.\/[^"]+\.js"/, "relative imports are rewritten to .js");
  t.notMatch(index, /\.ts"/, "no .ts import is left in the compiled JS");
});

// dist/ is built, never committed. `prepare` (not `prepack`) builds it: npm runs prepare
// after `npm install` in a checkout, before `npm pack` and `npm publish`, and when the
// package is installed from git — so a pack or publish that skips scripts still finds the
// code an install built, instead of shipping a package with nothing to import.
t.test("the build is the prepare step: a pack that skips scripts still ships the code", async (t) => {
  await fs.rm(path.join(REPO, "dist"), { recursive: true, force: true });
  const built = await run("npm", ["run", "prepare"], { cwd: REPO, env: process.env });
  t.equal(built.code, 0, "npm run prepare builds", { stderr: built.stderr.slice(-4000) });
  const r = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: REPO, env: process.env });
  t.equal(r.code, 0, "npm pack --ignore-scripts succeeds", { stderr: r.stderr.slice(-4000) });
  const [packed] = JSON.parse(r.stdout.slice(r.stdout.indexOf("["))) as Packed[];
  const files = packed!.files.map((f) => f.path);
  for (const needed of ["dist/index.js", "dist/testing/index.js", "dist/cli/main.js", "dist/browser/unibus.js"]) {
    t.ok(files.includes(needed), `ships ${needed}`);
  }
});

t.test("a fresh project installs the tarball, runs its postinstall and compiles against its types", async (t) => {
  await fs.mkdir(project);
  const pkg = { name: "unibus-consumer", private: true, type: "module" };
  await fs.writeFile(path.join(project, "package.json"), JSON.stringify(pkg));
  const opts = { cwd: project, env };
  const tools = await run(
    "npm",
    ["install", "--no-audit", "--no-fund", "node@22", "typescript@5.9", "@types/node@22"],
    opts,
  );
  t.equal(tools.code, 0, "node@22 and typescript install", { stderr: tools.stderr.slice(-4000) });
  // The package's postinstall runs on the project's Node 22, as it would for a user.
  const withNode22 = { ...env, PATH: `${path.join(project, "node_modules", ".bin")}${path.delimiter}${env.PATH}` };
  const args = ["install", "--no-audit", "--no-fund", "--foreground-scripts", path.join(work, "unibus.tgz")];
  const install = await run("npm", args, { cwd: project, env: withNode22 });
  t.equal(install.code, 0, "the tarball installs", { stderr: install.stderr.slice(-4000) });
  t.match(install.stdout, /nats-server \d+\.\d+\.\d+ \(from env\)/, "postinstall found the given nats-server");
  t.notMatch(install.stderr, /could not be fetched/, "postinstall did not fail");

  await fs.writeFile(path.join(project, "consumer.ts"), CONSUMER);
  await fs.writeFile(path.join(project, "tsconfig.json"), JSON.stringify(TSCONFIG));
  const tsc = await run(path.join(project, "node_modules", ".bin", "tsc"), ["-p", "."], { ...opts, env: withNode22 });
  t.equal(tsc.code, 0, "the consumer compiles", { output: `${tsc.stdout}${tsc.stderr}` });
});

const NODES = [
  { major: 22, bin: () => path.join(project, "node_modules", "node", "bin", "node") },
  { major: 24, bin: () => REPO_NODE },
];

for (const node of NODES) {
  t.test(
    `Node ${node.major}: the library starts a bus, an encrypted room carries a message, stop cleans up`,
    async (t) => {
      const r = await run(node.bin(), ["--disable-warning=ExperimentalWarning", "consumer.ts"], { cwd: project, env });
      t.equal(r.code, 0, "the consumer runs", { stderr: r.stderr.slice(-4000) });
      const out = JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}");
      t.equal(Number(out.node?.split(".")[0]), node.major, `ran on Node ${out.node}`);
      t.equal(out.text, "hello from a packed install", "the message went through the encrypted room");
      t.equal(out.typedErrors, true, "errors are UnibusError subclasses of Error");
      await t.rejects(fs.stat(out.dataDir), { code: "ENOENT" }, "the temp data dir is removed on stop");
    },
  );

  t.test(
    `Node ${node.major}: node_modules/.bin/unibus up --json is ready, and SIGTERM stops it and every child`,
    async (t) => {
      const dataDir = path.join(work, `bus-${node.major}`);
      const nodeDir = path.dirname(await fs.realpath(node.bin()));
      const upEnv = { ...env, PATH: `${nodeDir}${path.delimiter}${env.PATH}` };
      const bin = path.join(project, "node_modules", ".bin", "unibus");
      const up = await startUp(t, bin, ["up", "--json", "--data-dir", dataDir, ...RANDOM_PORTS], {
        cwd: project,
        env: upEnv,
      });
      t.match(up.ready, { event: "ready", dataDir, natsUrls: [/^tls:\/\//] }, "the ready line");
      t.equal(executableOf(up.pid), await fs.realpath(node.bin()), "the bin runs on the Node first in PATH");
      const children = descendants(up.pid);
      const natsServer = await fs.realpath(NATS_SERVER);
      t.ok(
        children.some((pid) => executableOf(pid) === natsServer),
        "nats-server runs below unibus up",
      );
      process.kill(up.pid, "SIGTERM");
      t.same(await up.exited, { code: 0, signal: null }, "exit 0 on SIGTERM");
      t.same(children.filter(isProcessAlive), [], "no child process is left");
    },
  );
}
