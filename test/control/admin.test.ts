// The admin's view of the bus over the control plane (what the console shows): every
// room, any room's members, and this node's health and replication — admins only.
import crypto from "node:crypto";
import t from "tap";
import { pemFingerprint } from "../../lib/tls/index.ts";
import { api, member, testBus } from "../helpers/bus.ts";

const sealed = () => crypto.randomBytes(48).toString("base64url");

interface Room {
  id: string;
  ownerSignPub: string;
  createdAt: number;
}

t.test("GET /v1/rooms lists every room to an admin, and to nobody else", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const ad = api(t, bus, admin);
  t.same(await ad.request("GET", "/v1/rooms"), [], "no rooms yet");
  const r1 = await api(t, bus, alice).request<Room>("POST", "/v1/rooms", { ownerSealedKey: sealed() });
  const r2 = await api(t, bus, bob).request<Room>("POST", "/v1/rooms", { encrypt: false });
  const listed = await ad.request<Room[]>("GET", "/v1/rooms");
  t.same(listed.map((r) => r.id).sort(), [r1.id, r2.id].sort(), "rooms the admin is not a member of are listed too");
  t.same(
    listed.find((r) => r.id === r1.id),
    r1,
    "each room as the control plane describes it",
  );
  await t.rejects(
    api(t, bus, alice).request("GET", "/v1/rooms"),
    { status: 403, message: /admin/ },
    "a member cannot list the bus' rooms",
  );
  await bus.store.revokeUser(admin.signPub);
  await t.rejects(
    ad.request("GET", "/v1/rooms"),
    { name: "ControlPlaneError", status: 401 },
    "a revoked admin is refused before any route",
  );
});

t.test("an admin reads any room's members; others still get the same 403 for any room", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const mallory = await member(bus, "mallory");
  const a = api(t, bus, alice);
  const room = await a.request<Room>("POST", "/v1/rooms", { encrypt: false });
  await a.request("POST", `/v1/rooms/${room.id}/members`, { signPub: bob.signPub, epoch: 1 });
  const members = await api(t, bus, admin).request<{ signPub: string; role: string }[]>(
    "GET",
    `/v1/rooms/${room.id}/members`,
  );
  t.same(
    members.map((m) => [m.signPub, m.role]),
    [
      [alice.signPub, "owner"],
      [bob.signPub, "member"],
    ],
    "the admin is not a member, yet sees who is",
  );
  await t.rejects(
    api(t, bus, admin).request("GET", `/v1/rooms/${"0".repeat(24)}/members`),
    { name: "ControlPlaneError", status: 404 },
    "an admin learns that a room does not exist",
  );
  const m = api(t, bus, mallory);
  await t.rejects(
    m.request("GET", `/v1/rooms/${room.id}/members`),
    { name: "ControlPlaneError", status: 403 },
    "a non-member: 403",
  );
  await t.rejects(
    m.request("GET", `/v1/rooms/${"0".repeat(24)}/members`),
    { name: "ControlPlaneError", status: 403 },
    "an unknown room looks the same to a non-member",
  );
  await t.rejects(
    api(t, bus, admin).request("GET", `/v1/rooms/${room.id}`),
    { name: "ControlPlaneError", status: 403 },
    "reading the room record itself stays members-only",
  );
});

t.test("GET /v1/status reports this node's health and nats-server to an admin only", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const alice = await member(bus, "alice");
  const report = await api(t, bus, admin).request<{
    health: { ok: boolean; parts: Record<string, string> };
    node: { reachable: boolean; healthy: boolean; name?: string; version?: string; jetstream?: { enabled: boolean } };
  }>("GET", "/v1/status");
  t.equal(report.health.ok, true);
  t.match(report.health.parts, { nats: "up", store: "up", streams: "up" });
  t.match(report.node, { reachable: true, healthy: true, monitorUrl: bus.monitorUrl, jetstream: { enabled: true } });
  t.match(report.node.version, /^\d+\.\d+\.\d+/, "nats-server's version");
  t.ok(report.node.name, "the node's server name");
  await t.rejects(
    api(t, bus, alice).request("GET", "/v1/status"),
    { name: "ControlPlaneError", status: 403 },
    "a member gets no status",
  );
});

t.test("a new invite comes with the bus CA's fingerprint, for the invitee to pin", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const created = await api(t, bus, admin).request<{ token: string; caFingerprint: string }>("POST", "/v1/invites", {
    handle: "newbie",
  });
  t.equal(created.caFingerprint, pemFingerprint(bus.caPem));
  t.match(created.token, /^[0-9a-f]{64}$/);
});
