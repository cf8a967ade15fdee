// A process that asks for a KV store with an opening bound too short to be met, then lets
// go of everything it holds: it must exit by itself (test/store/kv-open-abandoned.test.ts).
// argv: <nats url> <bucket prefix> <"given-connection" | "own-connection">
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { openKvStore } from "../../lib/store/index.ts";
import { controlBucketName } from "../../lib/store/kv-layout.ts";

const [url, bucketPrefix, mode] = process.argv.slice(2) as [string, string, string];
const nc = await connect({ servers: url });
const opening =
  mode === "given-connection"
    ? openKvStore({ nc, bucketPrefix, storage: "memory", openTimeoutMs: 1 })
    : openKvStore({ servers: url, bucketPrefix, storage: "memory", openTimeoutMs: 1 });
const outcome = await opening.then(
  () => "opened",
  (err: Error) => err.name,
);
// The abandoned attempt goes on in the background. On the given connection, wait until it
// has made its bucket (closing the connection earlier would end it before it made
// anything that could outlive it); then give it time to finish whatever follows.
if (mode === "given-connection") {
  const jsm = await jetstreamManager(nc);
  const names = [`KV_${controlBucketName(bucketPrefix)}`];
  for (;;) {
    const have = await Promise.all(
      names.map((n) =>
        jsm.streams.info(n).then(
          () => true,
          () => false,
        ),
      ),
    );
    if (have.every(Boolean)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
}
await new Promise((r) => setTimeout(r, 1000));
await nc.close();
process.stdout.write(`${outcome}\n`);
