import { UnibusError } from "../errors.ts";
import type { NatsExitRecord } from "./supervisor.ts";

/**
 * A nats-server died on its own and will not be brought back: it was not supervised, or it died
 * more often than its restart budget allows. `log` holds its last lines; `cause` is the start
 * error when the last failure was a restart that never got ready.
 */
export class NatsCrashedError extends UnibusError {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly at: Date;
  readonly log: readonly string[];
  /** Unexpected ends counted within the supervision window (1 without supervision). */
  readonly failures: number;

  constructor(server: string, exit: NatsExitRecord, budget?: { failures: number; windowMs: number }) {
    const how = exit.startError
      ? `could not be restarted (${firstLine(exit.startError.message)})`
      : exit.signal
        ? `was killed by ${exit.signal}`
        : `exited with code ${exit.code}`;
    const gaveUp = budget
      ? `; it ended unexpectedly ${budget.failures} times within ${budget.windowMs} ms, more than its restart budget, so it is not restarted again`
      : "; it is not supervised, so it stays down";
    const tail = exit.log.length ? `\n--- last nats-server output ---\n${exit.log.join("\n")}` : "";
    super(
      "NATS_CRASHED",
      `nats-server ${server} ${how}${gaveUp}. Look at its last output (port taken, disk full, out of memory, killed by an operator), fix the cause and start it again${tail}`,
      exit.startError ? { cause: exit.startError } : undefined,
    );
    this.exitCode = exit.code;
    this.signal = exit.signal;
    this.at = exit.at;
    this.log = exit.log;
    this.failures = budget?.failures ?? 1;
  }
}

function firstLine(text: string): string {
  return text.split("\n", 1)[0] ?? "";
}
