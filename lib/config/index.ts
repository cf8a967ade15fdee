export type { ConfigSource, ResolveConfigOptions, ResolvedConfig } from "./resolve.ts";
export { describeConfig, resolveConfig } from "./resolve.ts";
export type { Setting, SettingKey, UnibusConfig } from "./schema.ts";
export { envName, flagName, SETTINGS } from "./schema.ts";
