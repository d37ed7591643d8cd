/**
 * eart on PostgreSQL (`eart/postgres`): the audit log, effect ledger, thread lock and budget store
 * in PostgreSQL, the fault guards for pools and LangGraph's `PostgresSaver`, and
 * {@link postgresStores}, which opens all of them on one pool. Needs `pg` and
 * `@langchain/langgraph-checkpoint-postgres` installed.
 */
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import type pg from "pg";
import { PostgresBudgetStore } from "./budget-store.js";
import { PostgresEffectLedger } from "./ledger.js";
import { PostgresThreadLock } from "./thread-lock.js";
import { PostgresAuditLog } from "./audit-log.js";
import { guardCheckpointer, openPostgres, serialisedSetup, type PostgresLocation } from "./connection.js";
import { EartConfigError } from "../../errors.js";

export { PostgresAuditLog, type PostgresAuditLogOptions } from "./audit-log.js";
export { PostgresEffectLedger, type PostgresEffectLedgerOptions } from "./ledger.js";
export { advisoryLockKey, PostgresThreadLock, type PostgresThreadLockOptions } from "./thread-lock.js";
export { PostgresBudgetStore, type PostgresBudgetStoreOptions } from "./budget-store.js";
export { guardCheckpointer, guardPool, isConnectionLoss, serialisedSetup, type PostgresLocation } from "./connection.js";

/** Everything a governed agent stores, in one PostgreSQL database (see {@link postgresStores}). */
export interface PostgresStores {
  checkpointer: PostgresSaver;
  auditLog: PostgresAuditLog;
  ledger: PostgresEffectLedger;
  budgetStore: PostgresBudgetStore;
  threadLock: PostgresThreadLock;
  /** The pool every store shares (guarded: a dropped connection fails a statement, not the process). */
  pool: pg.Pool;
  /** Ends the thread lock's connection, and the pool when this call opened it. */
  close(): Promise<void>;
}

/**
 * Opens every store on one pool (a connection string, else `EART_DATABASE_URL`, or your pool):
 * LangGraph's `PostgresSaver` (its tables created; guarded), eart's audit log, effect ledger, budget
 * store and thread lock (which holds its own connection, so a run never waits for the pool it uses).
 * Give the agent's to `createGovernedAgent`, and the budget store to `defineBudgets`.
 *
 * With `schema` (a tenant's schema: lower-case letters, digits, `_`), every store is in it: the
 * checkpoints, and eart's tables with the seal key, the budgets and the thread locks' key space,
 * which follow the pool's `search_path`. The pool opened from a connection string gets
 * `search_path` set to the schema (unless the string sets `options` itself); a pool you give must
 * already resolve to it (`options: "-c search_path=…"`), else `EartConfigError` (`schema`) and
 * nothing is opened: two tenants would otherwise share eart's audit log, ledger and seal key.
 * @example
 * ```ts
 * const stores = await postgresStores({ connectionString: process.env.DATABASE_URL });
 * const { checkpointer, auditLog, ledger, threadLock } = stores;
 * const agent = createGovernedAgent({ model, tools, identities, policy, checkpointer, auditLog, ledger, threadLock });
 * const tenantB = await postgresStores({ connectionString: process.env.DATABASE_URL, schema: "tenant_b" });
 * ```
 */
export async function postgresStores(location: PostgresLocation & { schema?: string } = {}): Promise<PostgresStores> {
  const { schema, ...where } = location ?? {};
  if (schema !== undefined && (typeof schema !== "string" || !SCHEMA_NAME.test(schema))) {
    throw new EartConfigError("schema", "must be a schema name of lower-case letters, digits and _ (not starting with a digit), at most 63 characters");
  }
  const { pool, owned } = openPostgres(schema === undefined || where.pool ? where : { connectionString: onSearchPath(where.connectionString ?? process.env.EART_DATABASE_URL, schema) });
  try {
    const checkpointer = guardCheckpointer(new PostgresSaver(pool, undefined, schema ? { schema } : undefined));
    await serialisedSetup(pool, () => checkpointer.setup());
    if (schema !== undefined) {
      // eart's own tables are where the pool's search_path resolves (the checkpointer created the schema).
      const { rows } = await pool.query<{ schema: string | null }>(`SELECT current_schema() AS schema`);
      const found = rows[0]?.schema ?? null;
      if (found !== schema) {
        throw new EartConfigError(
          "schema",
          `eart's audit log, effect ledger (with its seal key), budgets and thread locks go where the pool's search_path resolves (${found === null ? "no schema" : `"${found}"`}), not to "${schema}" where the checkpoints go: give a pool whose connections resolve to it (options: "-c search_path=${schema}")`,
        );
      }
    }
    const threadLock = new PostgresThreadLock({ pool });
    return {
      checkpointer,
      auditLog: new PostgresAuditLog({ pool }),
      ledger: new PostgresEffectLedger({ pool }),
      budgetStore: new PostgresBudgetStore({ pool }),
      threadLock,
      pool,
      close: async () => {
        await threadLock.close();
        if (owned && !pool.ended) await pool.end();
      },
    };
  } catch (error) {
    if (owned && !pool.ended) await pool.end().catch(() => {});
    throw error;
  }
}

/** A schema name eart puts in a search_path and LangGraph quotes: the same name either way. */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** The connection string with its search_path set to `schema`, unless it sets `options` (then postgresStores checks where it resolves). */
function onSearchPath(connectionString: string | undefined, schema: string): string | undefined {
  if (connectionString === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(connectionString);
  } catch {
    return connectionString;
  }
  if (!url.searchParams.has("options")) url.searchParams.set("options", `-c search_path=${schema}`);
  return url.toString();
}
