/**
 * Every setting `unibus up` understands, in one table: its type, default, environment
 * variable and flag. The resolver reads all four layers through this table, so the
 * precedence and the error messages are the same for every key.
 */
export type SettingType = "string" | "integer" | "string[]" | "boolean";

export interface Setting {
  type: SettingType;
  default: unknown;
  description: string;
  /** Allowed values, for enums. */
  enum?: readonly string[];
  minimum?: number;
  maximum?: number;
  /** Never printed in clear (`--print-config`). */
  secret?: boolean;
}

export const SETTINGS = {
  dataDir: { type: "string", default: ".unibus", description: "where the CA, keys, store and JetStream data live" },
  host: { type: "string", default: "127.0.0.1", description: "bind address of NATS and the control plane" },
  natsPort: {
    type: "integer",
    default: 4222,
    minimum: -1,
    maximum: 65535,
    description: "NATS client port (-1: random)",
  },
  controlPort: {
    type: "integer",
    default: 8470,
    minimum: 0,
    maximum: 65535,
    description: "control-plane HTTPS port (0: random)",
  },
  monitorPort: {
    type: "integer",
    default: 8222,
    minimum: -1,
    maximum: 65535,
    description: "nats-server monitoring port, loopback only (-1: random)",
  },
  hostnames: { type: "string[]", default: [], description: "extra host names or addresses for the server certificate" },
  store: {
    type: "string",
    default: "auto",
    enum: ["auto", "sqlite", "kv"],
    description:
      "control-plane store: sqlite (a file) or kv (replicated JetStream KV); auto: sqlite alone, kv in a cluster",
  },
  logLevel: {
    type: "string",
    default: "info",
    enum: ["trace", "debug", "info", "warn", "error", "fatal", "silent"],
    description: "log level",
  },
  logFormat: {
    type: "string",
    default: "auto",
    enum: ["auto", "json", "pretty"],
    description: "log lines as JSON, or readable (auto: readable on a terminal)",
  },
} as const satisfies Record<string, Setting>;

export type SettingKey = keyof typeof SETTINGS;

type ValueOf<S extends Setting> = S["type"] extends "integer"
  ? number
  : S["type"] extends "string[]"
    ? string[]
    : S["type"] extends "boolean"
      ? boolean
      : string;

export type UnibusConfig = { -readonly [K in SettingKey]: ValueOf<(typeof SETTINGS)[K]> };

/** `natsPort` → `UNIBUS_NATS_PORT`. */
export function envName(key: string): string {
  return `UNIBUS_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** `natsPort` → `--nats-port`. */
export function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The JSON schema of a config file (`unibus.config.json` or package.json's `unibus` key). */
export function fileSchema(): Record<string, unknown> {
  const properties: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(SETTINGS) as [string, Setting][]) {
    const base: Record<string, unknown> =
      s.type === "string[]" ? { type: "array", items: { type: "string" } } : { type: s.type };
    if (s.enum) base.enum = s.enum;
    if (s.minimum !== undefined) base.minimum = s.minimum;
    if (s.maximum !== undefined) base.maximum = s.maximum;
    properties[key] = base;
  }
  return { type: "object", properties, additionalProperties: false };
}
