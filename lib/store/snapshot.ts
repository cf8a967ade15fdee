import { InvalidArgumentError, StoreUnavailableError, UnibusError } from "../errors.ts";
import type { KvStore } from "./kv.ts";
import {
  encodeJson,
  type HandleClaim,
  type InviteHandleIndex,
  type InviteIdIndex,
  key,
  type MemberEntry,
  type RoomRec,
  type SubjectClaim,
} from "./kv-layout.ts";
import type { Invite, Snapshot } from "./types.ts";

export interface ImportProgress {
  phase: "users" | "sealedKeys" | "index" | "rooms" | "invites";
  done: number;
  total: number;
}

const BATCH = 64;

/**
 * Writes a Snapshot into a KV store as it is — real epochs, statuses, timestamps, every
 * epoch's keys, invites with their status — bypassing addUser & co., which would reset
 * them. Every write is a put of the record's final value, so a re-run converges to the
 * same state (idempotent). Order follows the store's commit rule: keys, index entries
 * and uniqueness claims first, room records (the commit points) after them, so an
 * interrupted import never shows a room without its members' keys. It adds and
 * overwrites; it does not delete records the snapshot lacks.
 */
export async function importSnapshot(
  store: KvStore,
  snap: Snapshot,
  opts: { onProgress?: (p: ImportProgress) => void } = {},
): Promise<void> {
  checkSnapshot(snap);
  const b = store.buckets;
  const progress = opts.onProgress ?? (() => {});

  async function phase<T>(name: ImportProgress["phase"], items: T[], write: (x: T) => Promise<unknown>) {
    progress({ phase: name, done: 0, total: items.length });
    for (let i = 0; i < items.length; i += BATCH) {
      const chunk = items.slice(i, i + BATCH);
      await Promise.all(chunk.map(write));
      progress({ phase: name, done: Math.min(i + BATCH, items.length), total: items.length });
    }
  }

  try {
    await phase("users", snap.users, async (u) => {
      // at 0: the claim is valid because the user record exists, never by its age.
      await b.handles.put(key.handle(u.handle), encodeJson({ signPub: u.signPub, at: 0 } satisfies HandleClaim));
      await b.users.put(key.user(u.signPub), encodeJson(u));
    });
    await phase("sealedKeys", snap.sealedKeys, (k) => b.keys.put(key.sealed(k.roomId, k.signPub, k.epoch), k.sealed));
    await phase("index", [...snap.members, ...snap.rooms.map((r) => ({ subjectOf: r }))], (x) =>
      "subjectOf" in x
        ? b.subjects.put(
            key.subject(x.subjectOf.subject),
            encodeJson({ roomId: x.subjectOf.id, at: 0 } satisfies SubjectClaim),
          )
        : b.memberof.put(key.memberOf(x.signPub, x.roomId), "1"),
    );
    const membersOf = new Map<string, MemberEntry[]>();
    for (const m of snap.members) {
      const list = membersOf.get(m.roomId) ?? [];
      list.push({ signPub: m.signPub, role: m.role, addedAt: m.addedAt });
      membersOf.set(m.roomId, list);
    }
    await phase("rooms", snap.rooms, (room) =>
      b.rooms.put(
        key.room(room.id),
        encodeJson({ room, members: membersOf.get(room.id) ?? [], committed: true, lock: null } satisfies RoomRec),
      ),
    );
    await phase("invites", snap.invites, async (inv) => {
      await b.invites.put(key.inviteOfId(inv.id), encodeJson({ tokenHash: inv.tokenHash } satisfies InviteIdIndex));
      await b.invites.put(key.invite(inv.tokenHash), encodeJson(inv));
    });
    // createInvite finds a handle's open invite through this index, not by a scan.
    const newestOpen = new Map<string, Invite>();
    for (const inv of snap.invites) {
      const seen = newestOpen.get(inv.handle);
      if (inv.status === "open" && (seen === undefined || seen.createdAt < inv.createdAt))
        newestOpen.set(inv.handle, inv);
    }
    await phase("invites", [...newestOpen.values()], (inv) =>
      b.invites.put(
        key.inviteOfHandle(inv.handle),
        encodeJson({ tokenHash: inv.tokenHash } satisfies InviteHandleIndex),
      ),
    );
  } catch (err) {
    if (err instanceof UnibusError) throw err;
    throw new StoreUnavailableError(
      "the import into the KV store failed part-way (NATS/JetStream error); it is safe to run it again",
      { cause: err },
    );
  }
}

function checkSnapshot(snap: Snapshot): void {
  const ok =
    typeof snap === "object" &&
    snap !== null &&
    snap.version === 1 &&
    ["users", "rooms", "members", "sealedKeys", "invites"].every((k) =>
      Array.isArray((snap as unknown as Record<string, unknown>)[k]),
    );
  if (!ok) throw new InvalidArgumentError("snapshot", "not a version-1 store snapshot");
}
