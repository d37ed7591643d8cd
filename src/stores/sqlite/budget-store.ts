import type Database from "better-sqlite3";
import { fits, parseIncrements, parseKeys, parseLimits, withZeros, type BudgetStore } from "../../policy/budget.js";
import { openSqlite, type SqliteLocation } from "./connection.js";

/** Where the SQLite counters live: a file path, or an open better-sqlite3 database to share. */
export type SqliteBudgetStoreOptions = SqliteLocation;

/**
 * Budget counters in a SQLite file (table `eart_budget_counters`), shared by every process that
 * opens the file; a batch is added in one write transaction.
 * @example
 * ```ts
 * const store = new SqliteBudgetStore({ path: ".eart/eart.sqlite" });
 * const budgets = defineBudgets(rules, { store });
 * ```
 */
export class SqliteBudgetStore implements BudgetStore {
  readonly #db: Database.Database;
  readonly #owned: boolean;
  readonly #get: Database.Statement;
  readonly #addTx: Database.Transaction<(entries: [string, number][]) => void>;
  readonly #addWithinTx: Database.Transaction<(entries: [string, number][], limits: Map<string, number>) => boolean>;

  constructor(options: SqliteBudgetStoreOptions) {
    ({ db: this.#db, owned: this.#owned } = openSqlite(options));
    this.#db.exec(`CREATE TABLE IF NOT EXISTS eart_budget_counters (key TEXT PRIMARY KEY, value REAL NOT NULL)`);
    // Keys travel as one JSON array: no limit on the number of bound parameters.
    this.#get = this.#db.prepare(`SELECT key, value FROM eart_budget_counters WHERE key IN (SELECT value FROM json_each(?))`);
    const upsert = this.#db.prepare(
      `INSERT INTO eart_budget_counters (key, value) VALUES (?, ?)
       ON CONFLICT(key) DO UPDATE SET value = eart_budget_counters.value + excluded.value`,
    );
    this.#addTx = this.#db.transaction((entries: [string, number][]) => {
      for (const [key, delta] of entries) upsert.run(key, delta);
    });
    const one = this.#db.prepare(`SELECT value FROM eart_budget_counters WHERE key = ?`);
    // Run as an IMMEDIATE transaction: the write lock is taken before the read, so two processes
    // never both read the same total.
    this.#addWithinTx = this.#db.transaction((entries: [string, number][], limits: Map<string, number>) => {
      if (!fits(entries, limits, (k) => (one.get(k) as { value: number } | undefined)?.value ?? 0)) return false;
      for (const [key, delta] of entries) upsert.run(key, delta);
      return true;
    });
  }

  async get(keys: string[]): Promise<Record<string, number>> {
    const list = parseKeys(keys);
    if (list.length === 0) return {};
    const rows = this.#get.all(JSON.stringify(list)) as { key: string; value: number }[];
    return withZeros(
      list,
      rows.map((r): [string, number] => [r.key, r.value]),
    );
  }

  async add(increments: Record<string, number>): Promise<void> {
    const entries = parseIncrements(increments);
    if (entries.length === 0) return;
    this.#addTx.immediate(entries);
  }

  async addWithin(increments: Record<string, number>, limits: Record<string, number>): Promise<boolean> {
    const entries = parseIncrements(increments);
    const parsedLimits = parseLimits(limits);
    if (entries.length === 0) return true;
    return this.#addWithinTx.immediate(entries, parsedLimits);
  }

  /** Closes the database connection (only when this store opened it). */
  close(): void {
    if (this.#owned && this.#db.open) this.#db.close();
  }
}
