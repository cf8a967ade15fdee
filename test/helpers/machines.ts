import fs from "node:fs";
import path from "node:path";
import { loadOrCreateServiceKeys } from "../../lib/auth/service-keys.ts";
import { loadOrCreateCa } from "../../lib/tls/index.ts";

/** The files every machine of a cluster shares: the CA (its key too) and the service keys. */
export const SHARED_FILES = ["tls/ca.pem", "tls/ca-key.pem", "service-keys.json"];

/** What an operator does once: one CA and one set of service keys, copied (0600) to every machine's data dir. */
export async function sharedSecrets(dirs: string[]): Promise<void> {
  await loadOrCreateCa(path.join(dirs[0]!, "tls"));
  await loadOrCreateServiceKeys(dirs[0]!);
  for (const d of dirs.slice(1)) copyShared(dirs[0]!, d);
}

/** Copies the shared files from one data dir to another (0600). */
export function copyShared(from: string, to: string, files = SHARED_FILES): void {
  fs.mkdirSync(path.join(to, "tls"), { recursive: true, mode: 0o700 });
  for (const f of files) {
    fs.copyFileSync(path.join(from, f), path.join(to, f));
    fs.chmodSync(path.join(to, f), 0o600);
  }
}
