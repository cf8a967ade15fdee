import { ConflictError, InvalidArgumentError, NotFoundError } from "../errors.ts";
import { InviteRefusedError } from "./errors.ts";
import type { Invite, Member, Room, User } from "./types.ts";
import {
  sealedMatchesRoom,
  type ValidNewInvite,
  type ValidNewMember,
  type ValidNewRoom,
  type ValidRekey,
} from "./validate.ts";

/**
 * The decisions every backend makes the same way. A backend reads the state a call
 * depends on (inside its transaction), hands it to one of these, and writes only if
 * it returns: so SQLite and KV refuse the same calls, in the same order, with the same
 * errors and messages.
 */

export function checkCreateRoom(
  v: ValidNewRoom,
  s: { owner: User | undefined; idTaken: boolean; subjectTaken: boolean },
): void {
  if (s.owner === undefined) throw new NotFoundError("user", v.ownerSignPub);
  if (s.owner.status !== "active") {
    throw new ConflictError(`user ${v.ownerSignPub} is revoked and cannot own a room`);
  }
  if (v.encrypt && s.owner.kexPub === null) {
    throw new ConflictError(
      `user ${v.ownerSignPub} has no key-exchange key (kexPub) registered, so it cannot hold an encrypted room's key; register it once (client.registerKexPub(), or PUT /v1/users/${v.ownerSignPub}/kex signed by that identity)`,
    );
  }
  if (s.idTaken) throw new ConflictError(`a room with id ${v.id} already exists`);
  if (s.subjectTaken) throw new ConflictError(`another room already uses the subject ${v.subject}`);
}

export function checkAddMember(
  roomId: string,
  v: ValidNewMember,
  s: { room: Room | undefined; user: User | undefined; isMember: boolean },
): void {
  const room = s.room;
  if (room === undefined) throw new NotFoundError("room", roomId);
  sealedMatchesRoom(room.encrypt, v.sealedKey, "sealedKey");
  if (room.encrypt && v.epoch === null) {
    throw new InvalidArgumentError("epoch", "epoch is required: name the epoch the sealed key was made for");
  }
  if (v.epoch !== null && v.epoch !== room.epoch) {
    throw new ConflictError(
      `room ${roomId} is at epoch ${room.epoch}, not ${v.epoch} (it was rekeyed meanwhile); fetch the room, seal its current key and retry`,
    );
  }
  if (s.user === undefined) throw new NotFoundError("user", v.signPub);
  if (s.user.status !== "active") throw new ConflictError(`user ${v.signPub} is revoked and cannot join a room`);
  if (s.isMember) throw new ConflictError(`user ${v.signPub} is already a member of room ${roomId}`);
  if (room.encrypt && s.user.kexPub === null) {
    throw new ConflictError(
      `user ${v.signPub} has no key-exchange key (kexPub) registered, so it cannot receive room ${roomId}'s key`,
    );
  }
}

export function memberId(roomId: string, signPub: string): string {
  return `${roomId}/${signPub}`;
}

export function checkRemoveMember(
  roomId: string,
  signPub: string,
  s: { room: Room | undefined; member: Member | undefined },
): void {
  if (s.room === undefined) throw new NotFoundError("room", roomId);
  if (s.member === undefined) throw new NotFoundError("member", memberId(roomId, signPub));
  if (s.member.role === "owner") {
    throw new ConflictError(
      `user ${signPub} owns room ${roomId} and cannot be removed from it; delete the room instead`,
    );
  }
}

/** Refusals of `transferRoom`, checked against what the backend read. */
export function checkTransferRoom(
  roomId: string,
  to: string,
  s: { room: Room | undefined; member: Member | undefined; user: User | undefined },
): void {
  if (s.room === undefined) throw new NotFoundError("room", roomId);
  if (s.member === undefined) throw new NotFoundError("member", memberId(roomId, to));
  if (s.member.role === "owner") throw new ConflictError(`user ${to} already owns room ${roomId}`);
  if (s.user === undefined || s.user.status !== "active") {
    throw new ConflictError(`user ${to} is revoked and cannot own room ${roomId}; pick an active member`);
  }
}

export function checkRekey(roomId: string, v: ValidRekey, s: { room: Room | undefined; members: string[] }): void {
  const room = s.room;
  if (room === undefined) throw new NotFoundError("room", roomId);
  if (!room.encrypt) throw new ConflictError(`room ${roomId} is not encrypted; it has no key to rotate`);
  if (v.fromEpoch !== room.epoch) {
    throw new ConflictError(
      `room ${roomId} is at epoch ${room.epoch}, not ${v.fromEpoch} (someone else rekeyed first); fetch the room and its members and retry`,
    );
  }
  const mismatch = rekeyMismatch(
    s.members,
    v.sealedKeys.map((k) => k.signPub),
  );
  if (mismatch !== null) throw new ConflictError(`room ${roomId}: ${mismatch}`);
}

export function checkDeleteUser(signPub: string, s: { exists: boolean; ownedRooms: string[] }): void {
  if (!s.exists) throw new NotFoundError("user", signPub);
  if (s.ownedRooms.length > 0) {
    throw new ConflictError(
      `user ${signPub} owns room(s) ${listSome(s.ownedRooms)}; transfer those rooms to another member or delete them before deleting the user`,
    );
  }
}

export function checkCreateInvite(
  v: ValidNewInvite,
  s: { handleIsUser: boolean; handleHasOpenInvite: boolean; tokenUsed: boolean },
): void {
  if (s.tokenUsed) throw new ConflictError("this invite token was used before; generate a new token");
  if (s.handleIsUser)
    throw new ConflictError(`the handle "${v.handle}" is already taken by a user; choose another handle`);
  if (s.handleHasOpenInvite) {
    throw new ConflictError(
      `an open invite for the handle "${v.handle}" already exists; cancel it first, or choose another handle`,
    );
  }
}

/** True for an open invite that can still be consumed at `now` — one that blocks its handle. */
export function inviteIsLive(invite: Pick<Invite, "status" | "expiresAt">, now: number): boolean {
  return inviteRefusal(invite, now) === null;
}

/**
 * What `sweepInvites(before)` removes: an invite made before `before` that can no longer
 * be consumed (spent, cancelled or expired at `now`).
 */
export function inviteIsSweepable(
  invite: Pick<Invite, "status" | "expiresAt" | "createdAt">,
  before: number,
  now: number,
): boolean {
  return invite.createdAt < before && !inviteIsLive(invite, now);
}

export function checkCancelInvite(ref: string, invite: Invite | undefined): Invite {
  if (invite === undefined) throw new NotFoundError("invite", ref);
  if (invite.status !== "open") throw new ConflictError(`invite ${invite.id} is already ${invite.status}`);
  return invite;
}

/** Create the user, or spend the token and refuse with `UserExistsError`. */
export type ConsumeDecision = "create" | "user_exists";

/**
 * What consuming an invite does, given the state (see `ConsumeDecision`). Refusals
 * that leave the token as it was are thrown.
 */
export function decideConsume(
  invite: Invite | undefined,
  now: number,
  s: { userExists: boolean; handleTaken: boolean },
): ConsumeDecision {
  if (invite === undefined) throw new InviteRefusedError("unknown");
  const refusal = inviteRefusal(invite, now);
  if (refusal !== null) throw new InviteRefusedError(refusal);
  if (s.userExists) return "user_exists";
  if (s.handleTaken) throw new InviteRefusedError("handle_taken");
  return "create";
}

/**
 * Why an invite cannot be consumed at `now`, or null when it can. Fails closed: an
 * expiry or clock that is not a finite number counts as expired.
 */
export function inviteRefusal(
  invite: { status: unknown; expiresAt: unknown },
  now: number,
): "spent" | "cancelled" | "expired" | null {
  if (invite.status === "spent") return "spent";
  if (invite.status === "cancelled") return "cancelled";
  if (invite.status !== "open") return "spent"; // a status we do not know: never consumable
  const exp = invite.expiresAt;
  if (typeof exp !== "number" || !Number.isFinite(exp) || !Number.isFinite(now) || !(now < exp)) return "expired";
  return null;
}

/**
 * Compares the members of a room with the keys of a rekey: null when they match
 * exactly, else a message naming what is missing and what is extra.
 */
export function rekeyMismatch(members: readonly string[], keyed: readonly string[]): string | null {
  const have = new Set(keyed);
  const want = new Set(members);
  const missing = members.filter((m) => !have.has(m)).sort();
  const extra = keyed.filter((k) => !want.has(k)).sort();
  if (missing.length === 0 && extra.length === 0) return null;
  const parts: string[] = [];
  if (missing.length) parts.push(`no key for member(s) ${listSome(missing)}`);
  if (extra.length) parts.push(`a key for non-member(s) ${listSome(extra)}`);
  return `the new keys do not match the room's members (${parts.join("; ")}); fetch the member list and seal the new key to exactly those members`;
}

/** Names up to 10 items and counts the rest, so a message stays readable for a big room. */
export function listSome(items: readonly string[], max = 10): string {
  const shown = items.slice(0, max).join(", ");
  return items.length > max ? `${shown} and ${items.length - max} more` : shown;
}
