/**
 * When a client dials again after losing its connection.
 *
 * A membership change re-authenticates a connection by kicking it: the server closes a
 * healthy connection and is ready to admit it again at once. nats.js, though, waits
 * `reconnectTimeWait` (+ jitter) before dialling a server it connected to less than
 * that long ago — and a connection that was just re-admitted is exactly that, so a bot
 * creating a room per task paid the whole wait on every room after the first (seen:
 * ~80 of createRoom's 131 ms p50 on one idle node went to that wait).
 *
 * So the first attempt after a disconnect dials at once; every further attempt of the
 * same outage waits as before, so a server that is down or refusing is not hammered.
 * A connection that has been up for a while got this from nats.js already (its last
 * connect is long past); only the timing of quick successive kicks changes.
 */
import type { NatsConnection } from "@nats-io/transport-node";

export interface ReconnectPacingOptions {
  /** Wait before each attempt after the first of an outage. */
  waitMs: number;
  /** Up to this much more, at random, so many clients do not retry in step. */
  jitterMs: number;
}

export class ReconnectPacing {
  readonly #opts: ReconnectPacingOptions;
  /** True from the first attempt of an outage (or of the first connect) until the connection is up. */
  #retrying = false;

  constructor(opts: ReconnectPacingOptions) {
    this.#opts = opts;
  }

  /**
   * nats.js' `reconnectDelayHandler`: asked before each attempt (and again while it
   * waits). 0 the first time after the connection was up, the usual wait afterwards.
   */
  readonly delay = (): number => {
    if (!this.#retrying) {
      this.#retrying = true;
      return 0;
    }
    return this.#opts.waitMs + Math.floor(Math.random() * (this.#opts.jitterMs + 1));
  };

  /**
   * Marks `nc` as up now and after each reconnect. nats.js reports a reconnect before
   * any later socket event can end the connection again, so the next outage always
   * starts with the immediate attempt.
   */
  follow(nc: NatsConnection): void {
    this.#retrying = false;
    void (async () => {
      try {
        for await (const s of nc.status()) if (s.type === "reconnect") this.#retrying = false;
      } catch {
        // the status stream ends with the connection
      }
    })();
  }
}
