// The OpenAPI document against the route tables it is built from, so it cannot drift:
// every route is in it with its method, path, authentication and request schema, and
// nothing else is; and a live bus serves it and answers in the shapes it describes.
import { Ajv } from "ajv";
import t from "tap";
import { matchBlobRoute } from "../../lib/control/blob-routes.ts";
import { BLOB_OPERATIONS, openApiDocument, openApiPath, ROUTE_DOCS } from "../../lib/control/openapi.ts";
import { ROUTES } from "../../lib/control/routes.ts";
import { newRoomKey } from "../../lib/crypto/room-key.ts";
import { sealRoomKey } from "../../lib/crypto/seal.ts";
import { api, member, testBus } from "../helpers/bus.ts";

type Operation = {
  operationId: string;
  security: unknown[];
  parameters?: Array<{ name: string; in: string }>;
  requestBody?: { content: Record<string, { schema: unknown }> };
  responses: Record<string, unknown>;
};
type Doc = { openapi: string; paths: Record<string, Record<string, Operation>>; components: Record<string, unknown> };

const doc = openApiDocument(ROUTES) as unknown as Doc;
const operations = Object.entries(doc.paths).flatMap(([path, methods]) =>
  Object.entries(methods).map(([method, op]) => ({ key: `${method.toUpperCase()} ${path}`, op })),
);
const opFor = (method: string, path: string) => doc.paths[openApiPath(path)]?.[method.toLowerCase()];

t.test("the document holds exactly the routes of the tables, nothing else", async (t) => {
  t.equal(doc.openapi, "3.1.0");
  const expected = [...ROUTES, ...BLOB_OPERATIONS].map((r) => `${r.method} ${openApiPath(r.path)}`);
  t.same(operations.map((o) => o.key).sort(), [...expected].sort());
  t.equal(new Set(expected).size, expected.length, "no route twice");
  t.same(Object.keys(ROUTE_DOCS).sort(), [...ROUTES, ...BLOB_OPERATIONS].map((r) => r.name).sort());
});

t.test("each JSON route: its name, authentication and the very schema that validates its body", async (t) => {
  for (const route of ROUTES) {
    const op = opFor(route.method, route.path)!;
    t.equal(op.operationId, route.name);
    t.same(op.security, route.auth === "signed" ? [{ unibusSignature: [] }] : [], `${route.name}: security`);
    if (route.schema) {
      t.equal(op.requestBody?.content["application/json"]?.schema, route.schema, `${route.name}: same schema object`);
    } else {
      t.equal(op.requestBody, undefined, `${route.name}: no body`);
    }
    const pathParams = [...route.path.matchAll(/:([A-Za-z]+)/g)].map((m) => m[1]);
    t.same(
      (op.parameters ?? []).filter((p) => p.in === "path").map((p) => p.name),
      pathParams,
      `${route.name}: path parameters`,
    );
  }
  t.ok(
    ROUTES.some((r) => r.method === "GET" && r.path === "/v1/openapi.json" && r.auth === "none"),
    "the document is a route of the table, unauthenticated",
  );
});

t.test("each blob operation is what the blob router routes", async (t) => {
  const concrete = (path: string) =>
    path.replace(":id", "5f1c0e2a9b7d4c3e8a6f0b12").replace(":blobId", "0123456789abcdef0123456789abcdef");
  for (const blob of BLOB_OPERATIONS) {
    const op = opFor(blob.method, blob.path)!;
    t.equal(op.operationId, blob.name);
    t.equal(matchBlobRoute(blob.method, concrete(blob.path))?.name, blob.name, `${blob.name} is routed`);
  }
  // and the router knows no other blob route
  for (const method of ["GET", "PUT", "POST", "DELETE", "PATCH"]) {
    for (const path of ["/v1/rooms/:id/blobs", "/v1/rooms/:id/blobs/:blobId"]) {
      const m = matchBlobRoute(method, concrete(path));
      const documented = BLOB_OPERATIONS.some((b) => b.method === method && b.path === path);
      t.equal(m?.name !== "blobs.method_not_allowed", documented, `${method} ${path}`);
    }
  }
});

t.test("every schema compiles and every reference resolves", async (t) => {
  const ajv = new Ajv({ strict: false });
  ajv.addSchema(doc, "openapi");
  const text = JSON.stringify(doc);
  for (const [, name] of text.matchAll(/"\$ref":"#\/components\/(?:schemas|responses)\/([A-Za-z]+)"/g)) {
    t.ok(
      (doc.components.schemas as Record<string, unknown>)[name!] ??
        (doc.components.responses as Record<string, unknown>)[name!],
      `${name} exists`,
    );
  }
  for (const route of ROUTES) if (route.schema) t.ok(ajv.compile(route.schema), `${route.name}: compiles`);
});

t.test("a bus serves the document unsigned, and answers in the shapes it describes", async (t) => {
  const bus = await testBus(t);
  const alice = await member(bus, "alice", "admin");
  const control = api(t, bus, alice);
  const served = await control.request("GET", "/v1/openapi.json", undefined, { signed: false });
  t.same(served, JSON.parse(JSON.stringify(doc)), "served as built");

  const ajv = new Ajv({ strict: false });
  ajv.addSchema(doc, "openapi");
  const check = (schema: string, value: unknown) => {
    const validate = ajv.compile({ $ref: `openapi#/components/schemas/${schema}` });
    t.ok(validate(value), `${schema}: ${JSON.stringify(validate.errors ?? [])}`);
  };
  const id = "5f1c0e2a9b7d4c3e8a6f0b12";
  const ownerSealedKey = sealRoomKey({ roomKey: newRoomKey(), recipientKexPub: alice.kexPub, roomId: id, epoch: 1 });
  check("Room", await control.request("POST", "/v1/rooms", { id, ownerSealedKey }));
  for (const m of await control.request<unknown[]>("GET", `/v1/rooms/${id}/members`)) check("Member", m);
  check("SealedKey", await control.request("GET", `/v1/rooms/${id}/keys/${alice.signPub}?epoch=1`));
  for (const r of await control.request<unknown[]>("GET", `/v1/users/${alice.signPub}/rooms`)) check("RoomOfMine", r);
  check("UserKeys", await control.request("GET", `/v1/users/${alice.signPub}`));
  for (const u of await control.request<unknown[]>("GET", "/v1/users")) check("User", u);
  check("CreatedInvite", await control.request("POST", "/v1/invites", { handle: "bob" }));
  const refused = await control.request("GET", "/v1/rooms/nope").catch((err: unknown) => err);
  t.match(refused, { status: 403, code: "FORBIDDEN" });
});
