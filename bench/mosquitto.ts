// A peer a team might pick instead: Mosquitto 2 with TLS (the same CA and server
// certificate code as the bus), a password file and an ACL file, mqtt.js at both ends.
// Only for the messaging bench, and only when Debian's `mosquitto` binary and the npm
// `mqtt` package are both present; otherwise the row is skipped with a line saying why.
import { execFile, spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { loadOrCreateCa, loadOrCreateServerCertificate } from "../lib/tls/index.ts";
import { freePort } from "./stats.ts";

const run = promisify(execFile);
const BINARIES = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"];
const TOPIC = "rooms/bench";

interface MqttClient {
  publish(topic: string, payload: Uint8Array, opts: { qos: 0 }): unknown;
  subscribeAsync(topic: string, opts: { qos: 0 }): Promise<unknown>;
  on(event: "message", cb: (topic: string, payload: Uint8Array) => void): unknown;
  removeAllListeners(event: "message"): unknown;
  endAsync(force?: boolean): Promise<void>;
}
type MqttConnect = (url: string, opts: Record<string, unknown>) => Promise<MqttClient>;

export interface MosquittoPeer {
  version: string;
  pub: MqttClient;
  sub: MqttClient;
  topic: string;
  stop(): Promise<void>;
}

async function findBinary(): Promise<string | undefined> {
  for (const b of BINARIES)
    if (
      await fs.access(b, fs.constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return b;
  return undefined;
}

async function writeConfig(dir: string, port: number, password: string): Promise<string> {
  const tls = path.join(dir, "tls");
  const ca = await loadOrCreateCa(tls);
  const cert = await loadOrCreateServerCertificate(tls, ca, { name: "mosquitto", hosts: ["127.0.0.1"] });
  const passwd = path.join(dir, "passwd");
  await fs.writeFile(passwd, "", { mode: 0o600 });
  await run("mosquitto_passwd", ["-b", passwd, "bench", password]);
  const acl = path.join(dir, "acl");
  await fs.writeFile(acl, `user bench\ntopic readwrite ${TOPIC}\n`);
  const conf = path.join(dir, "mosquitto.conf");
  await fs.writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      `cafile ${ca.certFile}`,
      `certfile ${cert.certFile}`,
      `keyfile ${cert.keyFile}`,
      "allow_anonymous false",
      `password_file ${passwd}`,
      `acl_file ${acl}`,
      "persistence false",
      "log_dest stderr",
      // run as root here, Mosquitto would switch to its own user, which cannot read the temp dir
      ...(process.getuid?.() === 0 ? ["user root"] : []),
      "",
    ].join("\n"),
  );
  return ca.certPem;
}

async function connectRetrying(connectAsync: MqttConnect, url: string, opts: Record<string, unknown>) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await connectAsync(url, { ...opts, reconnectPeriod: 0, connectTimeout: 2000 });
    } catch (err) {
      if (attempt >= 30) throw err;
      await sleep(100);
    }
  }
}

/** Mosquitto started with TLS and ACLs and two connected clients, or the reason it cannot be. */
export async function startMosquitto(): Promise<MosquittoPeer | string> {
  const binary = await findBinary();
  if (!binary) return "Debian's mosquitto binary is not installed (apt-get install mosquitto)";
  let mqtt: { connectAsync: MqttConnect };
  try {
    mqtt = (await import("mqtt")) as unknown as { connectAsync: MqttConnect };
  } catch {
    return "the npm package mqtt is not installed (a devDependency: npm install)";
  }
  const { stdout } = await run(binary, ["-h"]).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? "" }));
  const version = /version\s+(\S+)/.exec(stdout)?.[1] ?? "unknown";
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "unibus-bench-mqtt-"));
  const port = await freePort();
  const password = Math.random().toString(36).slice(2);
  const ca = await writeConfig(dir, port, password);
  const child = spawn(binary, ["-c", path.join(dir, "mosquitto.conf")], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (d: Buffer) => {
    log = (log + d.toString()).slice(-4000);
  });
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    const url = `mqtts://127.0.0.1:${port}`;
    const opts = { ca, username: "bench", password, rejectUnauthorized: true };
    const pub = await connectRetrying(mqtt.connectAsync, url, { ...opts, clientId: "bench-pub" });
    const sub = await connectRetrying(mqtt.connectAsync, url, { ...opts, clientId: "bench-sub" });
    await sub.subscribeAsync(TOPIC, { qos: 0 });
    return {
      version,
      pub,
      sub,
      topic: TOPIC,
      async stop() {
        await pub.endAsync(true);
        await sub.endAsync(true);
        await stop();
      },
    };
  } catch (err) {
    await stop();
    return `Mosquitto did not start: ${(err as Error).message}; its log: ${log.trim().split("\n").slice(-3).join(" / ")}`;
  }
}
