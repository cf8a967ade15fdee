import "reflect-metadata";
import { webcrypto } from "node:crypto";
import type * as X509 from "@peculiar/x509";

// @peculiar/x509 wires its algorithms with tsyringe, which refuses to load unless the
// Reflect metadata API exists; `reflect-metadata` is the polyfill it is written for.
// A dynamic import keeps that order whatever order a formatter gives the imports.
export const x509: typeof X509 = await import("@peculiar/x509");
x509.cryptoProvider.set(webcrypto);
