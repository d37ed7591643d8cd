/**
 * eart on SQLite (`eart/sqlite`): the audit log, effect ledger, thread lock and budget store in a
 * SQLite file, and {@link sqliteStores}, which opens all of them with LangGraph's `SqliteSaver` on
 * one file. Needs `better-sqlite3` and `@langchain/langgraph-checkpoint-sqlite` installed.
 */
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import { SqliteBudgetStore } from "./budget-store.js";
import { SqliteEffectLedger } from "./ledger.js";
import { SqliteThreadLock } from "./thread-lock.js";
import { SqliteAuditLog } from "./audit-log.js";
import { openSqlite } from "./connection.js";

export { SqliteAuditLog, type SqliteAuditLogOptions } from "./audit-log.js";
export { SqliteEffectLedger, type SqliteEffectLedgerOptions } from "./ledger.js";
export { SqliteThreadLock, type SqliteThreadLockOptions } from "./thread-lock.js";
export { SqliteBudgetStore, type SqliteBudgetStoreOptions } from "./budget-store.js";
export type { SqliteLocation } from "./connection.js";

/** Everything a governed agent stores, in one SQLite file (see {@link sqliteStores}). */
export interface SqliteStores {
  checkpointer: SqliteSaver;
  auditLog: SqliteAuditLog;
  ledger: SqliteEffectLedger;
  budgetStore: SqliteBudgetStore;
  threadLock: SqliteThreadLock;
  /** Closes the file (after the runs that use it have ended). */
  close(): void;
}

/**
 * Opens one SQLite file (WAL, so several processes can share it) and every store on it:
 * LangGraph's checkpointer, eart's audit log, effect ledger, budget store and thread lock. Give
 * the agent's to `createGovernedAgent`, and the budget store to `defineBudgets`.
 * @example
 * ```ts
 * const stores = sqliteStores(".eart/agent.sqlite");
 * const { checkpointer, auditLog, ledger, threadLock } = stores;
 * const agent = createGovernedAgent({ model, tools, identities, policy, checkpointer, auditLog, ledger, threadLock });
 * ```
 */
export function sqliteStores(path: string): SqliteStores {
  const { db } = openSqlite({ path });
  const threadLock = new SqliteThreadLock({ database: db });
  return {
    checkpointer: new SqliteSaver(db),
    auditLog: new SqliteAuditLog({ database: db }),
    ledger: new SqliteEffectLedger({ database: db }),
    budgetStore: new SqliteBudgetStore({ database: db }),
    threadLock,
    close: () => {
      threadLock.close();
      if (db.open) db.close();
    },
  };
}
