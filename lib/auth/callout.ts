/**
 * The auth-callout service: nats-server hands every connection attempt (except the
 * bus' own users) to this code on `$SYS.REQ.USER.AUTH`, and admits the client only
 * with the user JWT we sign. The server does NOT check an unknown nkey's signature
 * before calling out, so this service verifies it, and checks the request came from
 * the server (issuer, audience, expiry). Anything it cannot decide in time is a denial.
 */
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import {
  decodeJwt,
  decodePublicKey,
  encodeJwt,
  JwtError,
  type NKeyPair,
  verifyNkeySignature,
} from "../crypto/index.ts";
import type { Logger } from "../log/index.ts";
import { silentLogger } from "../log/index.ts";
import type { SubjectPermissions } from "./permissions.ts";
import { connectAsService } from "./service-connection.ts";
import type { ServiceKeys } from "./service-keys.ts";
import { UserJwtEncoder } from "./user-jwt.ts";

export const CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH";
const CALLOUT_QUEUE = "unibus-auth";

export type Admission =
  | { allowed: true; name: string; permissions: SubjectPermissions }
  | { allowed: false; reason: string };

/** Decides whether the holder of `signPub` (hex) may connect, and with what. Throwing denies. */
export type Admit = (signPub: string) => Promise<Admission>;

/** Facts about an admitted connection, for live revocation (kick by server id + cid). */
export interface AdmittedConnection {
  signPub: string;
  serverId: string;
  serverName: string;
  clientId: number;
}

export interface AuthCalloutOptions {
  servers: string[];
  /** Trust anchor for the server's TLS certificate; omit only for a cleartext loopback server. */
  caPem?: string;
  keys: ServiceKeys;
  admit: Admit;
  logger?: Logger;
  /** Deny when `admit` has not answered by then (the server's auth timeout is 2 s). */
  decisionTimeoutMs?: number;
  /** Lifetime of an issued user JWT; the server disconnects at expiry and the client re-authenticates. */
  userJwtTtlSeconds?: number;
  /** Target account of admitted users. */
  account?: string;
  /** Limits written into every user JWT; the broker enforces them per connection. */
  limits?: UserLimits;
  onDecision?: (d: { allowed: boolean; reason: string; latencyMs: number; connection?: AdmittedConnection }) => void;
}

interface AuthRequestClaims {
  server_id?: { id?: string; name?: string };
  user_nkey?: string;
  client_info?: { id?: number; nonce?: string; host?: string };
  connect_opts?: { nkey?: string; sig?: string };
  type?: string;
}

/**
 * Per-connection limits written into the user JWT (-1: none). nats-server 2.10 does not
 * apply them to callout-issued users (tested), so the bus also sets them server-wide.
 */
export interface UserLimits {
  /** Subscriptions one connection may hold. */
  subs: number;
  /** Largest message one connection may publish, in bytes. */
  payload: number;
}

export const DEFAULT_USER_LIMITS: UserLimits = { subs: 1000, payload: 1024 * 1024 };

/** A request that passed the checks: from the server it names, for a user nkey. */
interface ParsedRequest {
  claims: AuthRequestClaims;
  serverId: string;
  userNkey: string;
  /** The issuer the asking server is configured with (the request's `sub`): what signs the answer. */
  issuer: NKeyPair;
}

/** An admission or a denial, with the signing key once the nkey decoded. */
type Decision = Admission & { signPub?: string };

export class AuthCallout {
  readonly #opts: Required<Omit<AuthCalloutOptions, "onDecision" | "caPem">> &
    Pick<AuthCalloutOptions, "onDecision" | "caPem">;
  /** One encoder per issuer held: during a service-key rotation nodes expect either. */
  readonly #jwts = new Map<string, UserJwtEncoder>();
  #nc?: NatsConnection;

  constructor(opts: AuthCalloutOptions) {
    this.#opts = {
      logger: silentLogger,
      decisionTimeoutMs: 1500,
      userJwtTtlSeconds: 3600,
      account: "APP",
      limits: DEFAULT_USER_LIMITS,
      ...opts,
    };
    const { keys, account, limits } = this.#opts;
    for (const issuer of [keys.issuer, ...(keys.alternate ? [keys.alternate.issuer] : [])]) {
      this.#jwts.set(
        issuer.publicKey,
        new UserJwtEncoder({ issuer, account, subs: limits.subs, payload: limits.payload }),
      );
    }
  }

  /** The service connection (for health), once started. */
  get connection(): NatsConnection | undefined {
    return this.#nc;
  }

  async start(): Promise<void> {
    const { keys, servers, caPem } = this.#opts;
    this.#nc = await connectAsService({ servers, caPem, key: keys.service, name: "unibus-auth-callout" });
    // Lives as long as the connection: stop() closes both.
    this.#nc.subscribe(CALLOUT_SUBJECT, {
      queue: CALLOUT_QUEUE,
      callback: (err, msg) => {
        if (err) {
          this.#opts.logger.error({ component: "auth", err: err.message }, "callout subscription failed");
          return;
        }
        void this.#handle(msg);
      },
    });
    await this.#nc.flush();
  }

  async stop(): Promise<void> {
    const nc = this.#nc;
    this.#nc = undefined;
    if (nc && !nc.isClosed()) await nc.close();
  }

  async #handle(msg: Msg): Promise<void> {
    const started = performance.now();
    const request = this.#parseRequest(msg);
    if (request === undefined) return;
    const decision = await this.#decide(request.claims);
    const latencyMs = performance.now() - started;
    this.#report(request, decision, latencyMs);
    try {
      msg.respond(this.#response(request, decision));
    } catch (err) {
      this.#opts.logger.error({ component: "auth", err: (err as Error).message }, "could not answer the server");
    }
  }

  /** The request's claims, checked to come from the server that sent it; undefined (and logged) otherwise. */
  #parseRequest(msg: Msg): ParsedRequest | undefined {
    try {
      const claims = decodeJwt(new TextDecoder().decode(msg.data), "server");
      if (claims.aud !== "nats-authorization-request") throw new JwtError("wrong audience");
      if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) throw new JwtError("expired");
      const request = claims.nats as AuthRequestClaims;
      const serverId = claims.iss!;
      if (request.type !== "authorization_request" || request.server_id?.id !== serverId) {
        throw new JwtError("not an authorization request from its server");
      }
      if (!request.user_nkey || !decodePublicKey("user", request.user_nkey)) throw new JwtError("no user_nkey");
      // nats-server names the issuer it will check the answer against; during a service-key
      // rotation nodes differ, and one callout answers for any of them.
      const issuer = this.#issuerFor(claims.sub);
      if (!issuer) throw new JwtError(`the server expects issuer ${claims.sub}, which this bus does not hold`);
      return { claims: request, serverId, userNkey: request.user_nkey, issuer };
    } catch (err) {
      // Not from a server we can answer: nothing to sign a response for.
      this.#opts.logger.warn(
        { component: "auth", reason: (err as Error).message },
        "ignored an invalid authorization request",
      );
      return undefined;
    }
  }

  #issuerFor(sub: string | undefined): NKeyPair | undefined {
    const { keys } = this.#opts;
    if (sub === keys.issuer.publicKey) return keys.issuer;
    if (keys.alternate && sub === keys.alternate.issuer.publicKey) return keys.alternate.issuer;
    return undefined;
  }

  /** The authorization response: a user JWT we sign for an admission, the reason for a denial. */
  #response(request: ParsedRequest, decision: Decision): Uint8Array {
    if (!decision.allowed) {
      const denial = { type: "authorization_response", error: decision.reason };
      const jwt = encodeJwt({ sub: request.userNkey, aud: request.serverId, nats: denial }, request.issuer);
      return new TextEncoder().encode(jwt);
    }
    return this.#jwts.get(request.issuer.publicKey)!.encode(decision.signPub!, {
      userNkey: request.userNkey,
      serverId: request.serverId,
      name: decision.name,
      permissions: decision.permissions,
      exp: Math.floor(Date.now() / 1000) + this.#opts.userJwtTtlSeconds,
    });
  }

  /** One log line and the decision hook (metrics, the registry of admitted connections). */
  #report(request: ParsedRequest, decision: Decision, latencyMs: number): void {
    const { claims } = request;
    const connection: AdmittedConnection | undefined = decision.allowed
      ? {
          signPub: decision.signPub!,
          serverId: request.serverId,
          serverName: claims.server_id?.name ?? "",
          clientId: claims.client_info?.id ?? -1,
        }
      : undefined;
    this.#opts.logger.info(
      {
        component: "auth",
        decision: decision.allowed ? "admit" : "deny",
        reason: decision.allowed ? "active" : decision.reason,
        cid: claims.client_info?.id,
        server: claims.server_id?.name,
        user: decision.signPub,
        ms: Number(latencyMs.toFixed(2)),
      },
      decision.allowed ? "connection admitted" : "connection denied",
    );
    this.#opts.onDecision?.({
      allowed: decision.allowed,
      reason: decision.allowed ? "active" : decision.reason,
      latencyMs,
      connection,
    });
  }

  async #decide(request: AuthRequestClaims): Promise<Decision> {
    const nkey = request.connect_opts?.nkey;
    const sig = request.connect_opts?.sig;
    const nonce = request.client_info?.nonce;
    if (!nkey) return { allowed: false, reason: "no nkey presented" };
    const raw = decodePublicKey("user", nkey);
    if (!raw) return { allowed: false, reason: "malformed nkey" };
    const signPub = Buffer.from(raw).toString("hex");
    if (!nonce || !sig) return { allowed: false, reason: "no nonce signature", signPub };
    if (!verifyNkeySignature("user", nkey, Buffer.from(nonce), Buffer.from(sig, "base64"))) {
      return { allowed: false, reason: "bad nonce signature", signPub };
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      const admission = await Promise.race([
        this.#opts.admit(signPub),
        new Promise<Admission>((resolve) => {
          timer = setTimeout(
            () => resolve({ allowed: false, reason: "decision timed out" }),
            this.#opts.decisionTimeoutMs,
          );
        }),
      ]);
      return { ...admission, signPub };
    } catch (err) {
      this.#opts.logger.error({ component: "auth", err: (err as Error).message }, "admission check failed; denying");
      return { allowed: false, reason: "store unavailable", signPub };
    } finally {
      clearTimeout(timer);
    }
  }
}
