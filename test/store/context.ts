import crypto from "node:crypto";
import type { Test } from "tap";
import type { Invite, NewRoom, NewUser, Room, Store, User } from "../../lib/store/index.ts";
import { kexPubHex, signPubHex } from "./keys.ts";

/** What the parts of the shared suite get from the backend under test. */
export interface SuiteContext {
  /** A fresh, empty store, closed when `tt` ends. */
  fresh(tt: Test): Promise<Store>;
  /**
   * Another store on the same state as `store` (a second process's view), closed when
   * `tt` ends; undefined when the backend cannot have one.
   */
  sibling?: (tt: Test, store: Store) => Promise<Store>;
  /** Writes invite records as they are, for scale tests; undefined: use createInvite. */
  seedInvites?: (store: Store, invites: Invite[]) => Promise<void>;
}

export function newUser(handle: string, extra: Partial<NewUser> = {}): NewUser {
  return { signPub: signPubHex(), kexPub: kexPubHex(), handle, role: "member", ...extra };
}

/** A stand-in for a sealed room key: opaque base64url of a realistic size. */
export function sealed(): string {
  return crypto.randomBytes(92).toString("base64url");
}

let rooms = 0;
export function roomInput(owner: User | string, extra: Partial<NewRoom> = {}): NewRoom {
  const n = `${process.pid}-${++rooms}-${crypto.randomBytes(3).toString("hex")}`;
  return {
    id: `r${n}`,
    subject: `room.r${n}`,
    ownerSignPub: typeof owner === "string" ? owner : owner.signPub,
    encrypt: true,
    persist: false,
    signMsgs: false,
    ownerSealedKey: sealed(),
    ...extra,
  };
}

/** Runs `call`, which must be refused; returns the error. */
export async function refusal(call: () => Promise<unknown>): Promise<unknown> {
  return call().then(
    (value) => {
      throw new Error(`expected a refusal, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
}

/**
 * Asserts that `call` is refused with an error of class `type` matching `shape`, and
 * that the whole state is exactly as before — a refused call writes nothing.
 */
export async function refuses(
  t: Test,
  s: Store,
  label: string,
  call: () => Promise<unknown>,
  // biome-ignore lint/suspicious/noExplicitAny: any error class
  type: new (...args: any[]) => Error,
  shape: Record<string, unknown> = {},
): Promise<Error> {
  const before = await s.snapshot();
  const err = await call().then(
    (value) => ({ value }),
    (error: unknown) => error,
  );
  t.type(err, type, label);
  if (Object.keys(shape).length > 0) t.match(err, shape, `${label}: details`);
  t.same(await s.snapshot(), before, `${label}: nothing written`);
  return err as Error;
}

/** A store with three active users with kex keys, alice owning one encrypted room. */
export async function withRoom(
  s: Store,
  extra: Partial<NewRoom> = {},
): Promise<{ alice: User; bob: User; carol: User; room: Room }> {
  const alice = await s.addUser(newUser("alice", { role: "admin" }));
  const bob = await s.addUser(newUser("bob"));
  const carol = await s.addUser(newUser("carol"));
  const room = await s.createRoom(roomInput(alice, extra));
  return { alice, bob, carol, room };
}
