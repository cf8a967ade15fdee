import { startTestBus, type TestBusInfo } from "unibus/testing";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    unibus: TestBusInfo;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const testBus = await startTestBus();
  project.provide("unibus", testBus.info);
  return () => testBus.stop();
}
