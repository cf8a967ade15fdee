// unibus is an ES module package: jest runs it natively (no transform) under
// --experimental-vm-modules, which the test script passes.
export default {
  testEnvironment: "node",
  transform: {},
  globalSetup: "./global-setup.js",
  globalTeardown: "./global-teardown.js",
  testTimeout: 30_000,
};
