import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PG_URL } from "../support/specs.js";

/**
 * Several worker processes started together on a new database: each opens `postgresStores`, which
 * creates LangGraph's checkpoint tables (`PostgresSaver.setup()`) and eart's. LangGraph's own DDL
 * is not safe to run from several processes at once (duplicate keys in PostgreSQL's catalog: two
 * of four processes failed their first start in two of three tries); eart runs it under an
 * advisory lock. A real PostgreSQL (.ci/run starts it); no skip.
 */

const STORES = pathToFileURL(resolve("dist/src/stores/postgres/index.js")).href;
const runId = `${process.pid}_${Date.now().toString(36)}`;
const schemas: string[] = [];
let admin: pg.Pool;

beforeAll(async () => {
  admin = new pg.Pool({ connectionString: PG_URL, max: 2 });
  await admin.query("SELECT 1");
});

afterAll(async () => {
  if (!admin) return;
  for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.end();
});

/** One process opening every store in `schema` and closing them: its exit code and what it printed on failure. */
function openStores(schema: string): Promise<{ code: number | null; stderr: string }> {
  const script = `const { postgresStores } = await import(${JSON.stringify(STORES)});
const stores = await postgresStores({ connectionString: ${JSON.stringify(PG_URL)}, schema: ${JSON.stringify(schema)} });
await stores.close();`;
  return new Promise((done) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("close", (code) => done({ code, stderr }));
  });
}

describe("postgresStores from four processes at once on a new schema", () => {
  it("every process opens its stores (the checkpoint tables are created once), three times over", async () => {
    for (let round = 0; round < 3; round++) {
      const schema = `eart_setup_${runId}_${round}`;
      schemas.push(schema);
      await admin.query(`CREATE SCHEMA "${schema}"`);
      const runs = await Promise.all([0, 1, 2, 3].map(() => openStores(schema)));
      expect(runs.filter((r) => r.code !== 0).map((r) => r.stderr.split("\n").find((l) => l.includes("Error")) ?? r.stderr)).toEqual([]);
      const { rows } = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'checkpoints'`, [schema]);
      expect(rows[0]!.n).toBe("1");
    }
  }, 120_000);
});
