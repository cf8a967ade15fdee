// The configuration chain: flag beats env beats file beats default, and every refusal
// names the key, where it came from and what is allowed.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { MAX_NODES } from "../../lib/bus/index.ts";
import { describeConfig, envName, flagName, resolveConfig, SETTINGS, type SettingKey } from "../../lib/config/index.ts";
import { oneLineError, runCli } from "../helpers/cli.ts";

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
    wsPort: 8443,
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

t.test("cluster settings: each through flag, env var and file, with its flag spelling", async (t) => {
  const cases: { key: string; flag: unknown; env: string; file: unknown; want: unknown; wantEnv?: unknown }[] = [
    { key: "cluster", flag: "3", env: "5", file: 4, want: 3 },
    { key: "clusterPort", flag: "7222", env: "-1", file: 6333, want: 7222 },
    { key: "clusterName", flag: "east", env: "west", file: "north", want: "east" },
    { key: "serverName", flag: "n1", env: "n2", file: "n3", want: "n1" },
    {
      key: "routes",
      flag: ["nats-route://a:6222", "nats-route://b:6222"],
      env: "nats-route://c:6222, nats-route://d:6222",
      file: ["nats-route://e:6222"],
      want: ["nats-route://a:6222", "nats-route://b:6222"],
      wantEnv: ["nats-route://c:6222", "nats-route://d:6222"],
    },
    {
      key: "clusterAdvertise",
      flag: "10.0.0.1:6222",
      env: "10.0.0.2:6222",
      file: "10.0.0.3:6222",
      want: "10.0.0.1:6222",
    },
    { key: "replicas", flag: "2", env: "3", file: 1, want: 2 },
  ];
  for (const c of cases) {
    const cwd = t.testdir({ "unibus.config.json": JSON.stringify({ [c.key]: c.file }) });
    const env = { [envName(c.key)]: c.env };
    const fromFlag = resolveConfig({ cwd, env, flags: { [c.key]: c.flag } });
    t.same(fromFlag.config[c.key as SettingKey], c.want, `${c.key} from its flag`);
    t.equal(fromFlag.sources[c.key as SettingKey], "flag");
    const fromEnv = resolveConfig({ cwd, env });
    t.same(
      fromEnv.config[c.key as SettingKey],
      c.wantEnv ?? (typeof c.file === "number" ? Number(c.env) : c.env),
      `${c.key} from ${envName(c.key)}`,
    );
    t.equal(fromEnv.sources[c.key as SettingKey], "env");
    const fromFile = resolveConfig({ cwd, env: {} });
    t.same(fromFile.config[c.key as SettingKey], c.file, `${c.key} from the file`);
    t.equal(fromFile.sources[c.key as SettingKey], "file");
  }
  t.equal(flagName("routes"), "--route");
  t.equal(envName("routes"), "UNIBUS_ROUTES");
  t.equal(flagName("clusterAdvertise"), "--cluster-advertise");
});

t.test("cluster settings: unset by default where the bus decides", async (t) => {
  const r = resolveConfig({ cwd: t.testdir(), env: {} });
  t.equal(r.config.cluster, undefined, "one bus unless --cluster");
  t.equal(r.config.clusterName, undefined, "naming a cluster makes a member");
  t.equal(r.config.serverName, undefined);
  t.equal(r.config.clusterAdvertise, undefined);
  t.equal(r.config.replicas, undefined);
  t.equal(r.config.clusterPort, 6222);
  t.same(r.config.routes, []);
  t.equal(SETTINGS.cluster.maximum, MAX_NODES, "the table's node range is the cluster's");
});

t.test("cluster settings: a bad value is refused naming the key where it came from", async (t) => {
  const cwd = t.testdir();
  const flagCases: [Record<string, unknown>, RegExp][] = [
    [{ cluster: "1" }, /^--cluster="1" must be an integer from 2 to 9$/],
    [{ cluster: "three" }, /^--cluster="three" must be an integer/],
    [{ clusterPort: "6222x" }, /^--cluster-port="6222x" must be an integer from -1 to 65535$/],
    [{ replicas: "0" }, /^--replicas="0" must be an integer from 1 to 5$/],
    [{ clusterName: "" }, /^--cluster-name="" must be a non-empty string$/],
  ];
  for (const [flags, message] of flagCases) {
    t.throws(() => resolveConfig({ cwd, env: {}, flags }), { code: "CONFIG", message }, JSON.stringify(flags));
  }
  t.throws(() => resolveConfig({ cwd, env: { UNIBUS_REPLICAS: "6" } }), {
    code: "CONFIG",
    message: /^UNIBUS_REPLICAS="6" must be an integer from 1 to 5$/,
  });
  t.throws(() => resolveConfig({ cwd, env: { UNIBUS_CLUSTER: "10" } }), {
    code: "CONFIG",
    message: /^UNIBUS_CLUSTER="10"/,
  });
  const fileCases: [Record<string, unknown>, RegExp][] = [
    [{ cluster: 1 }, /"cluster" must be an integer from 2 to 9/],
    [{ routes: "nats-route://a:6222" }, /"routes" must be a list of strings/],
    [{ clusterAdvertise: 6222 }, /"clusterAdvertise" must be a non-empty string/],
    [{ replicas: 9 }, /"replicas" must be an integer from 1 to 5/],
  ];
  for (const [values, message] of fileCases) {
    const dir = t.testdir({ "unibus.config.json": JSON.stringify(values) });
    t.throws(() => resolveConfig({ cwd: dir, env: {} }), { code: "CONFIG", message }, JSON.stringify(values));
  }
});

t.test("unibus up: a bad cluster value names its flag; --cluster with --route is refused", async (t) => {
  const cwd = t.testdir();
  const bad = await runCli(["up", "--cluster", "1"], { cwd });
  oneLineError(t, bad, /^unibus: --cluster="1" must be an integer from 2 to 9$/, "--cluster 1");
  const replicas = await runCli(["up", "--replicas", "x", "--route", "nats-route://a:6222"], { cwd });
  oneLineError(t, replicas, /^unibus: --replicas="x" must be an integer/, "--replicas x");
  const mixed = await runCli(["up", "--cluster", "3", "--route", "nats-route://a:6222"], { cwd });
  oneLineError(t, mixed, /--cluster starts every node on this machine; --route, --server-name/, "--cluster --route");
  t.notOk(fs.existsSync(path.join(cwd, ".unibus")), "nothing started");
  const shown = await runCli(["up", "--print-config", "--route", "nats-route://a:1", "--route", "nats-route://b:2"], {
    cwd,
    env: { UNIBUS_CLUSTER_NAME: "east" },
  });
  t.equal(shown.code, 0, shown.stderr);
  const settings = JSON.parse(shown.stdout).settings;
  t.same(settings.routes, { value: ["nats-route://a:1", "nats-route://b:2"], source: "flag" });
  t.same(settings.clusterName, { value: "east", source: "env" });
  t.same(settings.replicas, { value: null, source: "default" }, "unset shows as null");
});
