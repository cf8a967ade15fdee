/**
 * Every setting `unibus up` understands, in one table: its type, default, environment
 * variable, flag and help text. The resolver reads all four layers through this table
 * and the CLI generates `up`'s flags from it, so the precedence, the spelling and the
 * error messages are the same for every key.
 */
export type SettingType = "string" | "integer" | "string[]" | "boolean";

export interface Setting {
  type: SettingType;
  /** `undefined`: unset unless given (the bus then decides, or the setting switches a mode on). */
  default: unknown;
  /** The flag's help text. */
  description: string;
  /** The flag's name when it is not the key's (a repeatable flag names one item: `--route`). */
  flag?: string;
  /** A one-letter alias (`-d`). */
  short?: string;
  /** The flag's value placeholder in --help; default "value". */
  arg?: string;
  /** Allowed values, for enums. */
  enum?: readonly string[];
  minimum?: number;
  maximum?: number;
  /** Never printed in clear (`--print-config`). */
  secret?: boolean;
}

export const SETTINGS = {
  dataDir: {
    type: "string",
    default: ".unibus",
    short: "d",
    arg: "dir",
    description: "where the CA, keys and store live, kept between runs (default .unibus)",
  },
  host: {
    type: "string",
    default: "127.0.0.1",
    arg: "addr",
    description: "bind address; anything but loopback requires TLS (always on) and encrypted rooms (default 127.0.0.1)",
  },
  natsPort: {
    type: "integer",
    default: 4222,
    minimum: -1,
    maximum: 65535,
    arg: "port",
    description: "NATS client port, -1 for a random one (default 4222)",
  },
  controlPort: {
    type: "integer",
    default: 8470,
    minimum: 0,
    maximum: 65535,
    arg: "port",
    description: "control-plane HTTPS port, 0 for a random one (default 8470)",
  },
  monitorPort: {
    type: "integer",
    default: 8222,
    minimum: -1,
    maximum: 65535,
    arg: "port",
    description: "nats-server monitoring port, loopback only, -1 for random (default 8222)",
  },
  hostnames: {
    type: "string[]",
    default: [],
    flag: "hostname",
    arg: "name",
    description: "extra host name or address for the server certificate (repeatable)",
  },
  store: {
    type: "string",
    default: "auto",
    enum: ["auto", "sqlite", "kv"],
    arg: "backend",
    description: "sqlite, kv or auto (default auto: sqlite alone, kv in a cluster)",
  },
  logLevel: {
    type: "string",
    default: "info",
    enum: ["trace", "debug", "info", "warn", "error", "fatal", "silent"],
    arg: "level",
    description: "trace, debug, info, warn, error (default info)",
  },
  logFormat: {
    type: "string",
    default: "auto",
    enum: ["auto", "json", "pretty"],
    arg: "format",
    description: "json, pretty or auto (default auto: pretty on a terminal)",
  },
  // The range is the cluster's own (MAX_NODES in lib/bus), checked here so a bad value names the flag.
  cluster: {
    type: "integer",
    default: undefined,
    minimum: 2,
    maximum: 9,
    arg: "n",
    description: "start n nodes on this machine as one cluster; node i listens on each port + i",
  },
  clusterPort: {
    type: "integer",
    default: 6222,
    minimum: -1,
    maximum: 65535,
    arg: "port",
    description: "first route port, -1 for random (default 6222)",
  },
  // Unset by default: naming the cluster, like a route, makes a single bus a cluster member.
  clusterName: {
    type: "string",
    default: undefined,
    arg: "name",
    description: "cluster name, the same on every node (default unibus)",
  },
  serverName: {
    type: "string",
    default: undefined,
    arg: "name",
    description: "this node's unique name in a cluster of machines (default unibus-1)",
  },
  routes: {
    type: "string[]",
    default: [],
    flag: "route",
    arg: "url",
    description:
      "nats-route://host:port of every node, this one included; makes this node a cluster member (repeatable)",
  },
  clusterAdvertise: {
    type: "string",
    default: undefined,
    arg: "host:port",
    description: "where the other nodes reach this one's route port",
  },
  // JetStream replicates 1-5 ways; the bus checks the node count.
  replicas: {
    type: "integer",
    default: undefined,
    minimum: 1,
    maximum: 5,
    arg: "n",
    description: "JetStream replicas of room streams (default: min(3, nodes))",
  },
  // docs/clustering.md "Blob storage": JetStream refuses a chunk past the bucket's max_bytes.
  blobStorageBytes: {
    type: "integer",
    default: undefined,
    minimum: 1,
    maximum: Number.MAX_SAFE_INTEGER,
    arg: "bytes",
    description:
      "KV store: storage cap of the blob bucket in bytes; an upload past it is refused with 507 (default: none)",
  },
  // docs/security.md: revocation is bounded by this lifetime when a kick fails.
  userJwtTtlSeconds: {
    type: "integer",
    default: 3600,
    minimum: 60,
    maximum: 86_400,
    arg: "seconds",
    description: "lifetime of the user JWTs the auth callout issues, 60-86400 (default 3600)",
  },
} as const satisfies Record<string, Setting>;

export type SettingKey = keyof typeof SETTINGS;

type TypeOf<S extends Setting> = S["type"] extends "integer"
  ? number
  : S["type"] extends "string[]"
    ? string[]
    : S["type"] extends "boolean"
      ? boolean
      : S extends { enum: readonly (infer E)[] }
        ? E
        : string;

/** A setting without a default stays undefined until some layer gives it. */
type ValueOf<S extends Setting> = S["default"] extends undefined ? TypeOf<S> | undefined : TypeOf<S>;

export type UnibusConfig = { -readonly [K in SettingKey]: ValueOf<(typeof SETTINGS)[K]> };

/** `natsPort` → `UNIBUS_NATS_PORT`. */
export function envName(key: string): string {
  return `UNIBUS_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** `natsPort` → `--nats-port`; `routes` → `--route` (its `flag`). */
export function flagName(key: string): string {
  const name = (SETTINGS as Record<string, Setting>)[key]?.flag ?? key;
  return `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
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
