// The manifest, package.json and the code agree: tools, config keys, entry point.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import entry, { TOOL_NAMES } from "../dist/index.js";
import { PLUGIN_ROOT, registerPlugin } from "./helpers.mjs";

const manifest = JSON.parse(readFileSync(join(PLUGIN_ROOT, "openclaw.plugin.json"), "utf8"));
const pkg = JSON.parse(readFileSync(join(PLUGIN_ROOT, "package.json"), "utf8"));
const configSource = readFileSync(join(PLUGIN_ROOT, "src", "config.ts"), "utf8");

test("contracts.tools names exactly the registered tools", () => {
  assert.deepEqual([...manifest.contracts.tools].sort(), [...TOOL_NAMES].sort());
  assert.deepEqual(
    [
      "vestige_search",
      "vestige_ingest",
      "vestige_smart_ingest",
      "vestige_promote",
      "vestige_demote",
      "vestige_memory",
      "vestige_intention",
      "vestige_codebase",
    ].sort(),
    [...TOOL_NAMES].sort(),
  );
});

test("configSchema is strict and covers exactly the keys the code reads", () => {
  const schema = manifest.configSchema;
  assert.equal(schema.type, "object");
  assert.equal(schema.additionalProperties, false);
  const keys = Object.keys(schema.properties).sort();
  assert.deepEqual(keys, ["agentId", "authToken", "serverUrl", "timeoutMs"]);
  const read = [...configSource.matchAll(/cfg\.(\w+)/g)].map((m) => m[1]);
  assert.deepEqual([...new Set(read)].sort(), keys, "src/config.ts reads these keys and no others");
  assert.deepEqual(schema.required, ["serverUrl"]);
});

test("authToken is marked sensitive; every config key has a UI hint", () => {
  assert.equal(manifest.uiHints.authToken.sensitive, true);
  assert.deepEqual(Object.keys(manifest.uiHints).sort(), Object.keys(manifest.configSchema.properties).sort());
});

test("the runtime entry carries the manifest's identity and config schema", () => {
  assert.equal(entry.id, manifest.id);
  assert.equal(entry.name, manifest.name);
  assert.deepEqual(entry.configSchema.jsonSchema.properties, manifest.configSchema.properties);
  assert.equal(entry.configSchema.safeParse({ serverUrl: "http://x", bogus: 1 }).success, false);
  assert.equal(entry.configSchema.safeParse({ serverUrl: "http://x" }).success, true);
});

test("package.json: ES module, OpenClaw entry, peer dependency, runtime dependency on typebox", () => {
  assert.equal(pkg.type, "module");
  assert.deepEqual(pkg.openclaw.extensions, ["./dist/index.js"]);
  assert.ok(pkg.peerDependencies.openclaw);
  assert.ok(pkg.dependencies.typebox, "tool schemas import typebox at run time");
  assert.ok(!pkg.dependencies.openclaw, "the host provides openclaw");
  for (const file of ["dist", "openclaw.plugin.json"]) assert.ok(pkg.files.includes(file));
});

test("tool parameter schemas are closed objects with described fields", () => {
  const tools = registerPlugin(entry, { serverUrl: "http://127.0.0.1:9" }).tools({ agentId: "a" });
  for (const tool of tools.values()) {
    assert.equal(tool.parameters.type, "object", tool.name);
    assert.equal(tool.parameters.additionalProperties, false, tool.name);
    assert.ok(tool.description.length > 20, tool.name);
    assert.ok(tool.label, tool.name);
  }
  assert.deepEqual(tools.get("vestige_search").parameters.required, ["query"]);
  assert.deepEqual(tools.get("vestige_promote").parameters.required, ["memory_id"]);
  assert.deepEqual(tools.get("vestige_memory").parameters.properties.action.enum, ["get", "state", "delete"]);
  assert.deepEqual(tools.get("vestige_intention").parameters.properties.action.enum, ["set", "check", "list", "update"]);
});
