/**
 * Polls `cond` until it holds; throws naming `what` once `boundMs` has passed.
 * The bound is a hang guard for a condition that should come true, not a timing check.
 */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, boundMs = 15_000): Promise<void> {
  const until = Date.now() + boundMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
