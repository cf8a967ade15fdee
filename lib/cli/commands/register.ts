import fs from "node:fs/promises";
import path from "node:path";
import type { Command } from "commander";
import { ControlClient } from "../../client/control.ts";
import { registrationProofMessage } from "../../control/protocol.ts";
import { loadOrCreateIdentity } from "../../crypto/identity.ts";
import { ControlPlaneError } from "../../errors.ts";
import type { User } from "../../store/index.ts";
import { CaFetchError, CaPinError, fetchPinnedCa, normalizeFingerprint, pemFingerprint } from "../../tls/index.ts";
import { CliError, printJson } from "../output.ts";

interface RegisterOptions {
  identity: string;
  controlUrl: string;
  ca?: string;
  caFingerprint?: string;
  json?: boolean;
}

function controlUrlOf(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CliError(`--control-url must be a URL like https://bus.example:8470, not ${JSON.stringify(value)}`);
  }
  if (url.protocol !== "https:")
    throw new CliError(`--control-url must be an https:// URL (the control plane only speaks TLS), not ${value}`);
  return url.origin;
}

async function readCa(file: string): Promise<string> {
  const abs = path.resolve(file);
  let pem: string;
  try {
    pem = await fs.readFile(abs, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT")
      throw new CliError(`CA file ${abs} does not exist; ask the bus admin for the bus' ca.pem and pass it with --ca`);
    throw new CliError(`CA file ${abs} cannot be read (${code ?? "error"})`);
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----"))
    throw new CliError(`CA file ${abs} is not a PEM certificate; pass the bus' ca.pem with --ca`);
  return pem;
}

/**
 * The CA must be the one the invite names: a CA file is easy to swap on its way to the
 * invitee, and trusting a swapped one would hand the registration to whoever made it.
 */
function pinCa(pem: string, file: string, pinned: string | undefined): void {
  if (pinned === undefined) return;
  let got: string;
  try {
    got = pemFingerprint(pem);
  } catch {
    throw new CliError(
      `CA file ${path.resolve(file)} is not a valid PEM certificate; ask the bus admin for the bus' ca.pem`,
    );
  }
  if (got !== pinned) {
    throw new CliError(
      `CA file ${path.resolve(file)} has fingerprint ${got}, not the invite's ${pinned}: refusing it; get the bus' ca.pem again from the admin`,
    );
  }
}

function fingerprintOption(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const hex = normalizeFingerprint(value);
  if (!hex) throw new CliError("--ca-fingerprint must be the 64 hex characters the invite printed");
  return hex;
}

/**
 * The CA to trust: the file given (checked against the fingerprint when there is one),
 * or, with the fingerprint alone, the CA the control plane presents in its handshake —
 * taken only when its fingerprint is the pinned one, before anything is sent.
 */
async function trustedCa(baseUrl: string, opts: RegisterOptions): Promise<string> {
  const pinned = fingerprintOption(opts.caFingerprint);
  if (opts.ca !== undefined) {
    const ca = await readCa(opts.ca);
    pinCa(ca, opts.ca, pinned);
    return ca;
  }
  if (pinned === undefined) {
    throw new CliError("pass --ca-fingerprint <hex> from the invite line (or the bus' CA file with --ca <file>)");
  }
  try {
    return await fetchPinnedCa(baseUrl, pinned);
  } catch (err) {
    if (err instanceof CaPinError || err instanceof CaFetchError) throw new CliError(err.message);
    throw err;
  }
}

export function registerCommand(program: Command): void {
  program
    .command("register")
    .description("join a bus with an invite token: publishes only your public keys")
    .argument("<token>", "the invite token an admin gave you (64 hex characters)")
    .requiredOption("--identity <file>", "your identity file; created (mode 0600) if it does not exist")
    .requiredOption("--control-url <url>", "the bus' control plane, e.g. https://bus.example:8470")
    .option(
      "--ca-fingerprint <hex>",
      "the CA's SHA-256 fingerprint from the invite line: the bus' CA is fetched and checked against it",
    )
    .option(
      "--ca <file>",
      "the bus' CA certificate (ca.pem) instead; with --ca-fingerprint a file that differs is refused",
    )
    .option("--json", "print the new user as JSON")
    .action(async (rawToken: string, opts: RegisterOptions) => {
      // Everything that can be checked before the registration is sent is, before an identity
      // file is created: the token, the URL and the CA (with only a fingerprint: fetched and pinned).
      const token = rawToken.trim();
      if (!/^[0-9a-fA-F]{64}$/.test(token))
        throw new CliError("an invite token is 64 hex characters; check that it was copied whole");
      const baseUrl = controlUrlOf(opts.controlUrl);
      const ca = await trustedCa(baseUrl, opts);
      const file = path.resolve(opts.identity);
      const identity = await loadOrCreateIdentity(file);
      // The proof is over the lowercase token: that is the form the server hashes.
      const lower = token.toLowerCase();
      const body = {
        token: lower,
        signPub: identity.signPub,
        kexPub: identity.kexPub,
        proof: identity.sign(registrationProofMessage(lower)).toString("base64url"),
      };
      const client = new ControlClient({ baseUrl, ca, identity });
      let user: User;
      try {
        user = await client.request<User>("POST", "/v1/register", body, { signed: false });
      } catch (err) {
        // The server's own words say why (spent, expired, cancelled…); the identity stays.
        if (err instanceof ControlPlaneError) throw new CliError(`registration refused: ${err.message}`);
        throw err;
      } finally {
        await client.close();
      }
      if (opts.json) return printJson({ identity: file, ...user });
      process.stdout.write(
        [
          `registered ${user.handle} (${user.role}) on ${baseUrl}`,
          `  user id (signing key): ${user.signPub}`,
          `  identity file:         ${file}   (keep it private: it is you on this bus)`,
          "",
        ].join("\n"),
      );
    });
}
