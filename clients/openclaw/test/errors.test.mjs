// Bridge failures become clear tool errors (what happened, what to do), never a stack trace.
// Statuses come from the real bridge wherever it can produce them; a local HTTP server stands in
// only for an answer that never comes and for a server that is not a bridge.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { createServer } from "node:http";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";

import entry from "../dist/index.js";
import { AGENT, BRIDGE_TOKEN, freePort, registerPlugin, run, startBridge, startStandin, tempDir } from "./helpers.mjs";

let dir;
let standin;
let bridge;

before(async () => {
  dir = tempDir("vestige-plugin-errors");
  standin = await startStandin(dir);
  bridge = await startBridge(dir, standin.mcpUrl);
});

after(async () => {
  await bridge?.proc.stop();
  await standin?.proc.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function toolsFor(config) {
  return registerPlugin(entry, config).tools({ agentId: AGENT });
}

/** Assert a tool call fails with a VestigeToolError: status, message patterns, no stack, no token. */
async function expectToolError(promise, { status, kind, patterns }) {
  await assert.rejects(promise, (error) => {
    assert.equal(error.name, "VestigeToolError", String(error));
    assert.equal(error.status, status);
    if (kind) assert.equal(error.kind, kind);
    for (const pattern of patterns) assert.match(error.message, pattern);
    assert.doesNotMatch(error.message, /\n\s+at /, "no stack trace in the message");
    assert.doesNotMatch(error.message, /node:internal|undici|TypeError/);
    assert.ok(!error.message.includes(BRIDGE_TOKEN), "the token is never in a message");
    return true;
  });
}

describe("statuses from the real bridge", () => {
  test("422: the bridge names the field, the error says to fix it", async () => {
    const tools = toolsFor({ serverUrl: bridge.url, authToken: BRIDGE_TOKEN });
    await expectToolError(run(tools, "vestige_search", { query: "x", limit: 1000 }), {
      status: 422,
      kind: "invalid",
      patterns: [/Invalid arguments for POST \/search \(422\): limit: /, /Fix the 'limit' argument/],
    });
  });

  test("413: a body over the bridge's limit", async () => {
    const tools = toolsFor({ serverUrl: bridge.url, authToken: BRIDGE_TOKEN });
    await expectToolError(run(tools, "vestige_ingest", { content: "x".repeat(300_000) }), {
      status: 413,
      patterns: [/too large/, /Send less content/],
    });
  });

  test("404: serverUrl with a path is not the bridge's base URL", async () => {
    const tools = toolsFor({ serverUrl: `${bridge.url}/mcp`, authToken: BRIDGE_TOKEN });
    await expectToolError(run(tools, "vestige_search", { query: "x" }), {
      status: 404,
      patterns: [/no POST \/search \(404\)/, /base URL/],
    });
  });

  test("502: the bridge cannot reach Vestige", async () => {
    const deadUpstream = `http://127.0.0.1:${await freePort()}/mcp`;
    const lonely = await startBridge(dir, deadUpstream, { name: "bridge-no-vestige" });
    try {
      const tools = toolsFor({ serverUrl: lonely.url, authToken: BRIDGE_TOKEN });
      await expectToolError(run(tools, "vestige_search", { query: "x" }), {
        status: 502,
        kind: "bad_gateway",
        patterns: [/cannot reach Vestige \(502 POST \/search\): Vestige unavailable/, /try again/],
      });
    } finally {
      await lonely.proc.stop();
    }
  });

  test("501: a Vestige generation the bridge cannot serve (4.x)", async () => {
    const v4 = await startStandin(dir, "standin-v4", ["--server-version", "4.0.0"]);
    const unsupported = await startBridge(dir, v4.mcpUrl, { name: "bridge-v4" });
    try {
      const tools = toolsFor({ serverUrl: unsupported.url, authToken: BRIDGE_TOKEN });
      await expectToolError(run(tools, "vestige_search", { query: "x" }), {
        status: 501,
        kind: "unsupported",
        patterns: [/Not supported by the Vestige version behind this bridge \(501 POST \/search\)/, /retrying will not help/],
      });
    } finally {
      await unsupported.proc.stop();
      await v4.proc.stop();
    }
  });

  test("503: the bridge is at its connection limit", async () => {
    const busy = await startBridge(dir, standin.mcpUrl, {
      name: "bridge-busy",
      env: { VESTIGE_MAX_CONNECTIONS: "2", VESTIGE_KEEPALIVE_TIMEOUT: "60" },
    });
    // uvicorn counts the arriving connection too: one held connection fills the limit of 2.
    const holder = connect(Number(new URL(busy.url).port), "127.0.0.1");
    await new Promise((resolve) => holder.once("connect", resolve));
    holder.write("GET /livez HTTP/1.1\r\nHost: x\r\n");
    try {
      const tools = toolsFor({ serverUrl: busy.url, authToken: BRIDGE_TOKEN });
      await expectToolError(run(tools, "vestige_search", { query: "x" }), {
        status: 503,
        kind: "unavailable",
        patterns: [/unavailable or overloaded \(503 POST \/search\)/, /Try again shortly/],
      });
    } finally {
      holder.destroy();
      await busy.proc.stop();
    }
  });

  test("200 with success=false: Vestige's own tool error", async () => {
    const tools = toolsFor({ serverUrl: bridge.url, authToken: BRIDGE_TOKEN });
    await expectToolError(run(tools, "vestige_promote", { memory_id: "no-such-memory" }), {
      status: 200,
      kind: "tool_error",
      patterns: [/Vestige reported an error for POST \/promote: .*Memory not found: no-such-memory/],
    });
  });
});

describe("no answer", () => {
  let silent;
  let silentUrl;
  const sockets = new Set();

  before(async () => {
    // Accepts requests and never answers.
    silent = createServer(() => {});
    silent.on("connection", (s) => sockets.add(s));
    await new Promise((resolve) => silent.listen(0, "127.0.0.1", resolve));
    silentUrl = `http://127.0.0.1:${silent.address().port}`;
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => silent.close(resolve));
  });

  test("timeout: timeoutMs elapses", async () => {
    const tools = toolsFor({ serverUrl: silentUrl, authToken: BRIDGE_TOKEN, timeoutMs: 1000 });
    await expectToolError(run(tools, "vestige_search", { query: "x" }), {
      status: 0,
      kind: "timeout",
      patterns: [/did not answer within 1000 ms/, /timeoutMs/],
    });
  });

  test("cancelled: the agent run aborts the call", async () => {
    const tools = toolsFor({ serverUrl: silentUrl, authToken: BRIDGE_TOKEN, timeoutMs: 60_000 });
    const controller = new AbortController();
    const call = tools.get("vestige_search").execute("call-1", { query: "x" }, controller.signal);
    setTimeout(() => controller.abort(), 100);
    await expectToolError(call, { status: 0, kind: "cancelled", patterns: [/was cancelled/] });
  });

  test("connection refused: nothing listens at serverUrl", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const tools = toolsFor({ serverUrl: url, authToken: BRIDGE_TOKEN });
    await expectToolError(run(tools, "vestige_ingest", { content: "x" }), {
      status: 0,
      kind: "connection_refused",
      patterns: [new RegExp(`Cannot connect to the Vestige bridge at ${url} \\(connection refused\\)`), /serverUrl/],
    });
  });
});

describe("not a bridge", () => {
  test("a 200 that is not the bridge's envelope", async () => {
    const server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html>login</html>");
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const tools = toolsFor({ serverUrl: `http://127.0.0.1:${server.address().port}` });
      await expectToolError(run(tools, "vestige_search", { query: "x" }), {
        status: 200,
        kind: "bad_response",
        patterns: [/not the bridge's JSON envelope/, /serverUrl/],
      });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("redirects", () => {
  test("a redirect is not followed (the token stays put); the error names the fix", async () => {
    let followed = false;
    const server = createServer((req, res) => {
      if (req.url.startsWith("/elsewhere")) followed = true;
      res.writeHead(308, { location: "/elsewhere/search" });
      res.end();
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const tools = toolsFor({ serverUrl: `http://127.0.0.1:${server.address().port}`, authToken: BRIDGE_TOKEN });
      await expectToolError(run(tools, "vestige_search", { query: "x" }), {
        status: 0,
        kind: "redirect",
        patterns: [/answered POST \/search with a redirect/, /serverUrl/],
      });
      assert.equal(followed, false);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("configuration", () => {
  test("no serverUrl: the tool says which key to set", async () => {
    const tools = toolsFor({});
    await expectToolError(run(tools, "vestige_search", { query: "x" }), {
      status: 0,
      kind: "config",
      patterns: [/set plugins\.entries\.vestige\.config\.serverUrl/],
    });
  });

  test("an unresolved SecretRef for authToken says so (and is never sent)", async () => {
    const ref = { source: "env", provider: "default", id: "VESTIGE_BRIDGE_TOKEN" };
    await expectToolError(run(toolsFor({ serverUrl: bridge.url, authToken: ref }), "vestige_search", { query: "x" }), {
      status: 0,
      kind: "config",
      patterns: [/authToken is a SecretRef that was not resolved/],
    });
  });

  test("a bad timeoutMs or agentId is refused with the key's name", async () => {
    await expectToolError(run(toolsFor({ serverUrl: bridge.url, timeoutMs: 5 }), "vestige_search", { query: "x" }), {
      status: 0,
      kind: "config",
      patterns: [/timeoutMs must be an integer/],
    });
    await expectToolError(
      run(toolsFor({ serverUrl: bridge.url, agentId: "Not A Label" }), "vestige_search", { query: "x" }),
      { status: 0, kind: "config", patterns: [/agentId must be the agent's name/] },
    );
  });
});
