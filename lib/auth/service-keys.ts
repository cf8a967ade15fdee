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
import { KeyFileError, UnibusError } from "../errors.ts";

export const SERVICE_KEYS_FILE = "service-keys.json";

/** One set of the bus' own keys. */
export interface ServiceKeySet {
  issuer: NKeyPair;
  service: NKeyPair;
  system: NKeyPair;
  app: NKeyPair;
}

/** steady: one set. rotating: a next set is trusted. switched: the previous set is still trusted. */
export type ServiceKeysPhase = "steady" | "rotating" | "switched";

export interface ServiceKeys extends ServiceKeySet {
  /**
   * During a rotation, the other set (the next one before the switch, the previous one
   * after): nats-server lets its users in and the callout signs with its issuer when a
   * node asks for it, but the bus connects and signs with the current set only.
   */
  alternate?: ServiceKeySet;
  phase: ServiceKeysPhase;
}

interface KeySetSeeds {
  issuer: string;
  service: string;
  system: string;
  /** Added after the first release: generated and written back when missing. */
  app?: string;
}

interface ServiceKeysFile extends KeySetSeeds {
  type: "unibus-service-keys";
  version: 1;
  /** A rotation's new keys before `service-keys switch`. */
  next?: KeySetSeeds;
  /** A rotation's old keys after the switch, until `service-keys finish`. */
  previous?: KeySetSeeds;
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
    const keys = randomKeySet();
    const data: ServiceKeysFile = { type: "unibus-service-keys", version: 1, ...seedsOf(keys) };
    try {
      await writeFileAtomic(file, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600, exclusive: true });
      return { ...keys, phase: "steady" };
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
    if (data.type === "unibus-service-keys" && data.version === 1 && !(data.next && data.previous)) {
      const other = data.next ?? data.previous;
      const keys: ServiceKeys = {
        ...keySetOf(data),
        ...(other ? { alternate: keySetOf(other) } : {}),
        phase: data.next ? "rotating" : data.previous ? "switched" : "steady",
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

function keySetOf(seeds: KeySetSeeds): ServiceKeySet {
  return {
    issuer: NKeyPair.fromSeedText("account", seeds.issuer),
    service: NKeyPair.fromSeedText("user", seeds.service),
    system: NKeyPair.fromSeedText("user", seeds.system),
    app: seeds.app ? NKeyPair.fromSeedText("user", seeds.app) : NKeyPair.random("user"),
  };
}

function randomKeySet(): ServiceKeySet {
  return {
    issuer: NKeyPair.random("account"),
    service: NKeyPair.random("user"),
    system: NKeyPair.random("user"),
    app: NKeyPair.random("user"),
  };
}

function seedsOf(keys: ServiceKeySet): Required<KeySetSeeds> {
  return {
    issuer: keys.issuer.seedText(),
    service: keys.service.seedText(),
    system: keys.system.seedText(),
    app: keys.app.seedText(),
  };
}

/** The step asked for does not follow from the phase the service key file is in. */
export class ServiceKeysRotationError extends UnibusError {
  readonly phase: ServiceKeysPhase;
  constructor(phase: ServiceKeysPhase, message: string) {
    super("SERVICE_KEYS_ROTATION", message);
    this.phase = phase;
  }
}

const NEXT_STEP: Record<ServiceKeysPhase, string> = {
  steady: "start one with `unibus service-keys rotate`",
  rotating: "once every node has restarted with the new file, run `unibus service-keys switch`",
  switched: "once every node has restarted with the switched file, run `unibus service-keys finish`",
};

export interface ServiceKeysStep {
  phase: ServiceKeysPhase;
  /** Public key of the issuer the bus signs with after this step (at each node's next start). */
  issuer: string;
  /** Public key of the other issuer still accepted, if any. */
  otherIssuer?: string;
  /** What to do next. */
  next: string;
}

/**
 * Service-key rotation, each step followed by a rolling restart (docs/operations.md):
 * rotate adds a next set that every node lets in, switch makes it the one the bus uses
 * (the old set stays accepted), finish drops the old set. The file is the same on every
 * node: change it on one and copy it (0600) to the others.
 */
export async function rotateServiceKeys(dataDir: string): Promise<ServiceKeysStep> {
  return changeServiceKeys(dataDir, "steady", "rotate", (data) => ({ ...data, next: seedsOf(randomKeySet()) }));
}

export async function switchServiceKeys(dataDir: string): Promise<ServiceKeysStep> {
  return changeServiceKeys(dataDir, "rotating", "switch", (data) => {
    const { next, type, version, ...current } = data;
    return { type, version, ...next!, previous: current };
  });
}

export async function finishServiceKeys(dataDir: string): Promise<ServiceKeysStep> {
  return changeServiceKeys(dataDir, "switched", "finish", (data) => {
    const { previous: _dropped, ...rest } = data;
    return rest;
  });
}

/** Where a rotation stands, for `unibus service-keys status`. */
export async function serviceKeysStatus(dataDir: string): Promise<ServiceKeysStep> {
  return stepOf(await loadServiceKeys(dataDir));
}

function stepOf(keys: ServiceKeys): ServiceKeysStep {
  return {
    phase: keys.phase,
    issuer: keys.issuer.publicKey,
    ...(keys.alternate ? { otherIssuer: keys.alternate.issuer.publicKey } : {}),
    next: NEXT_STEP[keys.phase],
  };
}

async function changeServiceKeys(
  dataDir: string,
  from: ServiceKeysPhase,
  verb: string,
  change: (data: ServiceKeysFile) => ServiceKeysFile,
): Promise<ServiceKeysStep> {
  const file = path.join(dataDir, SERVICE_KEYS_FILE);
  const before = await loadServiceKeys(dataDir);
  if (before.phase !== from) {
    throw new ServiceKeysRotationError(
      before.phase,
      `cannot ${verb} the service keys: the rotation is ${before.phase}; ${NEXT_STEP[before.phase]}`,
    );
  }
  const { data } = parseServiceKeys(file, await fs.readFile(file, "utf8"));
  const changed = change({ ...data, ...seedsOf(before) });
  const { keys } = parseServiceKeys(file, JSON.stringify(changed));
  await writeFileAtomic(file, `${JSON.stringify(changed, null, 2)}\n`, { mode: 0o600 });
  return stepOf(keys);
}
