import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Command } from "@langchain/langgraph";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { defineBudgets, pendingApproval } from "eart";
import { postgresStores } from "eart/postgres";
import { sqliteStores } from "eart/sqlite";
import { ask, config, refund, refundSetup } from "../support/refund.js";

/**
 * What each entry point costs a user: `import "eart"` loads no database driver and no HTTP or
 * telemetry client (they live behind `eart/sqlite`, `eart/postgres`, `eart/cedar`,
 * `eart/langsmith`, `eart/otel`), read off a real process that imports the built package and
 * records every module Node resolves for it. And the one-call store factories work as a whole.
 */

const dir = mkdtempSync(join(tmpdir(), "eart-entry-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HEAVY = ["better-sqlite3", "pg", "langsmith", "@cedar-policy/cedar-wasm", "@opentelemetry/api", "@langchain/langgraph-checkpoint-sqlite", "@langchain/langgraph-checkpoint-postgres"];

/** The packages (under node_modules) a fresh process resolves to import `entry` from dist. */
function packagesLoadedBy(entry: string): string[] {
  const file = resolve("dist", entry);
  if (!existsSync(file)) throw new Error(`${file} is missing: run "npm run build" (npm test does) before these tests`);
  const log = join(dir, `${entry.replace(/\W/g, "_")}.log`);
  const hook = join(dir, "hook.mjs");
  writeFileSync(hook, `import { appendFileSync } from "node:fs";\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + "\\n"); return r; }\n`);
  const register = join(dir, "register.mjs");
  writeFileSync(register, `import { register } from "node:module";\nregister(${JSON.stringify(pathToFileURL(hook).href)});\n`);
  writeFileSync(log, "");
  const run = spawnSync(process.execPath, ["--import", pathToFileURL(register).href, "--input-type=module", "-e", `await import(${JSON.stringify(pathToFileURL(file).href)});`], { encoding: "utf8" });
  expect(run.status, run.stderr).toBe(0);
  const packages = readFileSync(log, "utf8")
    .split("\n")
    .flatMap((url) => [...url.matchAll(/node_modules\/((?:@[^/]+\/)?[^/]+)\//g)].map((m) => m[1]!).slice(-1));
  return [...new Set(packages)].sort();
}

describe("entry points", () => {
  it('import "eart" loads no native driver, database client, HTTP client or telemetry SDK', () => {
    const loaded = packagesLoadedBy("src/index.js");
    // The check reads real loads: zod, which the root needs, is among them.
    expect(loaded).toContain("zod");
    expect(loaded.filter((p) => HEAVY.includes(p))).toEqual([]);
  });

  it('the types of "eart" name no driver or client: a project without @types/pg or @types/better-sqlite3 type-checks against them', () => {
    const seen = new Set<string>();
    const todo = [resolve("dist/src/index.d.ts")];
    const outside: string[] = [];
    while (todo.length > 0) {
      const file = todo.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      for (const m of readFileSync(file, "utf8").matchAll(/from "([^"]+)"|import\("([^"]+)"\)/g)) {
        const spec = (m[1] ?? m[2])!;
        if (spec.startsWith(".")) todo.push(resolve(dirname(file), spec.replace(/\.js$/, ".d.ts")));
        else outside.push(spec);
      }
    }
    expect(seen.size).toBeGreaterThan(10);
    expect(outside).toContain("zod");
    expect(outside.filter((spec) => HEAVY.some((h) => spec === h || spec.startsWith(`${h}/`)))).toEqual([]);
  });

  it("each subpath loads what it is for: the checkpointer of its database, the LangSmith client", () => {
    expect(packagesLoadedBy("src/stores/sqlite/index.js")).toContain("@langchain/langgraph-checkpoint-sqlite");
    expect(packagesLoadedBy("src/stores/postgres/index.js")).toContain("@langchain/langgraph-checkpoint-postgres");
    expect(packagesLoadedBy("src/export/langsmith.js")).toContain("langsmith");
    // LangChain's createAgent, only behind eart/middleware.
    expect(packagesLoadedBy("middleware/index.js")).toContain("langchain");
    expect(packagesLoadedBy("src/index.js")).not.toContain("langchain");
    expect(packagesLoadedBy("graphs/index.js")).not.toContain("langchain");
  });

  it("sqliteStores: one file holds the checkpoints, audit log, ledger, budget counters and lock of a governed refund", async () => {
    const file = join(dir, "agent.sqlite");
    const stores = sqliteStores(file);
    try {
      const { checkpointer, auditLog, ledger, threadLock, budgetStore } = stores;
      const budgets = defineBudgets([{ id: "refunds.daily", tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 10_000 }, onExceed: "deny" }], { store: budgetStore });
      const s = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, budgets, agent: { ledger, threadLock } });
      const request = pendingApproval(await s.agent.invoke(ask(), config("sq-1")))!;
      await s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest: request.requests[0]!.digest }] } }), config("sq-1", "sam"));
      expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
      expect((await ledger.list("sq-1")).map((e) => e.status)).toEqual(["succeeded"]);
      expect(await auditLog.verify("sq-1")).toMatchObject({ ok: true });
      // The day's refunds are counted in the same file.
      const counted = new Database(file, { readonly: true });
      try {
        expect(counted.prepare("SELECT value FROM eart_budget_counters").all()).toEqual([{ value: 740 }]);
      } finally {
        counted.close();
      }
    } finally {
      stores.close();
    }
  });

  it("postgresStores: one pool holds the same, with the checkpointer's tables in their own schema", async () => {
    const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
    const schema = `eart_entry_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
    const admin = new pg.Pool({ connectionString: url, max: 1 });
    await admin.query(`CREATE SCHEMA "${schema}"`);
    const u = new URL(url);
    u.searchParams.set("options", `-c search_path=${schema}`);
    const stores = await postgresStores({ connectionString: u.toString(), schema });
    try {
      const { checkpointer, auditLog, ledger, threadLock } = stores;
      const s = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, agent: { ledger, threadLock } });
      const request = pendingApproval(await s.agent.invoke(ask(), config("pg-1")))!;
      await s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest: request.requests[0]!.digest }] } }), config("pg-1", "sam"));
      expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
      expect(await auditLog.verify("pg-1")).toMatchObject({ ok: true });
      const { rows } = await admin.query(`SELECT count(*)::int AS n FROM "${schema}".checkpoints WHERE thread_id = 'pg-1'`);
      expect(rows[0].n).toBeGreaterThan(0);
    } finally {
      await stores.close();
      await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
      await admin.end();
    }
  });
});
