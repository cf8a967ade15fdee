// The callout's answer encoded from a kept fixed part: the same claims as encoding from
// scratch, verified by our decoder and by @nats-io/jwt, and never stale.
import crypto from "node:crypto";
import { decode as jwtDecode } from "@nats-io/jwt";
import t from "tap";
import { permissionsFor, type RoomGrant } from "../../lib/auth/permissions.ts";
import { UserJwtEncoder } from "../../lib/auth/user-jwt.ts";
import { decodeJwt, NKeyPair } from "../../lib/crypto/index.ts";
import { base32Encode } from "../../lib/crypto/nkeys.ts";

const signPub = (n: number) => n.toString(16).padStart(64, "0");
const rooms = (n: number, from = 0): RoomGrant[] =>
  Array.from({ length: n }, (_, i) => {
    const id = (from + i).toString(16).padStart(24, "0");
    return { id, subject: `unibus.room.${id}`, persist: i % 2 === 0 };
  });

function setup(cacheBytes?: number) {
  const issuer = NKeyPair.random("account");
  const settings = { issuer, account: "APP", subs: 1000, payload: 1 << 20 };
  return { issuer, encoder: new UserJwtEncoder(cacheBytes === undefined ? settings : { ...settings, cacheBytes }) };
}

/** The response and the user JWT inside it, both verified against the issuer. */
function open(bytes: Buffer, issuer: NKeyPair) {
  const text = bytes.toString();
  const response = decodeJwt(text, "account");
  const userJwt = (response.nats as { jwt: string }).jwt;
  const user = decodeJwt(userJwt, "account");
  if (response.iss !== issuer.publicKey || user.iss !== issuer.publicKey) throw new Error("wrong issuer");
  return { text, response, userJwt, user };
}

/** jti is the SHA-256 of the claims' JSON without it, as encodeJwt makes it. */
function jtiHolds(jwt: string): boolean {
  const json = Buffer.from(jwt.split(".")[1]!, "base64url").toString();
  const m = /,"jti":"([A-Z2-7]+)"\}$/.exec(json);
  if (!m) return false;
  const without = `${json.slice(0, m.index)}}`;
  return base32Encode(crypto.createHash("sha256").update(without).digest()) === m[1];
}

const claims = (grants: RoomGrant[], extra: Partial<{ name: string; iat: number; who: number }> = {}) => ({
  userNkey: NKeyPair.random("user").publicKey,
  serverId: "NSERVERID",
  name: extra.name ?? "alice",
  permissions: permissionsFor(signPub(extra.who ?? 1), grants),
  exp: 2_000_000_000,
  iat: extra.iat ?? 1_900_000_000,
});

t.test("the answer holds exactly the claims the server needs, verified by both decoders", async (t) => {
  const { issuer, encoder } = setup();
  const c = claims(rooms(3));
  const { response, userJwt, user } = open(encoder.encode(signPub(1), c), issuer);
  t.equal(response.sub, c.userNkey, "response is for the attempt's user nkey");
  t.equal(response.aud, "NSERVERID", "response is for the asking server");
  t.equal(response.iat, c.iat);
  t.match(response.nats, { type: "authorization_response", version: 2 });
  t.equal(user.sub, c.userNkey, "user JWT is for the attempt's user nkey");
  t.equal(user.aud, "APP", "placed in the target account");
  t.equal(user.name, "alice");
  t.equal(user.exp, c.exp);
  t.equal(user.iat, c.iat);
  t.same(user.nats, {
    pub: c.permissions.pub,
    sub: c.permissions.sub,
    resp: c.permissions.resp,
    subs: 1000,
    data: -1,
    payload: 1 << 20,
    type: "user",
    version: 2,
  });
  t.ok(jtiHolds(userJwt), "user JWT jti is the hash of its claims");
  t.ok(jtiHolds(open(encoder.encode(signPub(1), c), issuer).text), "response jti is the hash of its claims");
  // the reference implementation (tweetnacl) agrees on the signatures and the JSON
  const theirs = jwtDecode(userJwt) as unknown as { nats: { pub: { allow: string[] } }; sub: string };
  t.same(theirs.nats.pub.allow, c.permissions.pub.allow);
  const theirResponse = jwtDecode(open(encoder.encode(signPub(1), c), issuer).text) as unknown as {
    nats: { jwt: string };
  };
  t.equal(theirResponse.nats.jwt, userJwt);
});

t.test("a kept fixed part gives the same bytes as a fresh encoder, at every base64 alignment", async (t) => {
  const { issuer, encoder } = setup();
  const fresh = () => new UserJwtEncoder({ issuer, account: "APP", subs: 1000, payload: 1 << 20 });
  // room counts and names that move both padded lengths through every residue mod 3
  for (const n of [0, 1, 2, 3, 4, 5, 7, 100, 1000]) {
    for (const name of ["a", "ab", "abc"]) {
      const c = claims(rooms(n), { name });
      const first = encoder.encode(signPub(n), c);
      const again = encoder.encode(signPub(n), c);
      t.same(again, first, `${n} rooms, name ${name}: cache hit gives the same bytes`);
      t.same(fresh().encode(signPub(n), c), first, `${n} rooms, name ${name}: same as a fresh encoder`);
      const { user } = open(first, issuer);
      t.same((user.nats as { pub: unknown }).pub, c.permissions.pub);
      t.equal(user.name, name);
    }
  }
});

t.test("the fixed part splits base64 at a byte boundary even with multi-byte characters in it", async (t) => {
  const { issuer } = setup();
  // the store admits only ASCII subjects; the encoder must not depend on that
  for (const account of ["APP", "ÄPP", "ÄÄPP", "名"]) {
    const encoder = new UserJwtEncoder({ issuer, account, subs: 1000, payload: 1 << 20 });
    const { user } = open(encoder.encode(signPub(1), claims(rooms(3))), issuer);
    t.equal(user.aud, account, `account ${account} comes back whole`);
  }
});

t.test("names that JSON must escape, and non-ASCII ones, come back as given", async (t) => {
  const { issuer, encoder } = setup();
  for (const name of ['quo"te', "back\\slash", "émile", "名前", "tab\there"]) {
    t.equal(open(encoder.encode(signPub(1), claims(rooms(2), { name })), issuer).user.name, name);
  }
});

t.test("a changed membership is in the very next answer (the cache is keyed by the permissions)", async (t) => {
  const { issuer, encoder } = setup();
  const who = signPub(1);
  const before = claims(rooms(50));
  t.same((open(encoder.encode(who, before), issuer).user.nats as { sub: { allow: string[] } }).sub.allow.length, 51);
  // removed from the last room: its subject is gone at once
  const fewer = claims(rooms(49));
  const lost = rooms(50)[49]!.subject;
  const after = open(encoder.encode(who, fewer), issuer).user.nats as {
    sub: { allow: string[] };
    pub: { allow: string[] };
  };
  t.notOk(after.sub.allow.includes(lost), "no subscribe on the room it left");
  t.notOk(after.pub.allow.includes(lost), "no publish on the room it left");
  // added to another: present at once
  const more = claims([...rooms(49), ...rooms(1, 5000)]);
  const gained = rooms(1, 5000)[0]!.subject;
  t.ok((open(encoder.encode(who, more), issuer).user.nats as { sub: { allow: string[] } }).sub.allow.includes(gained));
  // another identity with other rooms never gets the first one's
  const other = open(encoder.encode(signPub(2), claims(rooms(1, 9000), { who: 2 })), issuer).user.nats as {
    sub: { allow: string[] };
  };
  t.same(other.sub.allow, [`_INBOX.${signPub(2)}.>`, rooms(1, 9000)[0]!.subject]);
});

t.test("the cache stays within its byte budget; what does not fit is encoded all the same", async (t) => {
  const { issuer, encoder } = setup(200_000);
  for (let i = 0; i < 20; i++) encoder.encode(signPub(i), claims(rooms(100, i * 100), { who: i }));
  t.ok(encoder.cachedBytes > 0, "something is kept");
  t.ok(encoder.cachedBytes <= 200_000, `kept ${encoder.cachedBytes} bytes of 200,000`);
  const big = claims(rooms(1000), { who: 99 });
  const { user } = open(encoder.encode(signPub(99), big), issuer);
  t.equal(
    (user.nats as { sub: { allow: string[] } }).sub.allow.length,
    1001,
    "an answer too big to keep is still whole",
  );
  t.ok(encoder.cachedBytes <= 200_000);
});

t.test("tampering with any part of the answer fails verification", async (t) => {
  const { issuer, encoder } = setup();
  const text = encoder.encode(signPub(1), claims(rooms(10))).toString();
  const [h, b, s] = text.split(".") as [string, string, string];
  const json = Buffer.from(b, "base64url").toString().replace("NSERVERID", "NOTHERSRV");
  t.throws(() => decodeJwt(`${h}.${Buffer.from(json).toString("base64url")}.${s}`, "account"), { code: "JWT" });
  // a user JWT lifted into a response signed by someone else
  const other = NKeyPair.random("account");
  const forged = new UserJwtEncoder({ issuer: other, account: "APP", subs: 1000, payload: 1 << 20 });
  const { response } = open(forged.encode(signPub(1), claims(rooms(1))), other);
  t.not(response.iss, issuer.publicKey, "a stranger's answer names the stranger, which the server refuses");
});
