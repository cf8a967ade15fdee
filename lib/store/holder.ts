/**
 * A Store that is not open yet. The KV store can only open once nats-server (and, in a
 * cluster, JetStream's meta group) is up, but the auth callout and the control plane
 * start before that and must hold *a* store. Until `set()` every call is refused with
 * `StoreUnavailableError` — the callout denies, the control plane answers 503 — so
 * nothing is ever admitted against a store that cannot answer.
 */
import { StoreUnavailableError } from "../errors.ts";
import type { Store, StoreBackend } from "./types.ts";

export interface StoreHolder {
  /** The store to hand out: refuses until `set()`, then forwards to the real one. */
  readonly store: Store;
  /** The real store, once set. */
  readonly current: Store | undefined;
  /** Installs the opened store; a holder closed meanwhile closes it instead. */
  set(store: Store): Promise<void>;
}

export function createStoreHolder(backend: StoreBackend): StoreHolder {
  let current: Store | undefined;
  let closed = false;
  // The real store's methods, bound once per store rather than on every call (the
  // control plane makes two or three store calls per request).
  let bound = new Map<PropertyKey, unknown>();
  const refuse = () =>
    Promise.reject(
      new StoreUnavailableError(
        closed ? "the store is closed" : "the store is still opening (waiting for NATS JetStream); try again shortly",
      ),
    );
  const store = new Proxy({} as Store, {
    get(_target, prop) {
      if (prop === "backend") return backend;
      if (prop === "close") {
        return async () => {
          closed = true;
          const s = current;
          current = undefined;
          bound = new Map();
          await s?.close();
        };
      }
      if (prop === "then") return undefined; // not a thenable: `await holder.store` must not call into it
      if (current) {
        const hit = bound.get(prop);
        if (hit !== undefined) return hit;
        const value = Reflect.get(current, prop);
        if (typeof value !== "function") return value;
        const method = value.bind(current);
        bound.set(prop, method);
        return method;
      }
      return typeof prop === "string" ? refuse : undefined;
    },
  });
  return {
    store,
    get current() {
      return current;
    },
    async set(s) {
      if (closed) {
        await s.close();
        return;
      }
      current = s;
      bound = new Map();
    },
  };
}
