/**
 * A refusal with an HTTP status. `publicMessage` is the only text the caller sees:
 * for 4xx it says what the caller did wrong; for 5xx it is generic and the detail
 * stays in `cause` and the log.
 */
import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { UnibusError } from "../errors.ts";
import { type Logger, silentLogger } from "../log/index.ts";

const DEFAULT_CODES: Record<number, string> = {
  400: "BAD_REQUEST",
  401: "UNAUTHENTICATED",
  403: "FORBIDDEN",
  404: "NOT_FOUND",
  409: "CONFLICT",
  413: "BODY_TOO_LARGE",
  429: "RATE_LIMITED",
  431: "HEADERS_TOO_LARGE",
  500: "INTERNAL",
  503: "UNAVAILABLE",
};

export interface HttpErrorOptions {
  /** Stable machine-readable code; defaults to one derived from the status. */
  code?: string;
  cause?: unknown;
  /** Extra response headers (e.g. `retry-after`, `www-authenticate`). */
  headers?: Record<string, string>;
  /**
   * The request body was left unread (e.g. an oversized upload): the response must
   * close the connection rather than drain what the peer is still sending.
   */
  closeConnection?: boolean;
}

export class HttpError extends UnibusError {
  readonly status: number;
  readonly publicMessage: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly closeConnection: boolean;

  constructor(status: number, publicMessage: string, opts: HttpErrorOptions = {}) {
    super(opts.code ?? DEFAULT_CODES[status] ?? (status >= 500 ? "INTERNAL" : "BAD_REQUEST"), publicMessage, {
      cause: opts.cause,
    });
    this.status = status;
    this.publicMessage = publicMessage;
    this.headers = { ...opts.headers };
    this.closeConnection = opts.closeConnection ?? false;
  }

  /** The JSON body: `{ error: "<code, lowercase>", message }`. */
  toJSON(): { error: string; message: string } {
    return { error: this.code.toLowerCase(), message: this.publicMessage };
  }
}

/**
 * Answers `res` with `err`: an HttpError as itself, anything else as a generic 500
 * whose detail goes only to the log. With `closeConnection` the socket is closed once
 * the response is written, so an unread body is never drained.
 */
export function sendHttpError(res: ServerResponse, err: unknown, logger: Logger = silentLogger): void {
  const httpErr = err instanceof HttpError ? err : new HttpError(500, "internal error", { cause: err });
  if (httpErr.status >= 500) {
    const cause = httpErr.cause as { message?: unknown; code?: unknown } | undefined;
    logger.error(
      {
        component: "control",
        status: httpErr.status,
        code: httpErr.code,
        cause: cause?.message,
        causeCode: cause?.code,
      },
      "request failed",
    );
  }
  const socket = res.req?.socket;
  if (res.headersSent) {
    // Too late for a status line: cutting the connection is the only honest signal.
    socket?.destroy();
    return;
  }
  const text = JSON.stringify(httpErr.toJSON());
  res.writeHead(httpErr.status, {
    ...httpErr.headers,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...(httpErr.closeConnection ? { connection: "close" } : {}),
  });
  if (httpErr.closeConnection && socket) lingerOnClose(socket);
  res.end(res.req?.method === "HEAD" ? undefined : text);
}

/** How long a refused peer gets to read its answer before the socket is destroyed. */
const LINGER_MS = 1_000;

/**
 * Node destroys a `connection: close` socket as soon as the response is flushed. If
 * the peer is still sending a body we refused, unread bytes turn that close into a
 * TCP reset and the peer loses the response it was about to read. Instead: half-close
 * (FIN after the response), let Node discard whatever still arrives, and destroy the
 * socket when the peer closes its side or after LINGER_MS — bounded in time, and
 * nothing is buffered.
 */
function lingerOnClose(socket: Socket): void {
  socket.destroySoon = function lingeringDestroySoon(this: Socket) {
    const destroy = () => this.destroy();
    if (this.writable) this.end();
    this.once("end", destroy);
    setTimeout(destroy, LINGER_MS).unref();
  };
}
