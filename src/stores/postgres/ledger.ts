import type pg from "pg";
import { z } from "zod";
import { randomBytes } from "node:crypto";
import { StoreError } from "../../errors.js";
import { SEAL_KEY_BYTES } from "../../decisions/seal.js";
import {
  COLUMNS,
  entryOfRow,
  isoOf,
  KEY_TABLE,
  LEDGER_SCHEMA_VERSION,
  parseAttempt,
  parseAudit,
  parseKey,
  parseOutcome,
  parseThreadId,
  TABLE,
  type EffectLedger,
  type LedgerAudit,
  type LedgerBegin,
  type LedgerEntry,
  type LedgerKey,
  type LedgerOutcome,
  type LedgerRow,
} from "../../ledger/ledger.js";
import { parseOptions } from "../../internal/options.js";
import type { AuditEventInput, AuditLog } from "../../audit/log.js";
import { postgresAppendWithin, type PostgresAppendWithin } from "./audit-log.js";
import { connectWithin, migrationOnce, releasing, openPostgres, storeCall, type PostgresLocation } from "./connection.js";
import { checkFence, fenceOf, fenceRead, type PostgresFence } from "./fence.js";

const PostgresLedgerBoundsSchema = z
  .object({
    /** The bound on each operation, waiting for a connection of the pool included (default 30 s). */
    timeoutMs: z.number().int().positive().default(30_000),
  })
  .strict();

/**
 * Where the PostgreSQL ledger lives: a connection string (else `EART_DATABASE_URL`), or a pool to
 * share; and `timeoutMs`, the bound on each operation (default 30 s).
 */
export type PostgresEffectLedgerOptions = PostgresLocation & z.input<typeof PostgresLedgerBoundsSchema>;

const PG_COLUMNS = COLUMNS;
const PG_KEY_WHERE = "thread_id = $1 AND tool_call_id = $2 AND digest = $3";

/**
 * An effect ledger in PostgreSQL (table `eart_effect_ledger`, created on first use), shared by
 * every process and machine on the database. `begin` is one `INSERT … ON CONFLICT DO NOTHING
 * RETURNING`, so exactly one caller claims a key; updates are compare-and-set on the status and
 * attempt.
 *
 * Faults are typed {@link StoreError}s: an operation that gets no answer within `timeoutMs`
 * (waiting for a pool connection included) fails with `store_timeout`, a lost connection with
 * `store_unavailable`. Reads (`get`, `list`, `sealKey`) are retried once on a new connection
 * first; so is `finish`, after reading what the lost statement left (its own outcome recorded:
 * done; still `started`: written again). `begin` and `retry` are not, as their outcome is unknown:
 * a `begin` that may have been stored is found by the next run as `started` (outcome unknown),
 * which never runs a call twice.
 *
 * Given a {@link PostgresAuditLog} on the same pool (as `postgresStores` opens them), it commits
 * audit events with its own writes (`commitsWith`): the claim with `tool.started`, the outcome
 * with its event, each in one transaction that takes the audit log's locks after the ledger row,
 * in the log's own order.
 *
 * A claim (`begin`, `retry`) made by a run holding its thread's {@link PostgresThreadLock} in this
 * database checks the lock's fencing token in its transaction: a run whose lock another process
 * has taken meanwhile gets `ThreadLockLostError`, and nothing is claimed.
 * @example
 * ```ts
 * const ledger = new PostgresEffectLedger({ connectionString: process.env.EART_DATABASE_URL });
 * const { claimed, entry } = await ledger.begin(key);
 * // …
 * await ledger.close();
 * ```
 */
export class PostgresEffectLedger implements EffectLedger {
  readonly #pool: pg.Pool;
  readonly #owned: boolean;
  readonly #migrate: () => Promise<void>;
  readonly #migrateKeys: () => Promise<void>;
  readonly #timeoutMs: number;

  constructor(options: PostgresEffectLedgerOptions = {}) {
    const { timeoutMs, ...location } = (options ?? {}) as PostgresEffectLedgerOptions;
    ({ timeoutMs: this.#timeoutMs } = parseOptions(PostgresLedgerBoundsSchema, timeoutMs === undefined ? {} : { timeoutMs }));
    ({ pool: this.#pool, owned: this.#owned } = openPostgres(location));
    this.#migrate = migrationOnce(
      this.#pool,
      TABLE,
      `CREATE TABLE IF NOT EXISTS ${TABLE} (
             thread_id TEXT NOT NULL,
             tool_call_id TEXT NOT NULL,
             digest TEXT NOT NULL,
             schema_version INTEGER NOT NULL,
             status TEXT NOT NULL CHECK (status IN ('started', 'succeeded', 'failed')),
             attempt INTEGER NOT NULL,
             started_at TIMESTAMPTZ NOT NULL,
             finished_at TIMESTAMPTZ,
             result TEXT,
             error TEXT,
             PRIMARY KEY (thread_id, tool_call_id, digest)
           )`,
    );
    this.#migrateKeys = migrationOnce(this.#pool, KEY_TABLE, `CREATE TABLE IF NOT EXISTS ${KEY_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), key BYTEA NOT NULL)`);
  }

  /**
   * The key that seals eart's records in graph state for every process and machine on this
   * database: made once (the first to ask stores it), then read. It never enters graph state.
   */
  async sealKey(): Promise<Uint8Array> {
    // Idempotent (the first key stored wins), so retried once after a lost connection.
    return this.#call("sealKey", true, async () => {
      await this.#migrateKeys();
      await this.#pool.query(`INSERT INTO ${KEY_TABLE} (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING`, [randomBytes(SEAL_KEY_BYTES)]);
      const { rows } = await this.#pool.query<{ key: Buffer }>(`SELECT key FROM ${KEY_TABLE} WHERE id = 1`);
      return new Uint8Array(rows[0]!.key);
    });
  }

  /** One operation, bounded and with typed faults; `idempotent` ones are retried once after a lost connection. */
  #call<T>(operation: string, idempotent: boolean, body: () => Promise<T>): Promise<T> {
    return storeCall({ store: "effect_ledger", operation, timeoutMs: this.#timeoutMs, idempotent }, body);
  }

  async #query(text: string, values: unknown[]): Promise<pg.QueryResult<LedgerRow>> {
    await this.#migrate();
    return this.#pool.query<LedgerRow>(text, values);
  }

  /** True for a {@link PostgresAuditLog} on this ledger's very pool. */
  commitsWith(log: AuditLog): boolean {
    return postgresAppendWithin(log, this.#pool) !== undefined;
  }

  /** The audit log's append to run inside this ledger's transaction with `audit`'s events, or undefined for none. */
  #audited(audit: LedgerAudit | undefined): { within: PostgresAppendWithin; events: readonly AuditEventInput[] } | undefined {
    const events = parseAudit(audit, (log) => this.commitsWith(log));
    return events && { within: postgresAppendWithin(audit!.log, this.#pool)!, events };
  }

  async begin(key: LedgerKey, now?: Date, audit?: LedgerAudit): Promise<LedgerBegin> {
    const k = parseKey(key);
    const startedAt = isoOf(now);
    const audited = this.#audited(audit);
    if (audited) return this.#call("begin", false, () => this.#beginAudited(k, startedAt, audited.within, audited.events));
    const fenced = await this.#call("begin", false, async () => {
      const fence = await fenceOf(this.#pool, [k.threadId]);
      return fence && this.#fencedWrite(fence, (q) => claimSql(q, k, startedAt));
    });
    if (fenced) return this.#claimOf(k, fenced);
    const inserted = await this.#call("begin", false, () =>
      this.#query(
        `INSERT INTO ${TABLE} (thread_id, tool_call_id, digest, schema_version, status, attempt, started_at)
         VALUES ($1, $2, $3, ${LEDGER_SCHEMA_VERSION}, 'started', 1, $4)
         ON CONFLICT (thread_id, tool_call_id, digest) DO NOTHING
         RETURNING ${PG_COLUMNS}`,
        [k.threadId, k.toolCallId, k.digest, startedAt],
      ),
    );
    if (inserted.rows[0]) return { claimed: true, entry: entryOfRow(inserted.rows[0]) };
    // The conflicting insert has committed (ON CONFLICT waits for it), so a new statement sees it;
    // rows are never deleted. A read: retried once after a lost connection.
    const { rows } = await this.#call("begin", true, () => this.#query(`SELECT ${PG_COLUMNS} FROM ${TABLE} WHERE ${PG_KEY_WHERE}`, [k.threadId, k.toolCallId, k.digest]));
    if (!rows[0]) throw this.#unreadable(k);
    return { claimed: false, entry: entryOfRow(rows[0]) };
  }

  /**
   * Runs the ledger's `statements` (values put in with `q`) in one transaction, after reading the
   * run's `fence` (one round trip): rolled back, with `ThreadLockLostError`, when another process
   * has taken the thread since the run took it. Returns the statements' results.
   */
  async #fencedWrite(fence: PostgresFence, statements: (q: (v: string) => string) => string[]): Promise<pg.QueryResult[]> {
    await this.#migrate();
    const client = await this.#connect();
    return releasing(client, async () => {
      const opening = [`BEGIN ISOLATION LEVEL READ COMMITTED;`, `SET LOCAL lock_timeout = ${this.#timeoutMs};`, `SET LOCAL statement_timeout = ${this.#timeoutMs};`, fenceRead(fence)];
      const written = statements((v) => client.escapeLiteral(v));
      const results = (await client.query([...opening, ...written].join("\n"))) as unknown as pg.QueryResult[];
      checkFence(fence, results[opening.length - 1]);
      await client.query("COMMIT");
      return results.slice(opening.length);
    });
  }

  /** What the statements of {@link claimSql} answered: the claimed entry, else the one stored before. */
  #claimOf(k: LedgerKey, [inserted, existing]: pg.QueryResult[]): LedgerBegin {
    const claimed = inserted!.rows[0] as LedgerRow | undefined;
    if (claimed) return { claimed: true, entry: entryOfRow(claimed) };
    const row = existing!.rows[0] as LedgerRow | undefined;
    if (!row) throw this.#unreadable(k);
    return { claimed: false, entry: entryOfRow(row) };
  }

  /** A client of the pool within `timeoutMs`, else `store_timeout`. */
  #connect(): Promise<pg.PoolClient> {
    return connectWithin(this.#pool, this.#timeoutMs, () => new StoreError("store_timeout", "effect_ledger", "connect", `no connection within ${this.#timeoutMs} ms`, { timeoutMs: this.#timeoutMs }));
  }

  #unreadable(k: LedgerKey): StoreError {
    return new StoreError("store_failure", "effect_ledger", "begin", `the entry ${k.threadId}/${k.toolCallId} conflicted but cannot be read`, { threadId: k.threadId, toolCallId: k.toolCallId });
  }

  /**
   * Runs `write` in one READ COMMITTED transaction with the audit log's append of `events`: the
   * first query holds the transaction's opening, the audit log's bounds, the ledger's statements
   * (`ledgerSql`), then the log's locks and reads; `wrote` reads from that query's results whether
   * the ledger wrote (else the transaction is rolled back and nothing is appended). The ledger row
   * is written before the log's locks are taken, so no writer waits for the row while holding them.
   */
  async #withAudit<T>(
    within: PostgresAppendWithin,
    events: readonly AuditEventInput[],
    ledgerSql: (q: (v: string) => string) => string[],
    wrote: (ledgerResults: pg.QueryResult[]) => { write: boolean; value: T },
  ): Promise<T> {
    await this.#migrate();
    await within.ready();
    const fence = await fenceOf(this.#pool, new Set(events.map((e) => e.threadId)));
    const client = await this.#connect();
    return releasing(client, async () => {
      const append = within.open(client, events, fence);
      const bounds = within.bounds();
      const ledger = ledgerSql((v) => client.escapeLiteral(v));
      const results = (await client.query(`BEGIN ISOLATION LEVEL READ COMMITTED;\n${[...bounds, ...ledger].join("\n")}\n${append.sql}`)) as unknown as pg.QueryResult[];
      const first = 1 + bounds.length;
      const { write, value } = wrote(results.slice(first, first + ledger.length));
      if (!write) {
        await client.query("ROLLBACK");
        return value;
      }
      const marks = await append.write(results);
      await client.query("COMMIT");
      marks();
      return value;
    });
  }

  /** `begin` with audit events: the claim and the events in one transaction, none of it when the key was claimed before. */
  #beginAudited(k: LedgerKey, startedAt: string, within: PostgresAppendWithin, events: readonly AuditEventInput[]): Promise<LedgerBegin> {
    return this.#withAudit<LedgerBegin>(
      within,
      events,
      (q) => claimSql(q, k, startedAt),
      (results) => {
        const value = this.#claimOf(k, results);
        return { write: value.claimed, value };
      },
    );
  }

  async retry(key: LedgerKey, expectedAttempt: number, now?: Date): Promise<LedgerEntry | undefined> {
    const k = parseKey(key);
    const attempt = parseAttempt(expectedAttempt);
    const startedAt = isoOf(now);
    // A run that holds its thread's fenced lock claims the new attempt only while it still holds it.
    const fenced = await this.#call("retry", false, async () => {
      const fence = await fenceOf(this.#pool, [k.threadId]);
      return (
        fence &&
        this.#fencedWrite(fence, (q) => [
          `UPDATE ${TABLE} SET attempt = attempt + 1, started_at = ${q(startedAt)}
           WHERE thread_id = ${q(k.threadId)} AND tool_call_id = ${q(k.toolCallId)} AND digest = ${q(k.digest)} AND status = 'started' AND attempt = ${attempt}
           RETURNING ${PG_COLUMNS};`,
        ])
      );
    });
    if (fenced) return fenced[0]!.rows[0] && entryOfRow(fenced[0]!.rows[0] as LedgerRow);
    const { rows } = await this.#call("retry", false, () =>
      this.#query(
        `UPDATE ${TABLE} SET attempt = attempt + 1, started_at = $5
         WHERE ${PG_KEY_WHERE} AND status = 'started' AND attempt = $4
         RETURNING ${PG_COLUMNS}`,
        [k.threadId, k.toolCallId, k.digest, attempt, startedAt],
      ),
    );
    return rows[0] && entryOfRow(rows[0]);
  }

  async finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date, audit?: LedgerAudit): Promise<boolean> {
    const k = parseKey(key);
    const o = parseOutcome(outcome);
    const finishedAt = isoOf(now);
    const audited = this.#audited(audit);
    const result = o.status === "succeeded" ? o.resultJson : null;
    const failure = o.status === "failed" ? o.error : null;
    // With audit events: the outcome and the events in one transaction, neither when the entry is not started.
    const writeAudited = () =>
      this.#call("finish", false, () =>
        this.#withAudit(
          audited!.within,
          audited!.events,
          (q) => [
            `UPDATE ${TABLE} SET status = ${q(o.status)}, finished_at = ${q(finishedAt)}, result = ${result === null ? "NULL" : q(result)}, error = ${failure === null ? "NULL" : q(failure)}
             WHERE thread_id = ${q(k.threadId)} AND tool_call_id = ${q(k.toolCallId)} AND digest = ${q(k.digest)} AND status = 'started';`,
          ],
          ([updated]) => ({ write: updated!.rowCount === 1, value: updated!.rowCount === 1 }),
        ),
      );
    const write = audited ? writeAudited : async () => {
      const { rowCount } = await this.#call("finish", false, () =>
        this.#query(
          `UPDATE ${TABLE} SET status = $4, finished_at = $5, result = $6, error = $7
           WHERE ${PG_KEY_WHERE} AND status = 'started'`,
          [k.threadId, k.toolCallId, k.digest, o.status, finishedAt, result, failure],
        ),
      );
      return rowCount === 1;
    };
    try {
      return await write();
    } catch (error) {
      if (!(error instanceof StoreError && error.code === "store_unavailable")) throw error;
      // The connection was lost with the statement: it may or may not have committed. What is
      // recorded says which: this very outcome (it did, with its audit events if any: one
      // transaction), still started (it did not: write it again, compare-and-set as ever), or
      // anything else (another run finished it).
      const entry = await this.get(k);
      if (entry?.status === "started") return write();
      const recorded =
        entry !== undefined &&
        entry.status === o.status &&
        (o.status === "succeeded" ? JSON.stringify(entry.result) === o.resultJson : entry.error === o.error);
      if (recorded) return true;
      throw error;
    }
  }

  async get(key: LedgerKey): Promise<LedgerEntry | undefined> {
    const k = parseKey(key);
    const { rows } = await this.#call("get", true, () => this.#query(`SELECT ${PG_COLUMNS} FROM ${TABLE} WHERE ${PG_KEY_WHERE}`, [k.threadId, k.toolCallId, k.digest]));
    return rows[0] && entryOfRow(rows[0]);
  }

  async list(threadId: string): Promise<LedgerEntry[]> {
    const id = parseThreadId(threadId);
    const { rows } = await this.#call("list", true, () =>
      this.#query(`SELECT ${PG_COLUMNS} FROM ${TABLE} WHERE thread_id = $1 ORDER BY started_at, tool_call_id COLLATE "C", digest COLLATE "C"`, [id]),
    );
    return rows.map(entryOfRow);
  }

  /** Ends the connection pool (only when this ledger created it). */
  async close(): Promise<void> {
    if (this.#owned && !this.#pool.ended) await this.#pool.end();
  }
}

/** The claim of `k`: its insert (a row when claimed), then, in a new statement that sees a conflicting insert ON CONFLICT waited for, the entry. */
function claimSql(q: (v: string) => string, k: LedgerKey, startedAt: string): string[] {
  return [
    `INSERT INTO ${TABLE} (thread_id, tool_call_id, digest, schema_version, status, attempt, started_at)
     VALUES (${q(k.threadId)}, ${q(k.toolCallId)}, ${q(k.digest)}, ${LEDGER_SCHEMA_VERSION}, 'started', 1, ${q(startedAt)})
     ON CONFLICT (thread_id, tool_call_id, digest) DO NOTHING
     RETURNING ${PG_COLUMNS};`,
    `SELECT ${PG_COLUMNS} FROM ${TABLE} WHERE thread_id = ${q(k.threadId)} AND tool_call_id = ${q(k.toolCallId)} AND digest = ${q(k.digest)};`,
  ];
}
