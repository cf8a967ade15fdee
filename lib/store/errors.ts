import { ConflictError } from "../errors.ts";

/** Why an invite token could not be used. */
export type InviteRefusal = "unknown" | "spent" | "cancelled" | "expired" | "handle_taken";

const MESSAGES: Record<InviteRefusal, string> = {
  unknown: "this invite token is not valid; check that it was copied whole, or ask an admin for a new invite",
  spent: "this invite token has already been used; ask an admin for a new invite",
  cancelled: "this invite was cancelled by an admin; ask an admin for a new invite",
  expired: "this invite has expired; ask an admin for a new invite",
  handle_taken:
    "the handle this invite was made for now belongs to another user; ask an admin to cancel it and create a new invite",
};

/**
 * An invite token was refused. A `ConflictError`, so generic handlers treat it as one;
 * `reason` lets the control plane and the CLI say exactly why. The message never
 * contains the token.
 */
export class InviteRefusedError extends ConflictError {
  readonly reason: InviteRefusal;
  constructor(reason: InviteRefusal) {
    super(MESSAGES[reason]);
    this.reason = reason;
  }
}
