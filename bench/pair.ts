// The two clients a messaging bench measures with: a publisher and a subscriber, each a
// user of `bus`, connected over the bus's TLS and callout as a bot would be.
import type { Unibus } from "../lib/bus/unibus.ts";
import { connect, type UnibusClient } from "../lib/client/connect.ts";
import { createIdentity } from "../lib/crypto/identity.ts";

export async function pubSubPair(bus: Unibus): Promise<{ pub: UnibusClient; sub: UnibusClient }> {
  const a = createIdentity();
  const b = createIdentity();
  await bus.addUser(a.signPub, { handle: "pub", kexPub: a.kexPub });
  await bus.addUser(b.signPub, { handle: "sub", kexPub: b.kexPub });
  const opts = { natsUrl: bus.natsUrl, controlUrl: bus.controlUrl, ca: bus.caPem };
  const pub = await connect({ ...opts, identity: a });
  const sub = await connect({ ...opts, identity: b });
  return { pub, sub };
}
