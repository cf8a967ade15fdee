import { Agent } from "undici";
import type { Teardown } from "./fs.ts";

/** An undici dispatcher that trusts `ca` (a bus' own CA) for HTTPS; closed in teardown. */
export function trustingAgent(t: Teardown, ca: string, options: Omit<Agent.Options, "connect"> = {}): Agent {
  const agent = new Agent({ ...options, connect: { ca } });
  t.teardown(() => agent.close());
  return agent;
}
