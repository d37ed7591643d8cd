import type pg from "pg";
import { z } from "zod";
import { parseOptions } from "../../internal/options.js";
import { fits, parseIncrements, parseKeys, parseLimits, withZeros, type BudgetStore } from "../../policy/budget.js";
import { inTransaction, migrationOnce, openPostgres, storeCall, type PostgresLocation } from "./connection.js";

const PostgresBudgetBoundsSchema = z
  .object({
    /** The bound on each operation, waiting for a connection of the pool included (default 30 s). */
    timeoutMs: z.number().int().positive().default(30_000),
  })
  .strict();

/**
 * Where the PostgreSQL counters live: a connection string (else `EART_DATABASE_URL`), or a pool to
 * share; and `timeoutMs`, the bound on each operation (default 30 s).
 */
export type PostgresBudgetStoreOptions = PostgresLocation & z.input<typeof PostgresBudgetBoundsSchema>;

const PG_TABLE = "eart_budget_counters";

/**
 * Budget counters in PostgreSQL (table `eart_budget_counters`, created on first use), shared by
 * every process and machine on the database. A batch is added in one transaction with
 * `INSERT … ON CONFLICT DO UPDATE`, so concurrent charges sum exactly. Faults are typed
 * {@link StoreError}s (`store_timeout` past `timeoutMs`, `store_unavailable` for a lost connection,
 * after one more attempt for `get`), which the budget guard turns into a denial.
 * @example
 * ```ts
 * const store = new PostgresBudgetStore({ connectionString: process.env.EART_DATABASE_URL });
 * const budgets = defineBudgets(rules, { store });
 * // …
 * await store.close();
 * ```
 */
export class PostgresBudgetStore implements BudgetStore {
  readonly #pool: pg.Pool;
  readonly #owned: boolean;
  readonly #migrate: () => Promise<void>;
  readonly #timeoutMs: number;

  constructor(options: PostgresBudgetStoreOptions = {}) {
    const { timeoutMs, ...location } = (options ?? {}) as PostgresBudgetStoreOptions;
    ({ timeoutMs: this.#timeoutMs } = parseOptions(PostgresBudgetBoundsSchema, timeoutMs === undefined ? {} : { timeoutMs }));
    ({ pool: this.#pool, owned: this.#owned } = openPostgres(location));
    this.#migrate = migrationOnce(this.#pool, PG_TABLE, `CREATE TABLE IF NOT EXISTS ${PG_TABLE} (key TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL)`);
  }

  /** One operation, bounded and with typed faults; `idempotent` ones are retried once after a lost connection. */
  #call<T>(operation: string, idempotent: boolean, body: () => Promise<T>): Promise<T> {
    return storeCall({ store: "budget_store", operation, timeoutMs: this.#timeoutMs, idempotent }, body);
  }

  async get(keys: string[]): Promise<Record<string, number>> {
    const list = parseKeys(keys);
    if (list.length === 0) return {};
    const { rows } = await this.#call("get", true, async () => {
      await this.#migrate();
      return this.#pool.query<{ key: string; value: number }>(`SELECT key, value FROM ${PG_TABLE} WHERE key = ANY($1::text[])`, [list]);
    });
    return withZeros(
      list,
      rows.map((r): [string, number] => [r.key, Number(r.value)]),
    );
  }

  async add(increments: Record<string, number>): Promise<void> {
    const entries = parseIncrements(increments);
    if (entries.length === 0) return;
    // Not retried: a charge whose commit was not confirmed may have been counted.
    await this.#call("add", false, async () => {
      await this.#migrate();
      await inTransaction(this.#pool, async (client) => {
        await client.query(
          `INSERT INTO ${PG_TABLE} (key, value) SELECT * FROM unnest($1::text[], $2::float8[])
           ON CONFLICT (key) DO UPDATE SET value = ${PG_TABLE}.value + EXCLUDED.value`,
          [entries.map(([k]) => k), entries.map(([, v]) => v)],
        );
      });
    });
  }

  async addWithin(increments: Record<string, number>, limits: Record<string, number>): Promise<boolean> {
    const entries = parseIncrements(increments);
    const parsedLimits = parseLimits(limits);
    if (entries.length === 0) return true;
    const keys = entries.map(([k]) => k);
    return this.#call("addWithin", false, async () => {
      await this.#migrate();
      return inTransaction(this.#pool, async (client) => {
        // Every row exists, then is locked in key order (no deadlock between two batches), read,
        // checked and added to, in one transaction.
        await client.query(`INSERT INTO ${PG_TABLE} (key, value) SELECT unnest($1::text[]), 0 ON CONFLICT (key) DO NOTHING`, [keys]);
        const { rows } = await client.query<{ key: string; value: number }>(
          `SELECT key, value FROM ${PG_TABLE} WHERE key = ANY($1::text[]) ORDER BY key COLLATE "C" FOR UPDATE`,
          [keys],
        );
        const current = new Map(rows.map((r) => [r.key, Number(r.value)]));
        if (!fits(entries, parsedLimits, (k) => current.get(k) ?? 0)) return false;
        await client.query(
          `UPDATE ${PG_TABLE} AS t SET value = t.value + d.delta FROM unnest($1::text[], $2::float8[]) AS d(key, delta) WHERE t.key = d.key`,
          [keys, entries.map(([, v]) => v)],
        );
        return true;
      });
    });
  }

  /** Ends the connection pool (only when this store created it). */
  async close(): Promise<void> {
    if (this.#owned && !this.#pool.ended) await this.#pool.end();
  }
}
