import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { KeyFileError, UnibusError } from "../errors.ts";

/** Private keys: owner read/write only. Certificates are public. */
export const KEY_MODE = 0o600;
export const CERT_MODE = 0o644;

/**
 * The target of an exclusive write already exists. Its `code` is Node's own
 * `EEXIST`, so one check covers this and the error of link().
 */
export class FileExistsError extends UnibusError {
  readonly file: string;
  constructor(file: string) {
    super("EEXIST", `${file} already exists`);
    this.file = file;
  }
}

/**
 * Writes via a temp file in the same directory, so a reader never sees half a file.
 * `exclusive` publishes with link(), which fails with EEXIST instead of replacing a
 * file someone else created meanwhile (rename() would silently replace it).
 */
export async function writeFileAtomic(
  file: string,
  data: string,
  options: { mode: number; exclusive?: boolean },
): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    const handle = await fs.open(tmp, "wx", options.mode);
    try {
      await handle.writeFile(data);
      // open()'s mode is filtered by the umask; set it exactly.
      await handle.chmod(options.mode);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (options.exclusive) await linkOrClaim(tmp, file);
    else await fs.rename(tmp, file);
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV"]);

/** link() where the filesystem has hard links; elsewhere a check-then-rename, exclusive except against a racing writer. */
async function linkOrClaim(tmp: string, file: string): Promise<void> {
  try {
    await fs.link(tmp, file);
  } catch (err) {
    if (!NO_HARD_LINKS.has((err as NodeJS.ErrnoException).code ?? "")) throw err;
    if (await exists(file)) throw new FileExistsError(file);
    await fs.rename(tmp, file);
  }
}

/** The file's text, or undefined when it does not exist. Other errors propagate as KeyFileError. */
export async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new KeyFileError(file, `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

export async function exists(file: string): Promise<boolean> {
  try {
    await fs.stat(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw new KeyFileError(file, `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A private key others can read may already have leaked; refuse it rather than use
 * or replace it, so the owner notices. Windows has no POSIX modes to check.
 */
export async function assertPrivateMode(file: string): Promise<void> {
  if (process.platform === "win32") return;
  const st = await fs.stat(file);
  const mode = st.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new KeyFileError(
      file,
      `private key ${file} is accessible by group or others (mode ${mode.toString(8).padStart(4, "0")}); ` +
        `if nobody else could have read it, run \`chmod 600 ${file}\`, otherwise treat it as leaked and replace it`,
    );
  }
}

export async function ensureDir(dir: string): Promise<void> {
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new KeyFileError(dir, `cannot create the TLS directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/** Runs `fn` after every earlier call with the same key has settled (one writer per file set in this process). */
const queues = new Map<string, Promise<unknown>>();
export function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(key) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const tail = run.catch(() => {});
  queues.set(key, tail);
  void tail.then(() => {
    if (queues.get(key) === tail) queues.delete(key);
  });
  return run;
}
