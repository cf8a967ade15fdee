/**
 * What a connection may touch, as the `nats` permission claims of its user JWT.
 * The broker enforces these; deny wins over allow. Everything not granted here is
 * refused: other users' inboxes, rooms the identity is not in, `$SYS`, the
 * JetStream API beyond the few subjects a persisted room's history needs, and the
 * control plane's KV buckets.
 */
export interface SubjectPermissions {
  pub: { allow: string[]; deny: string[] };
  sub: { allow: string[]; deny: string[] };
  /** Allow replying to requests received (one reply each) without a blanket inbox grant. */
  resp?: { max: number; ttl: number };
}

/** What the ACL needs to know about a room the identity belongs to. */
export interface RoomGrant {
  id: string;
  subject: string;
  persist: boolean;
}

/** The private inbox prefix of an identity: `_INBOX.<signPub hex>`. Clients connect with it. */
export function inboxPrefix(signPub: string): string {
  return `_INBOX.${signPub}`;
}

/** The JetStream stream that keeps a persisted room's history. */
export function roomStreamName(roomId: string): string {
  return `ROOM_${roomId}`;
}

/**
 * Permissions of an admitted identity: its own inbox, publish and subscribe on the
 * subject of each room it is a member of, and — for persisted rooms — read-only
 * history through direct get on that room's stream only (no consumer
 * creation at all, so no deliver subject can be aimed anywhere).
 */
export function permissionsFor(signPub: string, rooms: readonly RoomGrant[] = []): SubjectPermissions {
  const inbox = `${inboxPrefix(signPub)}.>`;
  const pub = [inbox];
  const sub = [inbox];
  for (const room of rooms) {
    pub.push(room.subject);
    sub.push(room.subject);
    if (room.persist) {
      const stream = roomStreamName(room.id);
      pub.push(`$JS.API.DIRECT.GET.${stream}`);
    }
  }
  return {
    pub: { allow: pub, deny: [] },
    sub: { allow: sub, deny: [] },
    resp: { max: 1, ttl: 0 },
  };
}
