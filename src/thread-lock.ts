import { createHash, randomUUID } from "node:crypto";
import { hostname } from "node:os";
import Database from "better-sqlite3";
import pg from "pg";
import { EartConfigError, ThreadBusyError, ThreadLockLostError } from "./errors.js";
import { openPostgres, type PostgresLocation } from "./postgres.js";
import { openSqlite, type SqliteLocation } from "./sqlite.js";

/**
 * Per-thread locks: one run (or resume) of a thread at a time, across processes. A second
 * concurrent run gets a {@link ThreadBusyError} before anything of it runs.
 */

/**
 * Releases a lock taken by {@link ThreadLock.acquire}. Safe to call more than once. `lost`, when
 * present, is aborted (with a {@link ThreadLockLostError}) if the lock is lost while held.
 */
export type ReleaseThreadLock = (() => Promise<void>) & { lost?: AbortSignal };

/**
 * Takes a thread's lock without waiting: resolves with the release function, or rejects with a
 * {@link ThreadBusyError} when another run holds it.
 * @example
 * ```ts
 * const release = await lock.acquire("thread-1");
 * try { await graph.invoke(input, config); } finally { await release(); }
 * ```
 */
export interface ThreadLock {
  acquire(threadId: string): Promise<ReleaseThreadLock>;
}

function checkThreadId(threadId: unknown): string {
  if (typeof threadId !== "string" || threadId === "") throw new EartConfigError("threadId", "must be a non-empty string");
  return threadId;
}

/**
 * A thread lock within one process (for `MemorySaver` graphs and tests).
 * @example
 * ```ts
 * const lock = new MemoryThreadLock();
 * ```
 */
export class MemoryThreadLock implements ThreadLock {
  readonly #held = new Set<string>();

  async acquire(threadId: string): Promise<ReleaseThreadLock> {
    const id = checkThreadId(threadId);
    if (this.#held.has(id)) throw new ThreadBusyError(id, "this process");
    this.#held.add(id);
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      this.#held.delete(id);
    };
  }
}

interface LockRow {
  owner: string;
  pid: number;
  host: string;
  acquired_at: string;
}

/** Whether a process of this machine is alive. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * A thread lock in a SQLite file (table `eart_thread_locks`), for every process on the machine
 * that opens the file. A lock whose holder process has died (killed, crashed) is taken over, so a
 * crash never leaves a thread locked.
 * @example
 * ```ts
 * const lock = new SqliteThreadLock({ path: ".eart/eart.sqlite" });
 * ```
 */
export class SqliteThreadLock implements ThreadLock {
  readonly #db: Database.Database;
  readonly #take: Database.Transaction<(threadId: string, owner: string) => LockRow | undefined>;
  readonly #release: Database.Statement;

  constructor(options: SqliteLocation) {
    ({ db: this.#db } = openSqlite(options));
    this.#db.exec(`CREATE TABLE IF NOT EXISTS eart_thread_locks (
      thread_id TEXT PRIMARY KEY,
      owner TEXT NOT NULL,
      pid INTEGER NOT NULL,
      host TEXT NOT NULL,
      acquired_at TEXT NOT NULL
    )`);
    const select = this.#db.prepare(`SELECT owner, pid, host, acquired_at FROM eart_thread_locks WHERE thread_id = ?`);
    const upsert = this.#db.prepare(
      `INSERT INTO eart_thread_locks (thread_id, owner, pid, host, acquired_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (thread_id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, host = excluded.host, acquired_at = excluded.acquired_at`,
    );
    this.#release = this.#db.prepare(`DELETE FROM eart_thread_locks WHERE thread_id = ? AND owner = ?`);
    const host = hostname();
    // Returns the live holder, or takes the lock and returns undefined. One write transaction.
    this.#take = this.#db.transaction((threadId: string, owner: string) => {
      const row = select.get(threadId) as LockRow | undefined;
      if (row && (row.host !== host || alive(row.pid))) return row;
      upsert.run(threadId, owner, process.pid, host, new Date().toISOString());
      return undefined;
    });
  }

  async acquire(threadId: string): Promise<ReleaseThreadLock> {
    const id = checkThreadId(threadId);
    const owner = randomUUID();
    const holder = this.#take.immediate(id, owner);
    if (holder) throw new ThreadBusyError(id, `process ${holder.pid} on ${holder.host} since ${holder.acquired_at}`);
    let released = false;
    return async () => {
      if (released || !this.#db.open) return;
      released = true;
      this.#release.run(id, owner);
    };
  }
}

/** The 64-bit advisory lock key of a thread (signed, as PostgreSQL's bigint). */
export function advisoryLockKey(threadId: string): string {
  return createHash("sha256").update(`eart.thread:${threadId}`).digest().readBigInt64BE(0).toString();
}

/**
 * A thread lock held as a PostgreSQL session advisory lock (`pg_try_advisory_lock`) on a
 * connection kept for the run: every process and machine on the database sees it, and it goes
 * away with the connection if the holder dies.
 * @example
 * ```ts
 * const lock = new PostgresThreadLock({ connectionString: process.env.EART_DATABASE_URL });
 * ```
 */
export class PostgresThreadLock implements ThreadLock {
  readonly #pool: pg.Pool;
  readonly #owned: boolean;

  constructor(options: PostgresLocation = {}) {
    ({ pool: this.#pool, owned: this.#owned } = openPostgres(options));
  }

  async acquire(threadId: string): Promise<ReleaseThreadLock> {
    const id = checkThreadId(threadId);
    const key = advisoryLockKey(id);
    const client = await this.#pool.connect();
    let locked: boolean;
    try {
      const { rows } = await client.query<{ locked: boolean }>(`SELECT pg_try_advisory_lock($1::bigint) AS locked`, [key]);
      locked = rows[0]?.locked === true;
    } catch (error) {
      client.release(error as Error);
      throw error;
    }
    if (!locked) {
      client.release();
      throw new ThreadBusyError(id, "another PostgreSQL session");
    }
    // A checked-out client has no error listener of the pool's: without one, a dropped
    // connection would be an unhandled 'error' event and end the process. The lock went with the
    // connection, so the run holding it is told through `lost`.
    const lost = new AbortController();
    const onError = (error: Error) => {
      if (!lost.signal.aborted) lost.abort(new ThreadLockLostError(id, error));
    };
    client.on("error", onError);
    let released = false;
    return Object.assign(
      async () => {
        if (released) return;
        released = true;
        try {
          if (lost.signal.aborted) throw lost.signal.reason;
          await client.query(`SELECT pg_advisory_unlock($1::bigint)`, [key]);
          client.off("error", onError);
          client.release();
        } catch (error) {
          // The connection is gone (and the lock with it): drop the client rather than reuse it.
          client.off("error", onError);
          client.release(error as Error);
        }
      },
      { lost: lost.signal },
    );
  }

  /** Ends the pool (only when this lock created it). */
  async close(): Promise<void> {
    if (this.#owned && !this.#pool.ended) await this.#pool.end();
  }
}

const memoryLocks = new WeakMap<object, MemoryThreadLock>();

/**
 * The thread lock that fits a LangGraph checkpointer: a PostgreSQL advisory lock on the pool of a
 * `PostgresSaver`, a lock table in the database of a `SqliteSaver`, and an in-process lock for
 * any other (shared by every graph on that checkpointer).
 * @example
 * ```ts
 * const lock = threadLockFor(PostgresSaver.fromConnString(url));
 * ```
 */
export function threadLockFor(checkpointer: unknown): ThreadLock {
  const c = checkpointer as { pool?: unknown; db?: unknown } | null;
  if (c && typeof c === "object") {
    // PostgresSaver keeps its pool in a (TypeScript-)private field.
    if (c.pool instanceof pg.Pool) return new PostgresThreadLock({ pool: c.pool });
    if (c.db instanceof Database) return new SqliteThreadLock({ database: c.db });
    let lock = memoryLocks.get(c);
    if (!lock) memoryLocks.set(c, (lock = new MemoryThreadLock()));
    return lock;
  }
  throw new EartConfigError("checkpointer", "a thread lock needs a checkpointer");
}
