// The fast path of a signed request without a body (most GETs and DELETEs): the server
// neither waits for nor hashes a body that cannot exist, and takes the empty body's hash
// as a constant. Sent byte for byte over one TLS connection, on a real bus, as an
// attacker would: the declared hash must still match what was (not) sent, a replay is
// still refused, a tampered header still breaks the signature, and a removed member is
// refused on the very next request — nothing the fast path skips is a check.
import tls from "node:tls";
import t, { type Test } from "tap";
import type { Unibus } from "../../lib/bus/unibus.ts";
import { signRequest } from "../../lib/crypto/canonical.ts";
import type { Identity } from "../../lib/crypto/identity.ts";
import { api, member, testBus } from "../helpers/bus.ts";

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

/** One request as written on the wire: request line, headers, optional body. */
function wire(method: string, uri: string, headers: Record<string, string>, body = ""): string {
  const lines = [
    `${method} ${uri} HTTP/1.1`,
    "host: control",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  return `${lines.join("\r\n")}\r\n\r\n${body}`;
}

/**
 * Sends `requests` one after the other on one kept-alive TLS connection (each written
 * once the previous answer is in) and returns every answer: what a client pool does.
 */
async function onOneConnection(bus: Unibus, requests: string[]): Promise<Answer[]> {
  const url = new URL(bus.controlUrl);
  const socket = tls.connect({ host: url.hostname, port: Number(url.port), ca: bus.caPem });
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", resolve);
    socket.once("error", reject);
  });
  let buffered = Buffer.alloc(0);
  const answers: Answer[] = [];
  try {
    for (const request of requests) {
      socket.write(request);
      answers.push(await nextAnswer());
    }
  } finally {
    socket.destroy();
  }
  return answers;

  function nextAnswer(): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const tryParse = () => {
        const end = buffered.indexOf("\r\n\r\n");
        if (end < 0) return false;
        const [statusLine, ...headerLines] = buffered.subarray(0, end).toString("latin1").split("\r\n");
        const headers = Object.fromEntries(
          headerLines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]),
        );
        const length = Number(headers["content-length"] ?? 0);
        if (buffered.length < end + 4 + length) return false;
        const body = buffered.subarray(end + 4, end + 4 + length).toString("utf8");
        buffered = buffered.subarray(end + 4 + length);
        resolve({ status: Number(statusLine!.split(" ")[1]), headers, body: body ? JSON.parse(body) : {} });
        return true;
      };
      if (tryParse()) return;
      const onData = (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (tryParse()) cleanup();
      };
      const onEnd = () => {
        cleanup();
        reject(new Error("the server closed the connection before answering"));
      };
      const cleanup = () => {
        socket.off("data", onData);
        socket.off("end", onEnd);
        socket.off("error", onEnd);
      };
      socket.on("data", onData);
      socket.on("end", onEnd);
      socket.on("error", onEnd);
    });
  }
}

/** A GET signed now by `id`, as the bytes to send. */
function signedGet(id: Identity, uri: string, extra: Record<string, string> = {}): string {
  return wire("GET", uri, { ...signRequest(id, { method: "GET", uri }), ...extra });
}

async function setup(t: Test) {
  const bus = await testBus(t);
  const alice = await member(bus, "alice");
  const bob = await member(bus, "bob");
  const room = await api(t, bus, alice).request<Record<string, unknown> & { id: string }>("POST", "/v1/rooms", {
    encrypt: false,
  });
  await api(t, bus, alice).request("POST", `/v1/rooms/${room.id}/members`, { signPub: bob.signPub, epoch: 1 });
  return { bus, alice, bob, room, uri: `/v1/rooms/${room.id}` };
}

t.test("bodiless signed GETs: the room, again and again on one kept-alive connection", async (t) => {
  const { bus, alice, room, uri } = await setup(t);
  const stored = await bus.store.getRoom(room.id);
  const answers = await onOneConnection(bus, [
    signedGet(alice, uri),
    signedGet(alice, uri),
    // Content-Length: 0 is a declared (empty) body: the ordinary path, same answer.
    signedGet(alice, uri, { "content-length": "0" }),
    signedGet(alice, uri),
    // A body after bodiless requests on the same connection is still read whole.
    wire(
      "POST",
      "/v1/rooms",
      {
        ...signRequest(alice, { method: "POST", uri: "/v1/rooms", body: '{"encrypt":false}' }),
        "content-type": "application/json",
        "content-length": "17",
      },
      '{"encrypt":false}',
    ),
    signedGet(alice, uri),
  ]);
  t.same(
    answers.map((a) => a.status),
    [200, 200, 200, 200, 201, 200],
  );
  for (const i of [0, 1, 2, 3, 5]) t.same(answers[i]!.body, stored, `answer ${i} is the stored room, field for field`);
  t.equal(answers[0]!.headers["content-type"], "application/json");
  t.match(answers[4]!.body, { id: String, encrypt: false }, "the POST's body was read on the same connection");
  t.not(answers[4]!.body.id, room.id);
});

t.test("a bodiless request must declare the empty body's hash", async (t) => {
  const { bus, alice, uri } = await setup(t);
  // Signed over a body it then does not send: the signature verifies, the body does not.
  const claimsBody = wire("GET", uri, signRequest(alice, { method: "GET", uri, body: "{}" }));
  // The reverse: signed as bodiless, then a body is sent with it.
  const smuggles = wire(
    "GET",
    uri,
    { ...signRequest(alice, { method: "GET", uri }), "content-type": "application/json", "content-length": "2" },
    "{}",
  );
  const answers = await onOneConnection(bus, [claimsBody, smuggles, signedGet(alice, uri)]);
  t.same(
    answers.map((a) => [a.status, a.body.error]),
    [
      [401, "auth_body_mismatch"],
      [401, "auth_body_mismatch"],
      [200, undefined],
    ],
  );
});

t.test("an attacker replaying or tampering with a bodiless request is refused", async (t) => {
  const { bus, alice, bob, uri } = await setup(t);
  const passed = signedGet(alice, uri);
  const headers = signRequest(alice, { method: "GET", uri });
  const tampered = (name: string, value: string) => wire("GET", uri, { ...headers, [name]: value });
  const answers = await onOneConnection(bus, [
    passed,
    passed,
    tampered("x-unibus-timestamp", String(Number(headers["x-unibus-timestamp"]) + 1)),
    // Another last character, whatever it was (one nonce in 64 ends in "A").
    tampered(
      "x-unibus-nonce",
      `${headers["x-unibus-nonce"].slice(0, -1)}${headers["x-unibus-nonce"].endsWith("A") ? "B" : "A"}`,
    ),
    tampered("x-unibus-key", bob.signPub),
    wire("GET", `${uri}?x=1`, headers),
    wire("DELETE", uri, headers),
  ]);
  t.same(
    answers.map((a) => [a.status, a.body.error]),
    [
      [200, undefined],
      [401, "auth_replayed"],
      [401, "auth_bad_signature"],
      [401, "auth_bad_signature"],
      [401, "auth_bad_signature"],
      [401, "auth_bad_signature"],
      [401, "auth_bad_signature"],
    ],
  );
});

t.test("rights are read per request: a removed member and a revoked key are refused at once", async (t) => {
  const { bus, alice, bob, room, uri } = await setup(t);
  const admin = await member(bus, "root", "admin");
  const [before] = await onOneConnection(bus, [signedGet(bob, uri)]);
  t.equal(before!.status, 200, "bob reads the room");
  await api(t, bus, alice).request("DELETE", `/v1/rooms/${room.id}/members/${bob.signPub}`);
  const [removed] = await onOneConnection(bus, [signedGet(bob, uri)]);
  t.same([removed!.status, removed!.body.error], [403, "forbidden"], "removed: the next request is refused");
  const [still] = await onOneConnection(bus, [signedGet(alice, uri)]);
  t.equal(still!.status, 200, "the owner still reads it");
  await api(t, bus, admin).request("POST", `/v1/users/${alice.signPub}/revoke`);
  const [revoked] = await onOneConnection(bus, [signedGet(alice, uri)]);
  t.same([revoked!.status, revoked!.body.error], [401, "auth_not_authorized"], "revoked: refused before the room");
});
