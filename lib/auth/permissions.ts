/**
 * What a connection may touch, as the `nats` permission claims of its user JWT.
 * The broker enforces these; deny wins over allow.
 */
export interface SubjectPermissions {
  pub: { allow: string[]; deny: string[] };
  sub: { allow: string[]; deny: string[] };
  /** Allow replying to requests received (one reply each) without a blanket inbox grant. */
  resp?: { max: number; ttl: number };
}

/** The private inbox prefix of an identity: `_INBOX.<signPub hex>`. Clients connect with it. */
export function inboxPrefix(signPub: string): string {
  return `_INBOX.${signPub}`;
}

/**
 * Base permissions of every admitted identity: its own inbox only. Room subjects are
 * added from memberships (see the ACL issue); nothing on `$SYS`, `$JS.API`, `$KV`.
 */
export function basePermissions(signPub: string): SubjectPermissions {
  const inbox = `${inboxPrefix(signPub)}.>`;
  return {
    pub: { allow: [inbox], deny: [] },
    sub: { allow: [inbox], deny: [] },
    resp: { max: 1, ttl: 0 },
  };
}
