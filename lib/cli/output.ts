import { UnibusError } from "../errors.ts";

/** An error the CLI reports as one line and a non-zero exit. */
export class CliError extends UnibusError {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super("CLI", message);
    this.exitCode = exitCode;
  }
}

/**
 * What went wrong, for humans: the whole message — its later lines carry the fix (the
 * places `install` looked, the other ways to get nats-server, a child's last output).
 */
export function errorLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  // A server's own output (NatsStartError) goes to the log, not into the one error line.
  return `unibus: ${message.split(SERVER_OUTPUT)[0]!.trimEnd()}`;
}

const SERVER_OUTPUT = "\n--- last nats-server output ---";

/** The same failure for `--json`: `{"error":{"code","message"}}`, code from a UnibusError, else "ERROR". */
export function errorJson(err: unknown): { error: { code: string; message: string } } {
  const code = typeof (err as { code?: unknown })?.code === "string" ? (err as { code: string }).code : "ERROR";
  return { error: { code, message: err instanceof Error ? err.message : String(err) } };
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Fixed-width columns for `list` commands. */
export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** commander's accumulator for a repeatable option (`--route a --route b`). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
