// Blobs against a real bus: streamed upload and download, the size ceiling (exactly
// the cap accepted, one byte more refused), the declared hash, membership, the
// garbage collector, the upload deadline, and memory bounded for a 100 MiB blob.
import crypto from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { buffer as collect } from "node:stream/consumers";
import tls from "node:tls";
import v8 from "node:v8";
import vm from "node:vm";
import t from "tap";
import { ControlClient } from "../../lib/client/control.ts";
import { authenticateRequest } from "../../lib/control/auth.ts";
import { handleBlobRoute, matchBlobRoute, uploadOutlivesRequestTimeout } from "../../lib/control/blob-routes.ts";
import { BlobStore, parseMimetype } from "../../lib/control/blobs.ts";
import { sendHttpError } from "../../lib/control/http-error.ts";
import { SERVER_LIMITS } from "../../lib/control/limits.ts";
import { NonceCache } from "../../lib/control/nonce-cache.ts";
import { sha256Hex, signRequest } from "../../lib/crypto/canonical.ts";
import type { Identity } from "../../lib/crypto/identity.ts";
import { api, member, testBus } from "../helpers/bus.ts";
import { NATS_SERVER } from "../helpers/nats.ts";
import { listenLocal } from "../helpers/net.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const DAY = 86_400_000;
const CAP = 256 * KiB;

function refused(status: number, code?: string) {
  return { name: "ControlPlaneError", status, ...(code ? { code } : {}) };
}

async function createRoom(c: ControlClient): Promise<string> {
  return (await c.request<{ id: string }>("POST", "/v1/rooms", { encrypt: false })).id;
}

async function addMember(owner: ControlClient, roomId: string, who: Identity): Promise<void> {
  await owner.request("POST", `/v1/rooms/${roomId}/members`, { signPub: who.signPub, epoch: 1 });
}

async function* chunks(data: Buffer, size = 16 * KiB): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function blobDirFiles(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).sort();
}

/** Waits (bounded) until the blob dir holds no tmp- file: aborts finish after the answer is sent. */
async function noTmpFiles(dir: string): Promise<string[]> {
  for (let i = 0; i < 100; i++) {
    const tmp = (await fs.readdir(dir)).filter((f) => f.startsWith("tmp-"));
    if (tmp.length === 0) return tmp;
    await new Promise((r) => setTimeout(r, 20));
  }
  return (await fs.readdir(dir)).filter((f) => f.startsWith("tmp-"));
}

t.test("blobs on a bus with a small cap", async (t) => {
  const bus = await testBus(t, { natsServer: NATS_SERVER, blobs: { maxBytes: CAP } });
  const blobDir = path.join(bus.dataDir, "blobs");
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const carol = await member(bus, "carol");
  const a = api(t, bus, alice);
  const b = api(t, bus, bob);
  const c = api(t, bus, carol);
  const room = await createRoom(a);
  await addMember(a, room, bob);

  t.test("upload and download round trip, streamed, with the right headers", async (t) => {
    const data = crypto.randomBytes(200 * KiB + 7);
    const sha256 = sha256Hex(data);
    const info = await a.putBlob(`/v1/rooms/${room}/blobs`, chunks(data), {
      sha256,
      size: data.length,
      mimetype: "Application/Octet-Stream",
    });
    t.match(info, {
      id: /^[0-9a-f]{32}$/,
      roomId: room,
      size: data.length,
      sha256,
      mimetype: "application/octet-stream",
    });
    t.equal(info.expiresAt - info.createdAt, 30 * DAY, "expires after the default max age");

    const got = await b.getBlob(`/v1/rooms/${room}/blobs/${info.id}`);
    t.same(
      { mimetype: got.mimetype, size: got.size, sha256: got.sha256 },
      { mimetype: "application/octet-stream", size: data.length, sha256 },
    );
    t.ok((await collect(got.stream)).equals(data), "another member reads the same bytes");

    const small = Buffer.from("hello blob");
    const info2 = await a.putBlob(`/v1/rooms/${room}/blobs`, small, {
      sha256: sha256Hex(small),
      mimetype: "text/plain",
    });
    t.equal((await collect((await a.getBlob(`/v1/rooms/${room}/blobs/${info2.id}`)).stream)).toString(), "hello blob");

    const files = await blobDirFiles(blobDir);
    t.ok(files.includes(info.id) && files.includes(`${info.id}.json`), "bytes and metadata on disk");
    t.same(
      files.filter((f) => f.startsWith("tmp-")),
      [],
      "no temp file left",
    );
    const meta = JSON.parse(await fs.readFile(path.join(blobDir, `${info.id}.json`), "utf8"));
    t.match(meta, { id: info.id, roomId: room, uploader: alice.signPub, size: data.length, sha256 });
    t.equal((await fs.stat(path.join(blobDir, info.id))).mode & 0o777, 0o600);
  });

  t.test("a chunked upload (no content-length) works too", async (t) => {
    const data = crypto.randomBytes(50 * KiB);
    const info = await a.putBlob(`/v1/rooms/${room}/blobs`, chunks(data, 3000), {
      sha256: sha256Hex(data),
      mimetype: "image/png",
    });
    t.equal(info.size, data.length);
    t.ok((await collect((await a.getBlob(`/v1/rooms/${room}/blobs/${info.id}`)).stream)).equals(data));
  });

  t.test("exactly the cap is accepted, one byte more is refused with 413 and leaves nothing", async (t) => {
    const exact = crypto.randomBytes(CAP);
    const over = crypto.randomBytes(CAP + 1);
    const put = (data: Buffer, chunked: boolean) =>
      a.putBlob(`/v1/rooms/${room}/blobs`, chunks(data), {
        sha256: sha256Hex(data),
        mimetype: "application/octet-stream",
        ...(chunked ? {} : { size: data.length }),
      });

    t.equal((await put(exact, false)).size, CAP, "content-length = cap");
    t.equal((await put(exact, true)).size, CAP, "chunked, cap bytes");
    const before = (await blobDirFiles(blobDir)).length;
    await t.rejects(put(over, false), refused(413), "content-length = cap + 1");
    await t.rejects(put(over, true), refused(413), "chunked, cap + 1 bytes");
    t.same(await noTmpFiles(blobDir), [], "no partial file left");
    t.equal((await blobDirFiles(blobDir)).length, before, "no blob added");
  });

  t.test("a declared hash that does not match the body is 401 and leaves nothing", async (t) => {
    const data = crypto.randomBytes(40 * KiB);
    const before = await blobDirFiles(blobDir);
    for (const size of [data.length, undefined]) {
      await t.rejects(
        a.putBlob(`/v1/rooms/${room}/blobs`, chunks(data), {
          sha256: sha256Hex("something else"),
          mimetype: "application/octet-stream",
          ...(size === undefined ? {} : { size }),
        }),
        refused(401, "AUTH_BODY_MISMATCH"),
      );
    }
    t.same(await noTmpFiles(blobDir), []);
    t.same(await blobDirFiles(blobDir), before);
  });

  t.test("mimetype must be type/subtype", async (t) => {
    const data = Buffer.from("x");
    for (const mimetype of ["", "text", "text/plain; charset=utf-8", `a/${"b".repeat(126)}`, "te xt/plain", "/plain"]) {
      await t.rejects(
        a.putBlob(`/v1/rooms/${room}/blobs`, data, { sha256: sha256Hex(data), mimetype }),
        refused(400),
        JSON.stringify(mimetype),
      );
    }
    t.equal(parseMimetype(`a/${"b".repeat(125)}`).length, 127, "127 characters is fine");
    t.equal(parseMimetype("application/vnd.api+json"), "application/vnd.api+json");
  });

  t.test("non-members, unknown ids and other rooms' blobs", async (t) => {
    const data = crypto.randomBytes(1000);
    const info = await a.putBlob(`/v1/rooms/${room}/blobs`, data, { sha256: sha256Hex(data), mimetype: "text/plain" });
    const before = await blobDirFiles(blobDir);

    await t.rejects(
      c.putBlob(`/v1/rooms/${room}/blobs`, data, { sha256: sha256Hex(data), mimetype: "text/plain" }),
      refused(403),
      "non-member upload",
    );
    await t.rejects(c.getBlob(`/v1/rooms/${room}/blobs/${info.id}`), refused(403), "non-member download");
    await t.rejects(c.request("DELETE", `/v1/rooms/${room}/blobs/${info.id}`), refused(403), "non-member delete");
    await t.rejects(
      c.putBlob(`/v1/rooms/nosuchroom/blobs`, data, { sha256: sha256Hex(data), mimetype: "text/plain" }),
      refused(403),
      "unknown room: same 403",
    );
    t.same(await blobDirFiles(blobDir), before, "refused uploads write nothing");

    const other = await createRoom(a);
    await t.rejects(a.getBlob(`/v1/rooms/${other}/blobs/${info.id}`), refused(404), "a blob of another room is 404");
    await t.rejects(a.request("DELETE", `/v1/rooms/${other}/blobs/${info.id}`), refused(404));
    await t.rejects(a.getBlob(`/v1/rooms/${room}/blobs/${"0".repeat(32)}`), refused(404), "unknown id");
    await t.rejects(a.getBlob(`/v1/rooms/${room}/blobs/..%2F..%2Fstore.db`), refused(404), "malformed id");
    await t.rejects(a.request("POST", `/v1/rooms/${room}/blobs`, {}), refused(405));

    const stranger = new ControlClient({
      baseUrl: bus.controlUrl,
      ca: bus.caPem,
      identity: (await import("../../lib/crypto/identity.ts")).createIdentity(),
    });
    t.teardown(() => stranger.close());
    await t.rejects(
      stranger.putBlob(`/v1/rooms/${room}/blobs`, data, { sha256: sha256Hex(data), mimetype: "text/plain" }),
      refused(401),
      "unregistered key",
    );
  });

  t.test("delete: the uploader or the room's owner", async (t) => {
    const data = Buffer.from("to be deleted");
    const opts = { sha256: sha256Hex(data), mimetype: "text/plain" };
    const byAlice = await a.putBlob(`/v1/rooms/${room}/blobs`, data, opts);
    const byBob = await b.putBlob(`/v1/rooms/${room}/blobs`, data, opts);
    const byBob2 = await b.putBlob(`/v1/rooms/${room}/blobs`, data, opts);

    await t.rejects(
      b.request("DELETE", `/v1/rooms/${room}/blobs/${byAlice.id}`),
      refused(403),
      "a member cannot delete another's blob",
    );
    await b.request("DELETE", `/v1/rooms/${room}/blobs/${byBob.id}`);
    await a.request("DELETE", `/v1/rooms/${room}/blobs/${byBob2.id}`);
    await a.request("DELETE", `/v1/rooms/${room}/blobs/${byAlice.id}`);
    for (const id of [byAlice.id, byBob.id, byBob2.id]) {
      await t.rejects(a.getBlob(`/v1/rooms/${room}/blobs/${id}`), refused(404));
      t.notOk(
        (await blobDirFiles(blobDir)).some((f) => f.startsWith(id)),
        "files gone",
      );
    }
    await t.rejects(a.request("DELETE", `/v1/rooms/${room}/blobs/${byAlice.id}`), refused(404), "twice is 404");
  });

  t.test("GC on the bus: a deleted room's blobs go, live ones stay", async (t) => {
    const doomed = await createRoom(a);
    const data = Buffer.from("short-lived");
    const opts = { sha256: sha256Hex(data), mimetype: "text/plain" };
    const gone = await a.putBlob(`/v1/rooms/${doomed}/blobs`, data, opts);
    const live = await a.putBlob(`/v1/rooms/${room}/blobs`, data, opts);
    await bus.store.deleteRoom(doomed);
    const report = await bus.blobs.gc();
    t.same(
      report.removed.filter((r) => r.id === gone.id),
      [{ id: gone.id, reason: "room-gone" }],
    );
    t.notOk(report.removed.some((r) => r.id === live.id));
    const files = await blobDirFiles(blobDir);
    t.notOk(
      files.some((f) => f.startsWith(gone.id)),
      "the deleted room's blob is gone from disk",
    );
    t.ok(files.includes(live.id));
    t.ok((await collect((await a.getBlob(`/v1/rooms/${room}/blobs/${live.id}`)).stream)).equals(data));
  });
});

t.test("GC: expiry, leftovers of interrupted uploads, and a store that cannot answer", async (t) => {
  const bus = await testBus(t, { natsServer: NATS_SERVER });
  const alice = await member(bus, "alice");
  const room = await createRoom(api(t, bus, alice));
  const dir = t.testdir();
  let clock = Date.now();
  const blobs = new BlobStore({ dir, store: bus.store, maxAgeMs: 30 * DAY, now: () => clock });
  await blobs.start();
  t.teardown(() => blobs.close());

  const put = async (bytes: string) => {
    const up = await blobs.beginUpload({ roomId: room, uploader: alice.signPub, mimetype: "text/plain" });
    await up.write(Buffer.from(bytes));
    return up.commit({ size: Buffer.byteLength(bytes), sha256: sha256Hex(bytes) });
  };
  const old = await put("old");
  clock += 20 * DAY;
  const fresh = await put("fresh");
  clock += 11 * DAY;

  const staleTmp = path.join(dir, "tmp-stale");
  const newTmp = path.join(dir, "tmp-new");
  const orphan = path.join(dir, "f".repeat(32));
  for (const f of [staleTmp, newTmp, orphan]) await fs.writeFile(f, "x");
  const twoHoursAgo = new Date(clock - 2 * 3_600_000);
  await fs.utimes(staleTmp, twoHoursAgo, twoHoursAgo);
  await fs.utimes(orphan, twoHoursAgo, twoHoursAgo);
  await fs.utimes(newTmp, new Date(clock), new Date(clock));
  // an upload in progress is never collected, however old its temp file
  const inProgress = await blobs.beginUpload({ roomId: room, uploader: alice.signPub, mimetype: "text/plain" });
  const inProgressTmp = (await fs.readdir(dir)).filter(
    (f) => f.startsWith("tmp-") && !["tmp-stale", "tmp-new"].includes(f),
  );
  t.equal(inProgressTmp.length, 1);
  await fs.utimes(path.join(dir, inProgressTmp[0]!), twoHoursAgo, twoHoursAgo);

  const report = await blobs.gc();
  t.same(
    report.removed.sort((x, y) => x.reason.localeCompare(y.reason)),
    [
      { id: old.id, reason: "expired" },
      { id: "f".repeat(32), reason: "orphan" },
    ],
  );
  t.equal(report.tmpRemoved, 1);
  t.equal(report.kept, 1);
  const files = await blobDirFiles(dir);
  t.same(files, [fresh.id, `${fresh.id}.json`, inProgressTmp[0]!, "tmp-new"].sort());
  await t.rejects(blobs.stat(old.id), { code: "NOT_FOUND" });
  t.equal((await blobs.stat(fresh.id)).size, 5);

  await inProgress.abort();
  t.notOk((await fs.readdir(dir)).includes(inProgressTmp[0]!), "abort removes the temp file");

  // a blob past its expiry is not served even before the collector runs
  clock += 20 * DAY;
  await t.rejects(blobs.stat(fresh.id), { code: "NOT_FOUND" });

  // when the store cannot say whether a room exists, the blob is kept
  clock = Date.now();
  const third = await put("third");
  const failing = new BlobStore({
    dir,
    store: {
      getRoom: async () => {
        throw new Error("store down");
      },
    },
  });
  const r2 = await failing.gc();
  t.same(r2.removed, [], "nothing removed on doubt");
  t.equal(r2.unchecked, 2, "fresh and third are kept unchecked");
  t.ok((await fs.readdir(dir)).includes(third.id));
  await failing.close();

  // a corrupt metadata file is collected; the blob is not served meanwhile
  await fs.writeFile(path.join(dir, `${third.id}.json`), "{not json");
  await t.rejects(blobs.stat(third.id), { code: "NOT_FOUND" });
  t.same((await blobs.gc()).removed, [{ id: third.id, reason: "corrupt" }]);

  await blobs.close();
  await t.rejects(blobs.beginUpload({ roomId: room, uploader: alice.signPub, mimetype: "text/plain" }), {
    code: "BLOBS_CLOSED",
  });
});

t.test("an upload outlives the server's request timeout, a stalled one is cut", async (t) => {
  const bus = await testBus(t, { natsServer: NATS_SERVER });
  const alice = await member(bus, "alice");
  const room = await createRoom(api(t, bus, alice));
  const blobs = await new BlobStore({ dir: t.testdir(), store: bus.store }).start();
  t.teardown(() => blobs.close());
  const nonces = new NonceCache();

  // A server whose request clock (1 s) is far shorter than the trickle below (~2 s).
  const server = http.createServer(
    { ...SERVER_LIMITS, headersTimeout: 800, requestTimeout: 1000, connectionsCheckingInterval: 100 },
    (req, res) => {
      const m = matchBlobRoute(req.method ?? "GET", new URL(req.url ?? "/", "http://x").pathname);
      if (!m) {
        req.resume();
        req.on("end", () => res.end("ok"));
        return;
      }
      handleBlobRoute(m, {
        req,
        res,
        blobs,
        store: bus.store,
        idleTimeoutMs: 1500,
        authenticate: async (bodySha256) =>
          (
            await authenticateRequest({
              method: req.method ?? "GET",
              uri: req.url ?? "/",
              headers: req.headers,
              bodySha256,
              store: bus.store,
              nonces,
            })
          ).signPub,
      }).catch((err) => sendHttpError(res, err));
    },
  );
  // as the control server does: an authenticated upload outlives the request clock
  server.on("clientError", (err, socket) => {
    if (!uploadOutlivesRequestTimeout(err, socket)) socket.destroy();
  });
  const port = await listenLocal(t, server);

  const parts = [0, 1, 2, 3].map(() => crypto.randomBytes(1024));
  const whole = Buffer.concat(parts);
  const trickle = (uri: string, pieces: Buffer[], pauseMs: number) =>
    new Promise<{ status?: number; body?: string; error?: string }>((resolve) => {
      const req = http.request({
        host: "127.0.0.1",
        port,
        method: "PUT",
        path: uri,
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(whole.length),
          ...signRequest(alice, { method: "PUT", uri, bodySha256: sha256Hex(whole) }),
        },
      });
      req.on("response", (res) => {
        let body = "";
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode, body }));
      });
      req.on("error", (err) => resolve({ error: err.message }));
      let i = 0;
      const next = () => {
        const p = pieces[i++];
        if (!p) return pieces.length === parts.length ? req.end() : undefined;
        req.write(p);
        setTimeout(next, pauseMs);
      };
      next();
    });

  const [blob, plain, stalled] = await Promise.all([
    trickle(`/v1/rooms/${room}/blobs`, parts, 600),
    trickle("/not-a-blob", parts, 600),
    trickle(`/v1/rooms/${room}/blobs`, parts.slice(0, 1), 0),
  ]);
  t.equal(blob.status, 201, "the blob upload survives the 1 s request clock");
  t.equal(JSON.parse(blob.body ?? "{}").sha256, sha256Hex(whole));
  t.not(plain.status, 200, "another route on the same server is cut by the request clock");
  t.ok(stalled.error ?? stalled.status !== 201, "the stalled upload is cut by the idle timeout");
  t.same(await noTmpFiles(blobs.dir), [], "and leaves no temp file");
});

t.test(
  "a trickling upload to a real bus is cut with 408 and leaves no partial blob; a steady one is stored",
  async (t) => {
    const bus = await testBus(t, {
      natsServer: NATS_SERVER,
      controlTimeouts: { minBodyBytesPerSec: 1024, bodyGraceMs: 300 },
    });
    const blobDir = path.join(bus.dataDir, "blobs");
    const alice = await member(bus, "alice");
    const a = api(t, bus, alice);
    const room = await createRoom(a);
    const before = await blobDirFiles(blobDir);

    // As an attacker holding a member's key would: a signed upload that declares 64 KiB,
    // sends 1 KiB at once and then a byte every 100 ms, to hold a socket, a temp file and budget.
    const whole = crypto.randomBytes(64 * KiB);
    const uri = `/v1/rooms/${room}/blobs`;
    const headers = {
      "content-type": "application/octet-stream",
      "content-length": String(whole.length),
      ...signRequest(alice, { method: "PUT", uri, bodySha256: sha256Hex(whole) }),
    };
    const head = `PUT ${uri} HTTP/1.1\r\nhost: control\r\n${Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}`)
      .join("\r\n")}\r\n\r\n`;
    const answer = await new Promise<string>((resolve) => {
      let text = "";
      let sent = 0;
      let timer: NodeJS.Timeout | undefined;
      const port = Number(new URL(bus.controlUrl).port);
      const socket = tls.connect({ host: "127.0.0.1", port, ca: bus.caPem }, () => {
        socket.write(head);
        socket.write(whole.subarray(0, KiB));
        sent = KiB;
        timer = setInterval(() => {
          if (sent < whole.length) socket.write(whole.subarray(sent, ++sent));
        }, 100);
      });
      socket.setEncoding("utf8");
      socket.on("data", (d: string) => {
        text += d;
      });
      socket.on("error", () => {});
      socket.on("close", () => {
        clearInterval(timer);
        resolve(text);
      });
    });
    t.match(answer, /^HTTP\/1\.1 408/, "the trickle is cut with 408");
    t.match(answer, /"error":"body_too_slow"/);
    t.same(await noTmpFiles(blobDir), [], "no partial file left");
    t.same(await blobDirFiles(blobDir), before, "no blob stored");

    const data = crypto.randomBytes(200 * KiB);
    const info = await a.putBlob(uri, chunks(data), { sha256: sha256Hex(data), mimetype: "application/octet-stream" });
    t.equal(info.size, data.length, "an upload at full speed is stored");
    const rejections = (await bus.metrics.httpRejections.get()).values;
    t.ok(
      rejections.some((v) => v.labels.reason === "body_too_slow" && v.value === 1),
      "the cut is counted as body_too_slow",
    );
  },
);

t.test("a 100 MiB blob up and down through the client keeps memory bounded", async (t) => {
  const bus = await testBus(t, { natsServer: NATS_SERVER });
  const alice = await member(bus, "alice");
  const a = api(t, bus, alice);
  const room = await createRoom(a);
  const SIZE = 100 * MiB;
  const CHUNK = 64 * KiB;
  // RSS also counts Buffers that are already garbage: V8 collects external memory
  // lazily (up to ~64 MiB of it can wait for a GC). A collection every 8 MiB keeps the
  // measure about what the code holds on to, which is what "never buffered whole" means.
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  let peak = 0;
  let sinceGc = 0;
  const sample = (bytes = 0) => {
    peak = Math.max(peak, process.memoryUsage().rss);
    sinceGc += bytes;
    if (sinceGc >= 8 * MiB) {
      sinceGc = 0;
      gc();
    }
  };
  async function* source(): AsyncGenerator<Uint8Array> {
    for (let off = 0, i = 0; off < SIZE; off += CHUNK, i++) {
      const chunk = Buffer.alloc(Math.min(CHUNK, SIZE - off), i % 251);
      chunk.writeUInt32BE(i, 0);
      sample(chunk.length);
      yield chunk;
    }
  }
  const hash = crypto.createHash("sha256");
  for await (const c of source()) hash.update(c);
  const sha256 = hash.digest("hex");

  // warm up the connection pool and the code paths, then measure
  const warm = Buffer.from("warm");
  await a.putBlob(`/v1/rooms/${room}/blobs`, warm, { sha256: sha256Hex(warm), mimetype: "text/plain" });
  const before = process.memoryUsage().rss;
  peak = before;
  const timer = setInterval(sample, 5);
  t.teardown(() => clearInterval(timer));

  const info = await a.putBlob(`/v1/rooms/${room}/blobs`, source(), {
    sha256,
    size: SIZE,
    mimetype: "application/octet-stream",
  });
  t.equal(info.size, SIZE);
  const upPeak = peak - before;
  const got = await a.getBlob(`/v1/rooms/${room}/blobs/${info.id}`);
  const down = crypto.createHash("sha256");
  let received = 0;
  for await (const c of got.stream) {
    down.update(c as Buffer);
    received += (c as Buffer).length;
    sample((c as Buffer).length);
  }
  clearInterval(timer);
  t.equal(received, SIZE);
  t.equal(down.digest("hex"), sha256, "the bytes came back intact");
  const growth = peak - before;
  t.ok(
    growth < 64 * MiB,
    `RSS grew by ${(growth / MiB).toFixed(1)} MiB (< 64 MiB; ${(upPeak / MiB).toFixed(1)} MiB during the upload)`,
  );
});
