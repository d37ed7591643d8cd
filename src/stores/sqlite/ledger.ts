import type Database from "better-sqlite3";
import { randomBytes } from "node:crypto";
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
import type { AuditEventInput, AuditLog } from "../../audit/log.js";
import { sqliteAppendWithin } from "./audit-log.js";
import { checkThreadFence } from "../../threads/lock.js";
import { openSqlite, type SqliteLocation } from "./connection.js";

const KEY_WHERE_SQLITE = "thread_id = ? AND tool_call_id = ? AND digest = ?";

/** Where the SQLite ledger lives: a file path, or an open better-sqlite3 database to share. */
export type SqliteEffectLedgerOptions = SqliteLocation;

/**
 * An effect ledger in a SQLite file (table `eart_effect_ledger`), shared by every process that
 * opens the file. It sets `synchronous = FULL` on its connection (also a shared one), so a
 * recorded execution survives a power loss, not only a process crash. `begin` inserts and reads
 * back in one write transaction, so exactly one caller claims a key; updates are compare-and-set
 * on the status and attempt.
 *
 * Given a {@link SqliteAuditLog} on the very same database connection (`{ database }`, as
 * `sqliteStores` opens them), it commits audit events with its own writes (`commitsWith`): the
 * claim with `tool.started`, the outcome with its event, each one transaction and one sync.
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
  readonly #begin: Database.Transaction<(k: LedgerKey, startedAt: string, audited?: () => void) => { claimed: boolean; row: LedgerRow }>;
  readonly #retry: Database.Transaction<(k: LedgerKey, attempt: number, startedAt: string) => LedgerRow | undefined>;
  readonly #finish: Database.Statement;
  readonly #finishAudited: Database.Transaction<(values: unknown[], audited: () => void) => boolean>;

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
    // `audited` runs the audit log's append inside the transaction, only when the write happened.
    this.#begin = this.#db.transaction((k: LedgerKey, startedAt: string, audited?: () => void) => {
      // A run whose thread lock was taken from it claims nothing (checked under the write lock).
      checkThreadFence(k.threadId);
      const { changes } = insert.run(k.threadId, k.toolCallId, k.digest, startedAt);
      if (changes === 1) audited?.();
      return { claimed: changes === 1, row: this.#select.get(k.threadId, k.toolCallId, k.digest) as LedgerRow };
    });
    this.#finishAudited = this.#db.transaction((values: unknown[], audited: () => void) => {
      const { changes } = this.#finish.run(...values);
      if (changes === 1) audited();
      return changes === 1;
    });
    this.#retry = this.#db.transaction((k: LedgerKey, attempt: number, startedAt: string) => {
      checkThreadFence(k.threadId);
      const { changes } = bump.run(startedAt, k.threadId, k.toolCallId, k.digest, attempt);
      return changes === 1 ? (this.#select.get(k.threadId, k.toolCallId, k.digest) as LedgerRow) : undefined;
    });
  }

  /** True for a {@link SqliteAuditLog} on this ledger's very database connection. */
  commitsWith(log: AuditLog): boolean {
    return sqliteAppendWithin(log, this.#db) !== undefined;
  }

  /** The append of `audit`'s events inside this connection's transaction, or undefined for none. */
  #audited(audit: LedgerAudit | undefined): (() => void) | undefined {
    const events = parseAudit(audit, (log) => this.commitsWith(log));
    if (!events) return undefined;
    const append = sqliteAppendWithin(audit!.log, this.#db)!;
    return () => void append(events as AuditEventInput[]);
  }

  async begin(key: LedgerKey, now?: Date, audit?: LedgerAudit): Promise<LedgerBegin> {
    const k = parseKey(key);
    const startedAt = isoOf(now);
    const { claimed, row } = this.#begin.immediate(k, startedAt, this.#audited(audit));
    return { claimed, entry: entryOfRow(row) };
  }

  async retry(key: LedgerKey, expectedAttempt: number, now?: Date): Promise<LedgerEntry | undefined> {
    const k = parseKey(key);
    const attempt = parseAttempt(expectedAttempt);
    const row = this.#retry.immediate(k, attempt, isoOf(now));
    return row && entryOfRow(row);
  }

  async finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date, audit?: LedgerAudit): Promise<boolean> {
    const k = parseKey(key);
    const o = parseOutcome(outcome);
    const finishedAt = isoOf(now);
    const audited = this.#audited(audit);
    const values = [o.status, finishedAt, o.status === "succeeded" ? o.resultJson : null, o.status === "failed" ? o.error : null, k.threadId, k.toolCallId, k.digest];
    // Without events, one statement (its own transaction); with them, one write transaction.
    if (!audited) return this.#finish.run(...values).changes === 1;
    return this.#finishAudited.immediate(values, audited);
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
