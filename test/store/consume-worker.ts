// One thread in the cross-thread invite race (test/store/sqlite.test.ts): opens one
// store per registration on the shared file, says ready, waits for the start signal,
// then consumes the token once through each store.
import { parentPort, workerData } from "node:worker_threads";
import { openSqliteStore } from "../../lib/store/index.ts";

const { file, token, registrations, start } = workerData as {
  file: string;
  token: string;
  registrations: Array<{ signPub: string; kexPub: string }>;
  start: SharedArrayBuffer;
};

const stores = await Promise.all(registrations.map(() => openSqliteStore(file)));
parentPort!.postMessage({ ready: true });
Atomics.wait(new Int32Array(start), 0, 0);
const outcomes = await Promise.all(
  registrations.map((reg, i) =>
    stores[i]!.consumeInvite(token, reg).then(
      (user) => ({ ok: user.signPub }),
      (err: { name?: string; reason?: string }) => ({ error: err.name, reason: err.reason }),
    ),
  ),
);
await Promise.all(stores.map((s) => s.close()));
parentPort!.postMessage({ outcomes });
