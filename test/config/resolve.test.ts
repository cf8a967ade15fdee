// The configuration chain: flag beats env beats file beats default, and every refusal
// names the key, where it came from and what is allowed.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { describeConfig, envName, flagName, resolveConfig } from "../../lib/config/index.ts";
import { runCli } from "../helpers/cli.ts";

t.test("names: env and flag forms of a key", async (t) => {
  t.equal(envName("natsPort"), "UNIBUS_NATS_PORT");
  t.equal(flagName("natsPort"), "--nats-port");
  t.equal(envName("dataDir"), "UNIBUS_DATA_DIR");
});

t.test("defaults when nothing is given", async (t) => {
  const cwd = t.testdir();
  const r = resolveConfig({ cwd, env: {} });
  t.match(r.config, {
    dataDir: ".unibus",
    host: "127.0.0.1",
    natsPort: 4222,
    controlPort: 8470,
    monitorPort: 8222,
    hostnames: [],
  });
  t.equal(r.sources.natsPort, "default");
  t.equal(r.file, undefined);
});

t.test("flag beats env beats file beats default, key by key", async (t) => {
  const cwd = t.testdir({
    "unibus.config.json": JSON.stringify({ natsPort: 1111, controlPort: 2222, monitorPort: 3333 }),
  });
  const r = resolveConfig({
    cwd,
    env: { UNIBUS_NATS_PORT: "4444", UNIBUS_CONTROL_PORT: "5555" },
    flags: { natsPort: "6666" },
  });
  t.equal(r.config.natsPort, 6666);
  t.equal(r.sources.natsPort, "flag");
  t.equal(r.config.controlPort, 5555);
  t.equal(r.sources.controlPort, "env");
  t.equal(r.config.monitorPort, 3333);
  t.equal(r.sources.monitorPort, "file");
  t.equal(r.config.host, "127.0.0.1");
  t.equal(r.sources.host, "default");
  t.equal(r.file, path.join(cwd, "unibus.config.json"));
});

t.test("a unibus key in package.json is a config file; unibus.config.json wins over it", async (t) => {
  const cwd = t.testdir({ "package.json": JSON.stringify({ name: "x", unibus: { host: "127.0.0.2" } }) });
  t.equal(resolveConfig({ cwd, env: {} }).config.host, "127.0.0.2");
  t.match(resolveConfig({ cwd, env: {} }).file, /package\.json#unibus$/);
  fs.writeFileSync(path.join(cwd, "unibus.config.json"), JSON.stringify({ host: "127.0.0.3" }));
  t.equal(resolveConfig({ cwd, env: {} }).config.host, "127.0.0.3");
  const plain = t.testdir({ "package.json": JSON.stringify({ name: "y" }) });
  t.equal(resolveConfig({ cwd: plain, env: {} }).file, undefined, "a package.json without the key is no config");
});

t.test("lists: env is comma-separated, flags repeat", async (t) => {
  const cwd = t.testdir();
  t.same(resolveConfig({ cwd, env: { UNIBUS_HOSTNAMES: "bus.example.org, 10.0.0.5" } }).config.hostnames, [
    "bus.example.org",
    "10.0.0.5",
  ]);
  t.same(resolveConfig({ cwd, env: {}, flags: { hostnames: ["a", "b"] } }).config.hostnames, ["a", "b"]);
});

t.test("every refusal names the key, the origin and what is allowed", async (t) => {
  const cwd = t.testdir();
  const cases: [string, () => unknown, RegExp][] = [
    [
      "flag not a number",
      () => resolveConfig({ cwd, env: {}, flags: { natsPort: "abc" } }),
      /--nats-port="abc" must be an integer from -1 to 65535/,
    ],
    ["flag out of range", () => resolveConfig({ cwd, env: {}, flags: { natsPort: "70000" } }), /--nats-port="70000"/],
    [
      "control port -1",
      () => resolveConfig({ cwd, env: {}, flags: { controlPort: "-1" } }),
      /--control-port="-1" must be an integer from 0 to 65535/,
    ],
    ["env bad value", () => resolveConfig({ cwd, env: { UNIBUS_NATS_PORT: "4222x" } }), /UNIBUS_NATS_PORT="4222x"/],
    [
      "env bad enum",
      () => resolveConfig({ cwd, env: { UNIBUS_LOG_LEVEL: "loud" } }),
      /UNIBUS_LOG_LEVEL="loud" must be one of trace, debug/,
    ],
  ];
  for (const [what, fn, message] of cases) t.throws(fn, { code: "CONFIG", message }, what);

  const fileCases: [string, string, RegExp][] = [
    ["unknown key", JSON.stringify({ natsPrt: 1 }), /unknown key "natsPrt"; allowed keys: dataDir, host/],
    ["bad type", JSON.stringify({ natsPort: "4222" }), /"natsPort" must be an integer from -1 to 65535/],
    ["bad enum", JSON.stringify({ logFormat: "xml" }), /"logFormat" must be one of auto, json, pretty/],
    ["not an object", JSON.stringify([1]), /must be a JSON object/],
    ["not JSON", "{natsPort:", /is not valid JSON/],
    ["bad list", JSON.stringify({ hostnames: "a,b" }), /"hostnames" must be a list of strings/],
  ];
  for (const [what, content, message] of fileCases) {
    const dir = t.testdir({ "unibus.config.json": content });
    t.throws(() => resolveConfig({ cwd: dir, env: {} }), { code: "CONFIG", message }, what);
  }
  t.throws(() => resolveConfig({ cwd, env: {}, configFile: "missing.json" }), {
    code: "CONFIG",
    message: /cannot read config file/,
  });
});

t.test("describeConfig shows each value and its source", async (t) => {
  const cwd = t.testdir();
  const shown = describeConfig(resolveConfig({ cwd, env: { UNIBUS_HOST: "127.0.0.9" } }));
  t.same(shown.host, { value: "127.0.0.9", source: "env" });
  t.same(shown.natsPort, { value: 4222, source: "default" });
});

t.test("unibus up --print-config applies the chain; a bad value is one line", async (t) => {
  const cwd = t.testdir({ "unibus.config.json": JSON.stringify({ natsPort: 1111, host: "127.0.0.5" }) });
  const r = await runCli(["up", "--print-config", "--nats-port", "2222"], { cwd, env: { UNIBUS_HOST: "127.0.0.6" } });
  t.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  t.same(out.settings.natsPort, { value: 2222, source: "flag" });
  t.same(out.settings.host, { value: "127.0.0.6", source: "env" });
  t.equal(out.file, path.join(cwd, "unibus.config.json"));
  const bad = await runCli(["up", "--print-config"], { cwd, env: { UNIBUS_NATS_PORT: "nope" } });
  t.equal(bad.code, 1);
  t.equal(bad.stderr.trim(), 'unibus: UNIBUS_NATS_PORT="nope" must be an integer from -1 to 65535');
});
