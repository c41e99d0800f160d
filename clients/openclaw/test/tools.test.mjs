// Every tool against the real bridge (python -m vestige_bridge) in front of the v3 stand-in.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import entry, { TOOL_NAMES } from "../dist/index.js";
import {
  AGENT,
  BRIDGE_TOKEN,
  OTHER_AGENT,
  metric,
  registerPlugin,
  run,
  startBridge,
  startStandin,
  tempDir,
  textJson,
} from "./helpers.mjs";

let dir;
let standin;
let bridge;
let tools; // built for AGENT's runtime context

const lastCall = () => standin.calls().at(-1);

before(async () => {
  dir = tempDir("vestige-plugin-tools");
  standin = await startStandin(dir);
  bridge = await startBridge(dir, standin.mcpUrl);
  const plugin = registerPlugin(entry, { serverUrl: `${bridge.url}/`, authToken: BRIDGE_TOKEN });
  tools = plugin.tools({ agentId: AGENT });
});

after(async () => {
  await bridge?.proc.stop();
  await standin?.proc.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("registration", () => {
  test("every tool is registered as a factory named in the manifest's contracts.tools", () => {
    const plugin = registerPlugin(entry, { serverUrl: "http://127.0.0.1:9" });
    assert.equal(plugin.factories.length, TOOL_NAMES.length);
    for (const { tool, opts } of plugin.factories) {
      assert.equal(typeof tool, "function", "a factory, so the runtime context supplies the agent id");
      assert.ok(TOOL_NAMES.includes(opts.name));
    }
    assert.deepEqual([...plugin.tools({ agentId: AGENT }).keys()].sort(), [...TOOL_NAMES].sort());
  });
});

describe("memory tools", () => {
  let ingestedId;

  test("vestige_ingest stores a memory and vestige_search finds it", async () => {
    const stored = await run(tools, "vestige_ingest", {
      content: "The deploy pipeline runs canary stages in eu-west first",
      node_type: "fact",
      tags: ["deploy", "canary"],
      context: "team handbook",
    });
    const created = textJson(stored);
    assert.equal(created.decision, "create");
    ingestedId = created.nodeId;
    assert.match(ingestedId, /^[0-9a-f-]{36}$/);
    assert.equal(stored.details.tool, "vestige_ingest");
    assert.equal(stored.details.agentId, AGENT);
    // The bridge mapped the predecessor's `context` to Vestige's `source` (3.x: smart_ingest + forceCreate).
    assert.equal(lastCall().tool, "smart_ingest");
    assert.equal(lastCall().arguments.source, "team handbook");
    assert.equal(lastCall().arguments.forceCreate, true);

    const found = await run(tools, "vestige_search", { query: "canary pipeline", limit: 5 });
    const hits = textJson(found).results;
    assert.ok(hits.some((h) => h.id === ingestedId && h.content.includes("canary stages")), found.content[0].text);
    assert.equal(lastCall().tool, "recall");
    assert.equal(lastCall().arguments.limit, 5);
  });

  test("vestige_search keyword mode and threshold reach Vestige", async () => {
    await run(tools, "vestige_search", { query: "canary", mode: "keyword", threshold: 0.2 });
    assert.equal(lastCall().arguments.concrete, true);
    assert.equal(lastCall().arguments.min_similarity, 0.2);
  });

  test("vestige_smart_ingest merges identical content, then search finds one memory", async () => {
    const first = textJson(await run(tools, "vestige_smart_ingest", { content: "Alice prefers tabs", tags: ["a"] }));
    const second = textJson(await run(tools, "vestige_smart_ingest", { content: "Alice prefers tabs", tags: ["b"] }));
    assert.equal(first.decision, "create");
    assert.equal(second.decision, "update");
    assert.equal(second.nodeId, first.nodeId);
    const hits = textJson(await run(tools, "vestige_search", { query: "Alice tabs" })).results;
    assert.deepEqual(
      hits.filter((h) => h.content === "Alice prefers tabs").map((h) => [h.id, h.tags]),
      [[first.nodeId, ["a", "b"]]],
    );
  });

  test("vestige_promote and vestige_demote give feedback on the memory", async () => {
    const up = textJson(await run(tools, "vestige_promote", { memory_id: ingestedId }));
    assert.equal(up.action, "promote");
    assert.deepEqual(lastCall().arguments, { action: "promote", id: ingestedId });
    const down = textJson(await run(tools, "vestige_demote", { memory_id: ingestedId }));
    assert.equal(down.action, "demote");
    assert.ok(down.retrievalStrength < up.retrievalStrength);
  });

  test("vestige_memory get, state and delete", async () => {
    const got = textJson(await run(tools, "vestige_memory", { action: "get", memory_id: ingestedId }));
    assert.equal(got.node.id, ingestedId);
    const state = textJson(await run(tools, "vestige_memory", { action: "state", memory_id: ingestedId }));
    assert.equal(state.state, "Active");
    const deleted = textJson(await run(tools, "vestige_memory", { action: "delete", memory_id: ingestedId }));
    assert.equal(deleted.success, true);
    assert.equal(lastCall().arguments.confirm, true);
    const hits = textJson(await run(tools, "vestige_search", { query: "canary pipeline" })).results;
    assert.ok(!hits.some((h) => h.id === ingestedId), "deleted memory is gone");
    await assert.rejects(run(tools, "vestige_memory", { action: "get", memory_id: ingestedId }), (error) => {
      assert.match(error.message, /Vestige reported an error for POST \/memory: .*Memory not found/);
      return true;
    });
  });

  test("vestige_intention set, list, check and update", async () => {
    const set = textJson(
      await run(tools, "vestige_intention", {
        action: "set",
        description: "Review the canary dashboards",
        trigger: { type: "time", in_minutes: 30 },
        priority: "high",
      }),
    );
    assert.equal(set.success, true);
    assert.deepEqual(lastCall().arguments.trigger, { type: "time", in_minutes: 30 });
    const listed = textJson(await run(tools, "vestige_intention", { action: "list" }));
    assert.deepEqual(
      listed.intentions.map((i) => [i.id, i.description]),
      [[set.intentionId, "Review the canary dashboards"]],
    );
    const checked = textJson(
      await run(tools, "vestige_intention", { action: "check", context: { codebase: "infra", topics: ["deploy"] } }),
    );
    assert.equal(checked.action, "check");
    assert.deepEqual(lastCall().arguments.context, { codebase: "infra", topics: ["deploy"] });
    const updated = textJson(
      await run(tools, "vestige_intention", { action: "update", id: set.intentionId, status: "complete" }),
    );
    assert.equal(updated.status, "fulfilled");
    const active = textJson(await run(tools, "vestige_intention", { action: "list", filter_status: "active" }));
    assert.deepEqual(active.intentions, []);
  });

  test("vestige_codebase remembers a pattern and a decision, and get_context returns both", async () => {
    const pattern = textJson(
      await run(tools, "vestige_codebase", {
        action: "remember_pattern",
        name: "Repository per aggregate",
        description: "Each aggregate has its own repository class",
        files: ["src/repo.ts"],
        codebase: "shop",
      }),
    );
    const decision = textJson(
      await run(tools, "vestige_codebase", {
        action: "remember_decision",
        decision: "Use PostgreSQL",
        rationale: "Transactions across aggregates",
        alternatives: ["MongoDB"],
        codebase: "shop",
      }),
    );
    const context = textJson(await run(tools, "vestige_codebase", { action: "get_context", codebase: "shop" }));
    assert.deepEqual(context.items.map((i) => i.id).sort(), [pattern.nodeId, decision.nodeId].sort());
  });
});

describe("agent identity (X-Agent-Id from the runtime tool context)", () => {
  test("the bridge accepts this agent's context and refuses another agent's with 403", async () => {
    const before403 = await metric(bridge.url, "vestige_bridge_auth_failures_total", { status: "403" });
    const plugin = registerPlugin(entry, { serverUrl: bridge.url, authToken: BRIDGE_TOKEN });
    const other = plugin.tools({ agentId: OTHER_AGENT });
    await assert.rejects(run(other, "vestige_search", { query: "anything" }), (error) => {
      assert.equal(error.status, 403);
      assert.match(error.message, /refused agent "agent-b" \(403 POST \/search\)/);
      assert.match(error.message, /agentId/);
      return true;
    });
    assert.equal(await metric(bridge.url, "vestige_bridge_auth_failures_total", { status: "403" }), before403 + 1);
    // Same plugin instance, this agent's context: accepted.
    const mine = plugin.tools({ agentId: AGENT });
    const result = await run(mine, "vestige_search", { query: "Alice" });
    assert.equal(result.details.agentId, AGENT);
    assert.equal(await metric(bridge.url, "vestige_bridge_auth_failures_total", { status: "403" }), before403 + 1);
  });

  test("config.agentId overrides the context's agent id", async () => {
    const plugin = registerPlugin(entry, { serverUrl: bridge.url, authToken: BRIDGE_TOKEN, agentId: AGENT });
    const result = await run(plugin.tools({ agentId: "main" }), "vestige_search", { query: "Alice" });
    assert.equal(result.details.agentId, AGENT);
    const wrong = registerPlugin(entry, { serverUrl: bridge.url, authToken: BRIDGE_TOKEN, agentId: OTHER_AGENT });
    await assert.rejects(run(wrong.tools({ agentId: AGENT }), "vestige_search", { query: "x" }), { status: 403 });
  });

  test("without any agent id no X-Agent-Id is sent (never a made-up default)", async () => {
    const plugin = registerPlugin(entry, { serverUrl: bridge.url, authToken: BRIDGE_TOKEN });
    const result = await run(plugin.tools({}), "vestige_search", { query: "Alice" });
    assert.equal(result.details.agentId, null);
  });
});

describe("authentication", () => {
  test("a wrong token is a clear 401 tool error, and the token is never echoed", async () => {
    const plugin = registerPlugin(entry, { serverUrl: bridge.url, authToken: "not-the-token-7781" });
    await assert.rejects(run(plugin.tools({ agentId: AGENT }), "vestige_search", { query: "x" }), (error) => {
      assert.equal(error.status, 401);
      assert.match(error.message, /refused the credentials \(401 POST \/search\)/);
      assert.match(error.message, /authToken/);
      assert.ok(!error.message.includes("not-the-token-7781"));
      return true;
    });
  });

  test("no token configured: 401 with the same advice", async () => {
    const plugin = registerPlugin(entry, { serverUrl: bridge.url });
    await assert.rejects(run(plugin.tools({ agentId: AGENT }), "vestige_ingest", { content: "x" }), {
      status: 401,
    });
  });
});
