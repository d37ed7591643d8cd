import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { AuditLog } from "../src/audit/log.js";
import { EartConfigError } from "../src/errors.js";
import type { EffectLedger } from "../src/ledger/ledger.js";
import type { BudgetStore } from "../src/policy/budget.js";
import type { ThreadLock } from "../src/threads/lock.js";

/** eart's stores for graphs a server runs (the server keeps the checkpoints): see {@link serverStores}. */
export interface ServerStores {
  /** `"sqlite"` under `langgraph dev` (one process), `"postgres"` for a deployment (many). */
  kind: "sqlite" | "postgres";
  /** Where they are: the SQLite file, or the PostgreSQL connection string without its password. */
  location: string;
  auditLog: AuditLog;
  ledger: EffectLedger;
  threadLock: ThreadLock;
  budgetStore: BudgetStore;
  /** What `createServerAgent` takes from them. */
  forAgent: { auditLog: AuditLog; ledger: EffectLedger; threadLock: ThreadLock };
  close(): Promise<void>;
}

/**
 * Opens eart's stores for served graphs from configuration: `location`, else `EART_STORE`, else
 * `sqlite:.eart/server.sqlite`. `sqlite:<file>` is for `langgraph dev` (one server process on one
 * machine); `postgres://…` (or `postgresql://…`) is for a deployment, whose workers share the
 * audit log, the effect ledger and the thread lock. LangGraph server keeps the checkpoints itself.
 * @example
 * ```ts
 * const stores = await serverStores(); // EART_STORE=postgres://eart@db/eart in a deployment
 * export const graph = createServerAgent({ agentId: "support-agent", ...options, ...stores.forAgent });
 * ```
 */
export async function serverStores(location: string | undefined = process.env.EART_STORE): Promise<ServerStores> {
  const where = location && location.trim() !== "" ? location.trim() : "sqlite:.eart/server.sqlite";
  if (where.startsWith("sqlite:")) {
    const file = resolve(where.slice("sqlite:".length));
    if (file === "" || where === "sqlite:") throw new EartConfigError("EART_STORE", "sqlite: needs a file (sqlite:.eart/server.sqlite)");
    mkdirSync(dirname(file), { recursive: true });
    const { sqliteStores } = await import("../src/stores/sqlite/index.js");
    const stores = sqliteStores(file);
    const forAgent = { auditLog: stores.auditLog, ledger: stores.ledger, threadLock: stores.threadLock };
    return { kind: "sqlite", location: file, ...forAgent, budgetStore: stores.budgetStore, forAgent, close: async () => stores.close() };
  }
  if (/^postgres(ql)?:\/\//.test(where)) {
    const { postgresStores } = await import("../src/stores/postgres/index.js");
    const stores = await postgresStores({ connectionString: where });
    const forAgent = { auditLog: stores.auditLog, ledger: stores.ledger, threadLock: stores.threadLock };
    return { kind: "postgres", location: where.replace(/:\/\/([^:@/]+):[^@/]*@/, "://$1:***@"), ...forAgent, budgetStore: stores.budgetStore, forAgent, close: () => stores.close() };
  }
  throw new EartConfigError("EART_STORE", `must be sqlite:<file> or a postgres:// connection string, not ${JSON.stringify(where.slice(0, 40))}`);
}
