/**
 * The CLI's side of the settings table (lib/config/schema.ts): flags generated from it,
 * and every command's settings read back through the one resolver, so a value given as
 * a flag, a `UNIBUS_*` variable or a config-file key means the same everywhere.
 */
import type { Command } from "commander";
import {
  flagName,
  type ResolvedConfig,
  resolveConfig,
  SETTINGS,
  type Setting,
  type SettingKey,
} from "../config/index.ts";
import { collect } from "./output.ts";

const ALL_KEYS = Object.keys(SETTINGS) as SettingKey[];

/** `--config <file>`, which every command reading settings accepts. */
export function configOption(cmd: Command): Command {
  return cmd.option("--config <file>", "read settings from this JSON file instead of ./unibus.config.json");
}

/** commander's name for a setting's value: `--cluster-port` → clusterPort, `--route` → route, `--cors-origin` → corsOrigin. */
function attributeOf(key: SettingKey): string {
  const flag = (SETTINGS[key] as Setting).flag;
  return flag ? flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()) : key;
}

/** One flag per setting, spelled, described and (a list) repeatable as the table says. */
export function settingOptions(cmd: Command, keys: readonly SettingKey[] = ALL_KEYS): Command {
  for (const key of keys) {
    const s: Setting = SETTINGS[key];
    const names = `${s.short ? `-${s.short}, ` : ""}${flagName(key)}`;
    if (s.type === "boolean") cmd.option(names, s.description);
    else if (s.type === "string[]") cmd.option(`${names} <${s.arg ?? "value"}>`, s.description, collect);
    else cmd.option(`${names} <${s.arg ?? "value"}>`, s.description);
  }
  return cmd;
}

/**
 * The settings as `cmd` resolves them: the setting flags given on its command line (not
 * commander's defaults) over `UNIBUS_*` variables over `--config` (or the default file)
 * over the table's defaults.
 */
export function resolveCommandConfig(cmd: Command): ResolvedConfig {
  const flags: Record<string, unknown> = {};
  for (const key of ALL_KEYS) {
    const attribute = attributeOf(key);
    if (cmd.getOptionValueSource(attribute) === "cli") flags[key] = cmd.getOptionValue(attribute);
  }
  const file = cmd.getOptionValue("config") as string | undefined;
  return resolveConfig({ flags, ...(file ? { configFile: file } : {}) });
}
