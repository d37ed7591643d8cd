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
 * LangGraph's `PostgresSaver` (its tables created, in `schema` when given; guarded), eart's audit
 * log, effect ledger, budget store and thread lock (which holds its own connection, so a run never
 * waits for the pool it uses). Give the agent's to `createGovernedAgent`, and the budget store to `defineBudgets`.
 * @example
 * ```ts
 * const stores = await postgresStores({ connectionString: process.env.DATABASE_URL });
 * const { checkpointer, auditLog, ledger, threadLock } = stores;
 * const agent = createGovernedAgent({ model, tools, identities, policy, checkpointer, auditLog, ledger, threadLock });
 * ```
 */
export async function postgresStores(location: PostgresLocation & { schema?: string } = {}): Promise<PostgresStores> {
  const { schema, ...where } = location;
  const { pool, owned } = openPostgres(where);
  const checkpointer = guardCheckpointer(new PostgresSaver(pool, undefined, schema ? { schema } : undefined));
  await serialisedSetup(pool, () => checkpointer.setup());
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
}
