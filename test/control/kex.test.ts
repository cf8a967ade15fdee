// PUT /v1/users/:signPub/kex: an identity added by its signing key alone registers its
// own key-exchange key, once — and nobody else can register one for it.

import t from "tap";
import { request } from "undici";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { api, client, member, testBus } from "../helpers/bus.ts";
import { trustingAgent } from "../helpers/http.ts";

t.test("an admin added without kexPub registers it once, then creates an encrypted room", async (t) => {
  const bus = await testBus(t);
  const me = createIdentity();
  await bus.addUser(me.signPub, { handle: "you", role: "admin" });
  const c = await client(t, bus, me);
  await t.rejects(c.createRoom(), { status: 409, message: /registerKexPub/ }, "the refusal says how to fix it");
  await c.registerKexPub();
  t.equal((await bus.store.getUser(me.signPub)).kexPub, me.kexPub);
  const room = await c.createRoom();
  t.equal(room.encrypt, true);
  await t.rejects(c.registerKexPub(), { status: 409, message: /already has a key-exchange key/ }, "set once");
});

t.test("a second registration cannot replace the key, even a well-formed one", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const other = createIdentity();
  await t.rejects(api(t, bus, alice).request("PUT", `/v1/users/${alice.signPub}/kex`, { kexPub: other.kexPub }), {
    name: "ControlPlaneError",
    status: 409,
  });
  t.equal((await bus.store.getUser(alice.signPub)).kexPub, alice.kexPub, "the original key stays");
});

t.test("another identity, an admin included, cannot register a key for someone", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "admin", "admin");
  const victim = createIdentity();
  await bus.addUser(victim.signPub, { handle: "victim" });
  const attacker = createIdentity();
  for (const who of [admin]) {
    await t.rejects(api(t, bus, who).request("PUT", `/v1/users/${victim.signPub}/kex`, { kexPub: attacker.kexPub }), {
      status: 403,
      message: /only its own/,
    });
  }
  t.equal((await bus.store.getUser(victim.signPub)).kexPub, null, "nothing written");
});

t.test("bad bodies are 400; an unsigned request is 401", async (t) => {
  const bus = await testBus(t);
  const me = createIdentity();
  await bus.addUser(me.signPub, { handle: "you" });
  const a = api(t, bus, me);
  for (const body of [{}, { kexPub: "zz" }, { kexPub: me.kexPub, extra: 1 }, { kexPub: "00".repeat(32) }]) {
    await t.rejects(a.request("PUT", `/v1/users/${me.signPub}/kex`, body), { name: "ControlPlaneError", status: 400 });
  }
  const res = await request(`${bus.controlUrl}/v1/users/${me.signPub}/kex`, {
    method: "PUT",
    dispatcher: trustingAgent(t, bus.caPem),
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ kexPub: me.kexPub }),
  });
  t.equal(res.statusCode, 401);
  await res.body.dump();
  t.equal((await bus.store.getUser(me.signPub)).kexPub, null, "nothing written");
});
