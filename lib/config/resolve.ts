/**
 * One configuration chain: command-line flags over `UNIBUS_*` environment variables
 * over a config file (`unibus.config.json`, or a `unibus` key in package.json) over
 * defaults. Unknown keys and bad values are refused with the key's name, where it came
 * from and what is allowed.
 */
import fs from "node:fs";
import path from "node:path";
import { Ajv, type ErrorObject } from "ajv";
import { ConfigError } from "../errors.ts";
import { envName, fileSchema, flagName, SETTINGS, type Setting, type SettingKey, type UnibusConfig } from "./schema.ts";

export type ConfigSource = "flag" | "env" | "file" | "default";

export interface ResolvedConfig {
  config: UnibusConfig;
  sources: Record<SettingKey, ConfigSource>;
  /** The config file that was read, if any. */
  file?: string;
}

export interface ResolveConfigOptions {
  /** Values given on the command line (already parsed by the CLI; strings are coerced). */
  flags?: Partial<Record<string, unknown>>;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** An explicit config file (`--config`); it must exist. */
  configFile?: string;
}

const ajv = new Ajv({ allErrors: true, strict: true });
const validateFile = ajv.compile(fileSchema());

export function resolveConfig(opts: ResolveConfigOptions = {}): ResolvedConfig {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const { values: fileValues, file } = readConfigFile(cwd, opts.configFile);
  const config = {} as Record<string, unknown>;
  const sources = {} as Record<SettingKey, ConfigSource>;
  for (const key of Object.keys(SETTINGS) as SettingKey[]) {
    const setting: Setting = SETTINGS[key];
    const flag = opts.flags?.[key];
    const envValue = env[envName(key)];
    if (flag !== undefined) {
      config[key] = coerce(setting, flag, flagName(key));
      sources[key] = "flag";
    } else if (envValue !== undefined && envValue !== "") {
      config[key] = coerce(setting, envValue, envName(key));
      sources[key] = "env";
    } else if (fileValues[key] !== undefined) {
      config[key] = fileValues[key];
      sources[key] = "file";
    } else {
      config[key] = structuredClone(setting.default);
      sources[key] = "default";
    }
  }
  return { config: config as UnibusConfig, sources, ...(file ? { file } : {}) };
}

function readConfigFile(cwd: string, explicit?: string): { values: Record<string, unknown>; file?: string } {
  let file: string | undefined;
  let values: unknown;
  if (explicit) {
    file = path.resolve(cwd, explicit);
    values = parseJsonFile(file, "config file");
  } else if (fs.existsSync(path.join(cwd, "unibus.config.json"))) {
    file = path.join(cwd, "unibus.config.json");
    values = parseJsonFile(file, "config file");
  } else if (fs.existsSync(path.join(cwd, "package.json"))) {
    const pkg = parseJsonFile(path.join(cwd, "package.json"), "package.json") as Record<string, unknown>;
    if (pkg && typeof pkg === "object" && pkg.unibus !== undefined) {
      file = `${path.join(cwd, "package.json")}#unibus`;
      values = pkg.unibus;
    }
  }
  if (values === undefined) return { values: {} };
  if (!validateFile(values)) throw fileError(file!, validateFile.errors ?? []);
  return { values: values as Record<string, unknown>, file: file! };
}

function parseJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError("config", `cannot read ${what} ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError("config", `${what} ${file} is not valid JSON: ${(err as Error).message}`);
  }
}

function fileError(file: string, errors: ErrorObject[]): ConfigError {
  const e = errors[0]!;
  if (e.keyword === "additionalProperties") {
    const key = String((e.params as { additionalProperty: string }).additionalProperty);
    return new ConfigError(key, `${file}: unknown key "${key}"; allowed keys: ${Object.keys(SETTINGS).join(", ")}`);
  }
  if (e.keyword === "type" && e.instancePath === "") {
    return new ConfigError("config", `${file}: the configuration must be a JSON object`);
  }
  const key = e.instancePath.split("/")[1] ?? "config";
  const setting = (SETTINGS as Record<string, Setting>)[key];
  return new ConfigError(key, `${file}: "${key}" ${setting ? allowed(setting) : (e.message ?? "is invalid")}`);
}

function allowed(s: Setting): string {
  if (s.enum) return `must be one of ${s.enum.join(", ")}`;
  if (s.type === "integer") return `must be an integer from ${s.minimum} to ${s.maximum}`;
  if (s.type === "string[]") return "must be a list of strings";
  if (s.type === "boolean") return "must be true or false";
  return "must be a non-empty string";
}

/** Turns a flag or environment string into the setting's type, or refuses it. */
function coerce(s: Setting, value: unknown, origin: string): unknown {
  const refuse = () => new ConfigError(origin, `${origin}=${JSON.stringify(value)} ${allowed(s)}`);
  switch (s.type) {
    case "integer": {
      const n = typeof value === "number" ? value : /^-?\d+$/.test(String(value).trim()) ? Number(value) : Number.NaN;
      if (
        !Number.isInteger(n) ||
        (s.minimum !== undefined && n < s.minimum) ||
        (s.maximum !== undefined && n > s.maximum)
      ) {
        throw refuse();
      }
      return n;
    }
    case "string[]": {
      const list = Array.isArray(value) ? value.map(String) : String(value).split(",");
      return list.map((v) => v.trim()).filter(Boolean);
    }
    case "boolean": {
      if (value === true || value === "true" || value === "1") return true;
      if (value === false || value === "false" || value === "0") return false;
      throw refuse();
    }
    default: {
      const text = String(value);
      if (text.length === 0 || (s.enum && !s.enum.includes(text))) throw refuse();
      return text;
    }
  }
}

/** The effective configuration for `--print-config`, secrets redacted, with each value's source. */
export function describeConfig(resolved: ResolvedConfig): Record<string, { value: unknown; source: ConfigSource }> {
  const out: Record<string, { value: unknown; source: ConfigSource }> = {};
  for (const key of Object.keys(SETTINGS) as SettingKey[]) {
    const secret = (SETTINGS[key] as Setting).secret;
    // null, not undefined: an unset setting still shows in the JSON, as unset.
    const value = secret ? "[redacted]" : (resolved.config[key] ?? null);
    out[key] = { value, source: resolved.sources[key] };
  }
  return out;
}
