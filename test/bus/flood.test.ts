// An embedding process never sees the bus's failures: a flood of one member's
// connections, then of connects with unknown keys, run in the same process as the bus.
// Once, such a flood killed its host with an uncaught `read ECONNRESET`; any uncaught
// exception or unhandled rejection here fails the test. The known user's experience is
// asserted too: it still connects during the unknown-key flood.
import { type NatsConnection, connect as natsConnect } from "@nats-io/transport-node";
import t from "tap";
import { nkeySigner } from "../../lib/auth/authenticator.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { client, member, testBus } from "../helpers/bus.ts";

const MEMBER_CONNECTIONS = 300;
const UNKNOWN_CONNECTS = 400;
/**
 * Connects in flight at once. Hundreds of TLS handshakes begun together in one Node
 * process on two busy cores outlast the server's 2 s TLS timeout and all fail — a limit
 * of the attacker's machine, not a defence of ours; a steady stream is the real flood.
 */
const IN_FLIGHT = 16;

/** Runs `count` tasks, at most IN_FLIGHT at a time; settles every one. */
async function flood<T>(count: number, task: () => Promise<T>): Promise<PromiseSettledResult<T>[]> {
  const results: PromiseSettledResult<T>[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      results.push(
        await task().then(
          (value) => ({ status: "fulfilled" as const, value }),
          (reason) => ({ status: "rejected" as const, reason }),
        ),
      );
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return results;
}

function natsLogin(url: string, ca: string, id: Identity, reconnect: boolean): Promise<NatsConnection> {
  return natsConnect({
    servers: url,
    tls: { ca },
    authenticator: nkeySigner(id.nkey, (d) => id.sign(d)),
    reconnect,
    timeout: 20_000,
  });
}

t.test(
  "a connection flood, then an unknown-key flood, in-process: nothing escapes, a known user still gets in",
  async (t) => {
    const escaped: unknown[] = [];
    const record = (err: unknown) => escaped.push(err);
    process.on("uncaughtException", record);
    process.on("unhandledRejection", record);
    t.teardown(() => {
      process.off("uncaughtException", record);
      process.off("unhandledRejection", record);
    });

    const bus = await testBus(t);
    const hoarder = await member(bus, "hoarder");
    const known = await member(bus, "known");

    const hoard = await flood(MEMBER_CONNECTIONS, () => natsLogin(bus.natsUrl, bus.caPem, hoarder, false));
    const open = hoard.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    t.ok(open.length > 0, `the member opened connections (${open.length} of ${MEMBER_CONNECTIONS})`);

    const strangers = flood(UNKNOWN_CONNECTS, () =>
      natsLogin(bus.natsUrl, bus.caPem, createIdentity(), false).then((nc) => nc.close().then(() => "admitted")),
    );
    // During the flood the known user connects and round-trips on its inbox.
    const c = await client(t, bus, known);
    const echo = c.nc.subscribe(`${c.inboxPrefix}.echo`, { max: 1 });
    c.nc.publish(`${c.inboxPrefix}.echo`, "still here");
    for await (const m of echo) t.equal(m.string(), "still here", "the known user is served during the flood");

    const outcomes = await strangers;
    t.equal(outcomes.filter((o) => o.status === "fulfilled").length, 0, "no unknown key was admitted");

    // The hoard goes away all at once, as a crashing bot's would.
    await Promise.allSettled(open.map((nc) => nc.close()));
    t.equal(bus.state, "running", "the bus is still running");
    const after = await client(t, bus, known);
    t.ok(after.nc.isClosed() === false, "a new connection after the flood works");
    t.same(escaped, [], "no uncaught exception or unhandled rejection reached the host process");
  },
);
