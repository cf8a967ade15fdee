// Blob put/get through the control plane: a KV bus (blobs in the JetStream Object
// Store, one node, R1) against a SQLite bus (blobs as files), in the same run, one
// after the other. Prints MB/s for each and the ratio Object Store / files.
import crypto from "node:crypto";
import { buffer as collect } from "node:stream/consumers";
import { startUnibus, type Unibus } from "../lib/bus/unibus.ts";
import { ControlClient } from "../lib/client/control.ts";
import { sha256Hex } from "../lib/crypto/canonical.ts";
import { createIdentity } from "../lib/crypto/identity.ts";
import { silentLogger } from "../lib/log/index.ts";
import type { BenchSection } from "./report.ts";
import { fmt, summarize, writeResult } from "./stats.ts";

const MiB = 1024 * 1024;

async function* chunks(data: Buffer, size = 64 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

/** MB/s of each put and each get of `data`, `reps` times, on one bus. */
async function measure(bus: Unibus, data: Buffer, reps: number): Promise<{ put: number[]; get: number[] }> {
  await bus.whenStoreReady();
  const id = createIdentity();
  await bus.addUser(id.signPub, { handle: "bench", role: "admin", kexPub: id.kexPub });
  const api = new ControlClient({ baseUrl: bus.controlUrl, ca: bus.caPem, identity: id, timeoutMs: 120_000 });
  const out = { put: [] as number[], get: [] as number[] };
  try {
    const room = (await api.request<{ id: string }>("POST", "/v1/rooms", { encrypt: false })).id;
    const sha256 = sha256Hex(data);
    for (let i = 0; i < reps; i++) {
      let t0 = performance.now();
      const info = await api.putBlob(`/v1/rooms/${room}/blobs`, chunks(data), {
        sha256,
        size: data.length,
        mimetype: "application/octet-stream",
      });
      out.put.push(data.length / MiB / ((performance.now() - t0) / 1000));
      t0 = performance.now();
      const got = await collect((await api.getBlob(`/v1/rooms/${room}/blobs/${info.id}`)).stream);
      out.get.push(data.length / MiB / ((performance.now() - t0) / 1000));
      if (got.length !== data.length) throw new Error("bench: short read");
    }
  } finally {
    await api.close();
  }
  return out;
}

export async function run(): Promise<BenchSection> {
  const reps = Number(process.env.BENCH_BLOB_REPS ?? 5);
  const section: BenchSection = { title: `Blobs (p50 of ${reps})`, rows: [] };
  const sizes = [1 * MiB, 32 * MiB];
  const result: Record<string, unknown> = {};
  for (const size of sizes) {
    const data = crypto.randomBytes(size);
    const rows: Record<string, { put: number; get: number }> = {};
    for (const store of ["sqlite", "kv"] as const) {
      const bus = await startUnibus({ store, logger: silentLogger });
      try {
        const m = await measure(bus, data, reps);
        rows[store] = { put: summarize(m.put).p50, get: summarize(m.get).p50 };
      } finally {
        await bus.stop();
      }
    }
    const files = rows.sqlite!;
    const objects = rows.kv!;
    const ratio = { put: objects.put / files.put, get: objects.get / files.get };
    console.log(
      `blobs ${size / MiB} MiB x${reps} (p50 MB/s): files put ${fmt(files.put, 1)} get ${fmt(files.get, 1)}; ` +
        `object store put ${fmt(objects.put, 1)} get ${fmt(objects.get, 1)}; ratio object/files put ${fmt(ratio.put)} get ${fmt(ratio.get)}`,
    );
    result[`${size / MiB}MiB`] = { files, objectStore: objects, ratio };
    for (const op of ["put", "get"] as const) {
      const baseline = `${size / MiB} MiB ${op}, files (SQLite bus)`;
      section.rows.push({ name: baseline, value: files[op], unit: "MB/s" });
      section.rows.push({
        name: `${size / MiB} MiB ${op}, Object Store (KV bus)`,
        value: objects[op],
        unit: "MB/s",
        baseline,
        ratio: ratio[op],
      });
    }
  }
  console.log(`wrote ${await writeResult("blobs", { reps, ...result })}`);
  return section;
}
