import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { removeOwnedDir } from "../../lib/bus/layout.ts";
import { armDirRemoval } from "../../lib/nats/index.ts";

/** Anything that runs cleanup when its test ends: a tap `Test`, or a narrower view of one. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/**
 * A fresh temp dir, removed when `t` ends. Teardowns run last-in, first-out, so
 * create it before whatever lives in it (a bus, a nats-server): they stop first.
 * `label` names the dir (`unibus-test-<label>-…`) where a test keeps several kinds.
 */
export async function tempDir(t: Teardown, label?: string): Promise<string> {
  const prefix = label ? `unibus-test-${label}-` : "unibus-test-";
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  // A test the runner kills (a timeout) never reaches its teardown: the guard removes the dir then.
  const guard = armDirRemoval(dir);
  t.teardown(() => removeOwnedDir(dir, guard));
  return dir;
}
