/**
 * Live revocation. The callout records every admitted connection (server id + client
 * id); when an identity's rights shrink or grow, its connections are kicked with
 * `$SYS.REQ.SERVER.<id>.KICK`. nats.js reconnects on its own and goes through the
 * callout again — with the new permissions, or into a denial. Disconnect events keep
 * the registry exact.
 */
import { randomUUID } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { StateError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";
import type { AdmittedConnection } from "./callout.ts";
import { connectAsService } from "./service-connection.ts";
import type { ServiceKeys } from "./service-keys.ts";

const key = (c: { serverId: string; clientId: number }) => `${c.serverId}/${c.clientId}`;

/** Admitted connections by identity. */
export class ConnectionRegistry {
  readonly #bySignPub = new Map<string, Map<string, AdmittedConnection>>();
  readonly #byKey = new Map<string, string>();

  add(c: AdmittedConnection): void {
    let conns = this.#bySignPub.get(c.signPub);
    if (!conns) {
      conns = new Map();
      this.#bySignPub.set(c.signPub, conns);
    }
    conns.set(key(c), c);
    this.#byKey.set(key(c), c.signPub);
  }

  /** Forget a closed connection. */
  remove(serverId: string, clientId: number): void {
    const k = key({ serverId, clientId });
    const signPub = this.#byKey.get(k);
    if (signPub === undefined) return;
    this.#byKey.delete(k);
    const conns = this.#bySignPub.get(signPub);
    conns?.delete(k);
    if (conns?.size === 0) this.#bySignPub.delete(signPub);
  }

  connectionsOf(signPub: string): AdmittedConnection[] {
    return [...(this.#bySignPub.get(signPub)?.values() ?? [])];
  }

  identities(): string[] {
    return [...this.#bySignPub.keys()];
  }

  /** How many admitted connections an identity holds now (on the nodes this registry serves). */
  count(signPub: string): number {
    return this.#bySignPub.get(signPub)?.size ?? 0;
  }

  /**
   * Forget every connection a server held: when it died, its clients went with it and no
   * disconnect event will ever say so (a restarted server has a new id).
   */
  forgetServer(serverName: string): void {
    for (const conns of this.#bySignPub.values()) {
      for (const c of conns.values()) if (c.serverName === serverName) this.remove(c.serverId, c.clientId);
    }
  }

  get size(): number {
    return this.#byKey.size;
  }
}

export interface KickerOptions {
  servers: string[];
  caPem?: string;
  keys: ServiceKeys;
  registry: ConnectionRegistry;
  logger?: Logger;
  onKick?: (n: number) => void;
}

/**
 * In a cluster every node's callout admits some of the connections, so each node's
 * registry holds only those. A kick is therefore also broadcast on this system-account
 * subject, and every node kicks what its own registry holds.
 */
export const KICK_SUBJECT = "unibus.internal.kick";

/** Kicks connections through the system account, on this node and (by broadcast) every other. */
export class Kicker {
  readonly #opts: KickerOptions;
  readonly #logger: Logger;
  readonly #origin = randomUUID();
  #nc?: NatsConnection;

  constructor(opts: KickerOptions) {
    this.#opts = opts;
    this.#logger = opts.logger ?? silentLogger;
  }

  /** The service connection (for health), once started. */
  get connection(): NatsConnection | undefined {
    return this.#nc;
  }

  async start(): Promise<void> {
    const { keys, servers, caPem } = this.#opts;
    this.#nc = await connectAsService({ servers, caPem, key: keys.system, name: "unibus-kicker" });
    this.#nc.subscribe("$SYS.ACCOUNT.APP.DISCONNECT", {
      callback: (_err, msg) => {
        try {
          const ev = msg.json<{ server?: { id?: string }; client?: { id?: number } }>();
          if (ev.server?.id && typeof ev.client?.id === "number")
            this.#opts.registry.remove(ev.server.id, ev.client.id);
        } catch {
          // not an event we understand; the registry only holds a stale entry, kicked harmlessly
        }
      },
    });
    this.#nc.subscribe(KICK_SUBJECT, {
      callback: (_err, msg) => {
        try {
          const ev = msg.json<{ signPub?: string; reason?: string; origin?: string }>();
          if (ev.origin === this.#origin || typeof ev.signPub !== "string") return;
          void this.#kickLocal(ev.signPub, String(ev.reason ?? "remote")).catch(() => {});
        } catch {
          // not ours
        }
      },
    });
    await this.#nc.flush();
  }

  async stop(): Promise<void> {
    const nc = this.#nc;
    this.#nc = undefined;
    if (nc && !nc.isClosed()) await nc.close();
  }

  #connection(what: string): NatsConnection {
    if (!this.#nc) throw new StateError(["started"], "stopped", what);
    return this.#nc;
  }

  /**
   * Kicks every live connection of `signPub`: those this node admitted at once (the
   * promise waits for them), the rest through the broadcast to the other nodes.
   * Resolves with how many this node kicked.
   */
  async kickIdentity(signPub: string, reason: string): Promise<number> {
    const nc = this.#connection("kickIdentity()");
    nc.publish(KICK_SUBJECT, JSON.stringify({ signPub, reason, origin: this.#origin }));
    return this.#kickLocal(signPub, reason);
  }

  async #kickLocal(signPub: string, reason: string): Promise<number> {
    const conns = this.#opts.registry.connectionsOf(signPub);
    if (conns.length === 0) return 0;
    const nc = this.#connection("kicking a connection");
    const results = await Promise.allSettled(
      conns.map(async (c) => {
        await nc.request(`$SYS.REQ.SERVER.${c.serverId}.KICK`, JSON.stringify({ cid: c.clientId }), { timeout: 2000 });
        this.#opts.registry.remove(c.serverId, c.clientId);
      }),
    );
    const kicked = results.filter((r) => r.status === "fulfilled").length;
    for (const r of results) {
      if (r.status === "rejected")
        this.#logger.warn({ component: "auth", err: (r.reason as Error).message, user: signPub }, "kick failed");
    }
    this.#logger.info({ component: "auth", user: signPub, kicked, reason }, "connections kicked to re-authenticate");
    this.#opts.onKick?.(kicked);
    return kicked;
  }
}
