import type Database from "better-sqlite3";
import type pg from "pg";
import { z } from "zod";
import { randomBytes } from "node:crypto";
import { canonicalJson, jsonProblem, sha256Hex } from "../internal/canonical.js";
import { EartConfigError, EartError, StoreError } from "../errors.js";
import { isPgPool, migrationOnce, openPostgres, storeCall, type PostgresLocation } from "../stores/postgres/connection.js";
import { parseOptions } from "../internal/options.js";
import { isSqliteDatabase, openSqlite, type SqliteLocation } from "../stores/sqlite/connection.js";
import { processSealKey, SEAL_KEY_BYTES } from "../decisions/seal.js";

/**
 * The effect ledger: one record per tool execution, keyed by (thread id, tool call id, digest),
 * written as `started` before the tool runs and `succeeded` / `failed` after. A node that runs
 * again (resume, retry, crash recovery) reads the record instead of running the tool again.
 */

/** Current schema version of a persisted {@link LedgerEntry}. */
export const LEDGER_SCHEMA_VERSION = 1 as const;

// No NUL: PostgreSQL text cannot hold it, and every store must accept the same keys.
const KeyPart = z
  .string()
  .min(1, "must be a non-empty string")
  .refine((s) => !s.includes("\u0000"), "must not contain NUL characters");

/**
 * The idempotency key of one tool execution. The same tool call id with another digest (an
 * edited call) is another key.
 */
export const LedgerKeySchema = z.object({ threadId: KeyPart, toolCallId: KeyPart, digest: KeyPart }).strict();
export type LedgerKey = z.output<typeof LedgerKeySchema>;

/** Where an execution stands: `started` with no outcome means the outcome is unknown. */
export const LedgerStatusSchema = z.enum(["started", "succeeded", "failed"]);
export type LedgerStatus = z.output<typeof LedgerStatusSchema>;

const IsoDate = z.string().refine((s) => !Number.isNaN(Date.parse(s)), "must be an ISO date");

/**
 * One execution as recorded. `attempt` counts the starts (1, then +1 per {@link EffectLedger.retry});
 * `startedAt` is when the current attempt started. `result` is set (JSON, possibly `null`) only
 * when `succeeded`, `error` only when `failed`.
 */
export const LedgerEntrySchema = z
  .object({
    schemaVersion: z.literal(LEDGER_SCHEMA_VERSION),
    key: LedgerKeySchema,
    status: LedgerStatusSchema,
    attempt: z.number().int().positive(),
    startedAt: IsoDate,
    finishedAt: IsoDate.optional(),
    result: z.unknown().optional(),
    error: z.string().optional(),
  })
  .strict()
  .superRefine((e, ctx) => {
    if ((e.status === "started") !== (e.finishedAt === undefined)) {
      ctx.addIssue({ code: "custom", path: ["finishedAt"], message: "is set exactly when the entry is finished" });
    }
    if (e.status !== "succeeded" && "result" in e) ctx.addIssue({ code: "custom", path: ["result"], message: "only a succeeded entry has a result" });
    if (e.status === "succeeded" && !("result" in e)) ctx.addIssue({ code: "custom", path: ["result"], message: "a succeeded entry has a result" });
    if ((e.status === "failed") !== (e.error !== undefined)) {
      ctx.addIssue({ code: "custom", path: ["error"], message: "is set exactly when the entry failed" });
    }
  });
export type LedgerEntry = z.output<typeof LedgerEntrySchema>;

/** The outcome handed to {@link EffectLedger.finish}. `result` must be JSON (use `null` for nothing). */
export const LedgerOutcomeSchema = z.discriminatedUnion("status", [
  z.object({ status: z.literal("succeeded"), result: z.unknown() }).strict(),
  z.object({ status: z.literal("failed"), error: z.string().min(1, "must be a non-empty string") }).strict(),
]);
export type LedgerOutcome = z.output<typeof LedgerOutcomeSchema>;

/** What {@link EffectLedger.begin} found: `claimed` when this caller created the entry. */
export type LedgerBegin = { claimed: boolean; entry: LedgerEntry };

/**
 * Records tool executions by idempotency key, so that a call runs at most once per key. Every
 * operation is atomic in its store, also across processes for the SQLite and PostgreSQL stores.
 * @example
 * ```ts
 * const { claimed, entry } = await ledger.begin(key);
 * if (claimed) {
 *   const result = await tool.invoke(args);
 *   await ledger.finish(key, { status: "succeeded", result });
 * } else if (entry.status === "succeeded") {
 *   return entry.result; // recorded: never run again
 * }
 * ```
 */
export interface EffectLedger {
  /**
   * Records that an execution is about to start. Returns `{ claimed: true }` with a new entry
   * (attempt 1) when this caller created it, or `{ claimed: false }` with the existing entry, in
   * any status, unchanged.
   */
  begin(key: LedgerKey, now?: Date): Promise<LedgerBegin>;
  /**
   * Claims a retry of an execution whose outcome is unknown: bumps `attempt` (and sets
   * `startedAt`) only if the entry is still `started` at `expectedAttempt` (compare-and-set).
   * Returns the updated entry, or `undefined` when it is missing or changed meanwhile.
   */
  retry(key: LedgerKey, expectedAttempt: number, now?: Date): Promise<LedgerEntry | undefined>;
  /**
   * Records the outcome of a `started` entry. `false` when the entry is missing or already
   * finished: a finished entry is never changed.
   */
  finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date): Promise<boolean>;
  /** The entry of a key, or `undefined`. */
  get(key: LedgerKey): Promise<LedgerEntry | undefined>;
  /** Every entry of a thread, by `startedAt`, then tool call id, then digest. */
  list(threadId: string): Promise<LedgerEntry[]>;
  /**
   * The key that seals eart's records in graph state, kept in this ledger's store and the same for
   * every process that shares it (the memory ledger: the process's key). A ledger that wraps
   * another forwards it.
   */
  sealKey(): Promise<Uint8Array> | Uint8Array;
}

/**
 * A call to an {@link EffectLedger} with input that does not validate (bad key, outcome, attempt
 * or date, or a result that is not JSON). Nothing is written. `field` names the bad argument.
 * @example
 * ```ts
 * await ledger.finish(key, { status: "succeeded", result: new Map() }); // throws LedgerInputError { field: "outcome" }
 * ```
 */
export class LedgerInputError extends EartError {
  readonly field: string;
  constructor(field: string, message: string) {
    super("ledger_input_invalid", `Invalid effect-ledger input "${field}": ${message}`, { field });
    this.field = field;
  }
}

function parseWith<S extends z.ZodType>(schema: S, field: string, value: unknown): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const at = issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
  throw new LedgerInputError(field, `${at}${issue.message}`);
}

const parseKey = (key: unknown): LedgerKey => parseWith(LedgerKeySchema, "key", key);
const parseThreadId = (threadId: unknown): string => parseWith(KeyPart, "threadId", threadId);
const parseAttempt = (attempt: unknown): number =>
  parseWith(z.number().int().positive("must be a positive integer"), "expectedAttempt", attempt);

function isoOf(now: unknown): string {
  const at = now ?? new Date();
  if (!(at instanceof Date) || Number.isNaN(at.getTime())) throw new LedgerInputError("now", "must be a valid Date");
  return at.toISOString();
}

/** The validated outcome, with its result as JSON text. */
type ParsedOutcome = { status: "succeeded"; resultJson: string } | { status: "failed"; error: string };

function parseOutcome(outcome: unknown): ParsedOutcome {
  const parsed = parseWith(LedgerOutcomeSchema, "outcome", outcome);
  if (parsed.status === "failed") return parsed;
  const problem = jsonProblem(parsed.result);
  if (problem) {
    const at = problem.path.reduce<string>((out, part) => (typeof part === "number" ? `${out}[${part}]` : `${out}.${part}`), "result");
    throw new LedgerInputError("outcome", `the result must be JSON-serialisable: ${at} ${problem.why} (use null for no result)`);
  }
  return { status: "succeeded", resultJson: JSON.stringify(parsed.result) };
}

/**
 * A stable string for an idempotency key (the SHA-256 hex of its canonical JSON), for a tool to
 * forward to the system it calls, e.g. as an `Idempotency-Key` header.
 * @example
 * ```ts
 * fetch(url, { method: "POST", headers: { "Idempotency-Key": idempotencyKeyOf(key) }, body });
 * ```
 */
export function idempotencyKeyOf(key: LedgerKey): string {
  const { threadId, toolCallId, digest } = parseKey(key);
  return sha256Hex(canonicalJson({ threadId, toolCallId, digest }));
}

/** A stored row, in the column names of both SQL stores. */
interface LedgerRow {
  thread_id: string;
  tool_call_id: string;
  digest: string;
  schema_version: number;
  status: string;
  attempt: number;
  started_at: string | Date;
  finished_at: string | Date | null;
  result: string | null;
  error: string | null;
}

const iso = (v: string | Date): string => (v instanceof Date ? v.toISOString() : v);

/** A row as an entry, re-validated: a corrupt row is reported, never returned. */
function entryOfRow(row: LedgerRow): LedgerEntry {
  let result: { result?: unknown } = {};
  try {
    if (row.result !== null) result = { result: JSON.parse(row.result) as unknown };
  } catch (error) {
    throw new Error(`eart_effect_ledger: the stored result of ${row.thread_id}/${row.tool_call_id} is not JSON`, { cause: error });
  }
  const entry = {
    schemaVersion: Number(row.schema_version),
    key: { threadId: row.thread_id, toolCallId: row.tool_call_id, digest: row.digest },
    status: row.status,
    attempt: Number(row.attempt),
    startedAt: iso(row.started_at),
    ...(row.finished_at !== null ? { finishedAt: iso(row.finished_at) } : {}),
    ...result,
    ...(row.error !== null ? { error: row.error } : {}),
  };
  const parsed = LedgerEntrySchema.safeParse(entry);
  if (!parsed.success) {
    throw new Error(`eart_effect_ledger: the stored entry ${row.thread_id}/${row.tool_call_id} is invalid: ${parsed.error.issues[0]?.message}`);
  }
  return parsed.data;
}

const byStartThenCall = (a: LedgerEntry, b: LedgerEntry): number =>
  cmp(a.startedAt, b.startedAt) || cmp(a.key.toolCallId, b.key.toolCallId) || cmp(a.key.digest, b.key.digest);
const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * An effect ledger in memory: for tests and single-process runs. Entries are copied in and out,
 * so a caller cannot change what is recorded.
 * @example
 * ```ts
 * const ledger = new MemoryEffectLedger();
 * const { claimed } = await ledger.begin({ threadId: "t1", toolCallId: "call_1", digest });
 * ```
 */
export class MemoryEffectLedger implements EffectLedger {
  readonly #entries = new Map<string, LedgerEntry>();

  /** The process's seal key: state sealed here is trusted by this process only, as the entries are. */
  sealKey(): Uint8Array {
    return processSealKey();
  }

  static #id(key: LedgerKey): string {
    return canonicalJson([key.threadId, key.toolCallId, key.digest]);
  }

  static #copy(entry: LedgerEntry): LedgerEntry {
    return JSON.parse(JSON.stringify(entry)) as LedgerEntry;
  }

  // Each method validates first and then reads and writes with no await in between: atomic.

  async begin(key: LedgerKey, now?: Date): Promise<LedgerBegin> {
    const k = parseKey(key);
    const startedAt = isoOf(now);
    const id = MemoryEffectLedger.#id(k);
    const existing = this.#entries.get(id);
    if (existing) return { claimed: false, entry: MemoryEffectLedger.#copy(existing) };
    // Built from validated parts: valid by construction, no second parse.
    const entry: LedgerEntry = { schemaVersion: LEDGER_SCHEMA_VERSION, key: { ...k }, status: "started", attempt: 1, startedAt };
    this.#entries.set(id, entry);
    return { claimed: true, entry: MemoryEffectLedger.#copy(entry) };
  }

  async retry(key: LedgerKey, expectedAttempt: number, now?: Date): Promise<LedgerEntry | undefined> {
    const k = parseKey(key);
    const attempt = parseAttempt(expectedAttempt);
    const startedAt = isoOf(now);
    const id = MemoryEffectLedger.#id(k);
    const existing = this.#entries.get(id);
    if (!existing || existing.status !== "started" || existing.attempt !== attempt) return undefined;
    const entry: LedgerEntry = { ...existing, attempt: attempt + 1, startedAt };
    this.#entries.set(id, entry);
    return MemoryEffectLedger.#copy(entry);
  }

  async finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date): Promise<boolean> {
    const k = parseKey(key);
    const parsed = parseOutcome(outcome);
    const finishedAt = isoOf(now);
    const id = MemoryEffectLedger.#id(k);
    const existing = this.#entries.get(id);
    if (!existing || existing.status !== "started") return false;
    const entry: LedgerEntry = {
      ...existing,
      status: parsed.status,
      finishedAt,
      ...(parsed.status === "succeeded" ? { result: JSON.parse(parsed.resultJson) as unknown } : { error: parsed.error }),
    };
    this.#entries.set(id, entry);
    return true;
  }

  async get(key: LedgerKey): Promise<LedgerEntry | undefined> {
    const entry = this.#entries.get(MemoryEffectLedger.#id(parseKey(key)));
    return entry && MemoryEffectLedger.#copy(entry);
  }

  async list(threadId: string): Promise<LedgerEntry[]> {
    const id = parseThreadId(threadId);
    return [...this.#entries.values()]
      .filter((e) => e.key.threadId === id)
      .sort(byStartThenCall)
      .map((e) => MemoryEffectLedger.#copy(e));
  }
}

const TABLE = "eart_effect_ledger";
const KEY_TABLE = "eart_seal_keys";
const COLUMNS = "thread_id, tool_call_id, digest, schema_version, status, attempt, started_at, finished_at, result, error";
const KEY_WHERE_SQLITE = "thread_id = ? AND tool_call_id = ? AND digest = ?";

/** Where the SQLite ledger lives: a file path, or an open better-sqlite3 database to share. */
export type SqliteEffectLedgerOptions = SqliteLocation;

/**
 * An effect ledger in a SQLite file (table `eart_effect_ledger`), shared by every process that
 * opens the file. It sets `synchronous = FULL` on its connection (also a shared one), so a
 * recorded execution survives a power loss, not only a process crash. `begin` inserts and reads
 * back in one write transaction, so exactly one caller claims a key; updates are compare-and-set
 * on the status and attempt.
 * @example
 * ```ts
 * const ledger = new SqliteEffectLedger({ path: ".eart/eart.sqlite" });
 * const { claimed, entry } = await ledger.begin(key);
 * // …
 * ledger.close();
 * ```
 */
export class SqliteEffectLedger implements EffectLedger {
  readonly #db: Database.Database;
  readonly #owned: boolean;
  readonly #select: Database.Statement;
  readonly #list: Database.Statement;
  readonly #begin: Database.Transaction<(k: LedgerKey, startedAt: string) => { claimed: boolean; row: LedgerRow }>;
  readonly #retry: Database.Transaction<(k: LedgerKey, attempt: number, startedAt: string) => LedgerRow | undefined>;
  readonly #finish: Database.Statement;

  constructor(options: SqliteEffectLedgerOptions) {
    ({ db: this.#db, owned: this.#owned } = openSqlite(options));
    // In WAL mode SQLite's default (NORMAL) does not sync each commit: a power loss could undo a
    // recorded `started` or `succeeded` and let a tool run twice. The ledger needs every commit
    // durable, so this connection (shared or not) syncs each one.
    this.#db.pragma("synchronous = FULL");
    this.#db.exec(
      `CREATE TABLE IF NOT EXISTS ${TABLE} (
         thread_id TEXT NOT NULL,
         tool_call_id TEXT NOT NULL,
         digest TEXT NOT NULL,
         schema_version INTEGER NOT NULL,
         status TEXT NOT NULL CHECK (status IN ('started', 'succeeded', 'failed')),
         attempt INTEGER NOT NULL,
         started_at TEXT NOT NULL,
         finished_at TEXT,
         result TEXT,
         error TEXT,
         PRIMARY KEY (thread_id, tool_call_id, digest)
       )`,
    );
    this.#db.exec(`CREATE TABLE IF NOT EXISTS ${KEY_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), key BLOB NOT NULL)`);
    this.#select = this.#db.prepare(`SELECT ${COLUMNS} FROM ${TABLE} WHERE ${KEY_WHERE_SQLITE}`);
    this.#list = this.#db.prepare(`SELECT ${COLUMNS} FROM ${TABLE} WHERE thread_id = ? ORDER BY started_at, tool_call_id, digest`);
    const insert = this.#db.prepare(
      `INSERT OR IGNORE INTO ${TABLE} (thread_id, tool_call_id, digest, schema_version, status, attempt, started_at)
       VALUES (?, ?, ?, ${LEDGER_SCHEMA_VERSION}, 'started', 1, ?)`,
    );
    const bump = this.#db.prepare(
      `UPDATE ${TABLE} SET attempt = attempt + 1, started_at = ? WHERE ${KEY_WHERE_SQLITE} AND status = 'started' AND attempt = ?`,
    );
    this.#finish = this.#db.prepare(
      `UPDATE ${TABLE} SET status = ?, finished_at = ?, result = ?, error = ? WHERE ${KEY_WHERE_SQLITE} AND status = 'started'`,
    );
    this.#begin = this.#db.transaction((k: LedgerKey, startedAt: string) => {
      const { changes } = insert.run(k.threadId, k.toolCallId, k.digest, startedAt);
      return { claimed: changes === 1, row: this.#select.get(k.threadId, k.toolCallId, k.digest) as LedgerRow };
    });
    this.#retry = this.#db.transaction((k: LedgerKey, attempt: number, startedAt: string) => {
      const { changes } = bump.run(startedAt, k.threadId, k.toolCallId, k.digest, attempt);
      return changes === 1 ? (this.#select.get(k.threadId, k.toolCallId, k.digest) as LedgerRow) : undefined;
    });
  }

  async begin(key: LedgerKey, now?: Date): Promise<LedgerBegin> {
    const k = parseKey(key);
    const { claimed, row } = this.#begin.immediate(k, isoOf(now));
    return { claimed, entry: entryOfRow(row) };
  }

  async retry(key: LedgerKey, expectedAttempt: number, now?: Date): Promise<LedgerEntry | undefined> {
    const k = parseKey(key);
    const attempt = parseAttempt(expectedAttempt);
    const row = this.#retry.immediate(k, attempt, isoOf(now));
    return row && entryOfRow(row);
  }

  async finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date): Promise<boolean> {
    const k = parseKey(key);
    const o = parseOutcome(outcome);
    const finishedAt = isoOf(now);
    const { changes } = this.#finish.run(
      o.status,
      finishedAt,
      o.status === "succeeded" ? o.resultJson : null,
      o.status === "failed" ? o.error : null,
      k.threadId,
      k.toolCallId,
      k.digest,
    );
    return changes === 1;
  }

  async get(key: LedgerKey): Promise<LedgerEntry | undefined> {
    const k = parseKey(key);
    const row = this.#select.get(k.threadId, k.toolCallId, k.digest) as LedgerRow | undefined;
    return row && entryOfRow(row);
  }

  async list(threadId: string): Promise<LedgerEntry[]> {
    return (this.#list.all(parseThreadId(threadId)) as LedgerRow[]).map(entryOfRow);
  }

  /**
   * The key that seals eart's records in graph state for every process on this file: made once
   * (the first process to ask stores it), then read. It never enters graph state.
   */
  sealKey(): Uint8Array {
    this.#db.prepare(`INSERT OR IGNORE INTO ${KEY_TABLE} (id, key) VALUES (1, ?)`).run(randomBytes(SEAL_KEY_BYTES));
    return new Uint8Array((this.#db.prepare(`SELECT key FROM ${KEY_TABLE} WHERE id = 1`).get() as { key: Buffer }).key);
  }

  /** Closes the database connection (only when this ledger opened it). */
  close(): void {
    if (this.#owned && this.#db.open) this.#db.close();
  }
}

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

  async begin(key: LedgerKey, now?: Date): Promise<LedgerBegin> {
    const k = parseKey(key);
    const startedAt = isoOf(now);
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
    if (!rows[0]) throw new Error(`eart_effect_ledger: the entry ${k.threadId}/${k.toolCallId} conflicted but cannot be read`);
    return { claimed: false, entry: entryOfRow(rows[0]) };
  }

  async retry(key: LedgerKey, expectedAttempt: number, now?: Date): Promise<LedgerEntry | undefined> {
    const k = parseKey(key);
    const attempt = parseAttempt(expectedAttempt);
    const startedAt = isoOf(now);
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

  async finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date): Promise<boolean> {
    const k = parseKey(key);
    const o = parseOutcome(outcome);
    const finishedAt = isoOf(now);
    const write = async () => {
      const { rowCount } = await this.#call("finish", false, () =>
        this.#query(
          `UPDATE ${TABLE} SET status = $4, finished_at = $5, result = $6, error = $7
           WHERE ${PG_KEY_WHERE} AND status = 'started'`,
          [k.threadId, k.toolCallId, k.digest, o.status, finishedAt, o.status === "succeeded" ? o.resultJson : null, o.status === "failed" ? o.error : null],
        ),
      );
      return rowCount === 1;
    };
    try {
      return await write();
    } catch (error) {
      if (!(error instanceof StoreError && error.code === "store_unavailable")) throw error;
      // The connection was lost with the statement: it may or may not have committed. What is
      // recorded says which: this very outcome (it did), still started (it did not: write it
      // again, compare-and-set as ever), or anything else (another run finished it).
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

const memoryLedgers = new WeakMap<object, MemoryEffectLedger>();

/**
 * The effect ledger that fits a checkpointer: a {@link PostgresEffectLedger} on a `PostgresSaver`'s
 * pool, a {@link SqliteEffectLedger} in a `SqliteSaver`'s file, or one {@link MemoryEffectLedger}
 * per other checkpointer. So a thread that crashed in one process and is finished by another never
 * repeats a side effect, with default options; and the ledger's seal key is shared the same way.
 * @example
 * ```ts
 * const ledger = ledgerFor(SqliteSaver.fromConnString(".eart/agent.sqlite"));
 * ```
 */
export function ledgerFor(checkpointer: unknown): EffectLedger {
  const c = checkpointer as { pool?: unknown; db?: unknown } | null;
  if (!c || typeof c !== "object") throw new EartConfigError("checkpointer", "an effect ledger needs a checkpointer");
  // PostgresSaver keeps its pool in a (TypeScript-)private field.
  if (isPgPool(c.pool)) return new PostgresEffectLedger({ pool: c.pool });
  if (isSqliteDatabase(c.db)) return new SqliteEffectLedger({ database: c.db });
  let ledger = memoryLedgers.get(c);
  if (!ledger) memoryLedgers.set(c, (ledger = new MemoryEffectLedger()));
  return ledger;
}
