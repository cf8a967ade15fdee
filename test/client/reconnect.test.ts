// ReconnectPacing against a real nats-server: the first attempt after each disconnect
// dials at once (kicks in quick succession included), every further attempt of one
// outage waits the usual 100-150 ms so a server that is down is not hammered.
import { connect as natsConnect } from "@nats-io/transport-node";
import t, { type Test } from "tap";
import { ReconnectPacing } from "../../lib/client/reconnect.ts";
import { nextReconnect } from "../helpers/bus.ts";
import { tempDir } from "../helpers/fs.ts";
import { natsServer } from "../helpers/nats.ts";
import { waitFor } from "../helpers/wait.ts";

const WAIT = { waitMs: 100, jitterMs: 50 };

/** A connection paced by a fresh ReconnectPacing; `asked` lists every delay it answered, in order. */
async function pacedConnection(t: Test, url: string) {
  const pacing = new ReconnectPacing(WAIT);
  const asked: number[] = [];
  const nc = await natsConnect({
    servers: url,
    maxReconnectAttempts: -1,
    reconnectDelayHandler: () => {
      const d = pacing.delay();
      asked.push(d);
      return d;
    },
  });
  pacing.follow(nc);
  t.teardown(() => (nc.isClosed() ? undefined : nc.close()));
  return { nc, asked };
}

t.test("each forced reconnect, even right after the last, dials at once", async (t) => {
  const dir = await tempDir(t);
  const server = natsServer(t, { workDir: dir });
  const ports = await server.start();
  const { nc, asked } = await pacedConnection(t, `nats://127.0.0.1:${ports.nats}`);
  t.same(asked, [0], "the first connect dialled at once");
  for (let i = 0; i < 3; i++) {
    asked.length = 0;
    const back = nextReconnect(nc);
    await nc.reconnect(); // what a kick does to the client: the server closes, the client dials again
    await back;
    t.same(asked, [0], `reconnect ${i + 1}: one immediate attempt, no wait`);
  }
  // and the connection works after them
  const sub = nc.subscribe("x", { max: 1 });
  nc.publish("x", "ping");
  for await (const m of sub) t.equal(m.string(), "ping");
});

t.test("while the server stays down, the attempts after the first wait as before", async (t) => {
  const dir = await tempDir(t);
  const server = natsServer(t, { workDir: dir });
  const ports = await server.start();
  const { nc, asked } = await pacedConnection(t, `nats://127.0.0.1:${ports.nats}`);
  asked.length = 0;
  await server.stop();
  await waitFor("three reconnect attempts", () => asked.length >= 3);
  t.equal(asked[0], 0, "the first attempt of the outage is immediate");
  for (const d of asked.slice(1)) {
    t.ok(d >= WAIT.waitMs && d <= WAIT.waitMs + WAIT.jitterMs, `a later attempt waits ${d} ms (100-150)`);
  }
  // back on the same port: the connection recovers, and the next outage starts immediate again
  const back = nextReconnect(nc);
  await server.start();
  await back;
  asked.length = 0;
  const again = nextReconnect(nc);
  await nc.reconnect();
  await again;
  t.same(asked, [0], "after recovering, the next disconnect dials at once again");
});
