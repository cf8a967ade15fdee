/**
 * The control plane's OpenAPI 3.1 description, served at GET /v1/openapi.json.
 *
 * Built from the route table itself: each operation's method, path, authentication and
 * request schema are the very ones the server routes and validates with, so the
 * document cannot describe a body the server would refuse. What the table does not
 * hold — answers, refusals, path parameters — is added here per route name, and
 * test/control/openapi.test.ts fails for a route without it. The normative text is
 * docs/protocol.md.
 */

import { InvalidArgumentError } from "../errors.ts";

/** What the document needs of a route (`Route` in routes.ts fits). */
export interface DescribedRoute {
  method: string;
  path: string;
  name: string;
  auth: "signed" | "none";
  schema?: Record<string, unknown>;
}

/**
 * The streamed blob routes (their own pipeline, lib/control/blob-routes.ts). Their
 * bodies are bytes, not JSON; the test checks each against that module's router.
 */
export const BLOB_OPERATIONS: readonly DescribedRoute[] = [
  { method: "PUT", path: "/v1/rooms/:id/blobs", name: "blobs.put", auth: "signed" },
  { method: "GET", path: "/v1/rooms/:id/blobs/:blobId", name: "blobs.get", auth: "signed" },
  { method: "DELETE", path: "/v1/rooms/:id/blobs/:blobId", name: "blobs.delete", auth: "signed" },
];

type Schema = Record<string, unknown>;

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const list = (name: string): Schema => ({ type: "array", items: ref(name) });
const HEX64 = { type: "string", pattern: "^[0-9a-f]{64}$" };
const MS = { type: "integer", description: "milliseconds since the Unix epoch" };
const strict = (properties: Schema, required = Object.keys(properties)): Schema => ({
  type: "object",
  properties,
  required,
  additionalProperties: false,
});

const ROOM_FIELDS = {
  id: { type: "string" },
  subject: { type: "string" },
  ownerSignPub: HEX64,
  encrypt: { type: "boolean" },
  persist: { type: "boolean" },
  signMsgs: { type: "boolean" },
  epoch: { type: "integer", minimum: 1, maximum: 2 ** 31 },
  createdAt: MS,
};
const ROLE = { enum: ["admin", "member"] };
const ROOM_ROLE = { enum: ["owner", "member"] };

const REPLICA = {
  type: "object",
  properties: {
    name: { type: "string" },
    current: { type: "boolean" },
    lag: { type: "integer" },
    active: { type: "integer", description: "nanoseconds since the peer was last heard from" },
    offline: { type: "boolean" },
  },
  required: ["name", "current"],
};
/** The node as its nats-server monitoring endpoint reports it (lib/nats/monitor.ts, `NodeStatus`). */
const NODE_REPORT = strict({
  health: {
    type: "object",
    properties: {
      ok: { type: "boolean" },
      parts: { type: "object", additionalProperties: { enum: ["up", "down"] } },
      down: { type: "array", items: { type: "string" } },
      routes: {
        type: "object",
        description:
          "a cluster member's routes (lib/bus/route-watch.ts): peers planned, routed by name, a majority or not, and the configured peers missing with the route error nats-server logged",
        properties: {
          planned: { type: "integer" },
          connected: { type: "array", items: { type: "string" } },
          quorum: { type: "boolean" },
          missing: {
            type: "array",
            items: {
              type: "object",
              properties: {
                url: { type: "string" },
                kind: { enum: ["tls", "refused", "timeout", "unreachable", "dns", "other"] },
                error: { type: "string" },
              },
              required: ["url"],
            },
          },
          inbound: { type: "array", items: { type: "object" } },
        },
        required: ["planned", "connected", "quorum", "missing"],
      },
    },
    required: ["ok", "parts"],
  },
  node: {
    type: "object",
    properties: {
      monitorUrl: { type: "string" },
      reachable: { type: "boolean" },
      healthy: { type: "boolean" },
      health: { type: "string" },
      name: { type: "string" },
      serverId: { type: "string" },
      version: { type: "string" },
      ports: { type: "object", additionalProperties: { type: "integer" } },
      connections: { type: "integer" },
      jetstream: {
        type: "object",
        properties: {
          enabled: { type: "boolean" },
          streams: { type: "integer" },
          meta: {
            type: "object",
            properties: {
              cluster: { type: "string" },
              leader: { type: "string" },
              size: { type: "integer" },
              peers: { type: "array", items: REPLICA },
            },
          },
        },
      },
      kv: {
        type: "array",
        items: {
          type: "object",
          properties: {
            bucket: { type: "string" },
            stream: { type: "string" },
            replicas: { type: "integer" },
            leader: { type: "string" },
            followers: { type: "array", items: REPLICA },
            messages: { type: "integer" },
          },
          required: ["bucket", "stream", "replicas", "followers"],
        },
      },
    },
    required: ["monitorUrl", "reachable", "healthy", "health", "kv"],
  },
});

const SCHEMAS: Record<string, Schema> = {
  Error: strict({ error: { type: "string" }, message: { type: "string" } }),
  Room: strict(ROOM_FIELDS),
  RoomOfMine: strict({ ...ROOM_FIELDS, role: ROOM_ROLE }),
  Member: strict({ roomId: { type: "string" }, signPub: HEX64, role: ROOM_ROLE, addedAt: MS }),
  SealedKey: strict({
    roomId: { type: "string" },
    epoch: ROOM_FIELDS.epoch,
    signPub: HEX64,
    sealed: { type: "string", pattern: "^[A-Za-z0-9_-]+$" },
  }),
  User: strict({
    signPub: HEX64,
    kexPub: { oneOf: [HEX64, { type: "null" }] },
    handle: { type: "string" },
    role: ROLE,
    status: { enum: ["active", "revoked"] },
    createdAt: MS,
    revokedAt: { oneOf: [MS, { type: "null" }] },
  }),
  UserKeys: strict({
    signPub: HEX64,
    kexPub: { oneOf: [HEX64, { type: "null" }] },
    handle: { type: "string" },
    status: { enum: ["active", "revoked"] },
  }),
  Invite: strict({
    id: { type: "string", pattern: "^[0-9a-f]{12}$" },
    tokenHash: HEX64,
    handle: { type: "string" },
    role: ROLE,
    createdBy: { type: "string" },
    createdAt: MS,
    expiresAt: MS,
    status: { enum: ["open", "spent", "cancelled"] },
    spentBy: { oneOf: [HEX64, { type: "null" }] },
    spentAt: { oneOf: [MS, { type: "null" }] },
  }),
  CreatedInvite: strict({ token: HEX64, invite: ref("Invite"), caFingerprint: HEX64 }, ["token", "invite"]),
  Blob: strict({
    id: { type: "string", pattern: "^[0-9a-f]{32}$" },
    roomId: { type: "string" },
    size: { type: "integer", minimum: 0 },
    sha256: HEX64,
    mimetype: { type: "string" },
    createdAt: MS,
    expiresAt: MS,
  }),
  NodeReport: NODE_REPORT,
  OpenApi: { type: "object", description: "this document" },
};

interface RouteDoc {
  summary: string;
  status: number;
  /** Component schema of the answer; none for 204. */
  answer?: Schema;
  /** Refusals particular to the route (the common ones are added to every operation). */
  refusals: number[];
}

/** Answers and refusals per route name; docs/protocol.md §6 and §8 say when each refusal happens. */
export const ROUTE_DOCS: Readonly<Record<string, RouteDoc>> = {
  "rooms.create": {
    summary: "Create a room, owned by the caller",
    status: 201,
    answer: ref("Room"),
    refusals: [400, 403, 409, 507],
  },
  "rooms.get": { summary: "A room the caller is a member of", status: 200, answer: ref("Room"), refusals: [403] },
  "rooms.list": { summary: "Every room on the bus (admins only)", status: 200, answer: list("Room"), refusals: [403] },
  "rooms.members.list": {
    summary: "The room's current members (its members, or an admin)",
    status: 200,
    answer: list("Member"),
    refusals: [403, 404],
  },
  "rooms.members.add": {
    summary: "Add a member (the owner only)",
    status: 201,
    answer: ref("Member"),
    refusals: [400, 403, 404, 409],
  },
  "rooms.members.remove": { summary: "Remove a member, or leave", status: 204, refusals: [403, 404, 409] },
  "rooms.delete": {
    summary: "Delete a room with its history, keys and blobs (the owner or an admin)",
    status: 204,
    refusals: [403, 404],
  },
  "rooms.leave": {
    summary: "Leave a room (an encrypted one moves to the next epoch without you)",
    status: 204,
    refusals: [400, 403, 409],
  },
  "rooms.transfer": {
    summary: "Hand the room to another member (the owner or an admin)",
    status: 200,
    answer: ref("Room"),
    refusals: [400, 403, 404, 409],
  },
  "rooms.rekey": {
    summary: "Move the room to a new epoch",
    status: 200,
    answer: ref("Room"),
    refusals: [400, 403, 409],
  },
  "rooms.keys.get": {
    summary: "The caller's sealed room key",
    status: 200,
    answer: ref("SealedKey"),
    refusals: [400, 403],
  },
  "users.rooms": {
    summary: "The caller's rooms, with its role",
    status: 200,
    answer: list("RoomOfMine"),
    refusals: [403],
  },
  "users.get": { summary: "A user's public keys", status: 200, answer: ref("UserKeys"), refusals: [400, 404] },
  "users.kex.set": {
    summary: "Register the caller's own key-exchange key, once",
    status: 200,
    answer: ref("UserKeys"),
    refusals: [400, 403, 409],
  },
  "users.list": { summary: "Every user (admins only)", status: 200, answer: list("User"), refusals: [403] },
  "users.add": { summary: "Add a user (admins only)", status: 201, answer: ref("User"), refusals: [400, 403, 409] },
  "users.revoke": {
    summary: "Revoke a user (admins only)",
    status: 200,
    answer: ref("User"),
    refusals: [403, 404, 409],
  },
  "users.delete": {
    summary: "Delete a user (admins only); ?rooms=delete or ?rooms=transfer&to=<key> settles the rooms it owns",
    status: 204,
    refusals: [400, 403, 404, 409],
  },
  "invites.create": {
    summary: "Create an invite (admins only)",
    status: 201,
    answer: ref("CreatedInvite"),
    refusals: [400, 403, 409],
  },
  "invites.list": { summary: "Every invite (admins only)", status: 200, answer: list("Invite"), refusals: [403] },
  "invites.cancel": {
    summary: "Cancel an invite (admins only)",
    status: 200,
    answer: ref("Invite"),
    refusals: [400, 403, 404, 409],
  },
  status: {
    summary: "This node's health and replication (admins only)",
    status: 200,
    answer: ref("NodeReport"),
    refusals: [403, 503],
  },
  register: { summary: "Register with an invite token", status: 201, answer: ref("User"), refusals: [400, 401, 409] },
  openapi: { summary: "This document", status: 200, answer: ref("OpenApi"), refusals: [] },
  "blobs.put": { summary: "Upload a blob to a room", status: 201, answer: ref("Blob"), refusals: [400, 403, 413, 507] },
  "blobs.get": { summary: "Download a blob", status: 200, refusals: [403, 404] },
  "blobs.delete": { summary: "Delete a blob (its uploader or the room's owner)", status: 204, refusals: [403, 404] },
};

const PARAMETERS: Record<string, Schema> = {
  id: { type: "string", pattern: "^[A-Za-z0-9_-]{1,64}$" },
  signPub: { type: "string", pattern: "^[0-9a-fA-F]{64}$" },
  blobId: { type: "string", pattern: "^[0-9a-f]{32}$" },
  invite: { type: "string", pattern: "^([0-9a-fA-F]{12}|[0-9a-fA-F]{64})$" },
};

/** `/v1/rooms/:id` → `/v1/rooms/{id}`. */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z]+)/g, "{$1}");
}

function parameters(route: DescribedRoute): Schema[] {
  const names = [...route.path.matchAll(/:([A-Za-z]+)/g)].map((m) => m[1]!);
  const params: Schema[] = names.map((name) => ({
    name,
    in: "path",
    required: true,
    schema: route.path.startsWith("/v1/invites/") ? PARAMETERS.invite : PARAMETERS[name],
  }));
  if (route.name === "rooms.keys.get") {
    params.push({ name: "epoch", in: "query", required: false, schema: { type: "integer", minimum: 1 } });
  }
  return params;
}

function requestBody(route: DescribedRoute): Schema | undefined {
  if (route.name === "blobs.put") {
    return {
      required: true,
      description: "The blob's bytes (encrypted by the client in an encrypted room); content-type is its mimetype",
      content: { "*/*": { schema: {} } },
    };
  }
  if (!route.schema) return undefined;
  const required = (route.schema.required as unknown[] | undefined) ?? [];
  return { required: required.length > 0, content: { "application/json": { schema: route.schema } } };
}

function responses(route: DescribedRoute, doc: RouteDoc): Schema {
  const out: Schema = {};
  if (route.name === "blobs.get") {
    out[doc.status] = {
      description: "The blob's bytes",
      headers: { "x-unibus-content-sha256": { schema: HEX64 } },
      content: { "*/*": { schema: {} } },
    };
  } else {
    out[doc.status] = doc.answer
      ? { description: doc.summary, content: { "application/json": { schema: doc.answer } } }
      : { description: doc.summary };
  }
  const common = route.auth === "signed" ? [401, 429, 503] : [429, 503];
  for (const status of [...new Set([...doc.refusals, ...common])].sort((a, b) => a - b)) {
    out[status] = { $ref: "#/components/responses/Refusal" };
  }
  return out;
}

function operation(route: DescribedRoute): Schema {
  const doc = ROUTE_DOCS[route.name];
  if (!doc) throw new InvalidArgumentError("routes", `route ${route.name} has no answers in ROUTE_DOCS`);
  const body = requestBody(route);
  const params = parameters(route);
  return {
    operationId: route.name,
    summary: doc.summary,
    security: route.auth === "signed" ? [{ unibusSignature: [] }] : [],
    ...(params.length ? { parameters: params } : {}),
    ...(body ? { requestBody: body } : {}),
    responses: responses(route, doc),
  };
}

const documents = new WeakMap<readonly DescribedRoute[], Schema>();

/** The OpenAPI 3.1 document for `routes` (the JSON route table) and the blob routes. */
export function openApiDocument(routes: readonly DescribedRoute[]): Schema {
  const known = documents.get(routes);
  if (known) return known;
  const paths: Record<string, Record<string, Schema>> = {};
  for (const route of [...routes, ...BLOB_OPERATIONS]) {
    const path = openApiPath(route.path);
    paths[path] ??= {};
    paths[path][route.method.toLowerCase()] = operation(route);
  }
  const doc = {
    openapi: "3.1.0",
    info: {
      title: "unibus control plane",
      version: "1",
      description:
        "Signed HTTPS API of a unibus bus. Every operation with a security requirement is signed as docs/protocol.md §5 says; refusals are { error, message } with the codes of docs/protocol.md §4.2.",
    },
    paths,
    components: {
      schemas: SCHEMAS,
      responses: {
        Refusal: {
          description: "Refused: `error` is a stable code, `message` says why",
          content: { "application/json": { schema: ref("Error") } },
        },
      },
      securitySchemes: {
        unibusSignature: {
          type: "apiKey",
          in: "header",
          name: "x-unibus-signature",
          description:
            "Ed25519 signature over the canonical request (docs/protocol.md §5), sent with x-unibus-key, x-unibus-timestamp, x-unibus-nonce and x-unibus-content-sha256",
        },
      },
    },
  };
  documents.set(routes, doc);
  return doc;
}
