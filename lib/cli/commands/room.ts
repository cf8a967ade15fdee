import fs from "node:fs";
import type { Command } from "commander";
import { busLayout } from "../../bus/layout.ts";
import { parseSignPub } from "../../crypto/identity.ts";
import { ageText, bytesText, type RoomStreamDetail, roomStreams } from "../../ops/room-streams.ts";
import { readRunInfo } from "../../ops/run-file.ts";
import type { Room, Store } from "../../store/index.ts";
import { clientCaFileSync } from "../../tls/rotation.ts";
import { CliError, printJson, table } from "../output.ts";
import { type StoreTargetOptions, storeTargetOptions, targetConfig, withStore } from "../store.ts";

type JsonOption = StoreTargetOptions & { json?: boolean };

export function roomCommand(program: Command): void {
  const room = program
    .command("room")
    .description("manage the rooms of a bus (host-trusted, like `unibus user`): list, show, delete, hand over");
  storeTargetOptions(room.command("list").description("list every room with its owner"))
    .option("--json", "print JSON")
    .action(listRooms);
  storeTargetOptions(room.command("show").description("a room and its members").argument("<room-id>", "the room's id"))
    .option("--json", "print JSON")
    .action(showRoom);
  storeTargetOptions(
    room
      .command("delete")
      .description("delete a room for everyone: members, keys, history and blobs; members lose its subject at once")
      .argument("<room-id>", "the room's id"),
  ).action(deleteRoom);
  storeTargetOptions(
    room
      .command("transfer")
      .description("hand a room to another of its members; the old owner stays a member")
      .argument("<room-id>", "the room's id")
      .argument("<sign-pub>", "the new owner's signing key (a current member)"),
  ).action(transferRoom);
}

async function listRooms(opts: JsonOption): Promise<void> {
  const rooms = await withStore(opts, async (s) => (await s.snapshot()).rooms);
  if (opts.json) return printJson(rooms);
  if (rooms.length === 0) return void process.stdout.write("no rooms\n");
  const rows = [["ID", "OWNER", "ENCRYPT", "PERSIST", "EPOCH", "CREATED"]];
  for (const r of rooms) {
    rows.push([r.id, r.ownerSignPub, yes(r.encrypt), yes(r.persist), String(r.epoch), iso(r.createdAt)]);
  }
  process.stdout.write(`${table(rows)}\n`);
}

async function showRoom(id: string, opts: JsonOption): Promise<void> {
  const { room, members } = await withStore(opts, async (s) => ({
    room: await s.getRoom(id),
    members: await s.listMembers(id),
  }));
  const history = room.persist ? await historyOf(opts, room.id) : undefined;
  if (opts.json) return printJson({ ...room, ...(room.persist ? { history: history ?? null } : {}), members });
  const head = `${room.id} on ${room.subject}: ${room.encrypt ? `encrypted, epoch ${room.epoch}` : "cleartext"}${room.persist ? ", persisted" : ""}${room.signMsgs ? ", signed" : ""}\n`;
  const rows = [["ROLE", "SIGNING KEY", "ADDED"], ...members.map((m) => [m.role, m.signPub, iso(m.addedAt)])];
  process.stdout.write(`${head}${room.persist ? `${historyText(history)}\n` : ""}${table(rows)}\n`);
}

/**
 * A persisted room's retention and what it holds, from the running bus's JetStream (its
 * stream's config is the truth of what the room keeps); undefined when the bus in the
 * data dir is not running or does not answer.
 */
async function historyOf(opts: StoreTargetOptions, roomId: string): Promise<RoomStreamDetail | undefined> {
  const run = await readRunInfo(targetConfig(opts).dataDir);
  if (!run) return undefined;
  return (await roomStreams(run.monitorUrls, 3000))?.get(`ROOM_${roomId}`);
}

function historyText(h: RoomStreamDetail | undefined): string {
  if (!h) return "history: limits unknown (the bus in the data dir is not running, or its room stream is missing)";
  const r = h.retention;
  return `history: keeps at most ${bytesText(r.maxBytes)}, ${ageText(r.maxAgeMs)}, ${r.maxMsgs} messages; holds ${h.messages} message(s), ${bytesText(h.bytes)}`;
}

async function deleteRoom(id: string, opts: StoreTargetOptions): Promise<void> {
  await withStore(opts, (s) => deleteRooms(opts, s, [id]), {
    write: true,
    print: (line) => void process.stdout.write(`deleted room ${id}${line}\n`),
  });
}

async function transferRoom(id: string, signPub: string, opts: StoreTargetOptions): Promise<void> {
  const to = parseSignPub(signPub, "sign-pub");
  await withStore(opts, (s) => s.transferRoom(id, to), {
    write: true,
    print: (room: Room) => void process.stdout.write(`room ${room.id} now belongs to ${room.ownerSignPub}\n`),
  });
}

/**
 * Deletes rooms from the store, then makes that true on the wire: the members of a
 * running bus are kicked (they come back without the subjects) and the rooms' streams
 * and blobs go. Answers a note for the printed line.
 */
export async function deleteRooms(target: StoreTargetOptions, store: Store, ids: string[]): Promise<string> {
  const gone = [];
  for (const id of ids) {
    const members = (await store.listMembers(id)).map((m) => m.signPub);
    await store.deleteRoom(id);
    gone.push({ id, members });
  }
  const { dataDir } = targetConfig(target);
  const run = await readRunInfo(dataDir);
  const servers = target.server?.length ? target.server : (run?.natsUrls ?? []);
  const caFile = target.ca ?? clientCaFileSync(busLayout(dataDir, "").tlsDir);
  const caPem = servers.length ? fs.readFileSync(caFile, "utf8") : undefined;
  // Loaded only when a room goes: it pulls in NATS and the blob store, which `user` commands otherwise never need.
  const { finishRoomDeletion } = await import("../../bus/room-cleanup.ts");
  const done = await finishRoomDeletion(gone, { dataDir, store, servers, ...(caPem ? { caPem } : {}) });
  return servers.length
    ? ` (${done.kicked} member(s) kicked, ${done.streams} history stream(s) and ${done.blobs} blob(s) removed)`
    : ` (${done.blobs} blob(s) removed; the bus is not running: its history goes when \`unibus up\` starts it)`;
}

/** `--rooms delete` or `--rooms transfer-to <key>`: what `user delete` does with the rooms the user owns. */
export async function settleOwnedRooms(
  target: StoreTargetOptions,
  store: Store,
  signPub: string,
  choice: string[] | undefined,
): Promise<string> {
  await store.getUser(signPub);
  const owned = (await store.listRoomsFor(signPub)).filter((r) => r.role === "owner").map((r) => r.id);
  if (owned.length === 0) return "";
  if (choice?.[0] === "delete" && choice.length === 1) return deleteRooms(target, store, owned);
  if (choice?.[0] === "transfer-to" && choice.length === 2) {
    const to = parseSignPub(choice[1]!, "--rooms transfer-to");
    const outside = [];
    for (const id of owned) if (!(await store.isMember(id, to))) outside.push(id);
    if (outside.length > 0 || to === signPub) {
      throw new CliError(
        `${to} is not a member of room(s) ${outside.join(", ") || owned.join(", ")}; add it there first, or use --rooms delete`,
      );
    }
    for (const id of owned) await store.transferRoom(id, to);
    return ` (room(s) ${owned.join(", ")} handed to ${to})`;
  }
  if (choice !== undefined)
    throw new CliError(`--rooms takes "delete" or "transfer-to <sign-pub>", not "${choice.join(" ")}"`);
  throw new CliError(
    `${signPub} owns room(s) ${owned.join(", ")}; run \`unibus user delete ${signPub} --rooms delete\` or \`--rooms transfer-to <member's sign-pub>\``,
  );
}

function yes(b: boolean): string {
  return b ? "yes" : "no";
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
