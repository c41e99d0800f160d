/**
 * Plugin configuration (`plugins.entries.vestige.config`).
 *
 * OpenClaw validates the config against the manifest's `configSchema` before the plugin loads;
 * this module reads the same keys again so a host that skipped validation still gets a clear
 * message instead of a request to `undefined/search`.
 */

export const DEFAULT_TIMEOUT_MS = 30_000;
const MIN_TIMEOUT_MS = 1_000;
const MAX_TIMEOUT_MS = 600_000;
/** The bridge's own rule for an agent name (a Kubernetes DNS label). */
export const AGENT_ID_PATTERN = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export interface VestigeConfig {
  /** Base URL of the agent's bridge, without trailing slashes. */
  serverUrl: string;
  /** Bearer token for the bridge (the `token` key of the agent's `<name>-auth` Secret). */
  authToken?: string;
  /** Per-request timeout in milliseconds. */
  timeoutMs: number;
  /** Overrides the agent id from the runtime tool context (sent as `X-Agent-Id`). */
  agentId?: string;
}

export class ConfigError extends Error {
  override name = "VestigeConfigError";
}

const CONFIG_PATH = "plugins.entries.vestige.config";

/** Read and check the plugin config; throws ConfigError naming the key to fix. */
export function resolveConfig(raw: Record<string, unknown> | undefined): VestigeConfig {
  const cfg = raw ?? {};
  const serverUrl = cfg.serverUrl;
  if (typeof serverUrl !== "string" || serverUrl.trim() === "") {
    throw new ConfigError(
      `Vestige is not configured: set ${CONFIG_PATH}.serverUrl to the agent's bridge URL ` +
        "(for example the URL printed by `kubectl vestige connect NAME`).",
    );
  }
  let url: URL;
  try {
    url = new URL(serverUrl.trim());
  } catch {
    throw new ConfigError(`${CONFIG_PATH}.serverUrl is not a URL: ${JSON.stringify(serverUrl)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(`${CONFIG_PATH}.serverUrl must be an http(s) URL, not ${url.protocol}`);
  }
  const authToken = cfg.authToken;
  if (authToken !== null && typeof authToken === "object") {
    throw new ConfigError(
      `${CONFIG_PATH}.authToken is a SecretRef that was not resolved: check that its source ` +
        "(for example the environment variable it names) is available to OpenClaw.",
    );
  }
  if (authToken !== undefined && (typeof authToken !== "string" || authToken.trim() === "")) {
    throw new ConfigError(`${CONFIG_PATH}.authToken must be a non-empty string when set.`);
  }
  const timeoutMs = cfg.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (
    typeof timeoutMs !== "number" ||
    !Number.isInteger(timeoutMs) ||
    timeoutMs < MIN_TIMEOUT_MS ||
    timeoutMs > MAX_TIMEOUT_MS
  ) {
    throw new ConfigError(
      `${CONFIG_PATH}.timeoutMs must be an integer from ${MIN_TIMEOUT_MS} to ${MAX_TIMEOUT_MS}.`,
    );
  }
  const agentId = cfg.agentId;
  if (agentId !== undefined && (typeof agentId !== "string" || !AGENT_ID_PATTERN.test(agentId))) {
    throw new ConfigError(
      `${CONFIG_PATH}.agentId must be the agent's name (lowercase letters, digits and '-').`,
    );
  }
  return {
    serverUrl: serverUrl.trim().replace(/\/+$/, ""),
    ...(authToken !== undefined ? { authToken: authToken.trim() } : {}),
    timeoutMs,
    ...(agentId !== undefined ? { agentId } : {}),
  };
}
