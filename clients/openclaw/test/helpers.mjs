// Test helpers: real processes on 127.0.0.1 (the v3 stand-in, the bridge, OpenClaw), stopped by pid.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, closeSync } from "node:fs";
import { get } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const PLUGIN_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_ROOT = resolve(PLUGIN_ROOT, "..", "..");
export const BRIDGE_TOKEN = "plugin-test-bridge-token-0c1d";
export const UPSTREAM_TOKEN = "plugin-test-upstream-token-9e2f";
export const AGENT = "agent-a";
export const OTHER_AGENT = "agent-b";

/** The Python that has vestige_bridge installed: VESTIGE_PYTHON, else the repo's .venv. */
export function python() {
  if (process.env.VESTIGE_PYTHON) return process.env.VESTIGE_PYTHON;
  const venv = join(REPO_ROOT, ".venv", "bin", "python");
  if (existsSync(venv)) return venv;
  throw new Error(
    `no Python with vestige_bridge: create ${venv} (source tests/setup.sh) or set VESTIGE_PYTHON`,
  );
}

export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), `${prefix}-`));
}

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** The environment without the caller's Vestige/OpenClaw settings (tests set their own). */
export function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("VESTIGE_") && !k.startsWith("STANDIN_") && !k.startsWith("OPENCLAW_")) env[k] = v;
  }
  delete env.LOG_LEVEL;
  return { ...env, ...extra };
}

/** A child process with its log file. */
export class Proc {
  constructor(name, argv, { env, cwd = REPO_ROOT, dir }) {
    this.name = name;
    this.log = join(dir, `${name}.log`);
    const fd = openSync(this.log, "a");
    // stdin a pipe nobody writes to: Vestige (and the v3 stand-in, like upstream 3.x) ends when its
    // stdin reaches EOF, as a pod's vestige container would without `stdin: true`.
    this.child = spawn(argv[0], argv.slice(1), { cwd, env, stdio: ["pipe", fd, fd] });
    closeSync(fd);
    this.exited = new Promise((res) => this.child.once("exit", (code, signal) => res({ code, signal })));
  }

  output() {
    return existsSync(this.log) ? readFileSync(this.log, "utf8") : "";
  }

  get running() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop() {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.running && this.child.kill("SIGKILL"), 15_000);
    await this.exited;
    clearTimeout(timer);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Wait until `probe()` resolves truthy; fail with the process log if it exits or time runs out. */
export async function waitFor(proc, probe, { timeoutMs = 60_000, what = "ready" } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!proc.running) throw new Error(`${proc.name} exited before ${what}:\n${proc.output().slice(-3000)}`);
    try {
      if (await probe()) return;
    } catch {
      // not yet
    }
    await sleep(250);
  }
  throw new Error(`${proc.name} not ${what} after ${timeoutMs} ms:\n${proc.output().slice(-3000)}`);
}

/** waitFor, stopping the process when it never gets ready (no leaked servers). */
async function startedOrStopped(proc, probe, what) {
  try {
    await waitFor(proc, probe, { what });
  } catch (error) {
    await proc.stop();
    throw error;
  }
}

/** GET /livez on a connection of its own, closed afterwards (holds no slot of the bridge). */
function livez(url) {
  return new Promise((resolve) => {
    const req = get(`${url}/livez`, { agent: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
  });
}

/** The v3 stand-in Vestige (tests/bridge/standin.py) over Streamable HTTP with Vestige's HTTP rules. */
export async function startStandin(dir, name = "standin", extraArgs = []) {
  const port = await freePort();
  const callLog = join(dir, `${name}-calls.jsonl`);
  const argv = [python(), "-m", "tests.bridge.standin", "--generation", "v3", "--port", String(port)];
  argv.push("--token", UPSTREAM_TOKEN, "--call-log", callLog, ...extraArgs);
  const env = cleanEnv({ PYTHONPATH: REPO_ROOT, PYTHONUNBUFFERED: "1" });
  const proc = new Proc(name, argv, { env, dir });
  await startedOrStopped(proc, () => proc.output().includes("listening"), "listening");
  return {
    proc,
    mcpUrl: `http://127.0.0.1:${port}/mcp`,
    calls: () =>
      existsSync(callLog)
        ? readFileSync(callLog, "utf8")
            .split("\n")
            .filter((l) => l.trim())
            .map((l) => JSON.parse(l))
        : [],
  };
}

/** The real bridge (`python -m vestige_bridge`) serving AGENT in front of `mcpUrl`. */
export async function startBridge(dir, mcpUrl, { name = "bridge", env = {} } = {}) {
  const port = await freePort();
  const settings = {
    VESTIGE_AUTH_TOKEN: BRIDGE_TOKEN,
    VESTIGE_AGENT_ID: AGENT,
    VESTIGE_MCP_URL: mcpUrl,
    VESTIGE_MCP_TOKEN: UPSTREAM_TOKEN,
    VESTIGE_REQUEST_TIMEOUT: "15",
    VESTIGE_CONNECT_TIMEOUT: "5",
    LOG_LEVEL: "INFO",
    PYTHONPATH: REPO_ROOT,
    PYTHONUNBUFFERED: "1",
    ...env,
  };
  const argv = [python(), "-m", "vestige_bridge", "--host", "127.0.0.1", "--port", String(port)];
  const proc = new Proc(name, argv, { env: cleanEnv(settings), dir });
  const url = `http://127.0.0.1:${port}`;
  await startedOrStopped(proc, () => livez(url), "serving /livez");
  return { proc, url };
}

/** A counter from the bridge's Prometheus /metrics (0 when the series does not exist yet). */
export async function metric(bridgeUrl, name, labels) {
  const text = await (await fetch(`${bridgeUrl}/metrics`)).text();
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort();
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf("}"));
    const got = inner.split(",").sort();
    if (JSON.stringify(got) === JSON.stringify(want)) return Number(line.slice(line.indexOf("}") + 1));
  }
  return 0;
}

/**
 * Register the plugin entry with a capturing host API (the shape OpenClaw passes to `register`),
 * then build the tools for one runtime tool context, as OpenClaw does per agent run.
 */
export function registerPlugin(entry, pluginConfig) {
  const factories = [];
  const api = {
    id: entry.id,
    name: entry.name,
    pluginConfig,
    registerTool(tool, opts) {
      factories.push({ tool, opts });
    },
  };
  entry.register(api);
  return {
    factories,
    tools(ctx) {
      const tools = new Map();
      for (const { tool } of factories) {
        const built = typeof tool === "function" ? tool(ctx) : tool;
        for (const t of [built].flat()) if (t) tools.set(t.name, t);
      }
      return tools;
    },
  };
}

/** Call one tool like the agent loop does: execute(toolCallId, params, signal). */
export async function run(tools, name, params) {
  const tool = tools.get(name);
  if (!tool) throw new Error(`no tool ${name}`);
  return tool.execute(`call-${name}-${Math.random().toString(16).slice(2)}`, params);
}

/** The JSON the stand-in put in the first text item. */
export function textJson(result) {
  return JSON.parse(result.content[0].text);
}
