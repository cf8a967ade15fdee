/**
 * When a connection gives up on being refused. nats.js, by default, gives up at the
 * second refusal in a row — but a bus restarting its nats-server refuses for a moment
 * (a client that reconnects before the bus's callout is back has no one to admit it),
 * so clients would die of a restart they should ride out. Instead a connection keeps
 * trying while refused, and gives up once it has been refused for DENIAL_GRACE_MS in a
 * row: a revoked identity stops knocking within seconds, a restart costs nothing.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { AuthDeniedError } from "../errors.ts";

export const DENIAL_GRACE_MS = 3000;

/** Whether a status error is the bus refusing the connection (or its login expiring). */
export function isDenial(err: unknown): boolean {
  const e = err as { name?: string; message?: string } | undefined;
  return (
    e?.name === "AuthorizationError" ||
    e?.name === "UserAuthenticationExpiredError" ||
    /Authorization Violation|authentication/i.test(e?.message ?? "")
  );
}

export class DenialWatch {
  readonly #nc: NatsConnection;
  #since: number | undefined;
  #denied: AuthDeniedError | undefined;

  constructor(nc: NatsConnection, graceMs = DENIAL_GRACE_MS) {
    this.#nc = nc;
    void this.#follow(graceMs);
  }

  /** Why the connection ended: the refusal that made it give up, or nats.js's own reason (undefined for a close()). */
  async closed(): Promise<Error | undefined> {
    const err = await this.#nc.closed();
    return this.#denied ?? err ?? undefined;
  }

  async #follow(graceMs: number): Promise<void> {
    try {
      for await (const s of this.#nc.status()) {
        if (s.type === "reconnect") this.#since = undefined;
        if (s.type !== "error" || !isDenial(s.error)) continue;
        this.#since ??= Date.now();
        if (Date.now() - this.#since >= graceMs) {
          this.#denied = new AuthDeniedError("Authorization Violation", { cause: s.error });
          await this.#nc.close();
          return;
        }
      }
    } catch {
      // the status stream ends with the connection
    }
  }
}
