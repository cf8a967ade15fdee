// The control plane and the callout keep parsed public keys (a parse costs a sixth of
// a verification). A cached key must never stand in for the allowlist: as an attacker
// holding a revoked or deleted key would try it — replay a request that passed before,
// send one signed before the revocation, sign a new one, connect again — every one is
// refused at once, on a real bus.
import t, { type Test } from "tap";
import type { Agent } from "undici";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { connect } from "../../lib/client/connect.ts";
import { signRequest } from "../../lib/crypto/canonical.ts";
import type { Identity } from "../../lib/crypto/identity.ts";
import { api, member, testBus, user } from "../helpers/bus.ts";
import { trustingAgent } from "../helpers/http.ts";

interface Sent {
  status: number;
  error?: string;
}

/** A request signed now by `id`, to be sent (once or again) later. */
function signedNow(id: Identity, uri: string) {
  return { uri, headers: signRequest(id, { method: "GET", uri }) };
}

async function send(agent: Agent, bus: Unibus, req: { uri: string; headers: Record<string, string> }): Promise<Sent> {
  const res = await agent.request({ origin: bus.controlUrl, path: req.uri, method: "GET", headers: req.headers });
  const body = (await res.body.json()) as { error?: string };
  return { status: res.statusCode, ...(body.error ? { error: body.error } : {}) };
}

const NOT_AUTHORIZED = { status: 401, error: "auth_not_authorized" };

async function attackAfter(t: Test, change: "revoke" | "delete"): Promise<void> {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const { id: alice } = await user(t, bus, "alice");
  const room = await api(t, bus, alice).request<{ id: string }>("POST", "/v1/rooms", { encrypt: false });
  const agent = trustingAgent(t, bus.caPem);
  const uri = `/v1/rooms/${room.id}`;

  const passed = signedNow(alice, uri);
  t.same(await send(agent, bus, passed), { status: 200 }, "alice reads her room: her key is parsed and cached");
  const held = signedNow(alice, uri); // signed before the change, sent after it

  const adminApi = api(t, bus, admin);
  if (change === "revoke") await adminApi.request("POST", `/v1/users/${alice.signPub}/revoke`);
  else await adminApi.request("DELETE", `/v1/users/${alice.signPub}?rooms=delete`);

  t.same(await send(agent, bus, passed), NOT_AUTHORIZED, `${change}: a replay of the request that passed`);
  t.same(await send(agent, bus, held), NOT_AUTHORIZED, `${change}: a fresh nonce signed before the ${change}`);
  t.same(await send(agent, bus, signedNow(alice, uri)), NOT_AUTHORIZED, `${change}: a request signed after it`);
  await t.rejects(
    connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: alice, timeoutMs: 5000 }),
    { code: "AUTH_DENIED" },
    `${change}: the callout, which parsed her key for every connect before, refuses a new one`,
  );
}

t.test("a revoked key is refused at once: replayed, held back or new, over HTTP and NATS", (t) =>
  attackAfter(t, "revoke"),
);

t.test("a deleted key is refused at once: replayed, held back or new, over HTTP and NATS", (t) =>
  attackAfter(t, "delete"),
);

t.test("a revoked key's live connection is closed and stays out", async (t) => {
  const bus = await testBus(t);
  const admin = await member(bus, "root", "admin");
  const alice = await user(t, bus, "alice");
  const closed = alice.c.closed();
  await api(t, bus, admin).request("POST", `/v1/users/${alice.id.signPub}/revoke`);
  t.match(await closed, { code: "AUTH_DENIED" }, "her connection ends refused, not readmitted on a cached key");
});
