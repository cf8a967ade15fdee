import { startTestBus } from "unibus/testing";

export default async function globalSetup() {
  const testBus = await startTestBus();
  // globalTeardown runs in this same context; test workers are started after this and
  // inherit the environment, which carries the bus' info to them.
  globalThis.__UNIBUS__ = testBus;
  process.env.UNIBUS_TEST_INFO = JSON.stringify(testBus.info);
}
