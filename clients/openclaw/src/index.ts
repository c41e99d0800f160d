/**
 * OpenClaw plugin: an agent's own Vestige memory as tools, through its vestige-bridge.
 *
 * Each tool is registered as a factory, so the agent id comes from the runtime tool context
 * (`ctx.agentId`) of the agent that uses it; `config.agentId` overrides it. The id is sent as
 * `X-Agent-Id`, and a bridge serving another agent answers 403.
 */

import { readFileSync } from "node:fs";

import { buildJsonPluginConfigSchema, definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";
import type { AnyAgentTool, OpenClawPluginApi, OpenClawPluginToolContext } from "openclaw/plugin-sdk/plugin-entry";

import { callBridge, VestigeToolError } from "./bridge.js";
import { ConfigError, resolveConfig, type VestigeConfig } from "./config.js";
import { resultText, TOOL_SPECS, type ToolSpec } from "./tools.js";

/** The package's manifest (one directory above dist/): identity and config schema in one place. */
export const manifest = JSON.parse(
  readFileSync(new URL("../openclaw.plugin.json", import.meta.url), "utf8"),
) as {
  id: string;
  name: string;
  description: string;
  configSchema: Record<string, unknown>;
  contracts: { tools: string[] };
};

export { TOOL_NAMES } from "./tools.js";
export { VestigeToolError } from "./bridge.js";

/** What `details` carries for a successful call (UI and logs; no token). */
export interface VestigeDetails {
  tool: string;
  endpoint: string;
  agentId: string | null;
  content: unknown[];
  structuredContent?: unknown;
}

/** The agent id to send: the config override, else the runtime context's; none if neither. */
export function effectiveAgentId(config: VestigeConfig, ctx: OpenClawPluginToolContext): string | undefined {
  const fromContext = typeof ctx.agentId === "string" && ctx.agentId.trim() ? ctx.agentId.trim() : undefined;
  return config.agentId ?? fromContext;
}

/** One concrete tool for one runtime context. */
export function createTool(
  spec: ToolSpec,
  getConfig: () => VestigeConfig,
  ctx: OpenClawPluginToolContext,
): AnyAgentTool {
  return {
    name: spec.name,
    label: spec.label,
    description: spec.description,
    parameters: spec.parameters,
    async execute(_toolCallId: string, params: unknown, signal?: AbortSignal) {
      let config: VestigeConfig;
      try {
        config = getConfig();
      } catch (error) {
        if (error instanceof ConfigError) throw new VestigeToolError(error.message, 0, "config");
        throw error;
      }
      const agentId = effectiveAgentId(config, ctx);
      const body = spec.body((params ?? {}) as never);
      const result = await callBridge(config, spec.endpoint, body, { agentId, signal });
      const details: VestigeDetails = {
        tool: spec.name,
        endpoint: spec.endpoint,
        agentId: agentId ?? null,
        content: result.content,
        ...(result.structuredContent !== undefined ? { structuredContent: result.structuredContent } : {}),
      };
      return { content: [{ type: "text" as const, text: resultText(result) }], details };
    },
  };
}

/** Register every tool as a factory (the runtime context supplies the agent id). */
export function registerVestigeTools(api: OpenClawPluginApi): void {
  // Read lazily: a missing or bad config becomes a clear tool error, not a failed plugin load.
  let cached: VestigeConfig | undefined;
  const getConfig = (): VestigeConfig => (cached ??= resolveConfig(api.pluginConfig));
  for (const spec of TOOL_SPECS) {
    api.registerTool((ctx: OpenClawPluginToolContext) => createTool(spec, getConfig, ctx), { name: spec.name });
  }
}

export default definePluginEntry({
  id: manifest.id,
  name: manifest.name,
  description: manifest.description,
  configSchema: () => buildJsonPluginConfigSchema(manifest.configSchema),
  register: registerVestigeTools,
});
