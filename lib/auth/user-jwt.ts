/**
 * The callout's answer to an admission: an authorization-response JWT that carries the
 * user JWT, both signed by the issuer key. What costs is their size: a member of 1,000
 * rooms gets ~2,500 subjects (~140 KB of user JWT, ~185 KB of response once base64'd
 * again), and encoding both from scratch took ~10 ms of CPU per connect (seen: 3.5 ms
 * user JWT + 6 ms response on a loaded 2-core machine), all of it spent on text that is
 * the same on every connect of that identity.
 *
 * So the part that depends only on the permissions (and the limits, account and issuer)
 * is encoded once and kept, and each connect encodes only its own claims:
 * - the JSON puts those fixed claims first, the per-attempt ones (`sub` = the user nkey
 *   the server minted for this attempt, `name`, `iat`, `exp`, `jti`) after;
 * - base64url(A + B) = base64url(A) + base64url(B) when A's length is a multiple of 3,
 *   so the fixed part is padded to that with JSON whitespace and its base64 text kept;
 * - `jti` is the SHA-256 of the claims without it (as `encodeJwt` makes it): the hash
 *   state after the fixed part is kept and copied.
 * The Ed25519 signatures still cover every byte, so they are made per connect.
 *
 * The cache memoizes a pure function keyed by its entire input (the fixed claims'
 * JSON text, compared whole): it can never answer with permissions other than those it
 * is handed, so a membership change or a revocation needs no invalidation here — the
 * callout reads the store on every attempt and hands over what it found.
 */
import crypto, { type Hash } from "node:crypto";
import type { NKeyPair } from "../crypto/index.ts";
import { base32Encode } from "../crypto/nkeys.ts";
import type { SubjectPermissions } from "./permissions.ts";

const HEADER = Buffer.from(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" })).toString("base64url");

/** What one admitted connection's answer is made of. */
export interface UserJwtClaims {
  /** The user nkey the server minted for this attempt: `sub` of both JWTs. */
  userNkey: string;
  /** The requesting server's id: `aud` of the response. */
  serverId: string;
  /** The identity's handle, shown by the server's monitoring. */
  name: string;
  permissions: SubjectPermissions;
  /** Expiry of the user JWT, seconds since the epoch. */
  exp: number;
  /** Issued-at, seconds since the epoch (default now). */
  iat?: number;
}

/** The limits and placement written into every user JWT. */
export interface UserJwtSettings {
  issuer: NKeyPair;
  /** Target account of admitted users (`aud` of the user JWT). */
  account: string;
  subs: number;
  payload: number;
  /** Bytes of encoded text kept across identities; the least recently used go first. Default 32 MiB. */
  cacheBytes?: number;
}

interface Fixed {
  /** JSON of the fixed user claims, unpadded: the key, compared whole. */
  json: string;
  /** `HEADER.` + base64url of the padded fixed user claims. */
  userPrefix: Buffer;
  /** SHA-256 state after the padded fixed user claims. */
  userHash: Hash;
  /** `HEADER.` + base64url of the padded fixed response text (which ends inside the user JWT). */
  respPrefix: Buffer;
  /** SHA-256 state after the padded fixed response text. */
  respHash: Hash;
  bytes: number;
}

export const DEFAULT_USER_JWT_CACHE_BYTES = 32 * 1024 * 1024;

/** JSON whitespace that makes a UTF-8 length a multiple of 3 (base64 then splits at its end). */
const padTo3 = (bytes: number) => " ".repeat((3 - (bytes % 3)) % 3);

export class UserJwtEncoder {
  readonly #settings: Required<UserJwtSettings>;
  /** By identity, least recently used first. */
  readonly #cache = new Map<string, Fixed>();
  #cachedBytes = 0;

  constructor(settings: UserJwtSettings) {
    this.#settings = { cacheBytes: DEFAULT_USER_JWT_CACHE_BYTES, ...settings };
  }

  /** Bytes held by the cache now (for tests and metrics). */
  get cachedBytes(): number {
    return this.#cachedBytes;
  }

  /**
   * The authorization-response JWT admitting `claims.userNkey`, as the bytes to send.
   * `identity` only names the cache slot (the signing key's hex); what is encoded comes
   * from `claims` alone.
   */
  encode(identity: string, claims: UserJwtClaims): Buffer {
    const { issuer } = this.#settings;
    const fixed = this.#fixed(identity, claims.permissions);
    const iat = claims.iat ?? Math.floor(Date.now() / 1000);

    // The user JWT: fixed claims, then this attempt's.
    const userVar = `"sub":${JSON.stringify(claims.userNkey)},"name":${JSON.stringify(claims.name)},"iat":${iat},"exp":${claims.exp}`;
    const userJti = jti(fixed.userHash, `${userVar}}`);
    const userVarB64 = Buffer.from(`${userVar},"jti":"${userJti}"}`).toString("base64url");
    const userSigned = Buffer.concat([fixed.userPrefix, Buffer.from(userVarB64)]);
    const userSig = issuer.sign(userSigned).toString("base64url");

    // The response: its fixed text ends inside the user JWT's string, right after the
    // user JWT's fixed base64; the rest of the user JWT and this attempt's claims follow.
    const respVar =
      `${userVarB64}.${userSig}","type":"authorization_response","version":2},` +
      `"sub":${JSON.stringify(claims.userNkey)},"aud":${JSON.stringify(claims.serverId)},"iss":"${issuer.publicKey}","iat":${iat}`;
    const respJti = jti(fixed.respHash, `${respVar}}`);
    const respSigned = Buffer.concat([
      fixed.respPrefix,
      Buffer.from(Buffer.from(`${respVar},"jti":"${respJti}"}`).toString("base64url")),
    ]);
    const respSig = issuer.sign(respSigned).toString("base64url");
    return Buffer.concat([respSigned, Buffer.from(`.${respSig}`)]);
  }

  /** The encoded fixed part for these permissions: kept from the last connect of `identity` if they match. */
  #fixed(identity: string, permissions: SubjectPermissions): Fixed {
    const { issuer, account, subs, payload, cacheBytes } = this.#settings;
    const nats = {
      pub: permissions.pub,
      sub: permissions.sub,
      ...(permissions.resp ? { resp: permissions.resp } : {}),
      subs,
      data: -1,
      payload,
      type: "user",
      version: 2,
    };
    const json = `{"nats":${JSON.stringify(nats)},"aud":${JSON.stringify(account)},"iss":"${issuer.publicKey}",`;
    const hit = this.#cache.get(identity);
    if (hit && hit.json === json) {
      this.#cache.delete(identity); // most recently used last
      this.#cache.set(identity, hit);
      return hit;
    }
    const userFixed = json + padTo3(Buffer.byteLength(json));
    const userB64 = Buffer.from(userFixed).toString("base64url");
    const respHead = `{"nats":{"jwt":"${HEADER}.`;
    const respFixed = `{${padTo3(respHead.length + userB64.length)}${respHead.slice(1)}${userB64}`;
    const fixed: Fixed = {
      json,
      userPrefix: Buffer.from(`${HEADER}.${userB64}`),
      userHash: crypto.createHash("sha256").update(userFixed),
      respPrefix: Buffer.from(`${HEADER}.${Buffer.from(respFixed).toString("base64url")}`),
      respHash: crypto.createHash("sha256").update(respFixed),
      bytes: 0,
    };
    fixed.bytes = json.length + fixed.userPrefix.length + fixed.respPrefix.length;
    this.#forget(identity);
    if (fixed.bytes <= cacheBytes) {
      this.#cache.set(identity, fixed);
      this.#cachedBytes += fixed.bytes;
      for (const [id, old] of this.#cache) {
        if (this.#cachedBytes <= cacheBytes) break;
        this.#forget(id, old);
      }
    }
    return fixed;
  }

  #forget(identity: string, entry = this.#cache.get(identity)): void {
    if (!entry) return;
    this.#cache.delete(identity);
    this.#cachedBytes -= entry.bytes;
  }
}

/** `jti` as encodeJwt makes it: base32 of the SHA-256 of the claims JSON without `jti`. */
function jti(prefix: Hash, rest: string): string {
  return base32Encode(prefix.copy().update(rest).digest());
}
