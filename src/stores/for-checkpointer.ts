/**
 * The stores that fit a checkpointer, for the prebuilt agent's defaults: the same database as the
 * checkpoints (a `PostgresSaver`'s pool, a `SqliteSaver`'s file), else memory. Picking one loads no
 * driver: a checkpointer of either kind has loaded its own already.
 */
import type pg from "pg";
import { EartConfigError } from "../errors.js";
import { MemoryEffectLedger, type EffectLedger } from "../ledger/ledger.js";
import { MemoryThreadLock, type ThreadLock } from "../threads/lock.js";
import { isPgPool } from "./postgres/connection.js";
import { PostgresEffectLedger } from "./postgres/ledger.js";
import { PostgresThreadLock } from "./postgres/thread-lock.js";
import { isSqliteDatabase } from "./sqlite/connection.js";
import { SqliteEffectLedger } from "./sqlite/ledger.js";
import { SqliteThreadLock } from "./sqlite/thread-lock.js";

const memoryLedgers = new WeakMap<object, MemoryEffectLedger>();

/**
 * The effect ledger that fits a checkpointer: a {@link PostgresEffectLedger} on a `PostgresSaver`'s
 * pool, a {@link SqliteEffectLedger} in a `SqliteSaver`'s file, or one {@link MemoryEffectLedger}
 * per other checkpointer. So a thread that crashed in one process and is finished by another never
 * repeats a side effect, with default options; and the ledger's seal key is shared the same way.
 * @example
 * ```ts
 * const ledger = ledgerFor(SqliteSaver.fromConnString(".eart/agent.sqlite"));
 * ```
 */
export function ledgerFor(checkpointer: unknown): EffectLedger {
  const c = checkpointer as { pool?: unknown; db?: unknown } | null;
  if (!c || typeof c !== "object") throw new EartConfigError("checkpointer", "an effect ledger needs a checkpointer");
  // PostgresSaver keeps its pool in a (TypeScript-)private field.
  if (isPgPool(c.pool)) return new PostgresEffectLedger({ pool: c.pool });
  if (isSqliteDatabase(c.db)) return new SqliteEffectLedger({ database: c.db });
  let ledger = memoryLedgers.get(c);
  if (!ledger) memoryLedgers.set(c, (ledger = new MemoryEffectLedger()));
  return ledger;
}

const memoryLocks = new WeakMap<object, MemoryThreadLock>();
const postgresLocks = new WeakMap<pg.Pool, PostgresThreadLock>();

/**
 * The thread lock that fits a LangGraph checkpointer: for a `PostgresSaver`, a PostgreSQL advisory
 * lock on a connection of its own with the saver's pool settings (one {@link PostgresThreadLock},
 * so one connection, per pool: it never takes one of the pool's connections, which the runs
 * need); a lock table in the database of a `SqliteSaver`; and an in-process lock for any other
 * (shared by every graph on that checkpointer).
 * @example
 * ```ts
 * const lock = threadLockFor(PostgresSaver.fromConnString(url));
 * ```
 */
export function threadLockFor(checkpointer: unknown): ThreadLock {
  const c = checkpointer as { pool?: unknown; db?: unknown } | null;
  if (c && typeof c === "object") {
    // PostgresSaver keeps its pool in a (TypeScript-)private field.
    if (isPgPool(c.pool)) {
      let lock = postgresLocks.get(c.pool);
      if (!lock) postgresLocks.set(c.pool, (lock = new PostgresThreadLock({ pool: c.pool })));
      return lock;
    }
    if (isSqliteDatabase(c.db)) return new SqliteThreadLock({ database: c.db });
    let lock = memoryLocks.get(c);
    if (!lock) memoryLocks.set(c, (lock = new MemoryThreadLock()));
    return lock;
  }
  throw new EartConfigError("checkpointer", "a thread lock needs a checkpointer");
}
