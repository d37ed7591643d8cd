import type pg from "pg";
import { checkThreadFence, fenceRefusal, type ThreadFence } from "../../threads/lock.js";
import { isPgPool, migrationOnce, storeCall } from "./connection.js";

/**
 * The thread locks' fencing tokens (see {@link ThreadFence}): one row per thread key, the token of
 * its latest hold. `PostgresThreadLock` writes it when it takes a thread; the audit log and the
 * effect ledger read it, share-locked, in the transaction of a fenced write.
 */
export const FENCES = "eart_thread_fences";

export const FENCES_DDL = `CREATE TABLE IF NOT EXISTS ${FENCES} (key BIGINT PRIMARY KEY, token TEXT NOT NULL)`;

/** A key the lock made (a signed 64-bit integer, as text): put in SQL as it is. */
const KEY = /^-?\d{1,20}$/;

/**
 * The statement that reads, and share-locks until the transaction ends, the token of the fence's
 * thread: a lock taken by another process meanwhile waits to write its token until then, and
 * one written before is read here.
 */
export function fenceRead(fence: PostgresFence): string {
  if (!KEY.test(fence.postgres.key)) throw new TypeError(`not a thread lock key: ${fence.postgres.key}`);
  return `SELECT token FROM ${FENCES} WHERE key = ${fence.postgres.key}::bigint FOR SHARE;`;
}

/**
 * Refuses, with `ThreadLockLostError`, a write whose fence another hold of the thread has replaced
 * (`result` is {@link fenceRead}'s). No row: the lock is not in this database (nothing to check).
 */
export function checkFence(fence: PostgresFence, result: pg.QueryResult | undefined): void {
  const row = result?.rows[0] as { token?: unknown } | undefined;
  if (row && row.token !== fence.postgres.token) throw fenceRefusal(fence);
  if (fence.lost.aborted) throw fenceRefusal(fence);
}

/** A fence of the PostgreSQL thread lock. */
export type PostgresFence = ThreadFence & { readonly postgres: NonNullable<ThreadFence["postgres"]> };

/**
 * The PostgreSQL fence of the current run for any of `threadIds` (checked: `checkThreadFence`),
 * and the fence table made ready on `pool` (once per pool).
 */
export async function fenceOf(pool: pg.Pool, threadIds: Iterable<string>): Promise<PostgresFence | undefined> {
  for (const threadId of threadIds) {
    const fence = checkThreadFence(threadId);
    if (!fence?.postgres) continue;
    let ready = fenceTables.get(pool);
    if (!ready) fenceTables.set(pool, (ready = migrationOnce(pool, FENCES, FENCES_DDL)));
    await ready();
    return fence as PostgresFence;
  }
  return undefined;
}

const fenceTables = new WeakMap<pg.Pool, () => Promise<void>>();

/**
 * Checks `fence` on the pool of `saver` (a `PostgresSaver`; anything else is not checked here):
 * rejects with `ThreadLockLostError` when the thread's token there is another hold's. Not in the
 * saver's own transaction (LangGraph's saver opens it): a takeover between the two is not seen.
 */
export async function confirmOnSaver(saver: object, fence: PostgresFence, timeoutMs: number): Promise<void> {
  const pool = (saver as { pool?: unknown }).pool;
  if (!isPgPool(pool)) return;
  const rows = await storeCall({ store: "thread_lock", operation: "confirm", timeoutMs, idempotent: true }, () =>
    pool.query<{ token: string }>(`SELECT token FROM ${FENCES} WHERE key = $1::bigint`, [fence.postgres.key]).then(
      (result) => result.rows,
      // No fence table in the saver's database: the lock is elsewhere, nothing to check here.
      (error: unknown) => {
        if ((error as { code?: unknown })?.code === "42P01") return [];
        throw error;
      },
    ),
  );
  checkFence(fence, { rows } as unknown as pg.QueryResult);
}
