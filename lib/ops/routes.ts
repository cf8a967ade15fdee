/**
 * `unibus doctor` on a cluster: are this data dir's nodes routed to every peer, and does
 * route TLS work? Each configured route is dialled the way a node dials it — mutual TLS
 * with this data dir's route certificate, trusting its CA — so a peer on another CA (the
 * isolated node after a CA change) is named with the TLS error, not as "unreachable".
 */
import fs from "node:fs/promises";
import path from "node:path";
import tls from "node:tls";
import { clusterView, type RouteErrorKind, routeErrorFix } from "../bus/route-watch.ts";
import { clientCaFileSync } from "../tls/rotation.ts";
import type { Finding } from "./doctor.ts";
import type { RunInfo } from "./run-file.ts";

interface NodeRoutes {
  name: string;
  /** Configured route URLs (host:port), this node's own excluded when it is a loopback one. */
  peers: string[];
  /** How many peers it should be routed to. */
  expected: number;
  /** Distinct peers it is routed to now. */
  connected: string[];
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});

/**
 * A node's configured peers and live routes from its monitoring endpoint; undefined when
 * it is not clustered. How many peers it should have comes from its JetStream meta group
 * (cluster size - 1) when there is one: the route list may name the node itself under a
 * name only DNS knows (the docs ask for the same list on every machine).
 */
async function routesOf(monitorUrl: string, timeoutMs: number): Promise<NodeRoutes | undefined> {
  const view = await clusterView(monitorUrl, timeoutMs);
  if (view === undefined) return undefined;
  const { name, port, urls, routez, jsz } = view;
  const remotes = Array.isArray(routez.routes) ? routez.routes.map((r) => obj(r).remote_name) : [];
  const peers = urls.filter((u) => !(u.endsWith(`:${port}`) && isLocal(u)));
  const size = obj(jsz.meta_cluster).cluster_size;
  return {
    name,
    peers,
    expected: typeof size === "number" && size > 1 ? size - 1 : peers.length,
    connected: [...new Set(remotes.filter((r): r is string => typeof r === "string"))],
  };
}

function isLocal(hostPort: string): boolean {
  return /^(127\.|localhost:|\[::1\]:)/.test(hostPort);
}

/** Dials `hostPort` as a route peer would; resolves with the TLS error's text, or true. */
function handshake(hostPort: string, creds: tls.SecureContextOptions, timeoutMs: number): Promise<true | string> {
  const at = hostPort.lastIndexOf(":");
  const host = hostPort.slice(0, at).replace(/^\[|\]$/g, "");
  const port = Number(hostPort.slice(at + 1));
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port, ...creds, ...(/^[\d.:]+$/.test(host) ? {} : { servername: host }) });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error("timed out")));
    socket.once("secureConnect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** The kind of a failed dial, from Node's error code, so the fix is the one `up` and `status` give. */
function kindOf(reason: string): RouteErrorKind {
  if (/CERT|SELF_SIGNED|UNABLE_TO|unknown ca|bad certificate|alert/i.test(reason)) return "tls";
  if (reason === "ECONNREFUSED") return "refused";
  if (reason === "timed out" || reason === "ETIMEDOUT") return "timeout";
  if (reason === "EHOSTUNREACH" || reason === "ENETUNREACH") return "unreachable";
  if (reason === "ENOTFOUND" || reason === "EAI_AGAIN") return "dns";
  return "other";
}

/** Route TLS and connectivity of the nodes in `run`; nothing for a single node. */
export async function checkRoutes(dataDir: string, run: RunInfo | undefined, timeoutMs: number): Promise<Finding[]> {
  if (!run) return [];
  const nodes = (await Promise.all(run.monitorUrls.map((u) => routesOf(u, timeoutMs).catch(() => undefined)))).filter(
    (n): n is NodeRoutes => n !== undefined,
  );
  if (nodes.length === 0) return [];
  const tlsDir = path.join(dataDir, "tls");
  // During a CA rotation the bundle: peers not yet restarted present the other CA's certificate.
  const [ca, cert, key] = await Promise.all(
    [clientCaFileSync(tlsDir), path.join(tlsDir, "route.pem"), path.join(tlsDir, "route-key.pem")].map((f) =>
      fs.readFile(f, "utf8").catch(() => ""),
    ),
  );
  if (!cert || !key || !ca) {
    return [
      {
        level: "error",
        check: "routes",
        message: `no route certificate in ${tlsDir}`,
        fix: "restart the node: `unibus up` issues it",
      },
    ];
  }
  const targets = [...new Set(nodes.flatMap((n) => n.peers))];
  const findings = await Promise.all(
    targets.map(async (t): Promise<Finding> => {
      const result = await handshake(t, { ca, cert, key }, timeoutMs);
      return result === true
        ? { level: "ok", check: "routes", message: `route TLS to ${t}: mutual handshake ok`, fix: "" }
        : {
            level: "error",
            check: "routes",
            message: `route TLS to ${t} fails: ${result}`,
            fix: routeErrorFix(kindOf(result)),
          };
    }),
  );
  for (const n of nodes) {
    const expected = n.expected;
    if (n.connected.length >= expected) {
      findings.push({
        level: "ok",
        check: "routes",
        message: `${n.name} is routed to ${n.connected.length} peer(s)`,
        fix: "",
      });
    } else {
      findings.push({
        level: "error",
        check: "routes",
        message: `${n.name} is routed to ${n.connected.length} of ${expected} peer(s)${n.connected.length ? ` (${n.connected.join(", ")})` : ""}: it is cut off from the others`,
        fix: "see the route TLS findings above; `unibus status` shows the JetStream side",
      });
    }
  }
  return findings;
}
