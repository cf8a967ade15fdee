import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // One bus for the whole run; every test file reaches it through inject("unibus").
    globalSetup: ["./global-setup.ts"],
    testTimeout: 30_000,
  },
});
