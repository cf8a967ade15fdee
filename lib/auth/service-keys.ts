/**
 * The keys the bus itself holds: the callout's issuer account key (signs every user
 * JWT), the callout service's user key (lives in the AUTH account and bypasses the
 * callout), a system-account user key (lets the bus kick connections) and an APP
 * account service key (creates the streams that keep persisted rooms' history). Persisted
 * 0600 in the data dir so a restarted bus — and the admin CLI — use the same ones.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { NKeyPair, writeFileAtomic } from "../crypto/index.ts";
import { KeyFileError } from "../errors.ts";

export const SERVICE_KEYS_FILE = "service-keys.json";

export interface ServiceKeys {
  issuer: NKeyPair;
  service: NKeyPair;
  system: NKeyPair;
  app: NKeyPair;
}

interface ServiceKeysFile {
  type: "unibus-service-keys";
  version: 1;
  issuer: string;
  service: string;
  system: string;
  /** Added after the first release: generated and written back when missing. */
  app?: string;
}

/**
 * The keys of an existing bus, never new ones (the admin CLI reaching a running cluster:
 * a fresh key would be a stranger to it). `KeyFileError` when the file is missing.
 */
export async function loadServiceKeys(dataDir: string): Promise<ServiceKeys> {
  const file = path.join(dataDir, SERVICE_KEYS_FILE);
  if (!(await fs.stat(file).catch(() => undefined))) {
    throw new KeyFileError(
      file,
      `no service keys in ${dataDir}: copy ${SERVICE_KEYS_FILE} (mode 0600) from a node's data dir, or pass that node's --data-dir`,
    );
  }
  return loadOrCreateServiceKeys(dataDir);
}

export async function loadOrCreateServiceKeys(dataDir: string): Promise<ServiceKeys> {
  const file = path.join(dataDir, SERVICE_KEYS_FILE);
  let text: string | undefined;
  try {
    const st = await fs.stat(file);
    if ((st.mode & 0o077) !== 0) {
      throw new KeyFileError(file, `service key file ${file} is readable by other users; run \`chmod 600 ${file}\``);
    }
    text = await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (text === undefined) {
    const keys = {
      issuer: NKeyPair.random("account"),
      service: NKeyPair.random("user"),
      system: NKeyPair.random("user"),
      app: NKeyPair.random("user"),
    };
    const data: ServiceKeysFile = {
      type: "unibus-service-keys",
      version: 1,
      issuer: keys.issuer.seedText(),
      service: keys.service.seedText(),
      system: keys.system.seedText(),
      app: keys.app.seedText(),
    };
    try {
      await writeFileAtomic(file, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600, exclusive: true });
      return keys;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      return loadOrCreateServiceKeys(dataDir);
    }
  }
  const { data, keys } = parseServiceKeys(file, text);
  if (!data.app) {
    await writeFileAtomic(file, `${JSON.stringify({ ...data, app: keys.app.seedText() }, null, 2)}\n`, { mode: 0o600 });
  }
  return keys;
}

/** The keys in a service key file's text; `KeyFileError` when it is not one we wrote. */
function parseServiceKeys(file: string, text: string): { data: ServiceKeysFile; keys: ServiceKeys } {
  try {
    const data = JSON.parse(text) as ServiceKeysFile;
    if (data.type === "unibus-service-keys" && data.version === 1) {
      const keys = {
        issuer: NKeyPair.fromSeedText("account", data.issuer),
        service: NKeyPair.fromSeedText("user", data.service),
        system: NKeyPair.fromSeedText("user", data.system),
        app: data.app ? NKeyPair.fromSeedText("user", data.app) : NKeyPair.random("user"),
      };
      return { data, keys };
    }
  } catch {
    // No cause kept: a parser's message can quote the file, and the file holds seeds.
  }
  throw new KeyFileError(
    file,
    `service key file ${file} is corrupt; restore it from a backup (a new key would not match the running cluster)`,
  );
}
