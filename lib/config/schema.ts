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
  wsPort: {
    type: "integer",
    // The usual HTTPS-alternate port; base + i for a cluster stays clear of the other kinds.
    default: 8443,
    minimum: -1,
    maximum: 65535,
    arg: "port",
    description:
      "websocket (wss://) port for browsers, same TLS, login and permissions as NATS; -1 for random (default 8443)",
  },
  corsOrigins: {
    type: "string[]",
    default: [],
    flag: "cors-origin",
    arg: "origin",
    description: "origin (scheme://host[:port]) whose pages may call the control plane from a browser (repeatable)",
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
    description: "json or pretty (one readable line per event); default auto: pretty for `up` without --json",
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
  // docs/operations.md "A degraded cluster node": the wait before `up` says degraded; the node keeps running.
  routeWaitSeconds: {
    type: "integer",
    default: 30,
    minimum: 0,
    maximum: 3600,
    arg: "seconds",
    description:
      "a cluster member: how long `up` waits for routes to every peer before it says degraded and why (it keeps running, and says ready once they join; default 30)",
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
  // The abuse limits (docs/security.md). Defaults are the library's own (startUnibus);
  // test/config/operator-settings.test.ts holds the two in step.
  rateLimitPerSec: {
    type: "integer",
    default: 200,
    minimum: 1,
    maximum: 1_000_000,
    arg: "n",
    description: "control-plane requests per second per client address (default 200)",
  },
  rateLimitBurst: {
    type: "integer",
    default: 400,
    minimum: 1,
    maximum: 1_000_000,
    arg: "n",
    description: "control-plane requests one address may make at once (default 400)",
  },
  identityRateLimitPerSec: {
    type: "integer",
    default: 50,
    minimum: 1,
    maximum: 1_000_000,
    arg: "n",
    description: "signed control-plane requests per second per signing key (default 50)",
  },
  identityRateLimitBurst: {
    type: "integer",
    default: 100,
    minimum: 1,
    maximum: 1_000_000,
    arg: "n",
    description: "signed control-plane requests one signing key may make at once (default 100)",
  },
  handshakeTimeoutMs: {
    type: "integer",
    default: 5000,
    minimum: 100,
    maximum: 600_000,
    arg: "ms",
    description: "the control plane's TLS handshake must finish within this (default 5000)",
  },
  headersTimeoutMs: {
    type: "integer",
    default: 5000,
    minimum: 100,
    maximum: 600_000,
    arg: "ms",
    description: "a control-plane request's headers must arrive within this (default 5000)",
  },
  requestTimeoutMs: {
    type: "integer",
    default: 30_000,
    minimum: 100,
    maximum: 3_600_000,
    arg: "ms",
    description: "a whole control-plane request (not a blob upload) must arrive within this (default 30000)",
  },
  minBodyBytesPerSec: {
    type: "integer",
    default: 4096,
    minimum: 1,
    maximum: 1_073_741_824,
    arg: "bytes",
    description:
      "request bodies and blob uploads slower than this over a body-grace window are cut with 408 (default 4096)",
  },
  bodyGraceMs: {
    type: "integer",
    default: 5000,
    minimum: 100,
    maximum: 600_000,
    arg: "ms",
    description: "the window over which the minimum body rate is measured (default 5000)",
  },
  maxConnectionsPerIp: {
    type: "integer",
    default: 128,
    minimum: 1,
    maximum: 1_000_000,
    arg: "n",
    description: "concurrent control-plane connections from one address, IPv6 by /64 (default 128)",
  },
  connectionsPerIdentity: {
    type: "integer",
    default: 100,
    minimum: 1,
    maximum: 1_000_000,
    arg: "n",
    description: "NATS connections one identity may hold at once (default 100)",
  },
  subscriptionsPerConnection: {
    type: "integer",
    default: 1000,
    minimum: 32,
    maximum: 1_000_000,
    arg: "n",
    description: "subscriptions per NATS connection, at least 32 (default 1000)",
  },
  maxPayloadBytes: {
    type: "integer",
    default: 1_048_576,
    minimum: 262_144,
    maximum: 67_108_864,
    arg: "bytes",
    description: "largest NATS message, 256 KiB-64 MiB (default 1048576)",
  },
  roomMaxBytes: {
    type: "integer",
    default: 67_108_864,
    minimum: 1024,
    maximum: Number.MAX_SAFE_INTEGER,
    arg: "bytes",
    description:
      "ceiling of one persisted room's history in bytes, the oldest go first; rooms may choose less (default 64 MiB)",
  },
  roomMaxAgeSeconds: {
    type: "integer",
    default: 7_776_000,
    minimum: 1,
    maximum: 3_153_600_000,
    arg: "seconds",
    description: "ceiling of how long a persisted room keeps a message; rooms may choose less (default 90 days)",
  },
  roomMaxMsgs: {
    type: "integer",
    default: 1_000_000,
    minimum: 1,
    maximum: Number.MAX_SAFE_INTEGER,
    arg: "n",
    description: "ceiling of the messages one persisted room keeps; rooms may choose less (default 1000000)",
  },
  roomStorageBytes: {
    type: "integer",
    default: 4_294_967_296,
    minimum: 1024,
    maximum: Number.MAX_SAFE_INTEGER,
    arg: "bytes",
    description: "budget for all persisted rooms' caps together; at least roomMaxBytes (default 4 GiB)",
  },
  blobMaxBytes: {
    type: "integer",
    default: 268_435_456,
    minimum: 1,
    maximum: Number.MAX_SAFE_INTEGER,
    arg: "bytes",
    description: "largest blob (default 256 MiB)",
  },
  blobMaxAgeSeconds: {
    type: "integer",
    default: 2_592_000,
    minimum: 60,
    maximum: 3_153_600_000,
    arg: "seconds",
    description: "a blob is deleted this long after its upload (default 30 days)",
  },
  blobGcIntervalSeconds: {
    type: "integer",
    default: 600,
    minimum: 1,
    maximum: 86_400,
    arg: "seconds",
    description: "how often expired and orphaned blobs are collected (default 600)",
  },
  // Unset: nats-server's own limit (75% of the disk).
  jetstreamMaxFileBytes: {
    type: "integer",
    default: undefined,
    minimum: 1_048_576,
    maximum: Number.MAX_SAFE_INTEGER,
    arg: "bytes",
    description: "JetStream's file-store limit on each node (default: nats-server's, 75% of the disk)",
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
