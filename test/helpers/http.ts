import type { ServerResponse } from "node:http";
import { Agent } from "undici";
import type { Teardown } from "./fs.ts";

/** An undici dispatcher that trusts `ca` (a bus' own CA) for HTTPS; closed in teardown. */
export function trustingAgent(t: Teardown, ca: string, options: Omit<Agent.Options, "connect"> = {}): Agent {
  const agent = new Agent({ ...options, connect: { ca } });
  t.teardown(() => agent.close());
  return agent;
}

/** Answers a request to a test server with `body` as JSON (content-length set). */
export function replyJson(res: ServerResponse, body: unknown, status = 200): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
