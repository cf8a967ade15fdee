import fs from "node:fs";

/**
 * The version in unibus' own package.json, found from this module's location: one
 * level up from lib/ in a checkout and from dist/ in an installed package,
 * wherever the command runs from. "unknown" when it cannot be read, so a damaged
 * install still runs its commands.
 */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8")) as unknown;
    const version = (pkg as { version?: unknown } | null)?.version;
    return typeof version === "string" && version !== "" ? version : "unknown";
  } catch {
    return "unknown";
  }
}
