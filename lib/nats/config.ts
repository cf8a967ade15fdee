import path from "node:path";
import { fromPublic } from "@nats-io/nkeys";
import { InvalidArgumentError } from "../errors.ts";

/**
 * nats-server configuration from typed options.
 *
 * The NATS config syntax is a superset of JSON, so the file is a JSON object built from the
 * options: no hand quoting, no `$VAR` interpolation (quoted strings are literal to nats-server).
 * nats-server's lexer knows only the escapes `\" \\ \t \n \r`, not JSON's `\u`, `\b` or `\f`,
 * so control characters are refused up front rather than rendered into a file it cannot parse.
 */

export interface NatsTlsOptions {
  certFile: string;
  keyFile: string;
  /** CA that client certificates must chain to (with `verify`). */
  caFile?: string;
  /** Require and verify client certificates. */
  verify?: boolean;
  /** TLS handshake timeout in seconds (nats-server default 2). */
  timeout?: number;
}

/** Route TLS is always mutual in nats-server: the CA is required, `verify` does not exist. */
export interface NatsClusterTlsOptions {
  certFile: string;
  keyFile: string;
  caFile: string;
  timeout?: number;
}

/**
 * The websocket listener (browsers): the same accounts, auth callout and permissions as
 * the client port, because it sets no `authorization` of its own. TLS unless `noTls`.
 */
export interface NatsWebsocketOptions {
  host: string;
  /** -1 = random (learn it from the ports file). */
  port: number;
  /** Server certificate and key; the browser checks them against what it trusts. */
  tls?: { certFile: string; keyFile: string; timeout?: number };
  /** Plain `ws://`: only for tests of the server itself; a bus never sets it. */
  noTls?: boolean;
}

export interface NatsAccountOptions {
  /** Users authenticated by nkey (public `U…` keys). */
  users?: { nkey: string }[];
  jetstream?: boolean;
}

export interface NatsAuthCalloutOptions {
  /** Public key (`A…`) of the account key pair the callout service signs with. */
  issuer: string;
  /** Account the callout service's own connection lives in. */
  account: string;
  /** Users (`U…`) that bypass the callout; each must be an nkey user of some account. */
  authUsers: string[];
  /** Curve public key (`X…`) to encrypt callout requests with. */
  xkey?: string;
}

export interface NatsJetStreamOptions {
  storeDir: string;
  /** Bytes. */
  maxMemory?: number;
  /** Bytes. */
  maxFile?: number;
}

export interface NatsClusterOptions {
  name: string;
  host: string;
  /** -1 = random. */
  port: number;
  /** Route URLs, e.g. `nats-route://127.0.0.1:6222`; self-routes are ignored by the server. */
  routes: string[];
  /** `host:port` other servers should use to reach this one. */
  advertise?: string;
  tls?: NatsClusterTlsOptions;
}

export interface NatsConfigOptions {
  serverName: string;
  host: string;
  /** Client port; -1 = random (learn it from the ports file). */
  port: number;
  /** Monitoring (plain HTTP); port -1 = random. */
  http?: { host: string; port: number };
  /** Where nats-server writes `<binary>_<pid>.ports`. */
  portsFileDir: string;
  tls?: NatsTlsOptions;
  accounts?: Record<string, NatsAccountOptions>;
  systemAccount?: string;
  authCallout?: NatsAuthCalloutOptions;
  jetstream?: NatsJetStreamOptions;
  cluster?: NatsClusterOptions;
  websocket?: NatsWebsocketOptions;
  /** Bytes; at most 64 MiB. */
  maxPayload?: number;
  /** Subscriptions one client connection may hold (`max_subscriptions`); the server's default is none. */
  maxSubscriptions?: number;
  /** Go duration, e.g. "2m". */
  pingInterval?: string;
  /** Seconds a client has to authenticate; must leave room for an auth callout round trip. */
  authTimeout?: number;
  /** Go duration, e.g. "10s". */
  writeDeadline?: string;
  debug?: boolean;
  trace?: boolean;
  /**
   * Raw top-level keys merged into the file as they are. For settings not modelled here (and for
   * tests that need a file the server rejects); they may not replace a key rendered from the
   * typed options.
   */
  extra?: Record<string, unknown>;
}

const MAX_PAYLOAD_LIMIT = 64 * 1024 * 1024;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ACCOUNT_NAME = /^[A-Za-z0-9_-]{1,64}$/;
// IPv4, IPv6 (bare, with optional zone) and DNS names; brackets are added when rendering.
const HOST = /^[A-Za-z0-9._:%-]{1,253}$/;
const GO_DURATION = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/;

function fail(field: string, message: string): never {
  throw new InvalidArgumentError(field, `${field}: ${message}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkName(v: unknown, field: string): string {
  if (typeof v !== "string" || !NAME.test(v)) {
    fail(
      field,
      `must be 1-128 characters of letters, digits, '.', '_' or '-' (no spaces), starting with a letter or digit; got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function checkHost(v: unknown, field: string): string {
  if (typeof v !== "string" || !HOST.test(v)) {
    fail(field, `must be an IP address or host name without brackets or port; got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkPort(v: unknown, field: string): number {
  // nats-server reads 0 as "the default port" (4222/6222), not "any port": refuse it to avoid a surprise.
  if (typeof v !== "number" || !Number.isInteger(v) || v < -1 || v > 65535 || v === 0) {
    fail(field, `must be an integer port 1-65535, or -1 for a random port; got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkAbsolutePath(v: unknown, field: string): string {
  if (typeof v !== "string" || v === "" || !path.isAbsolute(v)) {
    fail(field, `must be an absolute path; got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkBool(v: unknown, field: string): boolean | undefined {
  if (v !== undefined && typeof v !== "boolean") fail(field, `must be true or false; got ${JSON.stringify(v)}`);
  return v;
}

function checkSeconds(v: unknown, field: string): number | undefined {
  if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || v > 3600)) {
    fail(field, `must be a number of seconds > 0 and <= 3600; got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkBytes(v: unknown, field: string, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v !== undefined && (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v > max)) {
    fail(field, `must be a whole number of bytes between 0 and ${max}; got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkDuration(v: unknown, field: string): string | undefined {
  if (v !== undefined && (typeof v !== "string" || !GO_DURATION.test(v))) {
    fail(field, `must be a Go duration such as "30s", "2m" or "1m30s"; got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A public nkey with the right prefix and a valid checksum. */
function checkNkey(v: unknown, prefix: "U" | "A" | "X", field: string): string {
  const kind = { U: "user", A: "account", X: "curve (xkey)" }[prefix];
  let ok = typeof v === "string" && v.length === 56 && v.startsWith(prefix);
  if (ok) {
    try {
      fromPublic(v as string);
    } catch {
      ok = false;
    }
  }
  if (!ok)
    fail(field, `must be a public ${kind} nkey (56 characters starting with '${prefix}'); got ${JSON.stringify(v)}`);
  return v as string;
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function tlsBlock(
  tls: NatsTlsOptions | NatsClusterTlsOptions,
  field: string,
  cluster: boolean,
): Record<string, unknown> {
  if (!isObject(tls)) fail(field, "must be an object");
  const block: Record<string, unknown> = {
    cert_file: checkAbsolutePath(tls.certFile, `${field}.certFile`),
    key_file: checkAbsolutePath(tls.keyFile, `${field}.keyFile`),
  };
  if (cluster || tls.caFile !== undefined) block.ca_file = checkAbsolutePath(tls.caFile, `${field}.caFile`);
  if (!cluster) {
    const verify = checkBool((tls as NatsTlsOptions).verify, `${field}.verify`);
    if (verify !== undefined) block.verify = verify;
  }
  const timeout = checkSeconds(tls.timeout, `${field}.timeout`);
  if (timeout !== undefined) block.timeout = timeout;
  return block;
}

/** nats-server cannot parse what JSON.stringify would escape as \u, \b or \f: refuse it with the field's path. */
function checkRenderable(v: unknown, field: string): void {
  if (typeof v === "string") {
    if (/[\u0000-\u001f\u007f]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(v)) {
      fail(field, "must not contain control characters or unpaired surrogates");
    }
  } else if (Array.isArray(v)) {
    v.forEach((x, i) => {
      checkRenderable(x, `${field}[${i}]`);
    });
  } else if (isObject(v)) {
    for (const [k, x] of Object.entries(v)) {
      checkRenderable(k, field ? `${field}.${k}` : k);
      checkRenderable(x, field ? `${field}.${k}` : k);
    }
  } else if (typeof v === "number") {
    if (!Number.isFinite(v)) fail(field, "must be a finite number");
  } else if (typeof v !== "boolean" && v !== undefined) {
    fail(field, `cannot be rendered into a nats-server config (${typeof v})`);
  }
}

/**
 * Validates the options and builds the structured config object (nats-server key names).
 * Throws InvalidArgumentError naming the offending field. Blocks are validated and
 * rendered in the file's order, so the first bad field met is the one reported.
 */
export function buildNatsConfig(options: NatsConfigOptions): Record<string, unknown> {
  if (!isObject(options)) fail("options", "must be an object");
  checkRenderable(options, "");
  const conf = listenersBlock(options);
  if (options.tls !== undefined) conf.tls = tlsBlock(options.tls, "tls", false);
  const known: KnownNames = { accounts: new Set(), nkeyUsers: new Set() };
  if (options.accounts !== undefined) conf.accounts = accountsBlock(options.accounts, known);
  if (options.systemAccount !== undefined) {
    if (typeof options.systemAccount !== "string" || !known.accounts.has(options.systemAccount)) {
      fail("systemAccount", `must name an account defined in accounts; got ${JSON.stringify(options.systemAccount)}`);
    }
    conf.system_account = options.systemAccount;
  }
  const authorization = authorizationBlock(options, known);
  if (authorization !== undefined) conf.authorization = authorization;
  if (options.jetstream !== undefined) conf.jetstream = jetstreamBlock(options.jetstream);
  if (options.cluster !== undefined) conf.cluster = clusterBlock(options.cluster);
  if (options.websocket !== undefined) conf.websocket = websocketBlock(options.websocket);
  Object.assign(conf, tuningKeys(options));
  if (options.extra !== undefined) mergeExtra(conf, options.extra);
  return conf;
}

/** Names defined by the accounts block, which later blocks may only refer to. */
interface KnownNames {
  accounts: Set<string>;
  nkeyUsers: Set<string>;
}

function listenersBlock(options: NatsConfigOptions): Record<string, unknown> {
  const conf: Record<string, unknown> = {
    server_name: checkName(options.serverName, "serverName"),
    listen: hostPort(checkHost(options.host, "host"), checkPort(options.port, "port")),
  };
  if (options.http !== undefined) {
    if (!isObject(options.http)) fail("http", "must be { host, port }");
    conf.http = hostPort(checkHost(options.http.host, "http.host"), checkPort(options.http.port, "http.port"));
  }
  conf.ports_file_dir = checkAbsolutePath(options.portsFileDir, "portsFileDir");
  return conf;
}

function accountsBlock(accounts: Record<string, NatsAccountOptions>, known: KnownNames): Record<string, unknown> {
  if (!isObject(accounts)) fail("accounts", "must be an object keyed by account name");
  const block: Record<string, unknown> = {};
  for (const [name, account] of Object.entries(accounts)) {
    block[name] = accountBlock(name, account, known);
    known.accounts.add(name);
  }
  return block;
}

function accountBlock(name: string, account: NatsAccountOptions, known: KnownNames): Record<string, unknown> {
  const field = `accounts.${name}`;
  if (!ACCOUNT_NAME.test(name)) {
    fail(field, `account names must be 1-64 letters, digits, '_' or '-'; got ${JSON.stringify(name)}`);
  }
  if (!isObject(account)) fail(field, "must be an object");
  const block: Record<string, unknown> = {};
  if (account.users !== undefined) {
    if (!Array.isArray(account.users)) fail(`${field}.users`, "must be an array of { nkey }");
    block.users = account.users.map((user, i) => {
      const nkey = checkNkey(isObject(user) ? user.nkey : user, "U", `${field}.users[${i}].nkey`);
      if (known.nkeyUsers.has(nkey)) fail(`${field}.users[${i}].nkey`, `user ${nkey} is listed twice`);
      known.nkeyUsers.add(nkey);
      return { nkey };
    });
  }
  if (checkBool(account.jetstream, `${field}.jetstream`)) block.jetstream = "enabled";
  return block;
}

/** The auth timeout and the auth callout; undefined when neither is set. */
function authorizationBlock(options: NatsConfigOptions, known: KnownNames): Record<string, unknown> | undefined {
  const authorization: Record<string, unknown> = {};
  const authTimeout = checkSeconds(options.authTimeout, "authTimeout");
  if (authTimeout !== undefined) authorization.timeout = authTimeout;
  if (options.authCallout !== undefined) authorization.auth_callout = authCalloutBlock(options.authCallout, known);
  return Object.keys(authorization).length > 0 ? authorization : undefined;
}

function authCalloutBlock(callout: NatsAuthCalloutOptions, known: KnownNames): Record<string, unknown> {
  if (!isObject(callout)) fail("authCallout", "must be an object");
  const block: Record<string, unknown> = {
    issuer: checkNkey(callout.issuer, "A", "authCallout.issuer"),
  };
  if (typeof callout.account !== "string" || !known.accounts.has(callout.account)) {
    fail("authCallout.account", `must name an account defined in accounts; got ${JSON.stringify(callout.account)}`);
  }
  block.account = callout.account;
  if (!Array.isArray(callout.authUsers) || callout.authUsers.length === 0) {
    fail("authCallout.authUsers", "must list at least one user nkey (the callout service's own identity)");
  }
  block.auth_users = callout.authUsers.map((user, i) => {
    const key = checkNkey(user, "U", `authCallout.authUsers[${i}]`);
    if (!known.nkeyUsers.has(key)) {
      fail(`authCallout.authUsers[${i}]`, `user ${key} must also be an nkey user of one of the accounts`);
    }
    return key;
  });
  if (callout.xkey !== undefined) block.xkey = checkNkey(callout.xkey, "X", "authCallout.xkey");
  return block;
}

function jetstreamBlock(jetstream: NatsJetStreamOptions): Record<string, unknown> {
  if (!isObject(jetstream)) fail("jetstream", "must be an object");
  const block: Record<string, unknown> = { store_dir: checkAbsolutePath(jetstream.storeDir, "jetstream.storeDir") };
  const mem = checkBytes(jetstream.maxMemory, "jetstream.maxMemory");
  if (mem !== undefined) block.max_memory_store = mem;
  const file = checkBytes(jetstream.maxFile, "jetstream.maxFile");
  if (file !== undefined) block.max_file_store = file;
  return block;
}

function clusterBlock(cluster: NatsClusterOptions): Record<string, unknown> {
  if (!isObject(cluster)) fail("cluster", "must be an object");
  const block: Record<string, unknown> = {
    name: checkName(cluster.name, "cluster.name"),
    listen: hostPort(checkHost(cluster.host, "cluster.host"), checkPort(cluster.port, "cluster.port")),
  };
  if (!Array.isArray(cluster.routes)) fail("cluster.routes", "must be an array of route URLs");
  block.routes = cluster.routes.map((route, i) => checkRoute(route, `cluster.routes[${i}]`));
  if (cluster.advertise !== undefined) {
    const m = typeof cluster.advertise === "string" ? /^(.+):(\d{1,5})$/.exec(cluster.advertise) : null;
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
      fail("cluster.advertise", `must be host:port; got ${JSON.stringify(cluster.advertise)}`);
    }
    block.advertise = cluster.advertise;
  }
  if (cluster.tls !== undefined) block.tls = tlsBlock(cluster.tls, "cluster.tls", true);
  return block;
}

function websocketBlock(ws: NatsWebsocketOptions): Record<string, unknown> {
  if (!isObject(ws)) fail("websocket", "must be { host, port, tls }");
  const block: Record<string, unknown> = {
    listen: hostPort(checkHost(ws.host, "websocket.host"), checkPort(ws.port, "websocket.port")),
  };
  const noTls = checkBool(ws.noTls, "websocket.noTls");
  if (noTls && ws.tls !== undefined) fail("websocket.noTls", "cannot be set together with websocket.tls");
  if (!noTls && ws.tls === undefined) fail("websocket.tls", "is required (browsers connect with wss://)");
  if (noTls) block.no_tls = true;
  // No client certificates asked of browsers: they log in by nkey like every client.
  else block.tls = tlsBlock(ws.tls as NatsTlsOptions, "websocket.tls", false);
  return block;
}

function checkRoute(route: unknown, field: string): string {
  let url: URL | undefined;
  try {
    url = typeof route === "string" ? new URL(route) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || !["nats-route:", "nats:", "tls:"].includes(url.protocol) || !url.hostname || !url.port) {
    fail(field, `must be a URL like nats-route://host:port; got ${JSON.stringify(route)}`);
  }
  return route as string;
}

/** Payload, ping, write deadline and logging: only the keys that are set. */
function tuningKeys(options: NatsConfigOptions): Record<string, unknown> {
  const keys: Record<string, unknown> = {};
  const maxPayload = checkBytes(options.maxPayload, "maxPayload", MAX_PAYLOAD_LIMIT);
  if (maxPayload !== undefined) {
    if (maxPayload === 0) fail("maxPayload", "must be at least 1 byte");
    keys.max_payload = maxPayload;
  }
  if (options.maxSubscriptions !== undefined) {
    if (!Number.isSafeInteger(options.maxSubscriptions) || options.maxSubscriptions < 1) {
      fail("maxSubscriptions", `must be a positive whole number; got ${JSON.stringify(options.maxSubscriptions)}`);
    }
    keys.max_subscriptions = options.maxSubscriptions;
  }
  const ping = checkDuration(options.pingInterval, "pingInterval");
  if (ping !== undefined) keys.ping_interval = ping;
  const wd = checkDuration(options.writeDeadline, "writeDeadline");
  if (wd !== undefined) keys.write_deadline = wd;
  const debug = checkBool(options.debug, "debug");
  if (debug !== undefined) keys.debug = debug;
  const trace = checkBool(options.trace, "trace");
  if (trace !== undefined) keys.trace = trace;
  return keys;
}

function mergeExtra(conf: Record<string, unknown>, extra: Record<string, unknown>): void {
  if (!isObject(extra)) fail("extra", "must be an object of raw nats-server keys");
  for (const [k, v] of Object.entries(extra)) {
    if (k in conf) fail(`extra.${k}`, `would replace the key rendered from the typed options; set it there`);
    conf[k] = v;
  }
}

/** The config file text for nats-server (`nats-server -c <file>`). Throws InvalidArgumentError. */
export function renderNatsConfig(options: NatsConfigOptions): string {
  const conf = buildNatsConfig(options);
  return `# Generated by unibus; edits are overwritten on the next start.\n${JSON.stringify(conf, null, 2)}\n`;
}
