// Blobs on a three-node KV cluster, real processes: a blob uploaded through one node is
// served by every node, and still by the survivors after the uploading node is
// SIGKILLed; the blob bucket is replicated three ways.

import crypto from "node:crypto";
import { buffer as collect } from "node:stream/consumers";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { startCluster } from "../../lib/bus/cluster.ts";
import { jetStreamLeaders } from "../../lib/bus/cluster-ready.ts";
import { ControlClient } from "../../lib/client/control.ts";
import { sha256Hex } from "../../lib/crypto/canonical.ts";
import { createIdentity, type Identity } from "../../lib/crypto/identity.ts";
import { NATS_SERVER } from "../helpers/nats.ts";

const cluster = await startCluster({ nodes: 3, natsServer: NATS_SERVER, readyTimeoutMs: 40_000 });
t.teardown(() => cluster.stop());

const alice = createIdentity();
const bob = createIdentity();
await cluster.nodes[0]!.addUser(alice.signPub, { handle: "alice", role: "admin", kexPub: alice.kexPub });
await cluster.nodes[0]!.addUser(bob.signPub, { handle: "bob", kexPub: bob.kexPub });
const clients: ControlClient[] = [];
t.teardown(() => Promise.all(clients.map((c) => c.close())));
function control(i: number, identity: Identity): ControlClient {
  const c = new ControlClient({ baseUrl: cluster.controlUrls[i]!, ca: cluster.caPem, identity, timeoutMs: 15_000 });
  clients.push(c);
  return c;
}

/**
 * Retries while a replicated stream elects a leader after a SIGKILL: the answer is 503, or,
 * when the blob stream lost its leader after the status line went out, the download is cut
 * (CONTROL_UNREACHABLE: the server's only signal left). Anything else fails the test.
 */
async function through<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const e = err as { status?: number; code?: string };
      if ((e.status !== 503 && e.code !== "CONTROL_UNREACHABLE") || i >= 60) throw err;
      await sleep(500);
    }
  }
}

const room = (await control(0, alice).request<{ id: string }>("POST", "/v1/rooms", { encrypt: false })).id;
await control(0, alice).request("POST", `/v1/rooms/${room}/members`, { signPub: bob.signPub, epoch: 1 });
const data = crypto.randomBytes(700 * 1024 + 3);
const info = await control(0, alice).putBlob(`/v1/rooms/${room}/blobs`, data, {
  sha256: sha256Hex(data),
  size: data.length,
  mimetype: "application/octet-stream",
});

t.test("the blob bucket is replicated three ways", async (t) => {
  const leaders = await jetStreamLeaders(cluster.nodes[1]!.monitorUrl);
  t.ok(leaders.streams.OBJ_unibus_blobs, "the blob stream has a leader");
  const res = await fetch(`${cluster.nodes[1]!.monitorUrl}/jsz?accounts=true&streams=true&config=true`);
  const jsz = (await res.json()) as {
    account_details?: { stream_detail?: { name: string; config?: { num_replicas?: number } }[] }[];
  };
  const stream = jsz.account_details?.flatMap((a) => a.stream_detail ?? []).find((s) => s.name === "OBJ_unibus_blobs");
  t.equal(stream?.config?.num_replicas, 3);
});

t.test("every node serves a blob uploaded through node 0", async (t) => {
  for (const i of [0, 1, 2]) {
    const got = await control(i, bob).getBlob(`/v1/rooms/${room}/blobs/${info.id}`);
    t.equal(got.sha256, sha256Hex(data), `node ${i}: the recorded hash`);
    t.ok((await collect(got.stream)).equals(data), `node ${i}: the same bytes`);
  }
  await t.rejects(control(2, bob).getBlob(`/v1/rooms/${room}/blobs/${"0".repeat(32)}`), {
    name: "ControlPlaneError",
    status: 404,
  });
});

t.test("after node 0 is SIGKILLed the survivors still serve it, and take new blobs", async (t) => {
  await cluster.kill(0);
  for (const i of [1, 2]) {
    const bytes = await through(async () =>
      collect((await control(i, bob).getBlob(`/v1/rooms/${room}/blobs/${info.id}`)).stream),
    );
    t.ok(bytes.equals(data), `node ${i} serves the dead node's upload`);
  }
  const more = crypto.randomBytes(50_000);
  const second = await through(() =>
    control(2, bob).putBlob(`/v1/rooms/${room}/blobs`, more, { sha256: sha256Hex(more), mimetype: "image/png" }),
  );
  const back = await through(async () =>
    collect((await control(1, alice).getBlob(`/v1/rooms/${room}/blobs/${second.id}`)).stream),
  );
  t.ok(back.equals(more), "uploaded through node 2, served by node 1");
});
