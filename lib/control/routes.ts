/**
 * The control plane's API: rooms, members, per-epoch sealed keys, discovery, users,
 * invites and registration. Each route declares how it is authenticated and the
 * JSON schema of its body; handlers only see validated input and a verified signer.
 */
import crypto from "node:crypto";
import type { IncomingMessage } from "node:http";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import type { RouteReport } from "../bus/route-watch.ts";
import { ed25519PublicKey, verify } from "../crypto/index.ts";
import {
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  StoreUnavailableError,
  UserExistsError,
} from "../errors.ts";
import type { Logger } from "../log/index.ts";
import type { NodeStatus } from "../nats/index.ts";
import { InviteRefusedError, type Room, type Store, type User } from "../store/index.ts";
import { HttpError } from "./http-error.ts";
import { openApiDocument } from "./openapi.ts";
import { parseTtl, registrationProofMessage } from "./protocol.ts";

export { parseTtl, registrationProofMessage };

/** A change that affects who may read or write what (the ACL issue kicks on these). */
export type AccessChange =
  /**
   * `subject`: the room's subject; `persist`: whether the room keeps history (its stream
   * must exist before the answer); `retention`: the persisted room's history limits, as
   * `reserveRoomStorage` granted them (the budget is checked there, before the room is stored).
   */
  | {
      type: "room-created";
      roomId: string;
      subject: string;
      signPub: string;
      persist: boolean;
      retention?: RoomRetentionChoice;
    }
  | { type: "member-added" | "member-removed"; roomId: string; signPub: string }
  /** The room is gone from the store: every former member loses its subject, its history and blobs go. */
  | { type: "room-deleted"; roomId: string; members: string[] }
  | { type: "user-revoked" | "user-deleted"; signPub: string };

export interface ControlDeps {
  store: Store;
  logger: Logger;
  /** True when the control plane is bound to a non-loopback address: cleartext rooms are refused. */
  publicBind: boolean;
  onAccessChange?: (change: AccessChange) => Promise<void> | void;
  /**
   * Asked before a persisted room is created with the retention its creator asked for:
   * answers the retention the room gets (each limit at most the bus's ceiling), or
   * throws an HttpError (400 above the ceiling, 507 when the rooms' storage budget
   * cannot take one more), so no room is stored without its history.
   */
  reserveRoomStorage?: (asked?: RoomRetentionChoice) => Promise<RoomRetentionChoice | undefined>;
  /** SHA-256 fingerprint of the bus CA, handed out with a new invite so the invitee can pin it. */
  caFingerprint?: string;
  /** This node's health and replication, for admins (`GET /v1/status`); without it that route is a 503. */
  nodeReport?: () => Promise<NodeReport>;
}

/** What `GET /v1/status` answers: the node's own health parts and its nats-server as the monitoring endpoint sees it. */
export interface NodeReport {
  health: { ok: boolean; parts: Record<string, "up" | "down">; down?: string[]; routes?: RouteReport };
  node: NodeStatus;
}

/** A persisted room's history limits (see `RoomRetention` in lib/bus): the oldest go first past any of them. */
export interface RoomRetentionChoice {
  maxBytes?: number;
  maxAgeMs?: number;
  maxMsgs?: number;
}

const POSITIVE = { type: "integer", minimum: 1, maximum: Number.MAX_SAFE_INTEGER };

export interface RouteContext {
  req: IncomingMessage;
  url: URL;
  params: Record<string, string>;
  /** The verified signing key of the caller (hex); "" on unauthenticated routes. */
  signer: string;
  body: unknown;
  deps: ControlDeps;
}

export interface RouteResult {
  status: number;
  body?: unknown;
}

export interface Route {
  method: "GET" | "POST" | "PUT" | "DELETE";
  path: string;
  /** Stable name for metrics and logs. */
  name: string;
  /** "signed": an allowlisted signer; "none": anyone (rate limits still apply). */
  auth: "signed" | "none";
  schema?: Record<string, unknown>;
  handler: (ctx: RouteContext) => Promise<RouteResult>;
}

const HEX64 = { type: "string", pattern: "^[0-9a-fA-F]{64}$" };
const SEALED = { type: "string", minLength: 1, maxLength: 4096, pattern: "^[A-Za-z0-9_-]+$" };
const EPOCH = { type: "integer", minimum: 1, maximum: 2 ** 31 };
const obj = (properties: Record<string, unknown>, required: string[] = []) => ({
  type: "object",
  properties,
  required,
  additionalProperties: false,
});

const REKEY_FIELDS = {
  // The room moves to fromEpoch + 1, which must stay within 1..2^31 too.
  fromEpoch: { ...EPOCH, maximum: 2 ** 31 - 1 },
  sealedKeys: {
    type: "array",
    maxItems: 10_000,
    items: obj({ signPub: HEX64, sealed: SEALED }, ["signPub", "sealed"]),
  },
};

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });

function bodyError(errors: ErrorObject[] | null | undefined): HttpError {
  const e = errors?.[0];
  if (!e) return new HttpError(400, "invalid request body");
  if (e.keyword === "additionalProperties") {
    return new HttpError(
      400,
      `unknown field "${(e.params as { additionalProperty: string }).additionalProperty}" in the request body`,
    );
  }
  if (e.keyword === "required") {
    return new HttpError(
      400,
      `missing field "${(e.params as { missingProperty: string }).missingProperty}" in the request body`,
    );
  }
  const field = e.instancePath.replace(/^\//, "").replaceAll("/", ".") || "body";
  return new HttpError(400, `field "${field}" ${e.message ?? "is invalid"}`);
}

/** Store outcomes → HTTP; store unavailability → a generic 503 (detail only in the log). */
export function toHttpError(err: unknown): unknown {
  if (err instanceof HttpError) return err;
  if (err instanceof NotFoundError) return new HttpError(404, err.message);
  if (err instanceof UserExistsError) return new HttpError(409, err.message, { code: "USER_EXISTS" });
  if (err instanceof InviteRefusedError)
    return new HttpError(409, err.message, { code: `INVITE_${err.reason.toUpperCase()}` });
  if (err instanceof ConflictError) return new HttpError(409, err.message);
  if (err instanceof InvalidArgumentError) return new HttpError(400, err.message);
  if (err instanceof StoreUnavailableError)
    return new HttpError(503, "the store is unavailable; try again shortly", { cause: err });
  return err;
}

async function requireAdmin(ctx: RouteContext): Promise<User> {
  const user = await ctx.deps.store.getUser(ctx.signer);
  if (user.role !== "admin" || user.status !== "active") throw new HttpError(403, "this needs an admin of the bus");
  return user;
}

/** Members see a room; everyone else gets the same 403 whether it exists or not. */
async function requireMember(ctx: RouteContext, roomId: string): Promise<Room> {
  const room = await ctx.deps.store.roomIfMember(roomId, ctx.signer);
  if (room === undefined) throw new HttpError(403, "you are not a member of this room");
  return room;
}

async function requireOwner(ctx: RouteContext, roomId: string): Promise<Room> {
  const room = await requireMember(ctx, roomId);
  if (room.ownerSignPub !== ctx.signer) throw new HttpError(403, "only the room's owner can change its members");
  return room;
}

/** A member sees the room; so does an admin of the bus, who gets a 404 for an unknown room. */
async function requireMemberOrAdmin(ctx: RouteContext, roomId: string): Promise<Room> {
  const { store } = ctx.deps;
  if (await store.isMember(roomId, ctx.signer)) return store.getRoom(roomId);
  const caller = await store.getUser(ctx.signer);
  if (caller.role === "admin" && caller.status === "active") return store.getRoom(roomId);
  throw new HttpError(403, "you are not a member of this room");
}

/** The owner, or an admin of the bus (who need not be a member); anyone else gets a 403. */
async function requireOwnerOrAdmin(ctx: RouteContext, roomId: string, what: string): Promise<Room> {
  const { store } = ctx.deps;
  const room = await store.roomIfMember(roomId, ctx.signer);
  if (room?.ownerSignPub === ctx.signer) return room;
  const caller = await store.getUser(ctx.signer);
  if (caller.role === "admin" && caller.status === "active") return store.getRoom(roomId);
  throw new HttpError(403, `only the room's owner or an admin can ${what}`);
}

/** Deletes a room from the store, then makes that true on the wire (kicks, history, blobs). */
export async function deleteRoomFully(deps: ControlDeps, roomId: string): Promise<void> {
  const members = (await deps.store.listMembers(roomId)).map((m) => m.signPub);
  await deps.store.deleteRoom(roomId);
  await deps.onAccessChange?.({ type: "room-deleted", roomId, members });
}

/** What to do with the rooms a user to be deleted owns: `?rooms=delete`, or `?rooms=transfer&to=<key>`. */
async function settleOwnedRooms(ctx: RouteContext, signPub: string): Promise<void> {
  const { store } = ctx.deps;
  await store.getUser(signPub); // 404 before anything else
  const owned = (await store.listRoomsFor(signPub)).filter((r) => r.role === "owner").map((r) => r.id);
  if (owned.length === 0) return;
  const choice = ctx.url.searchParams.get("rooms");
  const to = ctx.url.searchParams.get("to")?.toLowerCase();
  if (choice === "delete") {
    for (const id of owned) await deleteRoomFully(ctx.deps, id);
    return;
  }
  if (choice === "transfer" && to && /^[0-9a-f]{64}$/.test(to) && to !== signPub) {
    const outside: string[] = [];
    for (const id of owned) if (!(await store.isMember(id, to))) outside.push(id);
    if (outside.length > 0) {
      throw new HttpError(
        409,
        `${to} is not a member of room(s) ${outside.join(", ")}; add it there first, or delete the rooms with ?rooms=delete`,
      );
    }
    for (const id of owned) await store.transferRoom(id, to);
    return;
  }
  if (choice !== null && choice !== "delete" && choice !== "transfer") {
    throw new HttpError(400, `rooms must be "delete" or "transfer" (with to=<member key>), not "${choice}"`);
  }
  throw new HttpError(
    409,
    `user ${signPub} owns room(s) ${owned.join(", ")}; delete again with ?rooms=delete, or ?rooms=transfer&to=<key of a member of each room, not the user itself>`,
    { code: "OWNS_ROOMS" },
  );
}

function sameKey(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

const MAX_TTL_MS = 90 * 86_400_000;

/** 12 random bytes, hex: the id (and the last subject token) of a new room. */
export function newRoomId(): string {
  return crypto.randomBytes(12).toString("hex");
}

export const ROUTES: readonly Route[] = [
  {
    method: "POST",
    path: "/v1/rooms",
    name: "rooms.create",
    auth: "signed",
    schema: obj({
      // The client may pick the id (so it can seal the first key, which binds the id,
      // before the room exists); the subject is always the server's.
      id: { type: "string", pattern: "^[0-9a-f]{24}$" },
      encrypt: { type: "boolean" },
      persist: { type: "boolean" },
      signMsgs: { type: "boolean" },
      owner: HEX64,
      ownerSealedKey: SEALED,
      retention: obj({ maxBytes: POSITIVE, maxAgeMs: POSITIVE, maxMsgs: POSITIVE }),
    }),
    handler: async (ctx) => {
      const b = ctx.body as {
        id?: string;
        encrypt?: boolean;
        persist?: boolean;
        signMsgs?: boolean;
        owner?: string;
        ownerSealedKey?: string;
        retention?: RoomRetentionChoice;
      };
      if (b.owner && !sameKey(b.owner, ctx.signer))
        throw new HttpError(403, "a room can only be created in your own name");
      const encrypt = b.encrypt ?? true;
      if (!encrypt && ctx.deps.publicBind) {
        throw new HttpError(
          403,
          "cleartext rooms are refused on a bus that listens beyond loopback; create an encrypted room",
        );
      }
      if (encrypt && !b.ownerSealedKey)
        throw new HttpError(400, "an encrypted room needs ownerSealedKey: the epoch-1 room key sealed to you");
      if (!encrypt && b.ownerSealedKey)
        throw new HttpError(400, "a cleartext room has no room key; drop ownerSealedKey");
      if (b.retention && !b.persist)
        throw new HttpError(400, "retention applies to persisted rooms only; add persist: true or drop retention");
      const retention = b.persist ? await ctx.deps.reserveRoomStorage?.(b.retention) : undefined;
      const id = b.id ?? newRoomId();
      const room = await ctx.deps.store.createRoom({
        id,
        subject: `unibus.room.${id}`,
        ownerSignPub: ctx.signer,
        encrypt,
        persist: b.persist ?? false,
        signMsgs: b.signMsgs ?? false,
        ownerSealedKey: b.ownerSealedKey ?? null,
      });
      await ctx.deps.onAccessChange?.({
        type: "room-created",
        roomId: id,
        subject: room.subject,
        signPub: ctx.signer,
        persist: room.persist,
        ...(retention ? { retention } : {}),
      });
      return { status: 201, body: retention ? { ...room, retention } : room };
    },
  },
  {
    method: "GET",
    path: "/v1/rooms",
    name: "rooms.list",
    auth: "signed",
    handler: async (ctx) => {
      await requireAdmin(ctx);
      return { status: 200, body: await ctx.deps.store.listRooms() };
    },
  },
  {
    method: "GET",
    path: "/v1/rooms/:id",
    name: "rooms.get",
    auth: "signed",
    handler: async (ctx) => ({ status: 200, body: await requireMember(ctx, ctx.params.id!) }),
  },
  {
    method: "GET",
    path: "/v1/rooms/:id/members",
    name: "rooms.members.list",
    auth: "signed",
    handler: async (ctx) => {
      await requireMemberOrAdmin(ctx, ctx.params.id!);
      return { status: 200, body: await ctx.deps.store.listMembers(ctx.params.id!) };
    },
  },
  {
    method: "POST",
    path: "/v1/rooms/:id/members",
    name: "rooms.members.add",
    auth: "signed",
    schema: obj({ signPub: HEX64, role: { enum: ["member"] }, sealedKey: SEALED, epoch: EPOCH }, ["signPub", "epoch"]),
    handler: async (ctx) => {
      const room = await requireOwner(ctx, ctx.params.id!);
      const b = ctx.body as { signPub: string; sealedKey?: string; epoch: number };
      if (room.encrypt && !b.sealedKey)
        throw new HttpError(400, "an encrypted room needs sealedKey: the current room key sealed to the new member");
      if (!room.encrypt && b.sealedKey) throw new HttpError(400, "a cleartext room has no room key; drop sealedKey");
      const member = await ctx.deps.store.addMember(room.id, {
        signPub: b.signPub,
        role: "member",
        sealedKey: b.sealedKey ?? null,
        epoch: b.epoch,
      });
      await ctx.deps.onAccessChange?.({ type: "member-added", roomId: room.id, signPub: member.signPub });
      return { status: 201, body: member };
    },
  },
  {
    method: "DELETE",
    path: "/v1/rooms/:id/members/:signPub",
    name: "rooms.members.remove",
    auth: "signed",
    handler: async (ctx) => {
      const roomId = ctx.params.id!;
      const target = ctx.params.signPub!.toLowerCase();
      // the owner removes anyone; a member may leave a cleartext room here (an encrypted
      // one is left through /leave, which moves the room past the leaver's key)
      if (target === ctx.signer) {
        const room = await requireMember(ctx, roomId);
        if (room.encrypt) {
          throw new HttpError(
            409,
            `leave an encrypted room with POST /v1/rooms/${roomId}/leave, giving the next epoch's key sealed to the members that stay`,
          );
        }
      } else await requireOwner(ctx, roomId);
      await ctx.deps.store.removeMember(roomId, target);
      await ctx.deps.onAccessChange?.({ type: "member-removed", roomId, signPub: target });
      return { status: 204 };
    },
  },
  {
    method: "DELETE",
    path: "/v1/rooms/:id",
    name: "rooms.delete",
    auth: "signed",
    handler: async (ctx) => {
      const room = await requireOwnerOrAdmin(ctx, ctx.params.id!, "delete it");
      await deleteRoomFully(ctx.deps, room.id);
      return { status: 204 };
    },
  },
  {
    method: "POST",
    path: "/v1/rooms/:id/leave",
    name: "rooms.leave",
    auth: "signed",
    schema: obj(REKEY_FIELDS),
    handler: async (ctx) => {
      const room = await requireMember(ctx, ctx.params.id!);
      if (room.ownerSignPub === ctx.signer) {
        throw new HttpError(
          409,
          `the owner cannot leave; hand the room over first (POST /v1/rooms/${room.id}/transfer) or delete it`,
        );
      }
      const b = ctx.body as { fromEpoch?: number; sealedKeys?: { signPub: string; sealed: string }[] };
      const rekey = b.fromEpoch !== undefined || b.sealedKeys !== undefined;
      if (room.encrypt && !(b.fromEpoch !== undefined && b.sealedKeys !== undefined)) {
        throw new HttpError(
          400,
          "leaving an encrypted room needs fromEpoch and sealedKeys: the next epoch's key sealed to every member that stays",
        );
      }
      if (!room.encrypt && rekey)
        throw new HttpError(400, "a cleartext room has no keys; drop fromEpoch and sealedKeys");
      const next = room.encrypt ? { fromEpoch: b.fromEpoch!, sealedKeys: b.sealedKeys! } : undefined;
      await ctx.deps.store.removeMember(room.id, ctx.signer, next);
      await ctx.deps.onAccessChange?.({ type: "member-removed", roomId: room.id, signPub: ctx.signer });
      return { status: 204 };
    },
  },
  {
    method: "POST",
    path: "/v1/rooms/:id/transfer",
    name: "rooms.transfer",
    auth: "signed",
    schema: obj({ to: HEX64 }, ["to"]),
    handler: async (ctx) => {
      const room = await requireOwnerOrAdmin(ctx, ctx.params.id!, "hand it over");
      // Both stay members: nobody's rights on the wire change, so nobody is kicked.
      return { status: 200, body: await ctx.deps.store.transferRoom(room.id, (ctx.body as { to: string }).to) };
    },
  },
  {
    method: "POST",
    path: "/v1/rooms/:id/rekey",
    name: "rooms.rekey",
    auth: "signed",
    schema: obj(REKEY_FIELDS, ["fromEpoch", "sealedKeys"]),
    handler: async (ctx) => {
      const room = await requireMember(ctx, ctx.params.id!);
      if (!room.encrypt) throw new HttpError(400, "a cleartext room has no keys to rotate");
      const b = ctx.body as { fromEpoch: number; sealedKeys: { signPub: string; sealed: string }[] };
      return { status: 200, body: await ctx.deps.store.rekey(room.id, b) };
    },
  },
  {
    method: "GET",
    path: "/v1/rooms/:id/keys/:signPub",
    name: "rooms.keys.get",
    auth: "signed",
    handler: async (ctx) => {
      if (!sameKey(ctx.params.signPub!, ctx.signer))
        throw new HttpError(403, "a sealed key is served only to its own holder");
      const room = await requireMember(ctx, ctx.params.id!);
      const epochParam = ctx.url.searchParams.get("epoch");
      let epoch: number | undefined;
      if (epochParam !== null) {
        epoch = Number(epochParam);
        if (!Number.isSafeInteger(epoch) || epoch < 1) throw new HttpError(400, "epoch must be a positive integer");
      }
      try {
        return { status: 200, body: await ctx.deps.store.getSealedKey(room.id, ctx.signer, epoch) };
      } catch (err) {
        if (err instanceof NotFoundError) {
          throw new HttpError(
            403,
            `there is no room key sealed to you for ${epoch ? `epoch ${epoch}` : "this room"}; you were not a member then`,
          );
        }
        throw err;
      }
    },
  },
  {
    method: "GET",
    path: "/v1/users/:signPub/rooms",
    name: "users.rooms",
    auth: "signed",
    handler: async (ctx) => {
      if (!sameKey(ctx.params.signPub!, ctx.signer)) throw new HttpError(403, "you can only list your own rooms");
      return { status: 200, body: await ctx.deps.store.listRoomsFor(ctx.signer) };
    },
  },
  {
    method: "GET",
    path: "/v1/users/:signPub",
    name: "users.get",
    auth: "signed",
    handler: async (ctx) => {
      const u = await ctx.deps.store.getUser(ctx.params.signPub!);
      // public keys and name only: what a room owner needs to seal a key to this user
      return { status: 200, body: { signPub: u.signPub, kexPub: u.kexPub, handle: u.handle, status: u.status } };
    },
  },
  {
    // An identity added by its signing key alone registers its own key-exchange key, once.
    method: "PUT",
    path: "/v1/users/:signPub/kex",
    name: "users.kex.set",
    auth: "signed",
    schema: obj({ kexPub: HEX64 }, ["kexPub"]),
    handler: async (ctx) => {
      if (!sameKey(ctx.params.signPub!, ctx.signer))
        throw new HttpError(403, "an identity registers only its own key-exchange key");
      const b = ctx.body as { kexPub: string };
      const u = await ctx.deps.store.setKexPub(ctx.signer, b.kexPub);
      return { status: 200, body: { signPub: u.signPub, kexPub: u.kexPub, handle: u.handle, status: u.status } };
    },
  },
  {
    method: "GET",
    path: "/v1/users",
    name: "users.list",
    auth: "signed",
    handler: async (ctx) => {
      await requireAdmin(ctx);
      return { status: 200, body: await ctx.deps.store.listUsers() };
    },
  },
  {
    method: "POST",
    path: "/v1/users",
    name: "users.add",
    auth: "signed",
    schema: obj(
      { signPub: HEX64, kexPub: HEX64, handle: { type: "string", maxLength: 64 }, role: { enum: ["admin", "member"] } },
      ["signPub", "handle"],
    ),
    handler: async (ctx) => {
      await requireAdmin(ctx);
      const b = ctx.body as { signPub: string; kexPub?: string; handle: string; role?: "admin" | "member" };
      return {
        status: 201,
        body: await ctx.deps.store.addUser({
          signPub: b.signPub,
          kexPub: b.kexPub ?? null,
          handle: b.handle,
          role: b.role ?? "member",
        }),
      };
    },
  },
  {
    method: "POST",
    path: "/v1/users/:signPub/revoke",
    name: "users.revoke",
    auth: "signed",
    handler: async (ctx) => {
      await requireAdmin(ctx);
      const user = await ctx.deps.store.revokeUser(ctx.params.signPub!);
      await ctx.deps.onAccessChange?.({ type: "user-revoked", signPub: user.signPub });
      return { status: 200, body: user };
    },
  },
  {
    method: "DELETE",
    path: "/v1/users/:signPub",
    name: "users.delete",
    auth: "signed",
    handler: async (ctx) => {
      await requireAdmin(ctx);
      const signPub = ctx.params.signPub!.toLowerCase();
      await settleOwnedRooms(ctx, signPub);
      await ctx.deps.store.deleteUser(signPub);
      await ctx.deps.onAccessChange?.({ type: "user-deleted", signPub });
      return { status: 204 };
    },
  },
  {
    method: "POST",
    path: "/v1/invites",
    name: "invites.create",
    auth: "signed",
    schema: obj(
      {
        handle: { type: "string", maxLength: 64 },
        role: { enum: ["admin", "member"] },
        ttl: { type: ["string", "integer"] },
      },
      ["handle"],
    ),
    handler: async (ctx) => {
      const admin = await requireAdmin(ctx);
      const b = ctx.body as { handle: string; role?: "admin" | "member"; ttl?: string | number };
      const ttlMs = b.ttl === undefined ? 7 * 86_400_000 : parseTtl(b.ttl);
      if (!(ttlMs > 0 && ttlMs <= MAX_TTL_MS)) throw new HttpError(400, "ttl must be between 1 ms and 90 days");
      const token = crypto.randomBytes(32).toString("hex");
      const invite = await ctx.deps.store.createInvite({
        token,
        handle: b.handle,
        role: b.role ?? "member",
        createdBy: admin.signPub,
        ttlMs,
      });
      // The fingerprint travels with the token: the invitee's `register --ca-fingerprint`
      // refuses a CA swapped on the way to it.
      const ca = ctx.deps.caFingerprint;
      return { status: 201, body: { token, invite, ...(ca ? { caFingerprint: ca } : {}) } };
    },
  },
  {
    method: "GET",
    path: "/v1/invites",
    name: "invites.list",
    auth: "signed",
    handler: async (ctx) => {
      await requireAdmin(ctx);
      return { status: 200, body: await ctx.deps.store.listInvites() };
    },
  },
  {
    method: "DELETE",
    path: "/v1/invites/:id",
    name: "invites.cancel",
    auth: "signed",
    handler: async (ctx) => {
      await requireAdmin(ctx);
      return { status: 200, body: await ctx.deps.store.cancelInvite(ctx.params.id!) };
    },
  },
  {
    method: "GET",
    path: "/v1/status",
    name: "status",
    auth: "signed",
    handler: async (ctx) => {
      await requireAdmin(ctx);
      const report = ctx.deps.nodeReport;
      if (!report) throw new HttpError(503, "this control plane cannot report its node's status");
      return { status: 200, body: await report() };
    },
  },
  {
    method: "POST",
    path: "/v1/register",
    name: "register",
    auth: "none",
    schema: obj(
      {
        token: { type: "string", pattern: "^[0-9a-f]{64}$" },
        signPub: HEX64,
        kexPub: HEX64,
        proof: { type: "string", pattern: "^[A-Za-z0-9_-]{86}$" },
      },
      ["token", "signPub", "kexPub", "proof"],
    ),
    handler: async (ctx) => {
      const b = ctx.body as { token: string; signPub: string; kexPub: string; proof: string };
      // Proof that the registrant holds the signing key it registers: nobody can spend
      // an invite on someone else's public key.
      let ok = false;
      try {
        ok = verify(
          ed25519PublicKey(Buffer.from(b.signPub, "hex")),
          registrationProofMessage(b.token),
          Buffer.from(b.proof, "base64url"),
        );
      } catch {
        ok = false;
      }
      if (!ok) throw new HttpError(401, "proof does not verify: sign the registration with the key you register");
      const user = await ctx.deps.store.consumeInvite(b.token, { signPub: b.signPub, kexPub: b.kexPub });
      return { status: 201, body: user };
    },
  },
  {
    method: "GET",
    path: "/v1/openapi.json",
    name: "openapi",
    auth: "none",
    // Built from this table (lib/control/openapi.ts), so it lists exactly these routes.
    handler: async () => ({ status: 200, body: openApiDocument(ROUTES) }),
  },
];

const validators = new Map<Route, ValidateFunction>();
for (const r of ROUTES) if (r.schema) validators.set(r, ajv.compile(r.schema));

/** Validates a parsed JSON body against the route's schema (400 naming the field). */
export function validateBody(route: Route, body: unknown): void {
  const validate = validators.get(route);
  if (!validate) return;
  if (!validate(body)) throw bodyError(validate.errors);
}
