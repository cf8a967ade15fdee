// The control-plane API against a real bus: golden paths for every route, and the
// refusals an attacker would probe for.
import crypto from "node:crypto";
import t from "tap";
import { registrationProofMessage } from "../../lib/control/routes.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { api, member, testBus } from "../helpers/bus.ts";

const sealed = () => crypto.randomBytes(48).toString("base64url");

interface Room {
  id: string;
  subject: string;
  epoch: number;
  ownerSignPub: string;
  encrypt: boolean;
}

t.test("rooms: create, get, members, add, rekey, keys per epoch, remove, discovery", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const carol = await member(bus, "carol");
  const a = api(t, bus, alice);
  const b = api(t, bus, bob);

  const k1 = sealed();
  const room = await a.request<Room>("POST", "/v1/rooms", {
    encrypt: true,
    persist: false,
    signMsgs: true,
    ownerSealedKey: k1,
  });
  t.match(room, { epoch: 1, ownerSignPub: alice.signPub, encrypt: true, subject: /^unibus\.room\.[0-9a-f]+$/ });
  t.notMatch(room.subject, /[*>]/, "never a wildcard");
  t.same(await a.request("GET", `/v1/rooms/${room.id}`), room);
  t.same((await a.request<{ sealed: string }>("GET", `/v1/rooms/${room.id}/keys/${alice.signPub}`)).sealed, k1);

  const bobKey1 = sealed();
  await a.request("POST", `/v1/rooms/${room.id}/members`, { signPub: bob.signPub, sealedKey: bobKey1, epoch: 1 });
  const members = await b.request<{ signPub: string; role: string }[]>("GET", `/v1/rooms/${room.id}/members`);
  t.same(
    members.map((m) => [m.signPub, m.role]).sort(),
    [
      [alice.signPub, "owner"],
      [bob.signPub, "member"],
    ].sort(),
  );
  t.match(
    await b.request("GET", `/v1/users/${bob.signPub}/rooms`),
    [{ id: room.id, role: "member" }],
    "bob discovers the room",
  );
  t.same(await api(t, bus, carol).request("GET", `/v1/users/${carol.signPub}/rooms`), [], "carol belongs to none");

  // rekey to epoch 2 for both
  const k2a = sealed();
  const k2b = sealed();
  const rekeyed = await a.request<Room>("POST", `/v1/rooms/${room.id}/rekey`, {
    fromEpoch: 1,
    sealedKeys: [
      { signPub: alice.signPub, sealed: k2a },
      { signPub: bob.signPub, sealed: k2b },
    ],
  });
  t.equal(rekeyed.epoch, 2);
  t.equal(
    (await b.request<{ sealed: string }>("GET", `/v1/rooms/${room.id}/keys/${bob.signPub}`)).sealed,
    k2b,
    "latest",
  );
  t.equal(
    (await b.request<{ sealed: string }>("GET", `/v1/rooms/${room.id}/keys/${bob.signPub}?epoch=1`)).sealed,
    bobKey1,
    "older epoch",
  );
  // a stale rekey loses
  await t.rejects(
    a.request("POST", `/v1/rooms/${room.id}/rekey`, {
      fromEpoch: 1,
      sealedKeys: [{ signPub: alice.signPub, sealed: sealed() }],
    }),
    {
      name: "ControlPlaneError",
      status: 409,
    },
  );

  // removal: bob loses access
  await a.request("DELETE", `/v1/rooms/${room.id}/members/${bob.signPub}`);
  await t.rejects(b.request("GET", `/v1/rooms/${room.id}`), { status: 403, code: "FORBIDDEN" });
  await t.rejects(b.request("GET", `/v1/rooms/${room.id}/keys/${bob.signPub}?epoch=1`), {
    name: "ControlPlaneError",
    status: 403,
  });
  t.same(await b.request("GET", `/v1/users/${bob.signPub}/rooms`), []);
});

t.test("a non-member cannot read a room, its members or anyone's key; nor discover for others", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const mallory = await member(bus, "mallory");
  const a = api(t, bus, alice);
  const m = api(t, bus, mallory);
  const room = await a.request<Room>("POST", "/v1/rooms", { ownerSealedKey: sealed() });
  for (const path of [
    `/v1/rooms/${room.id}`,
    `/v1/rooms/${room.id}/members`,
    `/v1/rooms/${room.id}/keys/${mallory.signPub}`,
  ]) {
    await t.rejects(m.request("GET", path), { name: "ControlPlaneError", status: 403 }, path);
  }
  await t.rejects(m.request("GET", `/v1/rooms/${room.id}/keys/${alice.signPub}`), {
    status: 403,
    message: /only to its own holder/,
  });
  await t.rejects(
    a.request("GET", `/v1/rooms/${room.id}/keys/${mallory.signPub}`),
    { name: "ControlPlaneError", status: 403 },
    "even the owner cannot fetch another's key",
  );
  await t.rejects(m.request("GET", `/v1/users/${alice.signPub}/rooms`), {
    status: 403,
    message: /only list your own rooms/,
  });
  await t.rejects(
    m.request("GET", "/v1/rooms/does-not-exist"),
    { name: "ControlPlaneError", status: 403 },
    "a missing room looks the same as a foreign one",
  );
  // mallory cannot add herself, remove alice, or rekey
  await t.rejects(
    m.request("POST", `/v1/rooms/${room.id}/members`, { signPub: mallory.signPub, sealedKey: sealed(), epoch: 1 }),
    { name: "ControlPlaneError", status: 403 },
  );
  await t.rejects(m.request("DELETE", `/v1/rooms/${room.id}/members/${alice.signPub}`), {
    name: "ControlPlaneError",
    status: 403,
  });
  await t.rejects(m.request("POST", `/v1/rooms/${room.id}/rekey`, { fromEpoch: 1, sealedKeys: [] }), {
    name: "ControlPlaneError",
    status: 403,
  });
  // owner spoof: creating a room in alice's name
  await t.rejects(m.request("POST", "/v1/rooms", { owner: alice.signPub, ownerSealedKey: sealed() }), {
    status: 403,
    message: /your own name/,
  });
});

t.test("users and invites are admin-only; register spends a token exactly once", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const bob = await member(bus, "bob");
  const ad = api(t, bus, admin);
  const b = api(t, bus, bob);
  for (const [method, path, body] of [
    ["GET", "/v1/users", undefined],
    ["POST", "/v1/users", { signPub: createIdentity().signPub, handle: "x" }],
    ["POST", `/v1/users/${admin.signPub}/revoke`, undefined],
    ["DELETE", `/v1/users/${admin.signPub}`, undefined],
    ["POST", "/v1/invites", { handle: "x" }],
    ["GET", "/v1/invites", undefined],
  ] as const) {
    await t.rejects(b.request(method, path, body), { status: 403, message: /admin/ }, `member: ${method} ${path}`);
  }

  const { token, invite } = await ad.request<{
    token: string;
    invite: { id: string; handle: string; status: string; expiresAt: number; createdAt: number };
  }>("POST", "/v1/invites", { handle: "dave" });
  t.match(token, /^[0-9a-f]{64}$/);
  t.equal(invite.expiresAt - invite.createdAt, 7 * 86_400_000, "7-day default TTL");
  t.match(await ad.request("GET", "/v1/invites"), [{ id: invite.id, status: "open" }]);

  const dave = createIdentity();
  const anon = api(t, bus, dave);
  const register = (who: Identity, tok: string) =>
    anon.request(
      "POST",
      "/v1/register",
      {
        token: tok,
        signPub: who.signPub,
        kexPub: who.kexPub,
        proof: who.sign(registrationProofMessage(tok)).toString("base64url"),
      },
      { signed: false },
    );
  // someone else's key without its private key: refused, token not spent
  const victim = createIdentity();
  await t.rejects(
    anon.request(
      "POST",
      "/v1/register",
      {
        token,
        signPub: victim.signPub,
        kexPub: victim.kexPub,
        proof: dave.sign(registrationProofMessage(token)).toString("base64url"),
      },
      { signed: false },
    ),
    { status: 401, message: /proof/ },
  );
  t.match(await register(dave, token), { handle: "dave", role: "member", status: "active", signPub: dave.signPub });
  await t.rejects(register(createIdentity(), token), { status: 409, code: "INVITE_SPENT" }, "a spent token is refused");
  t.ok(await bus.store.isAuthorized(dave.signPub), "dave is on the allowlist");

  // an already-registered key spends the token and gets USER_EXISTS
  const again = await ad.request<{ token: string }>("POST", "/v1/invites", { handle: "dave2" });
  await t.rejects(register(dave, again.token), { status: 409, code: "USER_EXISTS" });
  await t.rejects(register(createIdentity(), again.token), { status: 409, code: "INVITE_SPENT" });

  // cancelled and expired tokens
  const cancelled = await ad.request<{ token: string; invite: { id: string } }>("POST", "/v1/invites", {
    handle: "erin",
  });
  await ad.request("DELETE", `/v1/invites/${cancelled.invite.id}`);
  await t.rejects(register(createIdentity(), cancelled.token), { status: 409, code: "INVITE_CANCELLED" });
  const short = await ad.request<{ token: string }>("POST", "/v1/invites", { handle: "fay", ttl: "1ms" });
  await new Promise((r) => setTimeout(r, 20));
  await t.rejects(register(createIdentity(), short.token), { status: 409, code: "INVITE_EXPIRED" });
  await t.rejects(
    register(createIdentity(), "ab".repeat(32)),
    { status: 409, code: "INVITE_UNKNOWN" },
    "an unknown token",
  );

  // user admin
  const eve = createIdentity();
  t.match(await ad.request("POST", "/v1/users", { signPub: eve.signPub, kexPub: eve.kexPub, handle: "eve" }), {
    status: "active",
  });
  t.match(await ad.request("POST", `/v1/users/${eve.signPub}/revoke`), { status: "revoked" });
  await t.rejects(ad.request("POST", `/v1/users/${eve.signPub}/revoke`), { name: "ControlPlaneError", status: 409 });
  await ad.request("DELETE", `/v1/users/${eve.signPub}`);
  await t.rejects(ad.request("DELETE", `/v1/users/${eve.signPub}`), { name: "ControlPlaneError", status: 404 });
});

t.test("50 concurrent registrations with one invite create exactly one user", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const ad = api(t, bus, admin);
  const { token } = await ad.request<{ token: string }>("POST", "/v1/invites", { handle: "racer" });
  const ids = Array.from({ length: 50 }, () => createIdentity());
  const anon = api(t, bus, ids[0]!);
  const results = await Promise.allSettled(
    ids.map((id) =>
      anon.request(
        "POST",
        "/v1/register",
        {
          token,
          signPub: id.signPub,
          kexPub: id.kexPub,
          proof: id.sign(registrationProofMessage(token)).toString("base64url"),
        },
        { signed: false },
      ),
    ),
  );
  t.equal(results.filter((r) => r.status === "fulfilled").length, 1, "one winner");
  t.equal(results.filter((r) => r.status === "rejected" && (r.reason as { status: number }).status === 409).length, 49);
  const users = await bus.store.listUsers();
  t.equal(users.filter((u) => u.handle === "racer").length, 1);
});

t.test("bad bodies get a 400 naming the field; errors carry no SQL or paths", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const a = api(t, bus, alice);
  await t.rejects(a.request("POST", "/v1/rooms", { encrypt: "yes" }), { status: 400, message: /encrypt/ });
  await t.rejects(a.request("POST", "/v1/rooms", { bogus: 1 }), { status: 400, message: /unknown field "bogus"/ });
  await t.rejects(a.request("POST", "/v1/rooms", { encrypt: true }), { status: 400, message: /ownerSealedKey/ });
  await t.rejects(a.request("GET", "/v1/nowhere"), { name: "ControlPlaneError", status: 404 });
  await t.rejects(a.request("PUT", "/v1/rooms"), { name: "ControlPlaneError", status: 405 });
  await bus.store.close();
  const err = (await a.request("GET", `/v1/users/${alice.signPub}/rooms`).catch((e: unknown) => e)) as Error;
  t.match(err, { status: 503, message: /try again/ });
  t.notMatch(err.message, /sqlite|SELECT|\/tmp|\.db/i, "no internals in a 5xx");
});

t.test("cleartext rooms: allowed on loopback, refused on a public bind", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  t.match(await api(t, bus, alice).request("POST", "/v1/rooms", { encrypt: false }), { encrypt: false });
  const open = await testBus(t, { host: "0.0.0.0" });
  const bob = await member(open, "bob");
  await t.rejects(api(t, open, bob).request("POST", "/v1/rooms", { encrypt: false }), {
    status: 403,
    message: /cleartext rooms are refused/,
  });
});
