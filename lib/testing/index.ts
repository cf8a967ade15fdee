/**
 * `unibus/testing`: one bus per test run, members made on the fly.
 *
 * A runner's global setup calls `startTestBus()` and hands `testBus.info` to its test
 * workers; it is plain JSON (URLs, the CA, and an admin identity made for this run
 * only), so it crosses the process boundary that vitest's `provide`, jest's environment
 * or a file gives. A test then calls `testMember(info)` for a connected client of a
 * fresh allowlisted identity, or `testRoom(info, [...])` for a room its members share.
 *
 * Stopping is guaranteed beyond the runner's teardown: every nats-server is tied to the
 * process that started it (it ends when that process dies, even by SIGKILL), and the
 * bus' temporary data dir goes with it.
 */
import { randomBytes } from "node:crypto";
import { type StartUnibusOptions, startUnibus, type Unibus } from "../bus/index.ts";
import { afterReauth, type CreateRoomOptions, connect, type UnibusClient } from "../client/connect.ts";
import { ControlClient } from "../client/control.ts";
import type { Room } from "../client/room.ts";
import { createIdentity, type IdentityFile, identityFromFile } from "../crypto/identity.ts";
import { InvalidArgumentError } from "../errors.ts";
import type { Role } from "../store/index.ts";

/** What a test worker needs to reach the run's bus. JSON-safe; holds the admin's secrets. */
export interface TestBusInfo {
  natsUrl: string;
  controlUrl: string;
  caPem: string;
  /** An admin identity made for this run; the bus it is admin of is a throwaway. */
  admin: IdentityFile;
}

export interface TestBus extends AsyncDisposable {
  readonly bus: Unibus;
  readonly info: TestBusInfo;
  /** `testMember(this.info, opts)`. */
  member(opts?: TestMemberOptions): Promise<UnibusClient>;
  stop(): Promise<void>;
}

export interface TestMemberOptions {
  /** Default: `member-<random>`; handles are unique on a bus. */
  handle?: string;
  role?: Role;
}

/** Starts a bus (options as `startUnibus`) and an admin identity for the run. */
export async function startTestBus(opts: StartUnibusOptions = {}): Promise<TestBus> {
  const bus = await startUnibus(opts);
  try {
    const admin = createIdentity();
    await bus.addUser(admin.signPub, {
      handle: `admin-${randomBytes(4).toString("hex")}`,
      role: "admin",
      kexPub: admin.kexPub,
    });
    const info: TestBusInfo = {
      natsUrl: bus.natsUrl,
      controlUrl: bus.controlUrl,
      caPem: bus.caPem,
      admin: admin.toFile(),
    };
    const stop = () => bus.stop();
    return { bus, info, member: (o) => testMember(info, o), stop, [Symbol.asyncDispose]: stop };
  } catch (err) {
    await bus.stop();
    throw err;
  }
}

/**
 * A fresh identity, allowlisted by the run's admin through the signed control plane, and
 * connected. The caller closes it (`await client.close()`, or `await using`).
 */
export async function testMember(info: TestBusInfo, opts: TestMemberOptions = {}): Promise<UnibusClient> {
  checkInfo(info);
  const me = createIdentity();
  const admin = new ControlClient({ baseUrl: info.controlUrl, ca: info.caPem, identity: identityFromFile(info.admin) });
  try {
    await admin.request("POST", "/v1/users", {
      signPub: me.signPub,
      kexPub: me.kexPub,
      handle: opts.handle ?? `member-${randomBytes(4).toString("hex")}`,
      role: opts.role ?? "member",
    });
  } finally {
    await admin.close();
  }
  return connect({ natsUrl: info.natsUrl, controlUrl: info.controlUrl, ca: info.caPem, identity: me });
}

export interface TestRoom extends AsyncDisposable {
  /** The connected members by handle; the first one owns the room. */
  members: Record<string, UnibusClient>;
  /** The room as each member opened it, by handle. */
  rooms: Record<string, Room>;
  /** Closes every member's client. */
  close(): Promise<void>;
}

/** Members with these handles (made on the fly) sharing one new room, which the first creates. */
export async function testRoom(info: TestBusInfo, handles: string[], opts: CreateRoomOptions = {}): Promise<TestRoom> {
  if (handles.length === 0 || new Set(handles).size !== handles.length)
    throw new InvalidArgumentError("handles", "testRoom needs at least one handle, each used once");
  const members: Record<string, UnibusClient> = {};
  const close = async () => {
    await Promise.all(Object.values(members).map((c) => c.close()));
  };
  try {
    for (const handle of handles) members[handle] = await testMember(info, { handle });
    const [owner, ...others] = handles as [string, ...string[]];
    const created = await members[owner]!.createRoom(opts);
    const rooms: Record<string, Room> = { [owner]: created };
    for (const handle of others) {
      const member = members[handle]!;
      // Adding makes the bus re-authenticate the member's connection: wait until it is
      // back with the room's permissions, so the test can subscribe at once.
      await afterReauth(member.nc, () => created.addMember(member.identity.signPub), { roomId: created.id });
      rooms[handle] = await member.openRoom(created.id);
    }
    return { members, rooms, close, [Symbol.asyncDispose]: close };
  } catch (err) {
    await close();
    throw err;
  }
}

function checkInfo(info: TestBusInfo): void {
  const fields = ["natsUrl", "controlUrl", "caPem"] as const;
  const missing = fields.filter((f) => typeof info?.[f] !== "string" || info[f] === "");
  if (missing.length || typeof info?.admin !== "object" || info.admin === null)
    throw new InvalidArgumentError(
      "info",
      `not a TestBusInfo (missing ${[...missing, ...(info?.admin ? [] : ["admin"])].join(", ")}); pass startTestBus()'s info as it is`,
    );
}
