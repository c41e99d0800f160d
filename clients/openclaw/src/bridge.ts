/**
 * The HTTP client for one agent's vestige-bridge (REST API, docs/bridge.md).
 *
 * Every failure becomes a VestigeToolError whose message says what happened and what to do; no
 * stack trace and no token ever reaches the agent.
 */

import type { VestigeConfig } from "./config.js";

/** MCP content item as the bridge passes it through. */
export interface ContentItem {
  type: string;
  text?: string;
  [key: string]: unknown;
}

/** The bridge's answer for tool endpoints. */
export interface Envelope {
  success: boolean;
  data: { content: ContentItem[]; structuredContent?: unknown } | null;
  error: string | null;
  field?: string;
}

export interface BridgeResult {
  content: ContentItem[];
  structuredContent?: unknown;
}

/** A failed bridge call, with the HTTP status (0 when no answer) and a message for the agent. */
export class VestigeToolError extends Error {
  override name = "VestigeToolError";
  constructor(
    message: string,
    readonly status: number,
    readonly kind: string,
  ) {
    super(message);
  }
}

const MAX_DETAIL = 500;

function clip(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > MAX_DETAIL ? `${flat.slice(0, MAX_DETAIL)}…` : flat;
}

/** The `error` text of a bridge answer, if the body is the bridge's JSON envelope. */
function bridgeMessage(body: unknown): string | undefined {
  if (body && typeof body === "object" && "error" in body) {
    const error = (body as { error: unknown }).error;
    if (typeof error === "string" && error.trim()) return clip(error);
  }
  return undefined;
}

/** The message for a non-2xx answer: what the bridge said, then what to do. */
export function describeStatus(
  status: number,
  body: unknown,
  rawText: string,
  ctx: { endpoint: string; agentId: string | undefined },
): VestigeToolError {
  const said = bridgeMessage(body) ?? (rawText.trim() ? clip(rawText) : `HTTP ${status}`);
  const where = `POST ${ctx.endpoint}`;
  switch (status) {
    case 401:
      return new VestigeToolError(
        `Vestige refused the credentials (401 ${where}). The plugin's authToken is missing or ` +
          "wrong: set plugins.entries.vestige.config.authToken to the `token` key of the agent's " +
          "`<name>-auth` Secret (`kubectl vestige token NAME`); after a token rotation, use the new token.",
        status,
        "unauthorized",
      );
    case 403:
      return new VestigeToolError(
        `Vestige refused agent ${JSON.stringify(ctx.agentId ?? "")} (403 ${where}): this memory ` +
          "belongs to another agent. Point serverUrl/authToken at this agent's own bridge, or set " +
          "plugins.entries.vestige.config.agentId to the name of the VestigeMemory this bridge serves.",
        status,
        "forbidden",
      );
    case 404:
      return new VestigeToolError(
        `The server at serverUrl has no ${where} (404): check that serverUrl is the bridge's base ` +
          "URL (no path such as /mcp) and that the bridge is a current vestige-bridge.",
        status,
        "not_found",
      );
    case 413:
      return new VestigeToolError(
        `The request is too large for the bridge (413 ${where}): ${said}. Send less content per call.`,
        status,
        "too_large",
      );
    case 422: {
      const field =
        body && typeof body === "object" && typeof (body as Envelope).field === "string"
          ? (body as Envelope).field
          : undefined;
      return new VestigeToolError(
        `Invalid arguments for ${where} (422): ${said}.` +
          (field ? ` Fix the '${field}' argument and call the tool again.` : " Fix the arguments and call again."),
        status,
        "invalid",
      );
    }
    case 501:
      return new VestigeToolError(
        `Not supported by the Vestige version behind this bridge (501 ${where}): ${said}. ` +
          "Use another action or tool; retrying will not help.",
        status,
        "unsupported",
      );
    case 502:
      return new VestigeToolError(
        `The bridge cannot reach Vestige (502 ${where}): ${said}. The memory server may be ` +
          "restarting; try again in a minute, and if it persists check the agent's vestige pod " +
          "(`kubectl describe vestigememory NAME`).",
        status,
        "bad_gateway",
      );
    case 503:
      return new VestigeToolError(
        `The bridge is unavailable or overloaded (503 ${where}): ${said}. Try again shortly.`,
        status,
        "unavailable",
      );
    default:
      return new VestigeToolError(
        `Unexpected answer from the bridge (${status} ${where}): ${said}.` +
          (status >= 500 ? " Try again later." : ""),
        status,
        "http_error",
      );
  }
}

function errorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth += 1) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The message for a request that got no HTTP answer. */
export function describeNetworkError(
  error: unknown,
  ctx: { endpoint: string; serverUrl: string; timeoutMs: number; aborted: boolean },
): VestigeToolError {
  const name = (error as { name?: unknown })?.name;
  if (name === "TimeoutError") {
    return new VestigeToolError(
      `Vestige did not answer within ${ctx.timeoutMs} ms (POST ${ctx.endpoint} at ${ctx.serverUrl}). ` +
        "The memory server may be busy or starting; try again, or raise plugins.entries.vestige.config.timeoutMs.",
      0,
      "timeout",
    );
  }
  if (name === "AbortError" && ctx.aborted) {
    return new VestigeToolError(`The call to Vestige (POST ${ctx.endpoint}) was cancelled.`, 0, "cancelled");
  }
  const code = errorCode(error);
  const cause = String((error as { cause?: { message?: unknown } })?.cause?.message ?? "");
  if (/redirect/i.test(cause)) {
    return new VestigeToolError(
      `The server at ${ctx.serverUrl} answered POST ${ctx.endpoint} with a redirect; the plugin does ` +
        "not follow redirects (the token must not go elsewhere). Set plugins.entries.vestige.config.serverUrl " +
        "to the final URL (for example https:// instead of http://).",
      0,
      "redirect",
    );
  }
  switch (code) {
    case "ECONNREFUSED":
      return new VestigeToolError(
        `Cannot connect to the Vestige bridge at ${ctx.serverUrl} (connection refused). Check ` +
          "plugins.entries.vestige.config.serverUrl and that the agent's memory is running " +
          "(`kubectl get vestigememory NAME`).",
        0,
        "connection_refused",
      );
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return new VestigeToolError(
        `Cannot resolve the host of serverUrl ${ctx.serverUrl} (${code}). Check ` +
          "plugins.entries.vestige.config.serverUrl (`kubectl vestige connect NAME` prints it).",
        0,
        "dns",
      );
    case "ECONNRESET":
    case "UND_ERR_SOCKET":
    case "EPIPE":
      return new VestigeToolError(
        `The connection to the Vestige bridge at ${ctx.serverUrl} was closed mid-request (${code}). ` +
          "Try again; if it persists, check the bridge.",
        0,
        "connection_reset",
      );
    default:
      return new VestigeToolError(
        `Cannot reach the Vestige bridge at ${ctx.serverUrl}${code ? ` (${code})` : ""}. Check ` +
          "plugins.entries.vestige.config.serverUrl and the network path to the bridge.",
        0,
        "network",
      );
  }
}

export interface CallOptions {
  agentId: string | undefined;
  signal?: AbortSignal | undefined;
}

/** POST a JSON body to a bridge endpoint; resolves to the tool's content, rejects with VestigeToolError. */
export async function callBridge(
  config: VestigeConfig,
  endpoint: string,
  body: Record<string, unknown>,
  options: CallOptions,
): Promise<BridgeResult> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
    accept: "application/json",
  };
  if (config.authToken) headers.authorization = `Bearer ${config.authToken}`;
  if (options.agentId) headers["x-agent-id"] = options.agentId;
  const timeout = AbortSignal.timeout(config.timeoutMs);
  const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
  let response: Response;
  let text: string;
  try {
    response = await fetch(`${config.serverUrl}${endpoint}`, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      signal,
      redirect: "error",
    });
    text = await response.text();
  } catch (error) {
    // A timeout surfaces as the timeout signal's reason (TimeoutError) or as an AbortError.
    const timedOut = timeout.aborted;
    throw describeNetworkError(timedOut ? { name: "TimeoutError" } : error, {
      endpoint,
      serverUrl: config.serverUrl,
      timeoutMs: config.timeoutMs,
      aborted: options.signal?.aborted ?? false,
    });
  }
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    throw describeStatus(response.status, parsed, text, { endpoint, agentId: options.agentId });
  }
  const envelope = parsed as Envelope | undefined;
  if (!envelope || typeof envelope !== "object" || typeof envelope.success !== "boolean") {
    throw new VestigeToolError(
      `The server at ${config.serverUrl} answered POST ${endpoint} with something that is not the ` +
        "bridge's JSON envelope: check that serverUrl points at the agent's vestige-bridge.",
      response.status,
      "bad_response",
    );
  }
  if (!envelope.success) {
    throw new VestigeToolError(
      `Vestige reported an error for POST ${endpoint}: ${clip(envelope.error ?? "no details")}`,
      response.status,
      "tool_error",
    );
  }
  const content = Array.isArray(envelope.data?.content) ? envelope.data.content : [];
  return envelope.data?.structuredContent !== undefined
    ? { content, structuredContent: envelope.data.structuredContent }
    : { content };
}
