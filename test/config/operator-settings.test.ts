// Operator settings beyond ports and paths: each through flag, env and file, and a bad
// value refused naming the key.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { DEFAULT_RETENTION, DEFAULT_ROOM_BUDGET_BYTES } from "../../lib/bus/streams.ts";
import { DEFAULT_IDENTITY_LIMITS } from "../../lib/bus/unibus.ts";
import { operatorOptions } from "../../lib/cli/commands/up.ts";
import { envName, flagName, resolveConfig, SETTINGS, type SettingKey } from "../../lib/config/index.ts";
import {
  DEFAULT_BLOB_GC_INTERVAL_MS,
  DEFAULT_BLOB_MAX_AGE_MS,
  DEFAULT_MAX_BLOB_BYTES,
} from "../../lib/control/blobs.ts";
import { DEFAULT_IDENTITY_RATE_LIMIT, DEFAULT_TIMEOUTS, RateLimiter } from "../../lib/control/limits.ts";

t.test("userJwtTtlSeconds: flag, env, file, default; out of range refused by name", async (t) => {
  const cwd = t.testdir();
  t.equal(resolveConfig({ cwd, env: {} }).config.userJwtTtlSeconds, 3600, "default");
  fs.writeFileSync(path.join(cwd, "unibus.config.json"), JSON.stringify({ userJwtTtlSeconds: 600 }));
  const file = resolveConfig({ cwd, env: {} });
  t.same([file.config.userJwtTtlSeconds, file.sources.userJwtTtlSeconds], [600, "file"]);
  const env = resolveConfig({ cwd, env: { UNIBUS_USER_JWT_TTL_SECONDS: "300" } });
  t.same([env.config.userJwtTtlSeconds, env.sources.userJwtTtlSeconds], [300, "env"]);
  const flag = resolveConfig({ cwd, env: { UNIBUS_USER_JWT_TTL_SECONDS: "300" }, flags: { userJwtTtlSeconds: "120" } });
  t.same([flag.config.userJwtTtlSeconds, flag.sources.userJwtTtlSeconds], [120, "flag"]);
  t.throws(() => resolveConfig({ cwd, env: {}, flags: { userJwtTtlSeconds: "5" } }), {
    message: /--user-jwt-ttl-seconds="5" must be an integer from 60 to 86400/,
  });
  t.throws(() => resolveConfig({ cwd, env: { UNIBUS_USER_JWT_TTL_SECONDS: "1h" } }), {
    message: /UNIBUS_USER_JWT_TTL_SECONDS/,
  });
  fs.writeFileSync(path.join(cwd, "unibus.config.json"), JSON.stringify({ userJwtTtlSeconds: 999_999 }));
  t.throws(() => resolveConfig({ cwd, env: {} }), { message: /"userJwtTtlSeconds" must be an integer/ });
});

// Every abuse limit the operator can set: key → a valid value and one out of range.
const LIMITS: Record<string, { good: number; bad: number }> = {
  rateLimitPerSec: { good: 20, bad: 0 },
  rateLimitBurst: { good: 40, bad: 0 },
  identityRateLimitPerSec: { good: 5, bad: 0 },
  identityRateLimitBurst: { good: 10, bad: 1_000_001 },
  handshakeTimeoutMs: { good: 2000, bad: 10 },
  headersTimeoutMs: { good: 2000, bad: 10 },
  requestTimeoutMs: { good: 10_000, bad: 10 },
  minBodyBytesPerSec: { good: 1024, bad: 0 },
  bodyGraceMs: { good: 1000, bad: 10 },
  maxConnectionsPerIp: { good: 16, bad: 0 },
  connectionsPerIdentity: { good: 10, bad: 0 },
  subscriptionsPerConnection: { good: 64, bad: 31 },
  maxPayloadBytes: { good: 300_000, bad: 1024 },
  roomMaxBytes: { good: 8 * 1024 * 1024, bad: 1 },
  roomMaxAgeSeconds: { good: 86_400, bad: 0 },
  roomMaxMsgs: { good: 5000, bad: 0 },
  roomStorageBytes: { good: 1024 * 1024 * 1024, bad: 10 },
  blobMaxBytes: { good: 1024 * 1024, bad: 0 },
  blobMaxAgeSeconds: { good: 3600, bad: 59 },
  blobGcIntervalSeconds: { good: 60, bad: 0 },
  jetstreamMaxFileBytes: { good: 512 * 1024 * 1024, bad: 1024 },
};

t.test(
  "every abuse limit: flag, env and file each win in turn; an out-of-range value is refused naming the key",
  async (t) => {
    for (const [key, { good, bad }] of Object.entries(LIMITS)) {
      const cwd = t.testdir();
      const env = envName(key);
      const flag = flagName(key);
      fs.writeFileSync(path.join(cwd, "unibus.config.json"), JSON.stringify({ [key]: good }));
      const file = resolveConfig({ cwd, env: {} });
      t.same([file.config[key as SettingKey], file.sources[key as SettingKey]], [good, "file"], `${key}: file`);
      const fromEnv = resolveConfig({ cwd, env: { [env]: String(good + 1) } });
      t.same([fromEnv.config[key as SettingKey], fromEnv.sources[key as SettingKey]], [good + 1, "env"], `${key}: env`);
      const fromFlag = resolveConfig({ cwd, env: { [env]: String(good + 1) }, flags: { [key]: String(good + 2) } });
      t.same(
        [fromFlag.config[key as SettingKey], fromFlag.sources[key as SettingKey]],
        [good + 2, "flag"],
        `${key}: flag`,
      );
      t.throws(() => resolveConfig({ cwd, env: {}, flags: { [key]: String(bad) } }), {
        message: new RegExp(`^${flag}="${bad}" must be an integer from`),
      });
      t.throws(() => resolveConfig({ cwd, env: { [env]: "lots" } }), { message: new RegExp(`^${env}="lots"`) });
      fs.writeFileSync(path.join(cwd, "unibus.config.json"), JSON.stringify({ [key]: bad }));
      t.throws(() => resolveConfig({ cwd, env: {} }), { message: new RegExp(`"${key}" must be an integer from`) });
    }
    t.same(
      Object.keys(LIMITS).filter((k) => !(k in SETTINGS)),
      [],
      "every limit is in the one settings table",
    );
  },
);

t.test(
  "the table's defaults are the library's, so up with no settings runs the bus as startUnibus would",
  async (t) => {
    const { config } = resolveConfig({ cwd: t.testdir(), env: {} });
    const ip = new RateLimiter();
    t.same([config.rateLimitPerSec, config.rateLimitBurst], [ip.ratePerSec, ip.burst]);
    t.same(
      [config.identityRateLimitPerSec, config.identityRateLimitBurst],
      [DEFAULT_IDENTITY_RATE_LIMIT.ratePerSec, DEFAULT_IDENTITY_RATE_LIMIT.burst],
    );
    t.same(
      {
        handshakeMs: config.handshakeTimeoutMs,
        headersMs: config.headersTimeoutMs,
        requestMs: config.requestTimeoutMs,
        minBodyBytesPerSec: config.minBodyBytesPerSec,
        bodyGraceMs: config.bodyGraceMs,
        maxConnectionsPerIp: config.maxConnectionsPerIp,
      },
      DEFAULT_TIMEOUTS,
    );
    t.same(
      {
        connectionsPerIdentity: config.connectionsPerIdentity,
        subscriptionsPerConnection: config.subscriptionsPerConnection,
        maxPayloadBytes: config.maxPayloadBytes,
      },
      DEFAULT_IDENTITY_LIMITS,
    );
    t.same(
      { maxBytes: config.roomMaxBytes, maxAgeMs: config.roomMaxAgeSeconds * 1000, maxMsgs: config.roomMaxMsgs },
      DEFAULT_RETENTION,
    );
    t.equal(config.roomStorageBytes, DEFAULT_ROOM_BUDGET_BYTES);
    t.same(
      [config.blobMaxBytes, config.blobMaxAgeSeconds * 1000, config.blobGcIntervalSeconds * 1000],
      [DEFAULT_MAX_BLOB_BYTES, DEFAULT_BLOB_MAX_AGE_MS, DEFAULT_BLOB_GC_INTERVAL_MS],
    );
    t.equal(config.jetstreamMaxFileBytes, undefined, "unset: nats-server's own limit");
  },
);

t.test(
  "operatorOptions hands every limit to the bus in its units, and refuses a budget under one room's cap",
  async (t) => {
    const cwd = t.testdir();
    fs.writeFileSync(
      path.join(cwd, "unibus.config.json"),
      JSON.stringify({ roomMaxAgeSeconds: 60, blobGcIntervalSeconds: 30, identityRateLimitBurst: 7 }),
    );
    const opts = operatorOptions(resolveConfig({ cwd, env: { UNIBUS_MAX_CONNECTIONS_PER_IP: "9" } }).config);
    t.equal(opts.retention?.maxAgeMs, 60_000);
    t.equal(opts.blobs?.gcIntervalMs, 30_000);
    t.equal(opts.rateLimit?.perIdentity?.burst, 7);
    t.equal(opts.controlTimeouts?.maxConnectionsPerIp, 9);
    t.notOk("jetstreamMaxFileBytes" in opts, "unset stays unset");
    const small = resolveConfig({
      cwd,
      env: { UNIBUS_ROOM_STORAGE_BYTES: "1048576", UNIBUS_ROOM_MAX_BYTES: "2097152" },
    });
    t.throws(() => operatorOptions(small.config), {
      message: /roomStorageBytes \(1048576\) must be at least roomMaxBytes/,
    });
  },
);

t.test("blobStorageBytes: unset by default; flag, env and file; below 1 refused by name", async (t) => {
  const cwd = t.testdir();
  t.equal(resolveConfig({ cwd, env: {} }).config.blobStorageBytes, undefined, "no cap by default");
  const env = resolveConfig({ cwd, env: { UNIBUS_BLOB_STORAGE_BYTES: "1073741824" } });
  t.same([env.config.blobStorageBytes, env.sources.blobStorageBytes], [1073741824, "env"]);
  const flag = resolveConfig({ cwd, env: {}, flags: { blobStorageBytes: "5000000000" } });
  t.same([flag.config.blobStorageBytes, flag.sources.blobStorageBytes], [5_000_000_000, "flag"], "above 2^32 too");
  fs.writeFileSync(path.join(cwd, "unibus.config.json"), JSON.stringify({ blobStorageBytes: 0 }));
  t.throws(() => resolveConfig({ cwd, env: {} }), { message: /"blobStorageBytes" must be an integer/ });
});
