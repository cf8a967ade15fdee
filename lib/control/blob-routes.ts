/**
 * The blob routes. Their bodies are streamed, so they run their own pipeline next to
 * the JSON one (which reads a whole body before it checks a signature):
 *
 *   PUT    /v1/rooms/:id/blobs          ceiling on the declared length → signature over
 *                                       the DECLARED x-unibus-content-sha256 → member →
 *                                       mimetype → body streamed to disk, hashed as it
 *                                       goes, committed only if the hash matches
 *   GET    /v1/rooms/:id/blobs/:blobId  member → the file streamed back
 *   DELETE /v1/rooms/:id/blobs/:blobId  the uploader or the room's owner
 *
 * A blob of another room answers 404, exactly like an unknown one.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AUTH_HEADERS, sha256Hex } from "../crypto/index.ts";
import type { Logger } from "../log/index.ts";
import type { BusMetrics } from "../metrics/index.ts";
import type { Store } from "../store/index.ts";
import {
  type BlobMeta,
  BlobStorageFullError,
  BlobStoreClosedError,
  type Blobs,
  isBlobId,
  parseMimetype,
} from "./blobs.ts";
import { HttpError } from "./http-error.ts";
import { type InflightBytes, type MinBodyRate, readBody, streamBody } from "./limits.ts";
import { Router } from "./router.ts";
import { toHttpError } from "./routes.ts";

/** A transfer with no byte moving for this long is cut. */
export const BLOB_IDLE_TIMEOUT_MS = 60_000;
/** Upper bound on one transfer, whatever its pace (256 MiB at this bound is ~150 KiB/s). */
export const BLOB_TRANSFER_TIMEOUT_MS = 30 * 60_000;

type BlobRouteName = "blobs.put" | "blobs.get" | "blobs.delete";

interface BlobRoute {
  method: "PUT" | "GET" | "DELETE";
  path: string;
  name: BlobRouteName;
}

const BLOB_ROUTES: readonly BlobRoute[] = [
  { method: "PUT", path: "/v1/rooms/:id/blobs", name: "blobs.put" },
  { method: "GET", path: "/v1/rooms/:id/blobs/:blobId", name: "blobs.get" },
  { method: "DELETE", path: "/v1/rooms/:id/blobs/:blobId", name: "blobs.delete" },
];

const router = new Router<BlobRoute>(BLOB_ROUTES);

export interface BlobRouteMatch {
  /** For metrics and logs. */
  name: BlobRouteName | "blobs.method_not_allowed";
  params: Record<string, string>;
  /** Set when the path is a blob path but the method is not allowed there. */
  allow?: string[];
}

/** The blob route for a request, or undefined when the path is not a blob path. */
export function matchBlobRoute(method: string, pathname: string): BlobRouteMatch | undefined {
  const m = router.match(method, pathname);
  if (!m) return undefined;
  if (!("route" in m)) return { name: "blobs.method_not_allowed", params: {}, allow: m.allow };
  return { name: m.route.name, params: m.params };
}

export interface BlobRouteEnv {
  req: IncomingMessage;
  res: ServerResponse;
  blobs: Blobs;
  store: Pick<Store, "isMember" | "getRoom">;
  /**
   * Authenticates the request (the server's `authenticateRequest` with its mode and
   * nonce cache) and resolves with the verified signer, "" when there is none.
   * `bodySha256` is the body's hash, or "declared" for a streamed upload.
   */
  authenticate: (bodySha256: string) => Promise<string>;
  /** The server's global cap on body bytes in flight. */
  inflight?: InflightBytes;
  logger?: Logger;
  metrics?: BusMetrics;
  idleTimeoutMs?: number;
  transferTimeoutMs?: number;
  /** An upload slower than this (the server's minimum body rate) is cut with 408 and leaves nothing. */
  minRate?: MinBodyRate;
}

/**
 * Runs one blob request. Rejects with the error to answer (HttpError or a store error
 * for `toHttpError`); a refusal that leaves the upload body unread asks for the
 * connection to be closed, so the rest of the body is never read.
 */
export async function handleBlobRoute(match: BlobRouteMatch, env: BlobRouteEnv): Promise<void> {
  try {
    if (match.allow) {
      throw new HttpError(405, `${env.req.method} is not allowed here; use ${match.allow.join(" or ")}`, {
        headers: { allow: match.allow.join(", ") },
      });
    }
    if (env.blobs.closed) throw new BlobStoreClosedError();
    const roomId = match.params.id!;
    switch (match.name) {
      case "blobs.put":
        return await putBlob(env, roomId);
      case "blobs.get":
        return await getBlob(env, roomId, match.params.blobId!);
      case "blobs.delete":
        return await deleteBlob(env, roomId, match.params.blobId!);
    }
  } catch (err) {
    throw refusal(err, env);
  }
}

async function putBlob(env: BlobRouteEnv, roomId: string): Promise<void> {
  const { req, res, blobs } = env;
  const limit = blobs.maxBytes;
  // Cheapest refusal first: no signature is checked for a body we would never take.
  const declared = req.headers["content-length"];
  if (declared !== undefined) {
    const n = Number(declared);
    if (!Number.isSafeInteger(n) || n < 0) throw new HttpError(400, "the Content-Length header is not a valid length");
    if (n > limit) throw blobTooLarge(limit);
  }
  const signer = await env.authenticate("declared");
  await requireMember(env, roomId, signer);
  const mimetype = parseMimetype(req.headers["content-type"]);
  extendUploadDeadline(env);

  const upload = await blobs.beginUpload({ roomId, uploader: signer, mimetype });
  let meta: BlobMeta;
  try {
    const body = await streamBody(req, {
      limit,
      // A verified signer implies a well-formed declared hash: the signature covers it.
      expectSha256: req.headers[AUTH_HEADERS.contentSha256] as string,
      inflight: env.inflight,
      ...(env.minRate ? { minRate: env.minRate } : {}),
      onChunk: (chunk) => upload.write(chunk),
    });
    meta = await upload.commit({ size: body.bytes, sha256: body.sha256 });
  } catch (err) {
    await upload.abort();
    if (err instanceof HttpError && err.status === 413) throw blobTooLarge(limit);
    throw err;
  }
  env.logger?.info({ component: "blobs", roomId, blobId: meta.id, size: meta.size, uploader: signer }, "blob stored");
  const text = JSON.stringify({
    id: meta.id,
    roomId: meta.roomId,
    size: meta.size,
    sha256: meta.sha256,
    mimetype: meta.mimetype,
    createdAt: meta.createdAt,
    expiresAt: meta.expiresAt,
  });
  res.writeHead(201, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    // Node dropped its own error handling on this socket when it reported the timeout.
    ...(outlivedRequestTimeout.has(req.socket) ? { connection: "close" } : {}),
  });
  res.end(text);
}

async function getBlob(env: BlobRouteEnv, roomId: string, blobId: string): Promise<void> {
  const { req, res } = env;
  const signer = await authenticateEmptyBody(env);
  await requireMember(env, roomId, signer);
  if (!isBlobId(blobId)) throw notFound();
  const { meta, body } = await env.blobs.read(blobId);
  if (meta.roomId !== roomId) {
    body.destroy();
    throw notFound();
  }
  const idleMs = env.idleTimeoutMs ?? BLOB_IDLE_TIMEOUT_MS;
  // A reader that stops reading holds a file and a socket: cut it once nothing moves.
  res.setTimeout(idleMs);
  const untrack = env.blobs.trackTransfer(() => req.socket.destroy());
  const deadline = setTimeout(() => req.socket.destroy(), env.transferTimeoutMs ?? BLOB_TRANSFER_TIMEOUT_MS);
  deadline.unref();
  res.once("close", () => {
    clearTimeout(deadline);
    untrack();
  });
  res.writeHead(200, {
    "content-type": meta.mimetype,
    "content-length": meta.size,
    [AUTH_HEADERS.contentSha256]: meta.sha256,
    "cache-control": "private, no-store",
    "x-content-type-options": "nosniff",
    // Opaque bytes: never let a browser render them under this origin.
    "content-disposition": "attachment",
  });
  if (req.method === "HEAD") {
    body.destroy();
    return void res.end();
  }
  try {
    await pipeline(body, res);
  } catch (err) {
    // The status line is gone: a cut connection is the only signal left.
    res.destroy();
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ERR_STREAM_PREMATURE_CLOSE" && code !== "ECONNRESET" && code !== "EPIPE") {
      env.logger?.warn({ component: "blobs", blobId, err: (err as Error).message }, "blob download failed");
    }
  }
}

async function deleteBlob(env: BlobRouteEnv, roomId: string, blobId: string): Promise<void> {
  const signer = await authenticateEmptyBody(env);
  await requireMember(env, roomId, signer);
  if (!isBlobId(blobId)) throw notFound();
  const meta = await env.blobs.stat(blobId);
  if (meta.roomId !== roomId) throw notFound();
  if (meta.uploader !== signer) {
    const room = await env.store.getRoom(roomId);
    if (room.ownerSignPub !== signer) {
      throw new HttpError(403, "only the blob's uploader or the room's owner can delete it");
    }
  }
  await env.blobs.delete(blobId);
  env.logger?.info({ component: "blobs", roomId, blobId, by: signer }, "blob deleted");
  env.res.writeHead(204);
  env.res.end();
}

/** GET and DELETE carry no body: any body at all is refused, and the signature covers the empty one. */
async function authenticateEmptyBody(env: BlobRouteEnv): Promise<string> {
  const raw = await readBody(env.req, { limit: 0, inflight: env.inflight });
  return env.authenticate(sha256Hex(raw));
}

/** Members only; everyone else gets the same 403 whether the room exists or not. */
async function requireMember(env: BlobRouteEnv, roomId: string, signer: string): Promise<void> {
  if (!signer || !(await env.store.isMember(roomId, signer))) {
    throw new HttpError(403, "you are not a member of this room");
  }
}

/** Sockets whose current request is an authenticated upload on its own clock. */
const longUploads = new WeakSet<Duplex>();
/** Sockets whose request-timeout error was swallowed: closed after their answer. */
const outlivedRequestTimeout = new WeakSet<Duplex>();

/**
 * Node's `requestTimeout` (30 s on this server) is one server-wide clock that runs
 * until the whole request body has arrived; Node has no per-request setting, and
 * `req.setTimeout` only sets an idle timeout on the socket. A 256 MiB upload over an
 * ordinary link needs minutes. So, for an upload that has passed authentication and
 * the membership check (never before: strangers stay on the 30 s clock):
 *  - the socket is marked, and the server's `clientError` listener ignores the
 *    request-timeout error for it (`uploadOutlivesRequestTimeout`);
 *  - instead the socket is cut when no byte arrives for `idleTimeoutMs`
 *    (`req.setTimeout`), and in any case after `transferTimeoutMs`;
 *  - the blob store can cut it too, when the bus stops.
 */
function extendUploadDeadline(env: BlobRouteEnv): void {
  const { req, res, blobs } = env;
  const socket = req.socket;
  longUploads.add(socket);
  req.setTimeout(env.idleTimeoutMs ?? BLOB_IDLE_TIMEOUT_MS);
  const deadline = setTimeout(() => socket.destroy(), env.transferTimeoutMs ?? BLOB_TRANSFER_TIMEOUT_MS);
  deadline.unref();
  const untrack = blobs.trackTransfer(() => socket.destroy());
  res.once("close", () => {
    clearTimeout(deadline);
    untrack();
    longUploads.delete(socket);
  });
}

/**
 * For the server's `clientError` listener, before anything else: true when the error
 * is the request timeout of an authenticated upload, which then keeps going on its own
 * clock (see `extendUploadDeadline`); the listener must then leave the socket alone.
 */
export function uploadOutlivesRequestTimeout(err: Error & { code?: string }, socket: Duplex): boolean {
  if (err.code !== "ERR_HTTP_REQUEST_TIMEOUT" || !longUploads.has(socket)) return false;
  outlivedRequestTimeout.add(socket);
  return true;
}

function blobTooLarge(limit: number): HttpError {
  return new HttpError(413, `the blob is larger than this bus accepts (${limit} bytes)`, { closeConnection: true });
}

function notFound(): HttpError {
  return new HttpError(404, "no such blob in this room");
}

/** The error to answer with, closing the connection when the request body was left unread. */
function refusal(err: unknown, env: BlobRouteEnv): unknown {
  let e = toHttpError(err);
  if (e instanceof BlobStoreClosedError) {
    e = new HttpError(503, "the bus is shutting down; try again shortly", { code: "SHUTTING_DOWN", cause: err });
  }
  if (e instanceof BlobStorageFullError) e = new HttpError(507, e.message, { code: e.code, cause: err });
  if (e instanceof HttpError) {
    if (e.status === 413) env.metrics?.httpRejections.inc({ reason: "body_limit" });
    else if (e.status === 408) env.metrics?.httpRejections.inc({ reason: "body_too_slow" });
    else if (e.status === 503 && e.code === "BUSY") env.metrics?.httpRejections.inc({ reason: "inflight_limit" });
    const mustClose = !env.req.complete || outlivedRequestTimeout.has(env.req.socket);
    if (mustClose && !e.closeConnection) {
      return new HttpError(e.status, e.publicMessage, {
        code: e.code,
        cause: e.cause,
        headers: { ...e.headers },
        closeConnection: true,
      });
    }
    return e;
  }
  return new HttpError(500, "internal error", {
    cause: err,
    closeConnection: !env.req.complete || outlivedRequestTimeout.has(env.req.socket),
  });
}
