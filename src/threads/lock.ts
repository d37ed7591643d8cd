import { createHash, randomUUID } from "node:crypto";
import { readFileSync, readlinkSync } from "node:fs";
import { hostname } from "node:os";
import type Database from "better-sqlite3";
import type pg from "pg";
import { z } from "zod";
import { EartConfigError, EartError, StoreError, ThreadBusyError, ThreadLockLostError } from "../errors.js";
import { parseOptions } from "../internal/options.js";
import { dedicatedClient, isConnectionLoss, isPgPool, withDeadline, type PostgresLocation } from "../stores/postgres/connection.js";
import { isSqliteDatabase, openSqlite, type SqliteLocation } from "../stores/sqlite/connection.js";

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

/**
 * Who holds a lock, as eart's locks record it: a process *instance*, not only a pid. A restarted
 * container whose app is PID 1 again has the pid of the process that left a lock behind, so a pid
 * alone would keep that lock alive forever; the start time tells the two apart.
 */
export interface ProcessInstance {
  /** Random, one per module instance (so per process, or per worker thread). */
  instance: string;
  pid: number;
  host: string;
  /** The pid namespace (Linux `/proc/self/ns/pid`): pids of two namespaces (two containers) are not comparable. `null` where unknown. */
  pidNamespace: string | null;
  /** The kernel's boot id and the process's start time in clock ticks (Linux `/proc/<pid>/stat`); `null` where unknown. */
  started: string | null;
}

/** A recorded lock holder; fields missing in records written by earlier versions are `null` or absent. */
export type LockHolder = Pick<ProcessInstance, "pid" | "host"> & Partial<Record<"instance" | "pidNamespace" | "started", string | null>>;

const readOr = <T>(read: () => T): T | null => {
  try {
    return read();
  } catch {
    return null;
  }
};

let bootId: string | null | undefined;

/** The start of a process: boot id and start time in clock ticks since boot, or `null` off Linux (or when unreadable). */
function startOf(pid: number | "self"): string | null {
  const stat = readOr(() => readFileSync(`/proc/${pid}/stat`, "utf8"));
  if (stat === null) return null;
  // Field 22 (starttime) counts from the one after the command, which is in parentheses and may hold spaces.
  const ticks = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  if (!ticks || !/^\d+$/.test(ticks)) return null;
  bootId ??= readOr(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim());
  return `${bootId ?? "boot"}/${ticks}`;
}

let self: ProcessInstance | undefined;

/**
 * This process as eart's locks record it (computed once).
 * @example
 * ```ts
 * const { pid, started } = processInstance();
 * ```
 */
export function processInstance(): ProcessInstance {
  return (self ??= {
    instance: randomUUID(),
    pid: process.pid,
    host: hostname(),
    pidNamespace: readOr(() => readlinkSync("/proc/self/ns/pid")),
    started: startOf("self"),
  });
}

/** Whether a process of this machine (and pid namespace) with this pid exists. */
function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether the holder of a lock is alive, as far as this process can tell: `alive`, `dead`, or
 * `unknown` when it cannot be checked from here (another host, or another pid namespace: another
 * container sharing the file); such a lock is broken only by age (its heartbeat or mtime).
 *
 * A holder is dead when no process has its pid, or when the process with its pid started at
 * another time than recorded: the pid was reused, e.g. by this very process as a restarted
 * container's PID 1. Where no start time can be compared (a record of an earlier eart, or a system
 * without `/proc`), a record with this process's pid written (`writtenAt`, epoch ms) before this
 * process started is an earlier process too.
 * @example
 * ```ts
 * holderLiveness({ pid: 1, host: hostname(), started: "…/12345" }); // "dead" in a restarted container
 * ```
 */
export function holderLiveness(holder: LockHolder, writtenAt?: number): "alive" | "dead" | "unknown" {
  const me = processInstance();
  if (holder.host !== me.host) return "unknown";
  if (holder.instance && holder.instance === me.instance) return "alive";
  if (holder.pidNamespace && me.pidNamespace && holder.pidNamespace !== me.pidNamespace) return "unknown";
  if (!pidExists(holder.pid)) return "dead";
  if (holder.started && me.started) {
    const started = holder.pid === me.pid ? me.started : startOf(holder.pid);
    // Unreadable (e.g. /proc mounted with hidepid): it may be the holder.
    return started === null || started === holder.started ? "alive" : "dead";
  }
  // Margin: the start is derived from the uptime; a record this process wrote is never older than it.
  if (holder.pid === me.pid && writtenAt !== undefined && writtenAt < startedAt() - 50) return "dead";
  return "alive";
}

let startedAtMs: number | undefined;
/** When this process started, in epoch ms. */
const startedAt = (): number => (startedAtMs ??= Date.now() - process.uptime() * 1000);

/** How a holder reads in a {@link ThreadBusyError}. */
const describeHolder = (h: LockHolder & { since?: string }): string =>
  `process ${h.pid} on ${h.host}${h.since ? ` since ${h.since}` : ""}`;

interface LockRow {
  owner: string;
  pid: number;
  host: string;
  acquired_at: string;
  instance: string | null;
  pid_ns: string | null;
  started: string | null;
  heartbeat_at: number | null;
}

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
 * @example
 * ```ts
 * const lock = new SqliteThreadLock({ path: ".eart/eart.sqlite" });
 * ```
 */
export class SqliteThreadLock implements ThreadLock {
  readonly #db: Database.Database;
  readonly #staleMs: number;
  readonly #take: Database.Transaction<(threadId: string, owner: string) => LockRow | undefined>;
  readonly #release: Database.Statement;
  readonly #renew: Database.Statement;
  readonly #held = new Map<string, { owner: string; lost: AbortController }>();
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(options: SqliteThreadLockOptions) {
    const { staleMs, ...location } = (options ?? {}) as SqliteThreadLockOptions;
    ({ staleMs: this.#staleMs } = parseOptions(SqliteLockBoundsSchema, staleMs === undefined ? {} : { staleMs }));
    ({ db: this.#db } = openSqlite(location as SqliteLocation));
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
    this.#renew = this.#db.prepare(`UPDATE eart_thread_locks SET heartbeat_at = ? WHERE thread_id = ? AND owner = ?`);
    const me = processInstance();
    // Returns the live holder, or takes the lock and returns undefined. One write transaction.
    this.#take = this.#db.transaction((threadId: string, owner: string) => {
      const row = select.get(threadId) as LockRow | undefined;
      if (row && !this.#isStale(row)) return row;
      const now = Date.now();
      upsert.run(threadId, owner, me.pid, me.host, new Date(now).toISOString(), me.instance, me.pidNamespace, me.started, now);
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
    return Object.assign(
      async () => {
        if (released) return;
        released = true;
        if (this.#held.get(id)?.owner === owner) this.#held.delete(id);
        if (this.#held.size === 0) this.#stopHeartbeat();
        if (!this.#db.open) return;
        try {
          this.#release.run(id, owner);
        } catch (error) {
          throw sqliteFault("release", error);
        }
      },
      { lost: lost.signal },
    );
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

  /** Renews every lock this object holds; a lock whose row is gone or taken was lost. */
  #renewAll(): void {
    if (!this.#db.open) return this.#stopHeartbeat();
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

/** The 64-bit advisory lock key of a thread (signed, as PostgreSQL's bigint). */
export function advisoryLockKey(threadId: string): string {
  return createHash("sha256").update(`eart.thread:${threadId}`).digest().readBigInt64BE(0).toString();
}

const PostgresLockBoundsSchema = z
  .object({
    /** The bound on connecting the lock's connection and on each lock statement (default 10 s). */
    timeoutMs: z.number().int().positive().default(10_000),
    /** The lock's connection is closed after this long without a lock held or asked for (default 10 s). */
    idleTimeoutMs: z.number().int().positive().default(10_000),
  })
  .strict();

/**
 * Where the PostgreSQL thread lock connects (a connection string, else `EART_DATABASE_URL`, or a
 * pool whose settings its own connection copies) and its bounds: `timeoutMs` (default 10 s) and
 * `idleTimeoutMs` (default 10 s).
 */
export type PostgresThreadLockOptions = PostgresLocation & z.input<typeof PostgresLockBoundsSchema>;

/** One lock held on a session. */
interface Hold {
  readonly threadId: string;
  readonly lost: AbortController;
}

/**
 * The lock's own connection. Every lock of a {@link PostgresThreadLock} is a session advisory lock
 * on it, so the locks go away with it: when it drops, every hold on it is told through `lost`.
 */
class LockSession {
  readonly client: pg.Client;
  readonly ready: Promise<void>;
  readonly holds = new Set<Hold>();
  dead: Error | undefined;
  /** Settles once the connection is closed after `die`. */
  ended: Promise<void> | undefined;
  #inFlight = 0;
  #tail: Promise<void> = Promise.resolve();
  #idleTimer: NodeJS.Timeout | undefined;
  readonly #idleTimeoutMs: number;

  constructor(client: pg.Client, idleTimeoutMs: number, onDead: (session: LockSession) => void) {
    this.client = client;
    this.#idleTimeoutMs = idleTimeoutMs;
    client.on("error", (error: Error) => this.die(error));
    client.on("end", () => this.die(new Error("the thread lock's connection ended")));
    this.#onDead = onDead;
    this.#inFlight++;
    this.ready = client.connect().then(() => undefined).finally(() => {
      this.#inFlight--;
      this.#settle();
    });
  }

  readonly #onDead: (session: LockSession) => void;

  /** Runs one statement; a statement with no answer by `deadline` ends the session (and every lock on it). */
  async query(operation: string, text: string, values: unknown[], deadline: number, timeoutMs: number): Promise<pg.QueryResult> {
    const lost = () =>
      new StoreError("store_unavailable", "thread_lock", operation, `the lock's connection was lost: ${this.dead?.message}`, {}, { cause: this.dead });
    if (this.dead) throw lost();
    this.#inFlight++;
    this.#settle();
    // One statement at a time on the connection (pg is dropping its own queue of concurrent queries).
    const run = this.#tail.then(() => {
      if (this.dead) throw lost();
      return this.client.query(text, values);
    });
    this.#tail = run.then(
      () => {},
      () => {},
    );
    try {
      return await withDeadline(run, deadline, () => {
        const timeout = new StoreError("store_timeout", "thread_lock", operation, `no answer within ${timeoutMs} ms; the lock's connection is closed`, { timeoutMs });
        this.die(timeout);
        return timeout;
      });
    } finally {
      this.#inFlight--;
      this.#settle();
    }
  }

  hold(threadId: string): Hold {
    const hold: Hold = { threadId, lost: new AbortController() };
    this.holds.add(hold);
    if (this.dead) hold.lost.abort(new ThreadLockLostError(threadId, this.dead));
    this.#settle();
    return hold;
  }

  drop(hold: Hold): void {
    this.holds.delete(hold);
    this.#settle();
  }

  die(error: Error): void {
    if (this.dead) return;
    this.dead = error;
    clearTimeout(this.#idleTimer);
    for (const hold of this.holds) if (!hold.lost.signal.aborted) hold.lost.abort(new ThreadLockLostError(hold.threadId, error));
    this.#onDead(this);
    // Whatever state it is in, the connection is not used again; the server drops its locks with it.
    this.ended = this.client.end().catch(() => {});
  }

  /**
   * Busy (a statement in flight or a lock held): the connection keeps the process alive. Idle: it
   * does not, and it is closed after `idleTimeoutMs`.
   */
  #settle(): void {
    if (this.dead) return;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    // pg's Client has ref()/unref() (for the pool's allowExitOnIdle), not in its typings (nor in pg-native's client).
    const socket = this.client as unknown as { ref?: () => void; unref?: () => void };
    if (this.#inFlight > 0 || this.holds.size > 0) {
      socket.ref?.();
      return;
    }
    socket.unref?.();
    this.#idleTimer = setTimeout(() => this.die(new Error("the thread lock's connection was idle")), this.#idleTimeoutMs);
    this.#idleTimer.unref();
  }
}

/**
 * A thread lock held as a PostgreSQL session advisory lock (`pg_try_advisory_lock`): every process
 * and machine on the database sees it, and it goes away with its session if the holder dies.
 *
 * The locks live on a **connection of the lock's own**, never on one of the pool it is given: a run
 * holds its thread's lock for its whole duration, and a lock that held a connection of the
 * checkpointer's pool (10 by default) starved the runs of that pool, which deadlocked at 10
 * concurrent runs. One connection carries every lock of this object (advisory locks are per
 * session, so this object also keeps the in-process holders apart); it copies the given pool's
 * settings (or uses the connection string), is opened on first use, keeps the process alive only
 * while a lock is held or asked for, and is closed after `idleTimeoutMs` without either. So a
 * process needs one connection for its thread locks, however many runs it has.
 *
 * Bounds: connecting and each lock statement must answer within `timeoutMs`, else `acquire`
 * rejects with a {@link StoreError} (`store_timeout`, or `store_unavailable` when the server cannot
 * be reached) and the connection is closed. When the connection drops (server restart, failover,
 * `pg_terminate_backend`, a statement past its bound), every lock on it is lost: each holder's
 * `lost` is aborted with a {@link ThreadLockLostError}, and the next `acquire` opens a new
 * connection.
 * @example
 * ```ts
 * const lock = new PostgresThreadLock({ connectionString: process.env.EART_DATABASE_URL });
 * const release = await lock.acquire("refund-1042");
 * try { await graph.invoke(input, { configurable: { thread_id: "refund-1042" }, signal: release.lost }); }
 * finally { await release(); }
 * ```
 */
export class PostgresThreadLock implements ThreadLock {
  readonly #newClient: () => pg.Client;
  readonly #timeoutMs: number;
  readonly #idleTimeoutMs: number;
  /** Threads held or being acquired by this object (one session can take an advisory lock twice). */
  readonly #held = new Map<string, Hold | "acquiring">();
  #session: LockSession | undefined;

  constructor(options: PostgresThreadLockOptions = {}) {
    const { timeoutMs, idleTimeoutMs, ...location } = (options ?? {}) as PostgresThreadLockOptions;
    const bounds = parseOptions(PostgresLockBoundsSchema, {
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    });
    this.#timeoutMs = bounds.timeoutMs;
    this.#idleTimeoutMs = bounds.idleTimeoutMs;
    // keepAlive: a silently dead peer is noticed, and the locks reported lost. The driver's own
    // connect timeout is only a backstop behind the acquire's bound, which reports it typed.
    this.#newClient = dedicatedClient(location, { keepAlive: true, connectionTimeoutMillis: this.#timeoutMs + 1_000 });
  }

  async acquire(threadId: string): Promise<ReleaseThreadLock> {
    const id = checkThreadId(threadId);
    if (this.#held.has(id)) throw new ThreadBusyError(id, "another run of this process");
    this.#held.set(id, "acquiring");
    const key = advisoryLockKey(id);
    const deadline = Date.now() + this.#timeoutMs;
    let hold: Hold;
    let session: LockSession;
    for (let attempt = 1; ; attempt++) {
      try {
        session = await this.#sessionBy(deadline);
        const { rows } = await session.query("acquire", `SELECT pg_try_advisory_lock($1::bigint) AS locked`, [key], deadline, this.#timeoutMs);
        if (rows[0]?.locked !== true) throw new ThreadBusyError(id, "another PostgreSQL session");
        hold = session.hold(id);
        break;
      } catch (error) {
        const fault = this.#fault("acquire", error);
        // A connection that dropped took any lock it had just taken with it: trying once more on a
        // new connection is safe.
        if (attempt === 1 && (fault as StoreError).code === "store_unavailable" && Date.now() < deadline) continue;
        this.#held.delete(id);
        throw fault;
      }
    }
    this.#held.set(id, hold);
    let released = false;
    return Object.assign(
      async () => {
        if (released) return;
        released = true;
        try {
          // A lost lock went with its connection: nothing to unlock.
          if (!session.dead) await session.query("release", `SELECT pg_advisory_unlock($1::bigint)`, [key], Date.now() + this.#timeoutMs, this.#timeoutMs);
        } catch {
          // The connection dropped or did not answer: it is closed, and the lock went with it.
        } finally {
          session.drop(hold);
          if (this.#held.get(id) === hold) this.#held.delete(id);
        }
      },
      { lost: hold.lost.signal },
    );
  }

  /** The live session, connecting a new one if needed (shared by concurrent callers). */
  async #sessionBy(deadline: number): Promise<LockSession> {
    let session = this.#session;
    if (!session || session.dead) {
      session = new LockSession(this.#newClient(), this.#idleTimeoutMs, (dead) => {
        if (this.#session === dead) this.#session = undefined;
      });
      this.#session = session;
      session.ready.catch((error: unknown) => session!.die(error instanceof Error ? error : new Error(String(error))));
    }
    const connecting = session;
    await withDeadline(connecting.ready, deadline, () => {
      const timeout = new StoreError("store_timeout", "thread_lock", "connect", `no connection within ${this.#timeoutMs} ms`, { timeoutMs: this.#timeoutMs });
      connecting.die(timeout);
      return timeout;
    });
    return connecting;
  }

  #fault(operation: string, error: unknown): unknown {
    if (error instanceof EartError) return error;
    const lost = isConnectionLoss(error);
    return new StoreError(
      lost ? "store_unavailable" : "store_failure",
      "thread_lock",
      operation,
      `${lost ? "the connection to PostgreSQL was lost" : "PostgreSQL failed"}: ${(error as Error)?.message ?? String(error)}`,
      typeof (error as { code?: unknown })?.code === "string" ? { pgCode: (error as { code: string }).code } : {},
      { cause: error },
    );
  }

  /**
   * Closes the lock's connection now rather than after `idleTimeoutMs`; locks still held are lost
   * (their `lost` is aborted). A later `acquire` connects again.
   */
  async close(): Promise<void> {
    const session = this.#session;
    session?.die(new Error("the thread lock was closed"));
    await session?.ended;
  }
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
