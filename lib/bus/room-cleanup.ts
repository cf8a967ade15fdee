/**
 * What a room deletion made outside the control plane (the host-trusted CLI writes the
 * store directly) still has to do on the wire: kick the former members, so they come
 * back without the room's subject, and drop the room's history and blobs. The control
 * plane's own DELETE does the same inside the bus (`Unibus` on "room-deleted").
 */
import path from "node:path";
import { connectAsService, KICK_SUBJECT, loadServiceKeys } from "../auth/index.ts";
import { BlobStore } from "../control/index.ts";
import type { Store } from "../store/index.ts";
import { RoomStreams } from "./streams.ts";

export interface DeletedRoom {
  id: string;
  /** Who was a member when it was deleted: each is kicked. */
  members: string[];
}

export interface RoomCleanupOptions {
  dataDir: string;
  /** The store the rooms were deleted from (the blob store asks it nothing here, but needs one). */
  store: Pick<Store, "getRoom">;
  /** NATS URLs of the running bus; none when it is stopped (then only blobs can go now). */
  servers: string[];
  caPem?: string;
}

/** Kicks, then removes streams and blobs. Answers what it did. */
export async function finishRoomDeletion(
  rooms: DeletedRoom[],
  opts: RoomCleanupOptions,
): Promise<{ kicked: number; streams: number; blobs: number }> {
  const blobStore = new BlobStore({ dir: path.join(opts.dataDir, "blobs"), store: opts.store });
  let blobs = 0;
  for (const r of rooms) blobs += await blobStore.deleteRoomBlobs(r.id);
  await blobStore.close();
  if (opts.servers.length === 0) return { kicked: 0, streams: 0, blobs };
  const keys = await loadServiceKeys(opts.dataDir);
  const conn = { servers: opts.servers, ...(opts.caPem ? { caPem: opts.caPem } : {}) };
  const sys = await connectAsService({ ...conn, key: keys.system, name: "unibus-cli-kick" });
  const members = [...new Set(rooms.flatMap((r) => r.members))];
  try {
    // Every node's kicker answers the broadcast for the connections it admitted.
    for (const signPub of members) {
      sys.publish(KICK_SUBJECT, JSON.stringify({ signPub, reason: "room-deleted", origin: "cli" }));
    }
    await sys.flush();
  } finally {
    await sys.close();
  }
  const streams = new RoomStreams({ ...conn, keys });
  await streams.start();
  let removed = 0;
  try {
    for (const r of rooms) if (await streams.remove(r.id)) removed++;
  } finally {
    await streams.stop();
  }
  return { kicked: members.length, streams: removed, blobs };
}
