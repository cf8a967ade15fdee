import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";

/**
 * Writes through a temp file in the same directory and renames it into place, so a
 * reader never sees half a file and a crash leaves the old one. With `exclusive`, an
 * existing target is an EEXIST error (link() is atomic where rename() would replace).
 */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  options: { mode: number; exclusive?: boolean },
): Promise<void> {
  const abs = path.resolve(file);
  await fs.mkdir(path.dirname(abs), { recursive: true, mode: 0o700 });
  const tmp = `${abs}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    const handle = await fs.open(tmp, "wx", options.mode);
    try {
      await handle.writeFile(data);
      await handle.chmod(options.mode); // umask may have narrowed... or widened nothing; be exact
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (options.exclusive) await fs.link(tmp, abs);
    else await fs.rename(tmp, abs);
  } finally {
    await fs.rm(tmp, { force: true });
  }
}
