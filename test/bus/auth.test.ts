// The allowlist as the broker enforces it: who gets in, who does not, and how an
// attacker might try.
import t from "tap";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import { connect } from "../../lib/client/connect.ts";
import { createIdentity } from "../../lib/crypto/identity.ts";
import { NKeyPair } from "../../lib/crypto/nkeypair.ts";
import { client, connectOnce, member, plaintextProbe, tcpPort, testBus } from "../helpers/bus.ts";

t.test("an allowlisted identity connects over TLS and uses its private inbox", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const c = await client(t, bus, alice);
  t.match(bus.natsUrl, /^tls:\/\/127\.0\.0\.1:\d+$/);
  const subject = `${c.inboxPrefix}.ping`;
  const sub = c.nc.subscribe(subject, { max: 1 });
  c.nc.publish(subject, "hello");
  for await (const m of sub) t.equal(m.string(), "hello");
  // request/reply works through the private inbox prefix
  c.nc.subscribe(`${c.inboxPrefix}.echo`, { callback: (_e, m) => void m.respond(m.data) });
  const reply = await c.nc.request(`${c.inboxPrefix}.echo`, "again", { timeout: 2000 });
  t.equal(reply.string(), "again");
});

t.test("an admitted connection cannot step outside its inbox", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const a = await client(t, bus, alice);
  const b = await client(t, bus, bob);
  for (const subject of [">", "_INBOX.>", `${b.inboxPrefix}.>`, "$SYS.>", "$JS.API.>", "$KV.>", "room.x"]) {
    const sub = a.nc.subscribe(subject);
    const err = await sub.closed;
    t.match(String(err), /Permissions Violation/, `subscribe ${subject} refused`);
  }
  // publishing into bob's inbox is refused by the broker (bob receives nothing)
  let received = 0;
  b.nc.subscribe(`${b.inboxPrefix}.x`, { callback: () => void received++ });
  await b.nc.flush();
  a.nc.publish(`${b.inboxPrefix}.x`, "spoof");
  await a.nc.flush();
  await b.nc.flush();
  t.equal(received, 0, "nothing crossed into another user's inbox");
});

t.test("an unknown identity is denied", async (t) => {
  const bus = await testBus(t);
  const stranger = createIdentity();
  await t.rejects(connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: stranger, timeoutMs: 5000 }), {
    code: "AUTH_DENIED",
  });
});

t.test("a revoked identity is denied on its next connection; a deleted one too", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const c = await connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: alice });
  await c.close();
  await bus.store.revokeUser(alice.signPub);
  await t.rejects(connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: alice, timeoutMs: 5000 }), {
    code: "AUTH_DENIED",
  });
  await bus.store.deleteUser(bob.signPub);
  await t.rejects(connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: bob, timeoutMs: 5000 }), {
    code: "AUTH_DENIED",
  });
});

t.test("presenting someone else's public key without their private key is denied", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const mallory = createIdentity();
  // alice's key, mallory's signature over the nonce
  await t.rejects(
    connectOnce(
      bus,
      nkeySigner(alice.nkey, (d) => mallory.sign(d)),
    ),
    /Authorization Violation/,
  );
  // alice's key and no signature at all
  await t.rejects(
    connectOnce(bus, () => ({ nkey: alice.nkey, sig: "" })),
    /Authorization Violation/,
  );
  // a signature over something other than the nonce
  await t.rejects(
    connectOnce(
      bus,
      nkeySigner(alice.nkey, () => alice.sign(Buffer.from("not the nonce"))),
    ),
    /Authorization Violation/,
  );
  // not an nkey at all, user/password, a token: the callout denies all of them
  await t.rejects(
    connectOnce(bus, () => ({ user: "admin", pass: "admin" })),
    /Authorization Violation/,
  );
  await t.rejects(
    connectOnce(bus, () => ({ auth_token: "secret" })),
    /Authorization Violation/,
  );
  // an account key (A…) in place of a user key
  const account = NKeyPair.random("account");
  await t.rejects(
    connectOnce(
      bus,
      nkeySigner(account.publicKey, (d) => account.sign(d)),
    ),
    /Authorization Violation/,
  );
});

t.test("a client without TLS cannot talk to the NATS port", async (t) => {
  const bus = await testBus(t);
  const received = await plaintextProbe(tcpPort(bus.natsUrl));
  t.match(received, /^INFO .*"tls_required":true/, "the server demands TLS up front");
  t.notMatch(received, /PONG|\+OK/, "no plaintext protocol exchange happens");
});

t.test("a client that does not trust the bus CA is refused by TLS", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  await t.rejects(connect({ natsUrl: bus.natsUrl, identity: alice, timeoutMs: 5000 }), { code: "CONNECT" });
});

t.test("a failing store denies (fail closed)", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  await bus.store.close();
  await t.rejects(connect({ natsUrl: bus.natsUrl, ca: bus.caPem, identity: alice, timeoutMs: 5000 }), {
    code: "AUTH_DENIED",
  });
});
