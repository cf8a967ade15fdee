// Per-identity limits in the broker: one member (or one buggy bot) cannot hoard
// connections, subscriptions or send oversized messages; the others keep connecting.
import { setTimeout as sleep } from "node:timers/promises";
import { type NatsConnection, connect as natsConnect } from "@nats-io/transport-node";
import t from "tap";
import { nkeySigner } from "../../lib/auth/index.ts";
import type { Unibus } from "../../lib/bus/unibus.ts";
import type { Identity } from "../../lib/crypto/identity.ts";
import { member, testBus } from "../helpers/bus.ts";

function login(bus: Unibus, id: Identity): Promise<NatsConnection> {
  return natsConnect({
    servers: bus.natsUrl,
    tls: { ca: bus.caPem },
    authenticator: nkeySigner(id.nkey, (d) => id.sign(d)),
    reconnect: false,
    timeout: 10_000,
  });
}

t.test(
  "connection hoarding: past the limit a connect is refused; others are not; a closed one frees a place",
  async (t) => {
    const bus = await testBus(t, { limits: { connectionsPerIdentity: 5 } });
    const hoarder = await member(bus, "hoarder");
    const other = await member(bus, "other");
    const held: NatsConnection[] = [];
    t.teardown(() => Promise.all(held.map((nc) => nc.close())));
    for (let i = 0; i < 5; i++) held.push(await login(bus, hoarder));
    await t.rejects(login(bus, hoarder), /Authorization Violation/, "the sixth connection is refused");
    const theirs = await login(bus, other);
    t.teardown(() => theirs.close());
    t.notOk(theirs.isClosed(), "another identity still connects");

    await held.pop()!.close();
    // The place frees once the server reports the disconnect.
    let again: NatsConnection | undefined;
    for (let i = 0; !again && i < 100; i++) {
      again = await login(bus, hoarder).catch(() => undefined);
      if (!again) await sleep(50);
    }
    t.ok(again, "after closing one, the identity connects again");
    if (again) held.push(again);
  },
);

t.test("subscriptions per connection are capped by the broker", async (t) => {
  const bus = await testBus(t, { limits: { subscriptionsPerConnection: 32 } });
  const bot = await member(bus, "bot");
  const nc = await login(bus, bot);
  t.teardown(() => nc.close());
  const errors: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === "error") errors.push(String(s.error));
  })();
  const inbox = `_INBOX.${bot.signPub}`;
  const subs = Array.from({ length: 40 }, (_, i) => nc.subscribe(`${inbox}.s${i}`));
  await nc.flush();
  for (let i = 0; errors.length === 0 && i < 100; i++) await sleep(20);
  t.match(errors.join("\n"), /maximum subscriptions/i, "the broker refuses subscriptions past the cap");
  for (const s of subs) s.unsubscribe();
});

t.test("an oversized message is refused with a clear error and never delivered", async (t) => {
  const bus = await testBus(t, { limits: { maxPayloadBytes: 256 * 1024 } });
  const bot = await member(bus, "bot");
  const nc = await login(bus, bot);
  t.teardown(() => nc.close());
  t.equal(nc.info?.max_payload, 256 * 1024, "the server announces the limit");
  const inbox = `_INBOX.${bot.signPub}.big`;
  let delivered = 0;
  nc.subscribe(inbox, { callback: () => void delivered++ });
  await nc.flush();
  t.throws(() => nc.publish(inbox, new Uint8Array(512 * 1024)), /payload/i, "publishing past it throws");
  nc.publish(inbox, new Uint8Array(1024));
  await nc.flush();
  t.equal(delivered, 1, "only the message within the limit arrived");
});

t.test("bad limits are refused before anything starts, naming the option", async (t) => {
  await t.rejects(testBus(t, { limits: { connectionsPerIdentity: 0 } }), {
    code: "INVALID_ARGUMENT",
    field: "limits.connectionsPerIdentity",
  });
  await t.rejects(testBus(t, { limits: { maxPayloadBytes: 1024 } }), {
    code: "INVALID_ARGUMENT",
    field: "limits.maxPayloadBytes",
  });
});
