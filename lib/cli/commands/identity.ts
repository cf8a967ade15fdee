import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { createIdentity, loadIdentity, saveIdentity } from "../../crypto/identity.ts";
import { CliError, printJson } from "../output.ts";

/** The exact command that puts this identity on a bus, both keys included (encrypted rooms need the second). */
function addCommand(signPub: string, kexPub: string): string {
  return `npx unibus user add ${signPub} --kex-pub ${kexPub} --handle you --role admin`;
}

export function identityCommand(program: Command): void {
  const identity = program.command("identity").description("create and inspect identity files (Ed25519 + X25519 keys)");
  identity
    .command("new")
    .description("create a new identity file (mode 0600) and print its public keys")
    .requiredOption("-o, --out <file>", "where to write the identity")
    .option("--json", "print the public keys as JSON")
    .action(async (opts: { out: string; json?: boolean }) => {
      const file = path.resolve(opts.out);
      if (fs.existsSync(file))
        throw new CliError(`${file} already exists; choose another --out (an identity is never overwritten)`);
      const id = createIdentity();
      await saveIdentity(id, file);
      if (opts.json) return printJson({ file, ...id.toJSON() });
      process.stdout.write(
        `created ${file} (mode 0600)\n  signing key (user id): ${id.signPub}\n  key-exchange key:      ${id.kexPub}\n  NATS user key:         ${id.nkey}\n` +
          `\nAdd it to a bus (the first admin, here, with the bus' data dir):\n  ${addCommand(id.signPub, id.kexPub)}\n`,
      );
    });
  identity
    .command("show")
    .description("print the public keys of an identity file")
    .argument("<file>", "identity file")
    .option("--json", "print as JSON")
    .action(async (file: string, opts: { json?: boolean }) => {
      const id = await loadIdentity(file);
      if (opts.json) return printJson(id.toJSON());
      process.stdout.write(
        `signing key (user id): ${id.signPub}\nkey-exchange key:      ${id.kexPub}\nNATS user key:         ${id.nkey}\n`,
      );
    });
}
