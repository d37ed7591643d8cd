import { createRequire } from "node:module";
import type pg from "pg";
import { z } from "zod";
import { EartConfigError, EartError, StoreError, type StoreName } from "../../errors.js";
import { parseOptions } from "../../internal/options.js";

let driver: typeof pg | undefined;

/**
 * node-postgres, loaded on first use: importing eart loads no database driver, and a project that
 * never opens a PostgreSQL store need not install it. Throws {@link EartConfigError} saying what to
 * install when it is missing.
 * @example
 * ```ts
 * const pool = new (pgDriver().Pool)({ connectionString });
 * ```
 */
export function pgDriver(): typeof pg {
  if (driver) return driver;
  try {
    driver = createRequire(import.meta.url)("pg") as typeof pg;
  } catch (error) {
    throw new EartConfigError("pg", `eart's PostgreSQL stores need the pg package: npm install pg (${(error as Error)?.message ?? String(error)})`);
  }
  return driver;
}

/** Whether a value is a node-postgres pool (by its shape, so no driver is loaded and a second install of pg counts). */
export function isPgPool(value: unknown): value is pg.Pool {
  const v = value as Partial<Record<"query" | "connect" | "end" | "on", unknown>> & { totalCount?: unknown } | null;
  return typeof v === "object" && v !== null && typeof v.query === "function" && typeof v.connect === "function" && typeof v.end === "function" && typeof v.on === "function" && typeof v.totalCount === "number";
}

/** Where a PostgreSQL-backed store lives: a connection string (else `EART_DATABASE_URL`), or a pool to share. */
export interface PostgresLocation {
  connectionString?: string;
  pool?: pg.Pool;
}

export const PostgresLocationSchema = z
  .object({
    connectionString: z.string().min(1).optional(),
    pool: z
      .custom<pg.Pool>(
        (v) => typeof (v as pg.Pool)?.query === "function" && typeof (v as pg.Pool)?.connect === "function",
        "must be a pg Pool",
      )
      .optional(),
  })
  .strict()
  .refine((o) => !(o.connectionString && o.pool), { path: ["pool"], message: "give either connectionString or pool, not both" });

/**
 * Opens the pool of a PostgreSQL-backed store: the caller's, or one of its own from the
 * connection string or `EART_DATABASE_URL`. `owned` says whether the store may end it. Either way
 * the pool is guarded ({@link guardPool}): a dropped connection fails the statement that used it,
 * never the process.
 * @example
 * ```ts
 * const { pool, owned } = openPostgres({ connectionString: "postgresql://postgres@127.0.0.1:5432/test" });
 * ```
 */
export function openPostgres(location: PostgresLocation): { pool: pg.Pool; owned: boolean } {
  const parsed = parseOptions(PostgresLocationSchema, location);
  if (parsed.pool) return { pool: guardPool(parsed.pool), owned: false };
  const connectionString = parsed.connectionString ?? process.env.EART_DATABASE_URL;
  if (!connectionString) throw new EartConfigError("connectionString", "give connectionString or pool, or set EART_DATABASE_URL");
  return { pool: guardPool(new (pgDriver().Pool)({ connectionString })), owned: true };
}

/**
 * Makes the clients of a dedicated connection to the database of a location: with the pool's
 * settings (and its client class) when a pool is given, else from the connection string or
 * `EART_DATABASE_URL`. For a store that must not hold a connection of a pool others need (the
 * PostgreSQL thread lock). A given pool is guarded as {@link openPostgres} guards it.
 * @example
 * ```ts
 * const client = dedicatedClient({ pool }, { keepAlive: true })();
 * await client.connect();
 * ```
 */
export function dedicatedClient(location: PostgresLocation, overrides: pg.ClientConfig = {}): () => pg.Client {
  const parsed = parseOptions(PostgresLocationSchema, location);
  if (parsed.pool) {
    const pool = guardPool(parsed.pool);
    const Client = ((pool as unknown as { Client?: typeof pg.Client }).Client ?? pgDriver().Client) as typeof pg.Client;
    const options = (pool as unknown as { options?: pg.PoolConfig }).options ?? {};
    return () => new Client({ ...options, ...overrides });
  }
  const connectionString = parsed.connectionString ?? process.env.EART_DATABASE_URL;
  if (!connectionString) throw new EartConfigError("connectionString", "give connectionString or pool, or set EART_DATABASE_URL");
  return () => new (pgDriver().Client)({ connectionString, ...overrides });
}

const guarded = new WeakSet<object>();
const ignore = (): void => {};

/** Gives a client an 'error' listener (once). */
function guardClient(client: pg.ClientBase): void {
  if (guarded.has(client)) return;
  guarded.add(client);
  client.on("error", ignore);
}

/**
 * Makes a pool safe against connections the server drops (restart, failover,
 * `pg_terminate_backend`, idle timeouts). node-postgres reports such a loss as an 'error' event:
 * on the pool for an idle client, on the client itself for a checked-out one (the pool removes
 * its own listener while a client is out). An 'error' event without a listener ends the process,
 * taking every run in flight with it. This adds a listener to the pool and to each of its clients
 * (those it has and every one it connects later), once per pool; the statement that used the
 * connection still fails with the error, and the pool drops the dead client. Used on every pool
 * eart creates or is handed, including a `PostgresSaver`'s.
 * @example
 * ```ts
 * const pool = guardPool(new (pgDriver().Pool)({ connectionString }));
 * ```
 */
export function guardPool(pool: pg.Pool): pg.Pool {
  if (guarded.has(pool)) return pool;
  guarded.add(pool);
  pool.on("error", ignore);
  pool.on("connect", guardClient);
  // Clients connected before the pool was handed to eart (pg keeps them in a private list).
  const existing = (pool as unknown as { _clients?: unknown })._clients;
  if (Array.isArray(existing)) for (const client of existing as pg.ClientBase[]) guardClient(client);
  return pool;
}

/** The methods of LangGraph's `BaseCheckpointSaver` that {@link guardCheckpointer} bounds, each idempotent (reads, and upserts keyed by checkpoint id and task). */
const SAVER_CALLS = ["getTuple", "put", "putWrites", "deleteThread"] as const;
const guardedSavers = new WeakSet<object>();

/**
 * Puts a PostgreSQL-backed LangGraph checkpointer (`PostgresSaver`) under eart's store faults, as
 * eart's own stores are: its pool is guarded ({@link guardPool}); `getTuple`, `put`, `putWrites` and
 * `deleteThread` are bounded by `timeoutMs` and, being idempotent, run once more on a new
 * connection when the connection was lost; what still fails surfaces as a {@link StoreError} of
 * store `checkpointer` (`store_timeout`, `store_unavailable`, `store_failure`) instead of a raw pg
 * error; `list` reports its faults the same way. Patches the saver in place, once; the prebuilt
 * agent calls it on its checkpointer.
 * @example
 * ```ts
 * const saver = guardCheckpointer(PostgresSaver.fromConnString(url));
 * ```
 */
export function guardCheckpointer<T extends object>(saver: T, timeoutMs = 30_000): T {
  const pool = (saver as { pool?: unknown }).pool;
  if (!isPgPool(pool) || guardedSavers.has(saver)) return saver;
  guardedSavers.add(saver);
  guardPool(pool);
  const methods = saver as unknown as Record<string, ((...args: unknown[]) => unknown) | undefined>;
  for (const name of SAVER_CALLS) {
    const original = methods[name];
    if (typeof original !== "function") continue;
    methods[name] = (...args: unknown[]) => storeCall({ store: "checkpointer", operation: name, timeoutMs, idempotent: true }, () => Promise.resolve(original.apply(saver, args)));
  }
  const list = methods.list as ((...args: unknown[]) => AsyncGenerator<unknown>) | undefined;
  if (typeof list === "function") {
    methods.list = async function* (...args: unknown[]) {
      try {
        yield* list.apply(saver, args);
      } catch (error) {
        // Rows already yielded were seen: no retry, the fault is typed.
        await storeCall({ store: "checkpointer", operation: "list", timeoutMs, idempotent: false }, () => Promise.reject(error));
      }
    };
  }
  return saver;
}

// Server codes of a lost session: admin_shutdown, crash_shutdown, cannot_connect_now, and class 08 (connection exception).
const LOST_SQLSTATES = /^(57P0[123]|08...)$/;
const LOST_SOCKET_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENETDOWN", "ENOTFOUND", "EAI_AGAIN"]);
const LOST_MESSAGES = /Connection terminated|not queryable|timeout exceeded when trying to connect|Connection ended unexpectedly/i;

/**
 * Whether an error says the connection to PostgreSQL was lost or could not be made (rather than
 * that the statement itself failed): a statement that failed this way may be run again on another
 * connection if it is idempotent.
 * @example
 * ```ts
 * if (isConnectionLoss(error)) retryOnce();
 * ```
 */
export function isConnectionLoss(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown } | null;
  if (!e || typeof e !== "object") return false;
  if (typeof e.code === "string" && (LOST_SQLSTATES.test(e.code) || LOST_SOCKET_CODES.has(e.code))) return true;
  return typeof e.message === "string" && LOST_MESSAGES.test(e.message);
}

/** How {@link storeCall} runs one operation of a store. */
export interface StoreCall {
  store: StoreName;
  operation: string;
  /** The bound on the whole call, both attempts included. */
  timeoutMs: number;
  /** Run it once more, on a new connection, when the connection was lost (reads and other idempotent statements only). */
  idempotent: boolean;
}

/**
 * Runs one operation of a PostgreSQL-backed store within a time bound, turning what escapes into a
 * typed {@link StoreError}: `store_timeout` past the bound (the statement may still complete on the
 * server; a caller that cannot tell treats the outcome as unknown), `store_unavailable` for a lost
 * connection (after one more attempt when the operation is idempotent), `store_failure` for any
 * other fault. eart's own errors (bad input) pass through unchanged.
 * @example
 * ```ts
 * const rows = await storeCall({ store: "effect_ledger", operation: "get", timeoutMs: 30_000, idempotent: true }, () => pool.query(sql, values));
 * ```
 */
export async function storeCall<T>(call: StoreCall, body: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + call.timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await withDeadline(body(), deadline, () => new StoreError("store_timeout", call.store, call.operation, `no answer within ${call.timeoutMs} ms`, { timeoutMs: call.timeoutMs }));
    } catch (error) {
      if (error instanceof EartError) throw error;
      const lost = isConnectionLoss(error);
      if (lost && call.idempotent && attempt === 1 && Date.now() < deadline) continue;
      const e = error as { code?: unknown; message?: unknown };
      throw new StoreError(
        lost ? "store_unavailable" : "store_failure",
        call.store,
        call.operation,
        `${lost ? "the connection to PostgreSQL was lost" : "PostgreSQL failed"}: ${typeof e?.message === "string" ? e.message : String(error)}`,
        { retried: attempt > 1, ...(typeof e?.code === "string" ? { pgCode: e.code } : {}) },
        { cause: error },
      );
    }
  }
}

/** `promise`, or `onTimeout()` thrown once `deadline` (epoch ms) has passed. The promise itself runs on. */
export function withDeadline<T>(promise: Promise<T>, deadline: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), Math.max(0, deadline - Date.now()));
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/**
 * Runs `run` in one transaction on a client of the pool (`begin` opens it, e.g. a read-only
 * snapshot: `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`); rolls back and rethrows on error.
 * @example
 * ```ts
 * await inTransaction(pool, (client) => client.query("UPDATE …"));
 * ```
 */
export async function inTransaction<T>(pool: pg.Pool, run: (client: pg.PoolClient) => Promise<T>, begin = "BEGIN"): Promise<T> {
  const client = await pool.connect();
  return releasing(client, async () => {
    await client.query(begin);
    const result = await run(client);
    await client.query("COMMIT");
    return result;
  });
}

/**
 * Runs `run` on `client` and hands the client back to its pool: after a failure, once its open
 * transaction is rolled back; a client that cannot even roll back (its connection is gone) is
 * dropped, not pooled again. The failure is thrown as it was.
 * @example
 * ```ts
 * const client = await pool.connect();
 * await releasing(client, async () => { await client.query("BEGIN"); …; await client.query("COMMIT"); });
 * ```
 */
export async function releasing<T>(client: pg.PoolClient, run: () => Promise<T>): Promise<T> {
  let broken = false;
  try {
    return await run();
  } catch (error) {
    broken = await client.query("ROLLBACK").then(
      () => false,
      () => true,
    );
    throw error;
  } finally {
    client.release(broken);
  }
}

/**
 * A client of `pool` within `timeoutMs`, or `onTimeout()` thrown: a pool whose connections are all
 * taken cannot hold a caller forever. A client that arrives after the deadline goes back to the pool.
 * @example
 * ```ts
 * const client = await connectWithin(pool, 30_000, () => new Error("no connection"));
 * ```
 */
export async function connectWithin(pool: pg.Pool, timeoutMs: number, onTimeout: () => Error): Promise<pg.PoolClient> {
  const connecting = pool.connect();
  try {
    return await withDeadline(connecting, Date.now() + timeoutMs, onTimeout);
  } catch (error) {
    connecting.then(
      (late) => late.release(),
      () => {},
    );
    throw error;
  }
}

/**
 * A migration run once per store on first use, serialised across processes by an advisory lock
 * (CREATE TABLE IF NOT EXISTS alone can race on the catalog). A failed attempt is retried on the
 * next call.
 * @example
 * ```ts
 * const ready = migrationOnce(pool, "eart_budget_counters", "CREATE TABLE IF NOT EXISTS …");
 * await ready();
 * ```
 */
export function migrationOnce(pool: pg.Pool, table: string, ddl: string): () => Promise<void> {
  let ready: Promise<void> | undefined;
  return () =>
    (ready ??= inTransaction(pool, async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [table]);
      await client.query(ddl);
    }).catch((error: unknown) => {
      ready = undefined;
      throw error;
    }));
}

/**
 * Runs `setup` (LangGraph's `PostgresSaver.setup()`: its tables and migrations) holding an
 * advisory lock, so processes that start together on a new database create the tables once: its
 * own DDL is not safe to run from several at once (duplicate keys in PostgreSQL's catalog).
 * @example
 * ```ts
 * await serialisedSetup(pool, () => checkpointer.setup());
 * ```
 */
export async function serialisedSetup(pool: pg.Pool, setup: () => Promise<void>): Promise<void> {
  // The lock holds a connection while setup takes another: a pool of one would wait on itself.
  if ((pool as { options?: { max?: number } }).options?.max === 1) return setup();
  const client = await pool.connect();
  try {
    await client.query(`SELECT pg_advisory_lock(hashtext('eart_checkpointer_setup'))`);
    try {
      await setup();
    } finally {
      await client.query(`SELECT pg_advisory_unlock(hashtext('eart_checkpointer_setup'))`);
    }
  } finally {
    client.release();
  }
}
