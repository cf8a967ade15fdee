import { type ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { InvalidArgumentError, NatsBinaryError, NatsStartError, type NatsStartReason, StateError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import { type NatsConfigOptions, renderNatsConfig } from "./config.ts";
import { NatsCrashedError } from "./errors.ts";
import { classify, isStorageFault, LEVEL, LogRing, readLines } from "./output.ts";
import { type NatsPorts, probeClient, probeHealth, probeHost, readPortsFile } from "./readiness.ts";
import { type NatsExitRecord, type NatsSuperviseOptions, RestartPolicy, resolveSupervise } from "./supervisor.ts";
import { armWatchdog, type Watchdog } from "./watchdog.ts";

/** `restarting`: a supervised server died on its own and waits out its backoff before it starts again. */
export type NatsProcessState = "new" | "starting" | "running" | "restarting" | "stopping" | "stopped" | "failed";

export type { NatsPorts } from "./readiness.ts";

/** Config for a managed server: `portsFileDir` defaults to the process's `workDir`. */
export type NatsProcessConfig = Omit<NatsConfigOptions, "portsFileDir"> & { portsFileDir?: string };

export interface NatsServerProcessOptions {
  /** Path of the nats-server binary. */
  binary: string;
  config: NatsProcessConfig;
  /** Holds the config file (and, by default, the ports file). Kept after a failure for investigation. */
  workDir: string;
  /** For logs; default `config.serverName`. */
  name?: string;
  logger?: Logger;
  /** Default 10000. */
  readyTimeoutMs?: number;
  /** Grace between SIGTERM and SIGKILL on stop(); default 5000. */
  stopTimeoutMs?: number;
  /** Lines of server output kept for recentLog() and start errors; default 200. */
  logLines?: number;
  /** Restart the server when it dies on its own; `true` for the defaults. Default: no supervision. */
  supervise?: NatsSuperviseOptions | boolean;
}

export interface NatsStopOptions {
  /**
   * Enter lame-duck mode first (SIGUSR2): the server stops accepting, tells clients (`ldm` in
   * INFO), closes them one by one after `lame_duck_grace_period`, then exits. Only from `running`.
   */
  lameDuck?: boolean;
  /** How long to wait for the lame-duck exit before SIGINT (then SIGKILL after stopTimeoutMs). Default 5000. */
  lameDuckMs?: number;
}

export interface NatsExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** False when the server died on its own while running. */
  expected: boolean;
}

export interface NatsRestartingEvent {
  /** 1 for the first restart after a healthy run, counting up while restarts keep failing. */
  attempt: number;
  delayMs: number;
  /** What ended the server (or the previous attempt). */
  exit: NatsExitRecord;
}

export interface NatsRestartedEvent {
  attempt: number;
  ports: NatsPorts;
  pid: number;
}

export type NatsProcessEvents = {
  state: [state: NatsProcessState, previous: NatsProcessState];
  exit: [info: NatsExitInfo];
  /** A supervised server ended on its own; it starts again after `delayMs`. */
  restarting: [info: NatsRestartingEvent];
  /** A supervised restart is ready, on the ports it had before. */
  restarted: [info: NatsRestartedEvent];
  /** The server died on its own and stays down: not supervised, or its restart budget is spent. */
  failed: [error: NatsCrashedError];
  /** The server could not write to its disk (full); the line says where. */
  "storage-fault": [line: string];
};

/** How a stop ends the server: SIGTERM, SIGKILL, or lame duck first. */
type StopMode = "graceful" | "kill" | { lameDuckMs: number };

const DEFAULT_LAME_DUCK_MS = 5000;

const POLL_MS = 5;
const ERROR_TAIL = 30;

interface Child {
  proc: ChildProcess;
  pid: number;
  portsFile: string;
  exitInfo?: { code: number | null; signal: NodeJS.Signals | null };
  exited: Promise<void>;
  /** stdout and stderr fully read. */
  closed: Promise<void>;
  watchdog?: Watchdog;
  /** Set before we stop it on purpose. */
  expected: boolean;
  /** Local ports of our readiness probes: their "TLS handshake error" lines are our doing, not a fault. */
  probePorts: Set<number>;
}

/** True if `pid` names a live process (a zombie counts as dead). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  // kill(pid, 0) succeeds on zombies, and an orphan whose reaper (a container's pid 1) never waits stays one.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return !fs.existsSync("/proc/self/stat");
  }
}

/** Waits for `p` at most `ms`; true if it settled. Clears its timer so nothing lingers. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One nats-server child process: `new → starting → running → stopping → stopped`, or `failed`
 * when a start fails or the server dies on its own. Emits `state` on every transition and `exit`
 * whenever the server process ends.
 *
 * With `supervise`, a server that dies on its own while running goes `restarting → starting →
 * running` again on the same ports (events `restarting`, `restarted`), with exponential backoff
 * and a budget per time window (supervisor.ts); once the budget is spent it ends in `failed` and
 * emits `failed` with a NatsCrashedError, as an unsupervised server does at its first crash.
 *
 * The server runs in its own process group (so a terminal's Ctrl-C reaches only Node, which then
 * stops servers in order) and is watched by a watchdog (see watchdog.ts) that kills it if this
 * process dies without stopping it.
 */
export class NatsServerProcess extends EventEmitter<NatsProcessEvents> {
  readonly name: string;
  readonly #binary: string;
  readonly #workDir: string;
  readonly #log: Logger;
  readonly #readyTimeoutMs: number;
  readonly #stopTimeoutMs: number;
  readonly #ring: LogRing;
  #config: NatsProcessConfig;
  #state: NatsProcessState = "new";
  #child: Child | undefined;
  #ports: NatsPorts | undefined;
  /** Ports of the first successful start: later starts reuse them wherever the config says -1. */
  #learned: NatsPorts | undefined;
  #starting: Promise<NatsPorts> | undefined;
  #stopping: Promise<void> | undefined;
  #abort: "stop" | "kill" | undefined;
  #runMark = 0;
  readonly #policy: RestartPolicy | undefined;
  /** Bumped by every start() and stop(): work left over from a crash checks it before acting. */
  #epoch = 0;
  /** The cleanup after a crash, which then restarts or gives up. Never rejects. */
  #recovery: Promise<void> | undefined;
  #runningSince = 0;
  #restarts = 0;
  #lastExit: NatsExitRecord | undefined;

  constructor(opts: NatsServerProcessOptions) {
    super();
    if (typeof opts.binary !== "string" || opts.binary === "") {
      throw new InvalidArgumentError("binary", "binary: the path of nats-server is required");
    }
    if (typeof opts.workDir !== "string" || !path.isAbsolute(opts.workDir)) {
      throw new InvalidArgumentError(
        "workDir",
        `workDir: must be an absolute path; got ${JSON.stringify(opts.workDir)}`,
      );
    }
    for (const key of ["readyTimeoutMs", "stopTimeoutMs", "logLines"] as const) {
      const v = opts[key];
      if (v !== undefined && (!Number.isInteger(v) || v <= 0)) {
        throw new InvalidArgumentError(key, `${key}: must be a positive integer; got ${JSON.stringify(v)}`);
      }
    }
    if (typeof opts.config !== "object" || opts.config === null) {
      throw new InvalidArgumentError("config", "config: the nats-server options are required");
    }
    this.#binary = opts.binary;
    this.#workDir = opts.workDir;
    this.#config = opts.config;
    renderNatsConfig(this.#effectiveConfig()); // fail now, not at start()
    this.name = opts.name ?? opts.config.serverName;
    this.#log = (opts.logger ?? silentLogger).child({ component: "nats", node: this.name });
    this.#readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
    this.#stopTimeoutMs = opts.stopTimeoutMs ?? 5_000;
    this.#ring = new LogRing(opts.logLines ?? 200);
    const supervise = resolveSupervise(opts.supervise);
    this.#policy = supervise && new RestartPolicy(supervise);
  }

  get state(): NatsProcessState {
    return this.#state;
  }

  /** Pid of the server while its process exists. */
  get pid(): number | undefined {
    return this.#child && !this.#child.exitInfo ? this.#child.pid : undefined;
  }

  /** Pid of the watchdog shell guarding the current server, if any. */
  get watchdogPid(): number | undefined {
    return this.#child && !this.#child.exitInfo ? this.#child.watchdog?.pid : undefined;
  }

  /** Ports while running. */
  get ports(): NatsPorts | undefined {
    return this.#ports && { ...this.#ports };
  }

  get configFile(): string {
    return path.join(this.#workDir, `${this.#config.serverName}.conf`);
  }

  get config(): NatsProcessConfig {
    return this.#config;
  }

  /**
   * Replaces the config used by the next start (e.g. a cluster's routes once every node's port
   * is known). Ports learned by an earlier start still replace -1. Throws InvalidArgumentError.
   */
  setConfig(config: NatsProcessConfig): void {
    const previous = this.#config;
    this.#config = config;
    try {
      renderNatsConfig(this.#effectiveConfig());
    } catch (err) {
      this.#config = previous;
      throw err;
    }
  }

  /** Supervised restarts begun since construction (successful or not). */
  get restarts(): number {
    return this.#restarts;
  }

  /**
   * The last time the server ended without being asked to: a crash while running, or a supervised
   * restart that did not get ready. Its `log` is complete by the time `restarting` or `failed` fires.
   */
  get lastExit(): NatsExitRecord | undefined {
    return this.#lastExit;
  }

  /** The last lines the server wrote (stdout and stderr, oldest first). */
  recentLog(): string[] {
    return this.#ring.all();
  }

  /**
   * Writes the config file and starts the server; resolves once it serves clients (ports file,
   * client INFO, and `/healthz` when monitoring is on). Throws NatsStartError (the child is
   * gone, the state is `failed`, workDir is kept), NatsBinaryError when the binary cannot be run,
   * StateError unless the state is new, stopped or failed.
   */
  async start(): Promise<NatsPorts> {
    const allowed = ["new", "stopped", "failed"] as const;
    if (!(allowed as readonly string[]).includes(this.#state)) throw new StateError(allowed, this.#state, "start()");
    this.#epoch++;
    this.#policy?.reset();
    return this.#bringUp();
  }

  /**
   * SIGTERM, then SIGKILL after stopTimeoutMs; resolves when the process is gone and its ports
   * file removed. With `lameDuck`, lame-duck mode comes first (see NatsStopOptions). Idempotent; a
   * call during start() aborts the start, one while `restarting` cancels the pending restart.
   */
  async stop(opts: NatsStopOptions = {}): Promise<void> {
    const lameDuckMs = opts.lameDuckMs ?? DEFAULT_LAME_DUCK_MS;
    if (!Number.isSafeInteger(lameDuckMs) || lameDuckMs <= 0) {
      throw new InvalidArgumentError("lameDuckMs", `lameDuckMs: must be a positive integer; got ${lameDuckMs}`);
    }
    switch (this.#state) {
      case "new":
      case "stopped":
        return;
      case "failed":
        if (this.#child) await this.#terminate(this.#child, "kill");
        return;
      case "stopping":
        return this.#stopping;
      case "starting":
        this.#abort ??= "stop";
        await this.#starting?.catch(() => {});
        return this.stop(opts);
      case "restarting":
        return this.#shutdown("graceful");
      case "running":
        return this.#shutdown(opts.lameDuck ? { lameDuckMs } : "graceful");
    }
  }

  /** SIGKILL now (a simulated crash); resolves when the process is gone. State becomes `stopped`. */
  async kill(): Promise<void> {
    switch (this.#state) {
      case "new":
      case "stopped":
        return;
      case "failed":
        if (this.#child) await this.#terminate(this.#child, "kill");
        return;
      case "stopping":
        this.#child?.proc.kill("SIGKILL");
        return this.#stopping;
      case "starting":
        this.#abort = "kill";
        await this.#starting?.catch(() => {});
        return this.kill();
      case "restarting":
      case "running":
        return this.#shutdown("kill");
    }
  }

  /**
   * Stops the server if it runs and starts it again on the ports it had before. While
   * `restarting`, restarts now instead of after the backoff (with a fresh budget).
   */
  async restart(): Promise<NatsPorts> {
    if (this.#state === "starting" || this.#state === "stopping") {
      throw new StateError(["new", "running", "restarting", "stopped", "failed"], this.#state, "restart()");
    }
    if (this.#state === "running" || this.#state === "restarting") await this.stop();
    return this.start();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  #setState(next: NatsProcessState): void {
    const previous = this.#state;
    if (previous === next) return;
    this.#state = next;
    this.#emitSafely("state", next, previous);
  }

  /** A throwing listener must not derail a start or a stop half way. */
  #emitSafely<K extends keyof NatsProcessEvents>(event: K, ...args: NatsProcessEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: NatsProcessEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.#log.warn({ err, event }, "a listener threw");
    }
  }

  #effectiveConfig(): NatsConfigOptions {
    const c = this.#config;
    const learned = this.#learned;
    const conf: NatsConfigOptions = {
      ...c,
      portsFileDir: c.portsFileDir ?? this.#workDir,
      port: c.port === -1 && learned ? learned.nats : c.port,
    };
    if (c.http) {
      conf.http = { ...c.http, port: c.http.port === -1 && learned?.monitoring ? learned.monitoring : c.http.port };
    }
    if (c.websocket) {
      const port = c.websocket.port === -1 && learned?.websocket ? learned.websocket : c.websocket.port;
      conf.websocket = { ...c.websocket, port };
    }
    if (c.cluster) {
      conf.cluster = {
        ...c.cluster,
        port: c.cluster.port === -1 && learned?.cluster ? learned.cluster : c.cluster.port,
      };
    }
    return conf;
  }

  #runLog(n = ERROR_TAIL): string[] {
    return this.#ring.since(this.#runMark).slice(-n);
  }

  /** `starting → running`, else `failed`, `stopped` or (supervised) `restarting`: start() and restarts alike. */
  #bringUp(attempt?: number): Promise<NatsPorts> {
    this.#abort = undefined;
    this.#setState("starting");
    const up = this.#launchUntilReady(attempt);
    this.#starting = up;
    const clear = () => {
      if (this.#starting === up) this.#starting = undefined;
    };
    up.then(clear, clear); // also observes the rejection: nobody awaits a supervised restart
    return up;
  }

  async #launchUntilReady(attempt: number | undefined): Promise<NatsPorts> {
    const started = performance.now();
    try {
      const ports = await this.#launch();
      this.#ports = ports;
      this.#learned = ports;
      this.#runningSince = performance.now();
      this.#setState("running");
      this.#log.info({ pid: this.pid, ports, ms: Math.round(performance.now() - started) }, "nats-server is ready");
      if (attempt !== undefined && this.pid !== undefined) {
        this.#emitSafely("restarted", { attempt, ports: { ...ports }, pid: this.pid });
      }
      return { ...ports };
    } catch (err) {
      if (this.#abort) this.#setState("stopped");
      else if (attempt !== undefined) this.#onRestartFailed(err as Error);
      else this.#setState("failed");
      throw err;
    }
  }

  async #launch(): Promise<NatsPorts> {
    const conf = this.#effectiveConfig();
    const text = renderNatsConfig(conf);
    await fsp.mkdir(this.#workDir, { recursive: true, mode: 0o700 });
    await fsp.mkdir(conf.portsFileDir, { recursive: true, mode: 0o700 });
    const file = this.configFile;
    await fsp.writeFile(file, text, { mode: 0o600 });
    await fsp.chmod(file, 0o600); // writeFile's mode only applies to a new file
    this.#runMark = this.#ring.total;
    this.#child = undefined; // so a failed spawn is never blamed on the previous process
    const child = await this.#spawn(conf);
    try {
      return await this.#waitReady(child, conf);
    } catch (err) {
      await this.#terminate(child, this.#abort === "stop" ? "graceful" : "kill");
      throw err;
    }
  }

  async #spawn(conf: NatsConfigOptions): Promise<Child> {
    const proc = spawn(this.#binary, ["-c", this.configFile], {
      cwd: this.#workDir,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        proc.once("spawn", resolve);
        proc.once("error", reject);
      });
    } catch (err) {
      throw new NatsBinaryError(
        `cannot run nats-server at ${this.#binary} (${(err as Error).message}); set UNIBUS_NATS_SERVER to a working nats-server or run \`unibus install\``,
        { cause: err },
      );
    }
    proc.on("error", (err) => this.#log.warn({ err }, "nats-server process error"));
    const pid = proc.pid as number;
    let markExited: () => void = () => {};
    const child: Child = {
      proc,
      pid,
      portsFile: path.join(conf.portsFileDir, `${path.basename(this.#binary)}_${pid}.ports`),
      exited: new Promise<void>((resolve) => {
        markExited = resolve;
      }),
      closed: Promise.resolve(),
      expected: false,
      probePorts: new Set(),
    };
    const onLine = (line: string) => this.#onLine(child, line);
    child.closed = Promise.all([
      readLines(proc.stdout as Readable, onLine),
      readLines(proc.stderr as Readable, onLine),
    ]).then(() => {});
    proc.once("exit", (code, signal) => {
      child.exitInfo = { code, signal };
      markExited();
      const crashed = !child.expected && this.#child === child && this.#state === "running";
      if (crashed) this.#onCrash(child);
      this.#emitSafely("exit", { code, signal, expected: !crashed });
    });
    child.watchdog = armWatchdog(pid, { graceMs: this.#stopTimeoutMs, logger: this.#log });
    this.#child = child;
    return child;
  }

  #onLine(child: Child, line: string): void {
    this.#ring.push(line);
    const msg = line.replace(LEVEL, "");
    const tag = LEVEL.exec(line)?.[1];
    const probe = /:(\d+) - cid:\d+ - TLS handshake error/.exec(line);
    if (probe && child.probePorts.has(Number(probe[1]))) {
      this.#log.debug({ probe: true }, msg);
    } else if (tag === "FTL" || tag === "ERR" || line.startsWith("nats-server: ")) {
      this.#log.error(msg);
      if (isStorageFault(line)) this.#emitSafely("storage-fault", msg);
    } else if (tag === "WRN") {
      this.#log.warn(msg);
    } else {
      this.#log.debug(msg);
    }
  }

  #onCrash(child: Child): void {
    const epoch = this.#epoch; // before any listener of the state change can stop() us
    const ranMs = performance.now() - this.#runningSince;
    const { code, signal } = child.exitInfo ?? { code: null, signal: null };
    this.#ports = undefined;
    this.#lastExit = { code, signal, at: new Date(), log: this.#runLog() };
    this.#log.error({ code, signal, log: this.#runLog() }, "nats-server exited unexpectedly");
    this.#recovery = this.#recover(child, epoch, ranMs);
    this.#setState(this.#policy ? "restarting" : "failed");
  }

  /** Reaps what the crashed server left (watchdog, ports file, last output), then restarts or gives up. */
  async #recover(child: Child, epoch: number, ranMs: number): Promise<void> {
    try {
      await this.#terminate(child, "kill");
    } catch (err) {
      this.#log.warn({ err }, "cleanup after crash failed");
    }
    if (epoch !== this.#epoch || !this.#lastExit) return; // stopped or started again meanwhile
    this.#lastExit = { ...this.#lastExit, log: this.#runLog() };
    this.#afterFailure(this.#lastExit, ranMs);
  }

  #onRestartFailed(err: Error): void {
    const info = this.#child?.exitInfo;
    const log = err instanceof NatsStartError ? err.log : this.#runLog();
    const exit = { code: info?.code ?? null, signal: info?.signal ?? null, at: new Date(), log, startError: err };
    this.#lastExit = exit;
    this.#log.warn({ err }, "a supervised restart of nats-server failed");
    this.#afterFailure(exit, undefined);
  }

  /** Counts the failure against the budget: schedules the next restart, or gives up. */
  #afterFailure(exit: NatsExitRecord, ranMs: number | undefined): void {
    const policy = this.#policy;
    const next = policy?.next(ranMs);
    if (!policy || !next) {
      this.#giveUp(exit);
      return;
    }
    this.#setState("restarting");
    if (this.#state !== "restarting") return; // a state listener stopped us
    const epoch = this.#epoch;
    // Scheduled before the event, so a listener's stop() finds the timer and clears it.
    policy.schedule(next.delayMs, () => {
      if (epoch !== this.#epoch || this.#state !== "restarting") return;
      this.#restarts++;
      void this.#bringUp(next.attempt);
    });
    this.#log.warn({ ...next, code: exit.code, signal: exit.signal }, "restarting nats-server");
    this.#emitSafely("restarting", { ...next, exit });
  }

  #giveUp(exit: NatsExitRecord): void {
    const policy = this.#policy;
    const budget = policy && { failures: policy.failuresInWindow, windowMs: policy.options.windowMs };
    const err = new NatsCrashedError(this.name, exit, budget);
    if (policy) this.#log.error({ failures: budget?.failures }, "nats-server keeps dying; gave up restarting it");
    this.#setState("failed");
    this.#emitSafely("failed", err);
  }

  async #waitReady(child: Child, conf: NatsConfigOptions): Promise<NatsPorts> {
    const deadline = performance.now() + this.#readyTimeoutMs;
    const host = probeHost(conf.host);
    const healthPath = conf.jetstream ? "/healthz?js-enabled-only=true" : "/healthz";
    let ports: NatsPorts | undefined;
    let serving = false;
    let healthy = !conf.http;
    let waitingFor = `the ports file ${child.portsFile}`;
    for (;;) {
      if (this.#abort) {
        throw new NatsStartError(
          "exited",
          `nats-server ${this.name} was told to ${this.#abort} before it was ready`,
          this.#runLog(),
        );
      }
      if (child.exitInfo) throw await this.#exitError(child, conf);
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new NatsStartError(
          "timeout",
          `nats-server ${this.name} was not ready within ${this.#readyTimeoutMs} ms (still waiting for ${waitingFor}); it was stopped. On a slow or busy machine raise readyTimeoutMs`,
          this.#runLog(),
        );
      }
      let progressed = false;
      if (!ports) {
        ports = await readPortsFile(child.portsFile);
        progressed = ports !== undefined;
      } else if (!serving) {
        waitingFor = `the client port ${ports.nats} to answer`;
        serving = await probeClient(host, ports.nats, Math.min(left, 1000), (p) => child.probePorts.add(p));
        progressed = serving;
      } else if (!healthy) {
        const port = ports.monitoring;
        if (port === undefined) {
          throw new NatsStartError(
            "exited",
            `nats-server ${this.name} wrote no monitoring port to its ports file although http is configured`,
            this.#runLog(),
          );
        }
        waitingFor = `GET ${healthPath} on port ${port} to answer 200`;
        healthy = await probeHealth(probeHost(conf.http?.host ?? conf.host), port, healthPath, Math.min(left, 1000));
        progressed = healthy;
      } else {
        return ports;
      }
      if (!progressed) await sleep(POLL_MS);
    }
  }

  async #exitError(child: Child, conf: NatsConfigOptions): Promise<NatsStartError> {
    await settlesWithin(child.closed, 1000); // let the last lines in
    const lines = this.#runLog(200);
    const tail = lines.slice(-ERROR_TAIL);
    const { code, signal } = child.exitInfo ?? { code: null, signal: null };
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    const reason = classify(lines, conf);
    const text: Record<NatsStartReason, string> = {
      port_in_use: `nats-server ${this.name} could not listen: a configured port is already in use. Stop whatever holds it, pick another port, or use -1 for a random one`,
      bad_config: `nats-server ${this.name} rejected its configuration ${this.configFile} (${how}); the server's reason is below`,
      tls: `nats-server ${this.name} could not load its TLS certificate, key or CA; check the files named below exist, are PEM and belong together`,
      exited: `nats-server ${this.name} ${how} before it was ready`,
      timeout: "",
    };
    return new NatsStartError(reason, text[reason], tail);
  }

  /** From `running` or `restarting`: ends the server and any pending restart. */
  async #shutdown(mode: StopMode): Promise<void> {
    const child = this.#child;
    const recovery = this.#recovery;
    this.#epoch++;
    this.#policy?.cancel();
    this.#stopping = (async () => {
      try {
        await recovery; // never rejects
        if (child) await this.#terminate(child, mode);
      } finally {
        this.#ports = undefined;
        this.#stopping = undefined;
        this.#setState("stopped");
        this.#log.info({ mode }, "nats-server stopped");
      }
    })();
    this.#setState("stopping"); // after #stopping is set: a listener's stop() then waits for it
    return this.#stopping;
  }

  /**
   * Ends the child and removes its ports file. Safe to call more than once. The watchdog
   * stays armed until the child is gone: should this process die hard while a graceful
   * stop is still waiting (seen: a test runner's timeout killing it mid-stop), the
   * watchdog still ends the server. It is disarmed at once after the exit, so it cannot
   * signal a reused pid unless this process dies in that same instant.
   */
  async #terminate(child: Child, mode: StopMode): Promise<void> {
    child.expected = true;
    if (!child.exitInfo) await this.#signalUntilGone(child, mode);
    await child.watchdog?.disarm();
    await settlesWithin(child.closed, 1000);
    await fsp.rm(child.portsFile, { force: true });
  }

  /** Lame duck (if asked), then a graceful shutdown, each within its bound, then SIGKILL. */
  async #signalUntilGone(child: Child, mode: StopMode): Promise<void> {
    const steps: [NodeJS.Signals, number][] = [];
    if (typeof mode === "object") {
      // nats-server ignores SIGTERM once in lame-duck mode (seen with 2.10.27); SIGINT still shuts it down.
      steps.push(["SIGUSR2", mode.lameDuckMs], ["SIGINT", this.#stopTimeoutMs]);
    } else if (mode === "graceful") {
      steps.push(["SIGTERM", this.#stopTimeoutMs]);
    }
    for (const [signal, ms] of steps) {
      child.proc.kill(signal);
      if (await settlesWithin(child.exited, ms)) return;
      this.#log.warn({ signal, ms }, `nats-server did not exit within ${ms} ms of ${signal}; escalating`);
    }
    child.proc.kill("SIGKILL");
    await child.exited;
  }
}
