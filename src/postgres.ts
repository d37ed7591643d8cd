import pg from "pg";
import { z } from "zod";
import { EartConfigError } from "./errors.js";
import { parseOptions } from "./options.js";

/** Where a PostgreSQL-backed store lives: a connection string (else `EART_DATABASE_URL`), or a pool to share. */
export interface PostgresLocation {
  connectionString?: string;
  pool?: pg.Pool;
}

const PostgresLocationSchema = z
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
 * connection string or `EART_DATABASE_URL`. `owned` says whether the store may end it.
 * @example
 * ```ts
 * const { pool, owned } = openPostgres({ connectionString: "postgresql://postgres@127.0.0.1:5432/test" });
 * ```
 */
export function openPostgres(location: PostgresLocation): { pool: pg.Pool; owned: boolean } {
  const parsed = parseOptions(PostgresLocationSchema, location);
  if (parsed.pool) return { pool: parsed.pool, owned: false };
  const connectionString = parsed.connectionString ?? process.env.EART_DATABASE_URL;
  if (!connectionString) throw new EartConfigError("connectionString", "give connectionString or pool, or set EART_DATABASE_URL");
  const pool = new pg.Pool({ connectionString });
  // An idle client that loses its connection must not crash the process: the next query reports it.
  pool.on("error", () => {});
  return { pool, owned: true };
}

/**
 * Runs `run` in one transaction on a client of the pool; rolls back and rethrows on error.
 * @example
 * ```ts
 * await inTransaction(pool, (client) => client.query("UPDATE …"));
 * ```
 */
export async function inTransaction<T>(pool: pg.Pool, run: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const result = await run(client);
    await client.query("COMMIT");
    return result;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.release();
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
