import fs from "node:fs";
import type { Command } from "commander";
import { busLayout } from "../../bus/layout.ts";
import type { UnibusConfig } from "../../config/index.ts";
import { parseTtl } from "../../control/protocol.ts";
import { readRunInfo } from "../../ops/run-file.ts";
import { type Invite, newInviteToken, type Store } from "../../store/index.ts";
import { clientCaFileSync, isLoopbackHost, isUnspecifiedHost, pemFingerprint, urlHost } from "../../tls/index.ts";
import { CliError, printJson, table } from "../output.ts";
import { roleOf, type StoreTargetOptions, storeTargetOptions, targetConfig, withStore } from "../store.ts";

/** The same ceiling as `POST /v1/invites`, so an invite lives as long whichever way it was made. */
const MAX_TTL_MS = 90 * 86_400_000;

function ttlMsOf(value: string): number {
  let ms: number;
  try {
    ms = parseTtl(value);
  } catch {
    throw new CliError(`--ttl must look like 7d, 12h, 30m or 45s, not ${JSON.stringify(value)}`);
  }
  if (!(ms > 0 && ms <= MAX_TTL_MS)) throw new CliError(`--ttl must be more than 0 and at most 90d, not ${value}`);
  return ms;
}

/**
 * Where the invitee reaches the control plane. A bus bound to every interface reports
 * a loopback URL, which is useless on another machine: the configured public host
 * name is what its certificate covers, so that is what the invitee gets.
 */
async function inviteeEndpoint(config: UnibusConfig): Promise<{ controlUrl: string; caFile: string }> {
  const { dataDir } = config;
  const publicName = isUnspecifiedHost(config.host) ? config.hostnames[0] : undefined;
  const running = await readRunInfo(dataDir);
  const runningUrl = running?.controlUrls[0];
  if (running && runningUrl) {
    const url = new URL(runningUrl);
    if (publicName && isLoopbackHost(url.hostname)) url.hostname = urlHost(publicName);
    return { controlUrl: url.origin, caFile: running.caFile };
  }
  // Port 0 means "random at each start": nothing to tell the invitee until the bus runs.
  const port = config.controlPort === 0 ? "<port>" : String(config.controlPort);
  return {
    controlUrl: `https://${urlHost(publicName ?? config.host)}:${port}`,
    caFile: clientCaFileSync(busLayout(dataDir, "").tlsDir),
  };
}

/**
 * The CA's fingerprint, which the printed command pins: `register` fetches the CA from
 * the control plane's handshake and refuses one that differs, so the line alone is enough.
 */
function caFingerprintOf(caFile: string): string {
  let pem: string;
  try {
    pem = fs.readFileSync(caFile, "utf8");
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? "error";
    throw new CliError(`cannot read the bus CA ${caFile} (${why}); start the bus once (\`unibus up\`) so it has one`);
  }
  try {
    return pemFingerprint(pem);
  } catch {
    throw new CliError(`the bus CA ${caFile} is not a PEM certificate; restore it from a backup`);
  }
}

/** An open invite past its expiry is shown as what it is to the invitee: expired. */
function statusOf(i: Invite, now = Date.now()): string {
  return i.status === "open" && now >= i.expiresAt ? "expired" : i.status;
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:@=+-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

interface CreateOptions extends StoreTargetOptions {
  handle: string;
  role: string;
  ttl: string;
  json?: boolean;
}

export function inviteCommand(program: Command): void {
  const invite = program
    .command("invite")
    .description("invite new users: single-use registration tokens in a data dir (host-trusted)");
  storeTargetOptions(invite.command("create"))
    .description("create an invite and print the command the invitee runs")
    .requiredOption("--handle <handle>", "the handle the new user gets, e.g. alice")
    .option("--role <role>", "admin or member", "member")
    .option("--ttl <duration>", "how long the token stays valid: 7d, 12h, 30m or 45s (at most 90d)", "7d")
    .option("--json", "print the invite, token and command as JSON")
    .action(createInvite);
  storeTargetOptions(invite.command("list").description("list invites: open, expired, spent and cancelled"))
    .option("--json", "print JSON")
    .action(listInvites);
  storeTargetOptions(
    invite
      .command("cancel")
      .description("cancel an open invite so its token can no longer register")
      .argument("<id>", "the invite's id from `unibus invite list` (or its token)"),
  )
    .option("--json", "print the cancelled invite as JSON")
    .action(cancelInvite);
}

async function createInvite(opts: CreateOptions): Promise<void> {
  const role = roleOf(opts.role);
  const ttlMs = ttlMsOf(opts.ttl);
  const token = newInviteToken();
  const { controlUrl, caFile } = await inviteeEndpoint(targetConfig(opts));
  let caFingerprint = "";
  let command = "";
  // Inside the store's run: a wrong data dir is named as that, before its missing CA.
  const create = async (s: Store) => {
    caFingerprint = caFingerprintOf(caFile);
    command = [
      "npx unibus register",
      token,
      "--identity me.json",
      `--control-url ${shellQuote(controlUrl)}`,
      `--ca-fingerprint ${caFingerprint}`,
    ].join(" ");
    return s.createInvite({ token, handle: opts.handle, role, createdBy: "host", ttlMs });
  };
  await withStore(opts, create, {
    write: true,
    report: opts.json ? process.stderr : process.stdout,
    print: (created) => {
      if (opts.json) return printJson({ invite: created, token, command, controlUrl, caFile, caFingerprint });
      process.stdout.write(
        [
          `created invite ${created.id} for ${created.handle} (${created.role}), valid until ${new Date(created.expiresAt).toISOString()}`,
          `token: ${token}`,
          "",
          "Send the invitee this one line, privately (the token works once; register fetches the bus'",
          "CA from the control plane and refuses it unless it has this fingerprint):",
          `  ${command}`,
          "",
        ].join("\n"),
      );
    },
  });
}

async function listInvites(opts: StoreTargetOptions & { json?: boolean }): Promise<void> {
  const invites = await withStore(opts, (s) => s.listInvites());
  const now = Date.now();
  if (opts.json) return printJson(invites.map((i) => ({ ...i, status: statusOf(i, now) })));
  if (invites.length === 0) {
    process.stdout.write("no invites yet; create one with `unibus invite create --handle <name>`\n");
    return;
  }
  const rows = [["ID", "HANDLE", "ROLE", "STATUS", "EXPIRES"]];
  for (const i of invites) rows.push([i.id, i.handle, i.role, statusOf(i, now), new Date(i.expiresAt).toISOString()]);
  process.stdout.write(`${table(rows)}\n`);
}

async function cancelInvite(id: string, opts: StoreTargetOptions & { json?: boolean }): Promise<void> {
  await withStore(opts, (s) => s.cancelInvite(id), {
    write: true,
    report: opts.json ? process.stderr : process.stdout,
    print: (cancelled) =>
      opts.json
        ? printJson(cancelled)
        : void process.stdout.write(`cancelled invite ${cancelled.id} for ${cancelled.handle}\n`),
  });
}
