import { randomUUID } from "node:crypto";
import type Database from "better-sqlite3";
import { z } from "zod";
import { EartError, StoreError, ThreadBusyError, ThreadLockLostError } from "../../errors.js";
import { parseOptions } from "../../internal/options.js";
import { checkThreadId, describeHolder, holderLiveness, processInstance, type LockRow, type ReleaseThreadLock, type ThreadFence, type ThreadLock } from "../../threads/lock.js";
import { openSqlite, type SqliteLocation } from "./connection.js";

const SqliteLockBoundsSchema = z
  .object({
    /**
     * A lock whose holder cannot be checked from this process (another host, or another pid
     * namespace: another container on the file) is broken when its holder has not renewed it for
     * this long (default 30 s). Holders renew every third of it.
     */
    staleMs: z.number().int().positive().default(30_000),
  })
  .strict();

/** Where the SQLite lock table lives, and how long an unrenewed lock of an uncheckable holder lives (`staleMs`, default 30 s). */
export type SqliteThreadLockOptions = SqliteLocation & z.input<typeof SqliteLockBoundsSchema>;

/** Faults of the SQLite store (busy past `busy_timeout`, I/O) as typed errors. */
function sqliteFault(operation: string, error: unknown): unknown {
  if (error instanceof EartError) return error;
  const code = (error as { code?: unknown })?.code;
  const busy = code === "SQLITE_BUSY" || code === "SQLITE_LOCKED";
  return new StoreError(busy ? "store_timeout" : "store_failure", "thread_lock", operation, (error as Error)?.message ?? String(error), typeof code === "string" ? { sqliteCode: code } : {}, {
    cause: error,
  });
}

/**
 * A thread lock in a SQLite file (table `eart_thread_locks`), for every process on the machine
 * that opens the file. Each lock row names its holder's process instance (pid, start time, pid
 * namespace, host); a lock whose holder has died (killed, crashed, or a restarted container whose
 * new process got the same pid) is taken over, so a crash never leaves a thread locked. A holder
 * this process cannot check (another host or container) renews its rows every `staleMs / 3` and
 * loses them after `staleMs` without renewal; a holder that finds its row taken aborts `lost`.
 * Each hold's `fence` reads the thread's last holder (table `eart_thread_fences`, kept after a
 * release) before each write of the run that holds it (the guard's checkpoints, eart's stores): a
 * holder whose event loop stalled past `staleMs` and was taken over meanwhile, or whose run goes on
 * after its caller gave up and another run took the thread, writes nothing more (`ThreadLockLostError`).
 * @example
 * ```ts
 * const lock = new SqliteThreadLock({ path: ".eart/eart.sqlite" });
 * ```
 */
export class SqliteThreadLock implements ThreadLock {
  readonly #db: Database.Database;
  readonly #owned: boolean;
  readonly #staleMs: number;
  readonly #take: Database.Transaction<(threadId: string, owner: string) => LockRow | undefined>;
  readonly #release: Database.Statement;
  readonly #renew: Database.Statement;
  readonly #ownerOf: Database.Statement;
  readonly #held = new Map<string, { owner: string; lost: AbortController }>();
  /** Releases a write of another process kept from going through (busy): retried at each beat. */
  readonly #unreleased = new Map<string, string>();
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(options: SqliteThreadLockOptions) {
    const { staleMs, ...location } = (options ?? {}) as SqliteThreadLockOptions;
    ({ staleMs: this.#staleMs } = parseOptions(SqliteLockBoundsSchema, staleMs === undefined ? {} : { staleMs }));
    ({ db: this.#db, owned: this.#owned } = openSqlite(location as SqliteLocation));
    this.#db.exec(`CREATE TABLE IF NOT EXISTS eart_thread_locks (
      thread_id TEXT PRIMARY KEY,
      owner TEXT NOT NULL,
      pid INTEGER NOT NULL,
      host TEXT NOT NULL,
      acquired_at TEXT NOT NULL
    )`);
    // Columns added after the first version, on tables that lack them (one writer at a time).
    this.#db
      .transaction(() => {
        const have = new Set((this.#db.prepare(`PRAGMA table_info(eart_thread_locks)`).all() as { name: string }[]).map((c) => c.name));
        for (const [name, type] of [["instance", "TEXT"], ["pid_ns", "TEXT"], ["started", "TEXT"], ["heartbeat_at", "INTEGER"]] as const) {
          if (!have.has(name)) this.#db.exec(`ALTER TABLE eart_thread_locks ADD COLUMN ${name} ${type}`);
        }
      })
      .immediate();
    const select = this.#db.prepare(`SELECT owner, pid, host, acquired_at, instance, pid_ns, started, heartbeat_at FROM eart_thread_locks WHERE thread_id = ?`);
    const upsert = this.#db.prepare(
      `INSERT INTO eart_thread_locks (thread_id, owner, pid, host, acquired_at, instance, pid_ns, started, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (thread_id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, host = excluded.host, acquired_at = excluded.acquired_at,
         instance = excluded.instance, pid_ns = excluded.pid_ns, started = excluded.started, heartbeat_at = excluded.heartbeat_at`,
    );
    this.#release = this.#db.prepare(`DELETE FROM eart_thread_locks WHERE thread_id = ? AND owner = ?`);
    // Each hold's fence: the thread's last holder, kept after its release (a release deletes the
    // lock row, so the row alone cannot tell a run that a holder came and went since it let go).
    this.#db.exec(`CREATE TABLE IF NOT EXISTS eart_thread_fences (thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL)`);
    const fence = this.#db.prepare(`INSERT INTO eart_thread_fences (thread_id, owner) VALUES (?, ?) ON CONFLICT (thread_id) DO UPDATE SET owner = excluded.owner`);
    this.#ownerOf = this.#db.prepare(`SELECT owner FROM eart_thread_fences WHERE thread_id = ?`);
    this.#renew = this.#db.prepare(`UPDATE eart_thread_locks SET heartbeat_at = ? WHERE thread_id = ? AND owner = ?`);
    const me = processInstance();
    // Returns the live holder, or takes the lock and returns undefined. One write transaction.
    this.#take = this.#db.transaction((threadId: string, owner: string) => {
      const row = select.get(threadId) as LockRow | undefined;
      if (row && !this.#isStale(row)) return row;
      const now = Date.now();
      upsert.run(threadId, owner, me.pid, me.host, new Date(now).toISOString(), me.instance, me.pidNamespace, me.started, now);
      fence.run(threadId, owner);
      return undefined;
    });
  }

  #isStale(row: LockRow): boolean {
    // The holder's last sign of life: its last renewal, else when it took the lock.
    const lastSign = row.heartbeat_at ?? Date.parse(row.acquired_at);
    const liveness = holderLiveness(
      { pid: row.pid, host: row.host, instance: row.instance, pidNamespace: row.pid_ns, started: row.started },
      Number.isFinite(lastSign) ? lastSign : undefined,
    );
    if (liveness !== "unknown") return liveness === "dead";
    return Number.isFinite(lastSign) && Date.now() - lastSign > this.#staleMs;
  }

  async acquire(threadId: string): Promise<ReleaseThreadLock> {
    const id = checkThreadId(threadId);
    const owner = randomUUID();
    let holder: LockRow | undefined;
    try {
      holder = this.#take.immediate(id, owner);
    } catch (error) {
      throw sqliteFault("acquire", error);
    }
    if (holder) throw new ThreadBusyError(id, describeHolder({ pid: holder.pid, host: holder.host, since: holder.acquired_at }));
    const lost = new AbortController();
    this.#held.set(id, { owner, lost });
    this.#startHeartbeat();
    let released = false;
    // The hold's fence: the thread's last holder is read before each write of the run (a holder
    // whose event loop stalled past staleMs, taken over meanwhile, finds out there, not at its next
    // renewal). A run still writing after its hold was released (its caller gave up on it) writes
    // only while nobody has taken the thread since.
    const check = () => {
      let row: { owner: string } | undefined;
      try {
        row = this.#db.open ? (this.#ownerOf.get(id) as { owner: string } | undefined) : undefined;
      } catch (error) {
        throw sqliteFault("check", error);
      }
      if (row?.owner === owner) return;
      const error = new ThreadLockLostError(id, new Error(this.#db.open ? "another hold has taken the thread" : "the thread lock was closed"));
      if (!lost.signal.aborted) lost.abort(error);
      throw lost.signal.reason;
    };
    return Object.assign(
      async () => {
        if (released) return;
        released = true;
        if (this.#held.get(id)?.owner === owner) this.#held.delete(id);
        if (!this.#db.open) return this.#stopIfIdle();
        try {
          this.#release.run(id, owner);
        } catch {
          // Busy past busy_timeout (another process's long write): the run is over whatever the
          // file says; the row is deleted at the next beat, never left naming a live holder.
          this.#unreleased.set(id, owner);
        }
        this.#stopIfIdle();
      },
      { lost: lost.signal, fence: { threadId: id, lost: lost.signal, check } satisfies ThreadFence },
    );
  }

  /**
   * Releases every lock this object holds (each run holding one sees `lost`), stops renewing, and
   * closes the file when this lock opened it (`{ path }`); a shared `{ database }` stays open.
   */
  close(): void {
    for (const [threadId, held] of this.#held) {
      if (!held.lost.signal.aborted) held.lost.abort(new ThreadLockLostError(threadId, new Error("the thread lock was closed")));
      if (this.#db.open) this.#release.run(threadId, held.owner);
    }
    this.#held.clear();
    for (const [threadId, owner] of this.#unreleased) if (this.#db.open) this.#release.run(threadId, owner);
    this.#unreleased.clear();
    this.#stopHeartbeat();
    if (this.#owned && this.#db.open) this.#db.close();
  }

  #startHeartbeat(): void {
    if (this.#heartbeat) return;
    this.#heartbeat = setInterval(() => this.#renewAll(), Math.max(1, Math.floor(this.#staleMs / 3)));
    // Renewing never keeps a process alive on its own.
    this.#heartbeat.unref();
  }

  #stopHeartbeat(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  #stopIfIdle(): void {
    if (this.#held.size === 0 && this.#unreleased.size === 0) this.#stopHeartbeat();
    else this.#startHeartbeat();
  }

  /** Renews every lock this object holds; a lock whose row is gone or taken was lost. */
  #renewAll(): void {
    if (!this.#db.open) return this.#stopHeartbeat();
    for (const [id, owner] of this.#unreleased) {
      try {
        this.#release.run(id, owner);
        this.#unreleased.delete(id);
      } catch {
        // still busy: the next beat tries again
      }
    }
    this.#stopIfIdle();
    const now = Date.now();
    for (const [id, { owner, lost }] of this.#held) {
      let renewed: boolean;
      try {
        renewed = this.#renew.run(now, id, owner).changes === 1;
      } catch {
        continue; // busy: the next beat tries again, well within staleMs
      }
      if (!renewed && !lost.signal.aborted) lost.abort(new ThreadLockLostError(id, new Error("the lock row was taken over or removed")));
    }
  }
}

