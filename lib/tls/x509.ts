import { webcrypto } from "node:crypto";
import type * as X509 from "@peculiar/x509";

/*
 * @peculiar/x509 wires its algorithms with tsyringe, which refuses to load unless a
 * Reflect metadata API exists (normally the `reflect-metadata` package). Its classes
 * take no constructor parameters, so the three calls tsyringe makes only need to
 * store and return what was defined. An application that already loaded a real
 * polyfill keeps it.
 */
type MetadataReflect = {
  getMetadata?: (key: unknown, target: object) => unknown;
  getOwnMetadata?: (key: unknown, target: object) => unknown;
  defineMetadata?: (key: unknown, value: unknown, target: object) => void;
};
const reflect = Reflect as unknown as MetadataReflect;
if (typeof reflect.getMetadata !== "function") {
  const store = new WeakMap<object, Map<unknown, unknown>>();
  reflect.defineMetadata = (key, value, target) => {
    let own = store.get(target);
    if (!own) {
      own = new Map();
      store.set(target, own);
    }
    own.set(key, value);
  };
  reflect.getOwnMetadata = (key, target) => store.get(target)?.get(key);
  reflect.getMetadata = (key, target) => {
    for (let o: object | null = target; o; o = Object.getPrototypeOf(o)) {
      const own = store.get(o);
      if (own?.has(key)) return own.get(key);
    }
    return undefined;
  };
}

// A dynamic import, so the shim above is guaranteed to run first whatever order a
// formatter gives the static imports.
export const x509: typeof X509 = await import("@peculiar/x509");
x509.cryptoProvider.set(webcrypto);
