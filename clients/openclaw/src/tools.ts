/**
 * The agent tools: one per bridge endpoint. Parameter names follow the bridge's REST bodies
 * (docs/bridge.md), which keep the predecessor plugin's names for the first five tools.
 */

import { Type, type Static, type TSchema } from "typebox";

import type { BridgeResult } from "./bridge.js";

/** A string enum as JSON Schema `{type: "string", enum: [...]}` (what model tool schemas expect). */
function stringEnum<const T extends readonly string[]>(values: T, description: string) {
  return Type.Unsafe<T[number]>({ type: "string", enum: [...values], description });
}

const MemoryId = Type.String({
  minLength: 1,
  maxLength: 200,
  pattern: "^[A-Za-z0-9_.:-]+$",
  description: "ID of the memory (as returned by vestige_ingest or vestige_search).",
});
const Tags = Type.Array(Type.String({ minLength: 1, maxLength: 200 }), {
  maxItems: 50,
  description: "Tags for categorization.",
});
const NodeType = Type.String({
  pattern: "^[a-z_]{1,32}$",
  description: "fact (default), concept, event, person, place, note, pattern, decision.",
});

const searchParams = Type.Object(
  {
    query: Type.String({ minLength: 1, maxLength: 10_000, description: "What to look for." }),
    mode: Type.Optional(
      stringEnum(
        ["hybrid", "keyword", "semantic"] as const,
        "hybrid (default) combines keyword and semantic search; keyword asks for literal matches.",
      ),
    ),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: "Maximum results (default 10)." })),
    threshold: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: "Minimum similarity, 0 to 1." })),
  },
  { additionalProperties: false },
);

const ingestParams = Type.Object(
  {
    content: Type.String({ minLength: 1, maxLength: 200_000, description: "The content to remember." }),
    node_type: Type.Optional(NodeType),
    tags: Type.Optional(Tags),
    context: Type.Optional(
      Type.String({ maxLength: 2_000, description: "Where this comes from (stored as the memory's source)." }),
    ),
  },
  { additionalProperties: false },
);

const feedbackParams = Type.Object({ memory_id: MemoryId }, { additionalProperties: false });

const memoryParams = Type.Object(
  {
    action: stringEnum(
      ["get", "state", "delete"] as const,
      "get: the full memory; state: its accessibility state; delete: remove it for good.",
    ),
    memory_id: MemoryId,
  },
  { additionalProperties: false },
);

const triggerParams = Type.Object(
  {
    type: stringEnum(["time", "context", "event"] as const, "When the intention should fire."),
    at: Type.Optional(Type.String({ maxLength: 64, description: "[time] ISO timestamp." })),
    in_minutes: Type.Optional(Type.Integer({ minimum: 0, maximum: 5_256_000, description: "[time] Minutes from now." })),
    codebase: Type.Optional(Type.String({ maxLength: 4096, description: "[context] Codebase name." })),
    file_pattern: Type.Optional(Type.String({ maxLength: 4096, description: "[context] File glob." })),
    topic: Type.Optional(Type.String({ maxLength: 4096, description: "[context] Topic." })),
    condition: Type.Optional(Type.String({ maxLength: 4096, description: "[event] Event condition." })),
  },
  { additionalProperties: false },
);

const checkContextParams = Type.Object(
  {
    current_time: Type.Optional(Type.String({ maxLength: 64, description: "ISO timestamp (default: now)." })),
    codebase: Type.Optional(Type.String({ maxLength: 4096 })),
    file: Type.Optional(Type.String({ maxLength: 4096 })),
    topics: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 32 })),
  },
  { additionalProperties: false },
);

const intentionParams = Type.Object(
  {
    action: stringEnum(
      ["set", "check", "list", "update"] as const,
      "set: remember to do something later; check: intentions due in the current context; " +
        "list: stored intentions; update: complete, snooze or cancel one.",
    ),
    description: Type.Optional(Type.String({ minLength: 1, maxLength: 10_000, description: "[set] What to do." })),
    trigger: Type.Optional(triggerParams),
    priority: Type.Optional(stringEnum(["low", "normal", "high", "critical"] as const, "[set] Priority.")),
    deadline: Type.Optional(Type.String({ maxLength: 64, description: "[set] ISO timestamp." })),
    id: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: "[update] Intention id." })),
    status: Type.Optional(stringEnum(["complete", "snooze", "cancel"] as const, "[update] New status.")),
    snooze_minutes: Type.Optional(Type.Integer({ minimum: 1, maximum: 525_600, description: "[update] For snooze." })),
    context: Type.Optional(checkContextParams),
    include_snoozed: Type.Optional(Type.Boolean({ description: "[check] Include snoozed intentions." })),
    filter_status: Type.Optional(
      stringEnum(["active", "fulfilled", "cancelled", "snoozed", "all"] as const, "[list] Which intentions."),
    ),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: "[list] Maximum results." })),
  },
  { additionalProperties: false },
);

const codebaseParams = Type.Object(
  {
    action: stringEnum(
      ["remember_pattern", "remember_decision", "get_context"] as const,
      "remember_pattern: a code pattern (name + description); remember_decision: an architectural " +
        "decision (decision + rationale); get_context: what is remembered about a codebase.",
    ),
    name: Type.Optional(Type.String({ maxLength: 500, description: "[remember_pattern] Pattern name." })),
    description: Type.Optional(Type.String({ maxLength: 200_000, description: "[remember_pattern] Description." })),
    decision: Type.Optional(Type.String({ maxLength: 200_000, description: "[remember_decision] The decision." })),
    rationale: Type.Optional(Type.String({ maxLength: 200_000, description: "[remember_decision] Why." })),
    alternatives: Type.Optional(
      Type.Array(Type.String({ maxLength: 10_000 }), { maxItems: 50, description: "[remember_decision] Rejected options." }),
    ),
    files: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 200, description: "Files concerned." })),
    codebase: Type.Optional(Type.String({ maxLength: 500, description: "Codebase or project name." })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 50, description: "[get_context] Items per category." })),
  },
  { additionalProperties: false },
);

/** What one tool is: its schema, the bridge endpoint, and how its arguments become the body. */
export interface ToolSpec<P extends TSchema = TSchema> {
  name: string;
  label: string;
  description: string;
  parameters: P;
  endpoint: string;
  body: (params: Static<P>) => Record<string, unknown>;
}

function spec<P extends TSchema>(s: ToolSpec<P>): ToolSpec {
  return s as unknown as ToolSpec;
}

/** Drop undefined values so the bridge applies its own defaults. */
function defined(params: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined));
}

export const TOOL_SPECS: readonly ToolSpec[] = [
  spec({
    name: "vestige_search",
    label: "Vestige search",
    description:
      "Search this agent's long-term memory (Vestige). Returns the memories that best match the query, with their ids.",
    parameters: searchParams,
    endpoint: "/search",
    body: defined,
  }),
  spec({
    name: "vestige_ingest",
    label: "Vestige ingest",
    description: "Store a new memory in this agent's long-term memory (always creates a new memory).",
    parameters: ingestParams,
    endpoint: "/ingest",
    body: defined,
  }),
  spec({
    name: "vestige_smart_ingest",
    label: "Vestige smart ingest",
    description:
      "Store a memory, letting Vestige merge it with or update a similar existing memory instead of duplicating it.",
    parameters: ingestParams,
    endpoint: "/smart_ingest",
    body: defined,
  }),
  spec({
    name: "vestige_promote",
    label: "Vestige promote",
    description: "Mark a memory as helpful (thumbs up): it becomes easier to retrieve.",
    parameters: feedbackParams,
    endpoint: "/promote",
    body: defined,
  }),
  spec({
    name: "vestige_demote",
    label: "Vestige demote",
    description: "Mark a memory as wrong or unhelpful (thumbs down): it becomes harder to retrieve.",
    parameters: feedbackParams,
    endpoint: "/demote",
    body: defined,
  }),
  spec({
    name: "vestige_memory",
    label: "Vestige memory",
    description: "Get one memory by id, inspect its state, or delete it.",
    parameters: memoryParams,
    endpoint: "/memory",
    body: defined,
  }),
  spec({
    name: "vestige_intention",
    label: "Vestige intention",
    description:
      "Prospective memory: set reminders to do something later (on a time, context or event trigger), " +
      "check which are due, list them, or mark one complete, snoozed or cancelled.",
    parameters: intentionParams,
    endpoint: "/intention",
    body: defined,
  }),
  spec({
    name: "vestige_codebase",
    label: "Vestige codebase",
    description:
      "Remember code patterns and architectural decisions of a codebase, or recall what is known about it.",
    parameters: codebaseParams,
    endpoint: "/codebase",
    body: defined,
  }),
];

export const TOOL_NAMES: readonly string[] = TOOL_SPECS.map((t) => t.name);

/** The text the model sees: the MCP text items, joined. */
export function resultText(result: BridgeResult): string {
  const texts = result.content
    .filter((item) => item.type === "text" && typeof item.text === "string")
    .map((item) => item.text as string);
  if (texts.length > 0) return texts.join("\n");
  if (result.structuredContent !== undefined) return JSON.stringify(result.structuredContent);
  return "(Vestige returned no text)";
}
