import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { isAbsolute, join, resolve } from "node:path";
import Database from "better-sqlite3";
import { Client } from "@langchain/langgraph-sdk";
import { expect } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");

/** The demo bearer tokens of examples/server/tokens.json, by user. */
export const TOKENS: Readonly<Record<string, string>> = Object.freeze(
  Object.fromEntries(Object.entries(JSON.parse(readFileSync(join(ROOT, "examples/server/tokens.json"), "utf8")) as Record<string, string>).map(([token, user]) => [user, token])),
);

/** A running LangGraph dev server serving the project's `langgraph.json`. */
export interface DevServer {
  url: string;
  /** eart's store the served graphs use (`EART_STORE`): a SQLite file of this server's own. */
  storeFile: string;
  /** An SDK client authenticated as `user` (a user of the demo token file), or with a raw `token`. */
  client(user: string, options?: { token?: string; headers?: Record<string, string> }): Client;
  /** Rows of a table in eart's store file (none before the table exists), read-only. */
  rows<T = Record<string, unknown>>(table: string, columns?: string, where?: { sql: string; params: unknown[] }): T[];
  /** The types of a thread's audit events, in order. */
  auditTypes(threadId: string): string[];
  /** What the server printed so far. */
  log(): string;
  stop(): Promise<void>;
}

/** Whether any process of the group `pgid` leads is still running. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => ok(port));
    });
  });
}

/**
 * Starts `langgraphjs dev` (the LangGraph CLI, a dev dependency) on a free port on 127.0.0.1 with
 * the project's `langgraph.json` (its graphs and auth, copied to a directory of this server's own so
 * the server's files and eart's SQLite store are not shared with other tests), and waits until it
 * answers. Needs the build (the served graphs import `eart` from dist). `extraGraphs` adds test
 * graphs (paths relative to the repository); `withoutHttpApp` leaves out the custom app (eart's
 * HTTP middleware), as a deployment that did not mount it.
 */
export async function startDevServer(env: Record<string, string> = {}, options: { extraGraphs?: Record<string, string>; withoutHttpApp?: boolean } = {}): Promise<DevServer> {
  // Inside the project (.eart/ is ignored): the server resolves @langchain/langgraph from its config's folder.
  mkdirSync(join(ROOT, ".eart"), { recursive: true });
  const dir = mkdtempSync(join(ROOT, ".eart", "langgraph-"));
  const config = JSON.parse(readFileSync(join(ROOT, "langgraph.json"), "utf8")) as { graphs: Record<string, string>; auth?: { path: string }; http?: { app?: string } };
  const absolute = (spec: string) => {
    const [file, symbol] = spec.split(":");
    return `${isAbsolute(file!) ? file : resolve(ROOT, file!)}${symbol ? `:${symbol}` : ""}`;
  };
  config.graphs = Object.fromEntries(Object.entries({ ...config.graphs, ...options.extraGraphs }).map(([id, spec]) => [id, absolute(spec)]));
  if (config.auth) config.auth.path = absolute(config.auth.path);
  if (options.withoutHttpApp) delete config.http;
  else if (config.http?.app) config.http.app = absolute(config.http.app);
  writeFileSync(join(dir, "langgraph.json"), JSON.stringify(config));
  writeFileSync(join(dir, ".gitignore"), ".langgraph_api\n");
  const port = await freePort();
  const storeFile = join(dir, "eart.sqlite");
  const cli = join(ROOT, "node_modules/@langchain/langgraph-cli/dist/cli/cli.mjs");
  let output = "";
  const child: ChildProcess = spawn(process.execPath, [cli, "dev", "--config", join(dir, "langgraph.json"), "--host", "127.0.0.1", "--port", String(port), "--no-browser", "--no-reload"], {
    cwd: ROOT,
    env: { ...process.env, EART_STORE: `sqlite:${storeFile}`, LANGGRAPH_CLI_NO_ANALYTICS: "1", BROWSER: "none", OPENAI_API_KEY: "", LANGSMITH_TRACING: "false", NO_COLOR: "1",
      // The schemas endpoint parses the graph's source with TypeScript: slow on a busy machine.
      LANGGRAPH_SCHEMA_RESOLVE_TIMEOUT_MS: "180000", ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  child.stdout!.on("data", (d) => (output += String(d)));
  child.stderr!.on("data", (d) => (output += String(d)));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null || child.pid === undefined) return;
    const exited = new Promise((ok) => child.once("exit", ok));
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // gone
      }
    }, 5_000);
    await exited;
    clearTimeout(timer);
    // The CLI exits before the server process it started has flushed its files: wait until the
    // whole group is gone, then remove the folder (retrying while a last write lands).
    for (let i = 0; i < 50 && groupAlive(child.pid!); i++) await new Promise((r) => setTimeout(r, 100));
    rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the LangGraph dev server exited (${child.exitCode}):\n${output}`);
    if (/Server running at/.test(output)) {
      const ok = await fetch(`${url}/info`).then((r) => r.ok, () => false);
      if (ok) break;
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the LangGraph dev server did not start in 90 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    storeFile,
    client: (user, options = {}) => {
      const token = options.token ?? TOKENS[user];
      if (token === undefined) throw new Error(`no demo token for ${user}`);
      return new Client({ apiUrl: url, defaultHeaders: { Authorization: `Bearer ${token}`, ...options.headers } });
    },
    rows: <T>(table: string, columns = "*", where?: { sql: string; params: unknown[] }) => readStore<T>(storeFile, table, columns, where),
    auditTypes: (threadId: string) =>
      readStore<{ type: string }>(storeFile, "eart_audit_events", "type", { sql: "thread_id = ? ORDER BY seq", params: [threadId] }).map((r) => r.type),
    log: () => output,
    stop,
  };
}

function readStore<T>(file: string, table: string, columns: string, where?: { sql: string; params: unknown[] }): T[] {
  const db = new Database(file, { readonly: true });
  try {
    const exists = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(table);
    if (!exists) return [];
    return db.prepare(`SELECT ${columns} FROM ${table} ${where ? `WHERE ${where.sql}` : "ORDER BY rowid"}`).all(...(where?.params ?? [])) as T[];
  } finally {
    db.close();
  }
}

/** A pending call of an eart approval request, as the server shows it. */
export type ServedRequest = { toolCallId: string; digest: string; name: string; args: Record<string, unknown> };
/** One interrupt of a served thread. */
export type ServedInterrupt = {
  id: string;
  value: Record<string, unknown> & { type?: string; roles?: string[]; requests?: ServedRequest[]; refusal?: { code: string; message: string } };
};

/** The one interrupt a thread waits on (the thread must be interrupted on exactly one). */
export async function interruptOf(client: Client, threadId: string): Promise<ServedInterrupt> {
  const thread = await client.threads.get(threadId);
  expect(thread.status).toBe("interrupted");
  const all = Object.values(thread.interrupts ?? {}).flat() as ServedInterrupt[];
  expect(all).toHaveLength(1);
  return all[0]!;
}

/** eart's keyed answer approving every call of an approval interrupt. */
export const approveAll = (request: ServedInterrupt) => ({ decisions: request.value.requests!.map((r) => ({ toolCallId: r.toolCallId, type: "approve", digest: r.digest })) });
