// Operator settings beyond ports and paths: each through flag, env and file, and a bad
// value refused naming the key.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { resolveConfig } from "../../lib/config/index.ts";

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
