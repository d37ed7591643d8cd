import { createHash, randomBytes } from "node:crypto";
import type pg from "pg";
import { z } from "zod";
import { EartError, StoreError, ThreadBusyError, ThreadLockLostError } from "../../errors.js";
import { parseOptions } from "../../internal/options.js";
import { checkThreadId, type ReleaseThreadLock, type ThreadFence, type ThreadLock } from "../../threads/lock.js";
import { confirmOnSaver, FENCES, FENCES_DDL, type PostgresFence } from "./fence.js";
import { dedicatedClient, isConnectionLoss, withDeadline, type PostgresLocation } from "./connection.js";

/**
 * The 64-bit advisory lock key of a thread (signed, as PostgreSQL's bigint). Advisory locks are
 * per database, not per schema: a deployment in another schema of the same database (a tenant, by
 * its `search_path`) names its threads in that schema's space (`schema`), so two tenants' threads
 * of the same id do not lock each other. The default schema `public` keeps the key of the thread
 * id alone.
 */
export function advisoryLockKey(threadId: string, options: { schema?: string } = {}): string {
  const schema = typeof options === "object" && options !== null ? options.schema : undefined;
  const name = schema === undefined || schema === "public" ? `eart.thread:${threadId}` : `eart.thread@${schema.length}:${schema}:${threadId}`;
  return createHash("sha256").update(name).digest().readBigInt64BE(0).toString();
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

/**
 * Half the lock's bound: how often a session holding locks is asked to answer, and how long a take
 * waits for a write of the thread's last holder (so the session still answers its heartbeat).
 */
function halfBound(timeoutMs: number): number {
  return Math.max(1, Math.floor(timeoutMs / 2));
}

/** A server without a setting (idle_session_timeout is PostgreSQL 14+) has nothing to turn off. */
function ignoreUnknownSetting(error: unknown): void {
  if ((error as { code?: unknown })?.code !== "42704") throw error;
}

/** One lock held on a session. */
interface Hold {
  readonly threadId: string;
  readonly lost: AbortController;
}

/**
 * Takes a thread's advisory lock without waiting and, when taken, records the hold's fencing token
 * as the thread's (see `ThreadFence`); answers whether it was taken.
 */
const TAKE = `WITH l AS (SELECT pg_try_advisory_lock($1::bigint) AS locked),
  f AS (INSERT INTO ${FENCES} (key, token) SELECT $1::bigint, $2::text FROM l WHERE l.locked
        ON CONFLICT (key) DO UPDATE SET token = excluded.token)
  SELECT locked FROM l`;

/**
 * The lock's own connection. Every lock of a {@link PostgresThreadLock} is a session advisory lock
 * on it, so the locks go away with it: when it drops, every hold on it is told through `lost`.
 */
class LockSession {
  readonly client: pg.Client;
  readonly ready: Promise<void>;
  readonly holds = new Set<Hold>();
  /** The schema the session's `search_path` resolves to: the space its threads' keys are in ({@link advisoryLockKey}). */
  schema: string | undefined;
  /** Whether its holds are fenced (the fencing tokens' table is where its search_path resolves). */
  fenced = false;
  dead: Error | undefined;
  /** Settles once the connection is closed after `die`. */
  ended: Promise<void> | undefined;
  #inFlight = 0;
  #tail: Promise<void> = Promise.resolve();
  #idleTimer: NodeJS.Timeout | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  readonly #idleTimeoutMs: number;
  readonly #timeoutMs: number;

  constructor(client: pg.Client, bounds: { idleTimeoutMs: number; timeoutMs: number }, onDead: (session: LockSession) => void) {
    this.client = client;
    this.#idleTimeoutMs = bounds.idleTimeoutMs;
    this.#timeoutMs = bounds.timeoutMs;
    client.on("error", (error: Error) => this.die(error));
    client.on("end", () => this.die(new Error("the thread lock's connection ended")));
    this.#onDead = onDead;
    this.#inFlight++;
    this.ready = client
      .connect()
      // The session sits idle while it holds locks: a server, role or pool setting that ends idle
      // sessions would end it, and every lock with it, under a run that is still working.
      .then(() => client.query(`SET idle_session_timeout = 0; SET idle_in_transaction_session_timeout = 0`).catch(ignoreUnknownSetting))
      // A hold's fencing token is written over the last one's, which a write of that holder may
      // still share-lock: waited for within half the bound, so the session answers its heartbeat.
      .then(() => client.query(`SET lock_timeout = ${halfBound(bounds.timeoutMs)}`))
      // Where eart's tables of this deployment are (its unqualified names resolve there); a
      // search_path naming no schema that exists yet is its own space, by its text.
      .then(() => client.query<{ schema: string }>(`SELECT COALESCE(current_schema(), 'search_path=' || current_setting('search_path')) AS schema`))
      .then(({ rows }) => {
        this.schema = rows[0]?.schema;
      })
      // The fencing tokens' table, where the session's tables are (created once across processes).
      // A search_path naming no schema that exists has no tables of eart's to fence: none.
      .then(() =>
        client.query(`BEGIN; SELECT pg_advisory_xact_lock(hashtext('${FENCES}')); ${FENCES_DDL}; COMMIT`).then(
          () => void (this.fenced = true),
          async (error: unknown) => {
            if ((error as { code?: unknown })?.code !== "3F000") throw error;
            await client.query("ROLLBACK");
          },
        ),
      )
      .finally(() => {
        this.#inFlight--;
        this.#settle();
      });
  }

  readonly #onDead: (session: LockSession) => void;

  /**
   * Runs one statement. Its caller gets `store_timeout` at `deadline`, waiting in the session's
   * queue included (a statement not sent by then is not sent). The session is ended (and every
   * lock on it) only when a statement it sent gets no answer within `timeoutMs` of being sent: one
   * caller's statements queued behind another's (a burst of takes; a take waiting for a last
   * holder's write) never cost the other holds of the session their locks.
   */
  async query(operation: string, text: string, values: unknown[], deadline: number, timeoutMs: number): Promise<pg.QueryResult> {
    const lost = () =>
      new StoreError("store_unavailable", "thread_lock", operation, `the lock's connection was lost: ${this.dead?.message}`, {}, { cause: this.dead });
    if (this.dead) throw lost();
    this.#inFlight++;
    this.#settle();
    let abandoned = false;
    // One statement at a time on the connection (pg is dropping its own queue of concurrent queries).
    const run = this.#tail.then(() => {
      if (this.dead) throw lost();
      if (abandoned) throw new StoreError("store_timeout", "thread_lock", operation, `not sent within ${timeoutMs} ms (the session was busy)`, { timeoutMs });
      const unanswered = setTimeout(() => {
        this.die(new StoreError("store_timeout", "thread_lock", operation, `no answer within ${this.#timeoutMs} ms of a statement sent; the lock's connection is closed`, { timeoutMs: this.#timeoutMs }));
      }, this.#timeoutMs);
      return this.client.query(text, values).finally(() => clearTimeout(unanswered));
    });
    this.#tail = run.then(
      () => {},
      () => {},
    );
    // Busy until the statement itself is done, whenever its caller stops waiting.
    void this.#tail.then(() => {
      this.#inFlight--;
      this.#settle();
    });
    return withDeadline(run, deadline, () => {
      abandoned = true;
      return new StoreError("store_timeout", "thread_lock", operation, `no answer within ${timeoutMs} ms`, { timeoutMs });
    });
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
    clearInterval(this.#heartbeat);
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
    if (this.holds.size > 0) {
      // While locks are held the session is asked to answer every half bound: a server that has
      // dropped it without a word (a failover, a network that went silent) is found out within the
      // bound, and every lock on it reported lost, not after the OS's keepalive (hours).
      this.#heartbeat ??= setInterval(() => {
        this.query("heartbeat", "SELECT 1", [], Date.now() + this.#timeoutMs, this.#timeoutMs).catch(() => undefined);
      }, halfBound(this.#timeoutMs));
      this.#heartbeat.unref();
    } else {
      clearInterval(this.#heartbeat);
      this.#heartbeat = undefined;
    }
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
 * Bounds: an `acquire` answers within `timeoutMs`, waiting for the connection and for the
 * statements queued before its own included, else it rejects with a {@link StoreError}
 * (`store_timeout`, or `store_unavailable` when the server cannot be reached). Connecting, and each
 * statement once sent, must answer within `timeoutMs`, else the connection is closed; statements
 * merely queued behind a slow one (a burst of takes) never close it. When the connection drops
 * (server restart, failover, `pg_terminate_backend`, a statement past its bound), every lock on it is lost: each holder's
 * `lost` is aborted with a {@link ThreadLockLostError}, and the next `acquire` opens a new
 * connection. While it holds locks the connection is asked to answer every `timeoutMs / 2`, so a
 * session the server dropped without a word is found out within the bound; it turns off the
 * server's idle-session timeouts for itself, which would end it under a working run.
 *
 * A lock the server dropped without a word is only found out within that bound: meanwhile another
 * process may take the thread. So each hold is fenced: taking a thread writes a new token for it
 * (table `eart_thread_fences`), and the hold's `fence`, which the guard and `runThread` hand to the
 * run, lets eart's audit log and effect ledger in the same database refuse (`ThreadLockLostError`,
 * nothing written) an effect's claim or an audit event of a run whose token was replaced. A write
 * of the last holder in flight holds the token until it ends; a new hold waits for it up to half
 * `timeoutMs`, else `acquire` fails with `store_timeout` and takes nothing.
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
    let key = "";
    const token = randomBytes(16).toString("hex");
    const deadline = Date.now() + this.#timeoutMs;
    let hold: Hold;
    let session: LockSession;
    for (let attempt = 1; ; attempt++) {
      try {
        session = await this.#sessionBy(deadline);
        key = advisoryLockKey(id, { schema: session.schema });
        const take = session.fenced ? session.query("acquire", TAKE, [key, token], deadline, this.#timeoutMs) : session.query("acquire", `SELECT pg_try_advisory_lock($1::bigint) AS locked`, [key], deadline, this.#timeoutMs);
        const { rows } = await take.catch(async (error: unknown) => {
          // A take that failed or was given up on a live session (its token not written in time)
          // may have taken the lock, which no rollback gives back: given back after it (the session
          // answers each statement it is sent within the bound, or is ended), else the session is
          // ended. Waited for within what is left of the acquire's bound, so that a failed acquire
          // has let go of the thread when its caller hears of it (the next taker is not refused).
          const taking = session;
          if (!taking.dead) {
            const givenBack = taking.query("acquire", `SELECT pg_advisory_unlock($1::bigint)`, [key], Date.now() + 4 * this.#timeoutMs, this.#timeoutMs).catch(() => taking.die(new Error("a lock could not be given back")));
            // Past the bound it goes on being given back; the failure is reported now.
            await withDeadline(givenBack, deadline, () => new Error("still being given back")).catch(() => undefined);
          }
          throw error;
        });
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
      { lost: hold.lost.signal, ...(session.fenced ? { fence: this.#fence(id, key, token, hold.lost.signal) } : {}) },
    );
  }

  /** The fence of one hold: its token, checked by eart's stores and (`confirm`) before the guard's checkpoints on a PostgresSaver. */
  #fence(threadId: string, key: string, token: string, lost: AbortSignal): ThreadFence {
    const fence: PostgresFence = { threadId, lost, postgres: { key, token }, confirm: (saver) => confirmOnSaver(saver, fence, this.#timeoutMs) };
    return fence;
  }

  /** The live session, connecting a new one if needed (shared by concurrent callers). */
  async #sessionBy(deadline: number): Promise<LockSession> {
    let session = this.#session;
    if (!session || session.dead) {
      session = new LockSession(this.#newClient(), { idleTimeoutMs: this.#idleTimeoutMs, timeoutMs: this.#timeoutMs }, (dead) => {
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
    if ((error as { code?: unknown })?.code === "55P03") {
      // lock_timeout: a write of the thread's last holder still share-locks its fencing token.
      return new StoreError("store_timeout", "thread_lock", operation, `the thread's fencing token is held by a write of its last holder past ${halfBound(this.#timeoutMs)} ms; the lock was not taken`, { timeoutMs: this.#timeoutMs, pgCode: "55P03" }, { cause: error });
    }
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

