import type Database from "better-sqlite3";
import {
  type AuditEvent,
  type AuditEventInput,
  type AuditLog,
  type AuditVerification,
  type AuditVerifyOptions,
  type ChainHead,
  groupByThread,
  markAppended,
  sealEventsWithJson,
  toInputList,
  verifyChain,
} from "../../audit/log.js";
import { headSigner, type AuditSigningKey, type HeadSigner, type SignedChainHead } from "../../audit/signing.js";
import { globalHeadSigner, nextGlobalEntry, type GlobalEntry, type GlobalHead, type SignedGlobalHead, type ThreadHead } from "../../audit/global.js";
import type { GlobalLogSnapshot } from "../../audit/log.js";
import { parseJsonOr, rowToEvent, type EventRow } from "../../audit/rows.js";
import { canonicalJson } from "../../internal/canonical.js";
import { AuditStoreError, EartConfigError, EartError } from "../../errors.js";
import { INBOX_EVENT_TYPES, InboxIndex, netInboxChanges, parsePendingOptions, readPendingRow, type PendingOptions, type PendingTask } from "../../audit/inbox.js";
import { checkThreadFence } from "../../threads/lock.js";
import { openSqlite, type SqliteLocation } from "./connection.js";

/**
 * Where the log lives (a file path, or an open better-sqlite3 database to share), and optionally
 * an Ed25519 `signingKey` that signs each thread's head after every append.
 */
export type SqliteAuditLogOptions = SqliteLocation & { signingKey?: AuditSigningKey };


/**
 * Audit log in a SQLite file (the embedded default, beside LangGraph's SQLite checkpointer).
 * Appends are serialised by SQLite's write lock, so several processes can share one file; the
 * chain head of each thread is kept in its own table, so a deleted last event is detected too.
 * With a `signingKey`, the head is also signed (table `eart_audit_signed_heads`), so a verifier
 * holding the public key detects a chain and head rewritten by someone without the private key.
 * @example
 * ```ts
 * const auditLog = new SqliteAuditLog({ path: ".eart/eart.sqlite" });
 * await auditLog.verify("thread-1");
 * ```
 */
export class SqliteAuditLog implements AuditLog {
  readonly #db: Database.Database;
  readonly #owned: boolean;
  readonly #insert: Database.Statement;
  readonly #head: Database.Statement;
  readonly #setHead: Database.Statement;
  readonly #read: Database.Statement;
  readonly #threads: Database.Statement;
  readonly #signedHead: Database.Statement;
  readonly #setSignedHead: Database.Statement;
  readonly #signer: HeadSigner | undefined;
  readonly #globalSigner: { sign(head: GlobalHead): SignedGlobalHead } | undefined;
  readonly #globalHead: Database.Statement;
  readonly #logged: Database.Statement;
  readonly #addGlobal: (heads: ThreadHead[]) => GlobalEntry & { signed?: SignedGlobalHead };
  readonly #readGlobal: Database.Transaction<() => GlobalLogSnapshot>;
  readonly #appendTx: Database.Transaction<(groups: Map<string, AuditEventInput[]>) => AuditEvent[]>;
  readonly #inbox: SqliteInbox;

  constructor(options: SqliteAuditLogOptions) {
    const { signingKey, ...location } = (options ?? {}) as SqliteAuditLogOptions;
    this.#signer = signingKey === undefined ? undefined : headSigner(signingKey);
    this.#globalSigner = signingKey === undefined ? undefined : globalHeadSigner(signingKey);
    try {
      ({ db: this.#db, owned: this.#owned } = openSqlite(location as SqliteLocation));
      this.#db.exec(`
        CREATE TABLE IF NOT EXISTS eart_audit_events (
          thread_id TEXT NOT NULL,
          seq INTEGER NOT NULL,
          id TEXT NOT NULL,
          type TEXT NOT NULL,
          at TEXT NOT NULL,
          schema_version INTEGER NOT NULL,
          data TEXT NOT NULL,
          prev_hash TEXT NOT NULL,
          hash TEXT NOT NULL,
          PRIMARY KEY (thread_id, seq)
        );
        CREATE TABLE IF NOT EXISTS eart_audit_heads (
          thread_id TEXT PRIMARY KEY,
          seq INTEGER NOT NULL,
          hash TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS eart_audit_signed_heads (
          thread_id TEXT PRIMARY KEY,
          head TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS eart_audit_global (
          gseq INTEGER PRIMARY KEY,
          prev_hash TEXT NOT NULL,
          hash TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS eart_audit_global_heads (
          thread_id TEXT NOT NULL,
          gseq INTEGER NOT NULL,
          seq INTEGER NOT NULL,
          hash TEXT NOT NULL,
          PRIMARY KEY (thread_id, gseq)
        );
        CREATE TABLE IF NOT EXISTS eart_audit_global_signed (
          id INTEGER PRIMARY KEY CHECK (id = 1),
          head TEXT NOT NULL
        );
      `);
    } catch (error) {
      if (error instanceof EartConfigError) throw error;
      throw new AuditStoreError(`Cannot open the SQLite audit log: ${(error as Error).message}`, { cause: error });
    }
    this.#insert = this.#db.prepare(
      `INSERT INTO eart_audit_events (thread_id, seq, id, type, at, schema_version, data, prev_hash, hash)
       VALUES (@threadId, @seq, @id, @type, @at, @schemaVersion, @data, @prevHash, @hash)`,
    );
    this.#head = this.#db.prepare(`SELECT seq, hash FROM eart_audit_heads WHERE thread_id = ?`);
    this.#setHead = this.#db.prepare(
      `INSERT INTO eart_audit_heads (thread_id, seq, hash) VALUES (?, ?, ?)
       ON CONFLICT(thread_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`,
    );
    this.#read = this.#db.prepare(`SELECT * FROM eart_audit_events WHERE thread_id = ? ORDER BY seq`);
    this.#threads = this.#db.prepare(`SELECT DISTINCT thread_id FROM eart_audit_events ORDER BY thread_id`);
    this.#signedHead = this.#db.prepare(`SELECT head FROM eart_audit_signed_heads WHERE thread_id = ?`);
    this.#setSignedHead = this.#db.prepare(
      `INSERT INTO eart_audit_signed_heads (thread_id, head) VALUES (?, ?) ON CONFLICT(thread_id) DO UPDATE SET head = excluded.head`,
    );
    this.#globalHead = this.#db.prepare(`SELECT gseq, hash FROM eart_audit_global ORDER BY gseq DESC LIMIT 1`);
    // A thread's latest head in the global log: a row of the heads record counts only with its entry.
    this.#logged = this.#db.prepare(
      `SELECT h.seq, h.hash FROM eart_audit_global_heads h JOIN eart_audit_global g ON g.gseq = h.gseq WHERE h.thread_id = ? ORDER BY h.gseq DESC LIMIT 1`,
    );
    const insertGlobal = this.#db.prepare(`INSERT INTO eart_audit_global (gseq, prev_hash, hash) VALUES (?, ?, ?)`);
    const insertGlobalHead = this.#db.prepare(`INSERT INTO eart_audit_global_heads (thread_id, gseq, seq, hash) VALUES (?, ?, ?, ?)`);
    const setGlobalSigned = this.#db.prepare(`INSERT INTO eart_audit_global_signed (id, head) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET head = excluded.head`);
    this.#addGlobal = (heads) => {
      const entry = nextGlobalEntry((this.#globalHead.get() as GlobalHead | undefined) ?? null, heads);
      insertGlobal.run(entry.gseq, entry.prevHash, entry.hash);
      for (const h of entry.heads) insertGlobalHead.run(h.threadId, entry.gseq, h.seq, h.hash);
      const signed = this.#globalSigner?.sign(entry);
      if (signed) setGlobalSigned.run(JSON.stringify(signed));
      return { ...entry, ...(signed ? { signed } : {}) };
    };
    const allGlobal = this.#db.prepare(`SELECT gseq, prev_hash, hash FROM eart_audit_global ORDER BY gseq`);
    const allGlobalHeads = this.#db.prepare(`SELECT thread_id, gseq, seq, hash FROM eart_audit_global_heads ORDER BY gseq, thread_id`);
    const globalSigned = this.#db.prepare(`SELECT head FROM eart_audit_global_signed WHERE id = 1`);
    this.#readGlobal = this.#db.transaction(() => {
      const entries = (allGlobal.all() as { gseq: number; prev_hash: string; hash: string }[]).map((r): GlobalEntry => ({ gseq: r.gseq, heads: [], prevHash: r.prev_hash, hash: r.hash }));
      const byGseq = new Map(entries.map((e) => [e.gseq, e]));
      for (const r of allGlobalHeads.all() as { thread_id: string; gseq: number; seq: number; hash: string }[]) byGseq.get(r.gseq)?.heads.push({ threadId: r.thread_id, seq: r.seq, hash: r.hash });
      const signed = (globalSigned.get() as { head: string } | undefined)?.head;
      const last = entries.at(-1);
      return {
        entries,
        recorded: last ? { gseq: last.gseq, hash: last.hash } : null,
        ...(signed !== undefined ? { signedHead: parseJsonOr(signed) as SignedGlobalHead } : {}),
        ...(this.#signer ? { publicKey: this.#signer.publicKey } : {}),
      };
    });
    // A file written before the global log: one first entry records every thread's head as it stands.
    // Not a file whose inbox index was current up to an entry of the global log: that file had a
    // global log, which was emptied since; writing (and signing) a first entry over the heads as
    // they stand now would vouch for whatever was done to them. It stays empty, and verify says so.
    this.#db.transaction(() => {
      if (this.#globalHead.get() !== undefined) return;
      const heads = this.#db.prepare(`SELECT thread_id AS threadId, seq, hash FROM eart_audit_heads ORDER BY thread_id`).all() as ThreadHead[];
      const inbox = this.#db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'eart_inbox_state'`).get()
        ? (this.#db.prepare(`SELECT gseq FROM eart_inbox_state WHERE id = 1`).get() as { gseq: number | null } | undefined)
        : undefined;
      const hadGlobalLog = typeof inbox?.gseq === "number" && inbox.gseq >= 0;
      if (heads.length > 0 && !hadGlobalLog) this.#addGlobal(heads);
    }).immediate();

    this.#inbox = sqliteInbox(this.#db, () => (this.#globalHead.get() as GlobalHead | undefined)?.gseq ?? -1);
    this.#appendTx = this.#db.transaction((groups: Map<string, AuditEventInput[]>) => {
      // A run whose thread lock was taken from it appends nothing (checked under the write lock:
      // a takeover in this file cannot commit between the check and the append).
      for (const threadId of groups.keys()) checkThreadFence(threadId);
      const out: AuditEvent[] = [];
      const heads: ThreadHead[] = [];
      for (const [threadId, inputs] of groups) {
        const head = (this.#head.get(threadId) as ChainHead | undefined) ?? null;
        const sealed = sealEventsWithJson(head, inputs);
        for (const { event, dataJson } of sealed) {
          this.#insert.run({ ...event, data: dataJson });
          out.push(event);
        }
        const last = sealed[sealed.length - 1]!.event;
        this.#setHead.run(threadId, last.seq, last.hash);
        heads.push({ threadId, seq: last.seq, hash: last.hash });
        if (this.#signer) this.#setSignedHead.run(threadId, JSON.stringify(this.#signer.sign({ threadId, seq: last.seq, hash: last.hash })));
      }
      const entry = this.#addGlobal(heads);
      this.#inbox.keep(out, entry);
      markAppended(out, entry, entry.signed);
      return out;
    });
    appenders.set(this, { db: this.#db, append: (events) => this.#appendNow(events) });
  }

  async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
    return this.#appendNow(events);
  }

  /**
   * The append itself, synchronous: its own write transaction, or, called inside a transaction of
   * this connection (the effect ledger's, see {@link sqliteAppendWithin}), a savepoint of it, so
   * the events commit, or roll back, with the caller's writes.
   */
  #appendNow(events: AuditEventInput | readonly AuditEventInput[]): AuditEvent[] {
    const groups = groupByThread(toInputList(events));
    if (groups.size === 0) return [];
    try {
      return this.#appendTx.immediate(groups);
    } catch (error) {
      // Refused input (e.g. data that is not JSON) stays what it is; the transaction rolled back.
      if (error instanceof EartError) throw error;
      throw new AuditStoreError(`Cannot append to the SQLite audit log: ${(error as Error).message}`, { cause: error });
    }
  }

  async read(threadId: string): Promise<AuditEvent[]> {
    return this.#query("read", () => (this.#read.all(threadId) as EventRow[]).map(rowToEvent));
  }

  async verify(threadId: string, options: AuditVerifyOptions = {}): Promise<AuditVerification> {
    // One read transaction: the events and the heads from one snapshot, even while another
    // process appends (two plain statements could see the events before and the head after).
    const [rows, head, signed, logged] = this.#query("verify", () =>
      this.#db.transaction(
        () =>
          [
            this.#read.all(threadId) as EventRow[],
            (this.#head.get(threadId) as ChainHead | undefined) ?? null,
            (this.#signedHead.get(threadId) as { head: string } | undefined)?.head,
            (this.#logged.get(threadId) as ChainHead | undefined) ?? null,
          ] as const,
      )(),
    );
    const events: unknown[] = [];
    // The stored text is what SQL reads (`json_extract` keeps the first of a key given twice, the
    // parse the last): it must be the canonical text that was hashed, not only parse to it.
    let rewritten: { seq: number; id: string } | undefined;
    for (const row of rows) {
      try {
        const event = rowToEvent(row);
        if (!rewritten && canonicalJson(event.data) !== row.data) rewritten = { seq: row.seq, id: row.id };
        events.push(event);
      } catch {
        events.push({ id: row.id, malformed: true });
      }
    }
    const result = verifyChain(threadId, events, head, {
      ...options,
      publicKey: options.publicKey ?? this.#signer?.publicKey,
      signedHead: signed === undefined ? undefined : parseJsonOr(signed),
      globalHead: logged,
    });
    if (!result.ok || !rewritten) return result;
    return {
      ok: false,
      threadId,
      count: result.count,
      brokenAt: { seq: rewritten.seq, eventId: rewritten.id, reason: "hash_mismatch", expected: "its data stored as the canonical JSON that was hashed", found: "other text that parses to it (a key given twice, or other spacing)" },
    };
  }

  async globalLog(): Promise<GlobalLogSnapshot> {
    return this.#query("read the global log of", () => this.#readGlobal());
  }

  async globalHead(): Promise<{ head: GlobalHead | null; signed?: SignedGlobalHead }> {
    return this.#query("read the global head of", () => {
      const head = (this.#globalHead.get() as GlobalHead | undefined) ?? null;
      const signed = (this.#db.prepare(`SELECT head FROM eart_audit_global_signed WHERE id = 1`).get() as { head: string } | undefined)?.head;
      return { head, ...(signed !== undefined ? { signed: parseJsonOr(signed) as SignedGlobalHead } : {}) };
    });
  }

  /** The thread's signed head, when this file has one (written by a log given a `signingKey`). */
  async signedHead(threadId: string): Promise<SignedChainHead | undefined> {
    const row = this.#query("read the signed head of", () => this.#signedHead.get(threadId) as { head: string } | undefined);
    return row && (parseJsonOr(row.head) as SignedChainHead);
  }

  /**
   * What waits for a human, from the inbox index (tables `eart_inbox`, `eart_inbox_roles`), kept
   * in the transaction of every append. An index behind the global log (a file written before it
   * existed, or appended to by a writer that does not keep it) is rebuilt from the events first.
   */
  async pending(options?: PendingOptions): Promise<PendingTask[]> {
    const parsed = parsePendingOptions(options);
    return this.#query("list what waits in", () => this.#inbox.list(parsed));
  }

  async listThreads(): Promise<string[]> {
    return this.#query("list threads of", () => (this.#threads.all() as { thread_id: string }[]).map((r) => r.thread_id));
  }

  #query<T>(what: string, run: () => T): T {
    try {
      return run();
    } catch (error) {
      throw new AuditStoreError(`Cannot ${what} the SQLite audit log: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Closes the database connection (only when this log opened it). */
  close(): void {
    if (this.#owned) this.#db.close();
  }
}

const appenders = new WeakMap<object, { db: Database.Database; append: (events: readonly AuditEventInput[]) => AuditEvent[] }>();

/**
 * The append of `log` to run inside a transaction the caller holds on `db`, when `log` is a
 * {@link SqliteAuditLog} on that very connection (undefined otherwise): the effect ledger commits
 * a claim or an outcome and its audit events together with it. The append is the log's own (hash
 * chain, heads, signed heads, global log, inbox index), in a savepoint of the caller's transaction.
 * Internal to the SQLite stores: not exported from `eart/sqlite`.
 */
export function sqliteAppendWithin(log: unknown, db: Database.Database): ((events: readonly AuditEventInput[]) => AuditEvent[]) | undefined {
  const own = typeof log === "object" && log !== null ? appenders.get(log) : undefined;
  if (!own || own.db !== db) return undefined;
  return (events) => {
    // Outside the caller's transaction the append would commit on its own: a bug, not a fallback.
    if (!db.inTransaction) throw new AuditStoreError("Cannot append to the SQLite audit log within a transaction: none is open on its connection");
    return own.append(events);
  };
}

/** The inbox index of a SQLite audit log: kept by appends, listed by `pending`. */
interface SqliteInbox {
  /** Writes the net changes of stored events and marks the index current up to `entry` (inside the append's transaction). */
  keep(events: readonly AuditEvent[], entry: GlobalEntry): void;
  list(options: PendingOptions): PendingTask[];
}

/**
 * The inbox index's tables (`eart_inbox`, `eart_inbox_roles`, `eart_inbox_state`) and statements.
 *
 * `eart_inbox_state.gseq` says up to which entry of the global log the index is current (-1: an
 * empty log; NULL: never built). An append moves it on only from where the append found the log,
 * so an index left behind (a file written before it, or appended to by a writer that does not
 * keep it) stays behind, and the next listing rebuilds it from the events in one write
 * transaction. A database opened read-only (an auditor's) is never written: its listing replays
 * the events instead.
 */
function sqliteInbox(db: Database.Database, headGseq: () => number): SqliteInbox {
  const readEvents = () =>
    db
      .prepare(`SELECT thread_id, seq, type, at, data FROM eart_audit_events WHERE type IN (${INBOX_EVENT_TYPES.map(() => "?").join(", ")}) ORDER BY thread_id, seq`)
      .iterate(...INBOX_EVENT_TYPES) as Iterable<{ thread_id: string; seq: number; type: AuditEvent["type"]; at: string; data: string }>;
  const replay = (): InboxIndex => {
    const index = new InboxIndex();
    for (const row of readEvents()) {
      const data = parseJsonOr(row.data);
      // An event whose data does not parse is reported by verify; it opens and closes nothing here.
      if (typeof data !== "object" || data === null || Array.isArray(data)) continue;
      index.apply({ threadId: row.thread_id, seq: row.seq, type: row.type, at: row.at, data: data as Record<string, unknown> });
    }
    return index;
  };
  if (db.readonly) {
    return {
      keep: () => {},
      list: (options) => db.transaction(() => replay().list(options))(),
    };
  }
  db.exec(`
    CREATE TABLE IF NOT EXISTS eart_inbox (
      thread_id TEXT NOT NULL,
      kind TEXT NOT NULL,
      item TEXT NOT NULL,
      since TEXT NOT NULL,
      task TEXT NOT NULL,
      PRIMARY KEY (thread_id, kind, item)
    );
    CREATE INDEX IF NOT EXISTS eart_inbox_since ON eart_inbox (since, thread_id, kind, item);
    CREATE TABLE IF NOT EXISTS eart_inbox_roles (
      role TEXT NOT NULL,
      since TEXT NOT NULL,
      thread_id TEXT NOT NULL,
      kind TEXT NOT NULL,
      item TEXT NOT NULL,
      PRIMARY KEY (thread_id, kind, item, role)
    );
    CREATE INDEX IF NOT EXISTS eart_inbox_roles_role ON eart_inbox_roles (role, since, thread_id, kind, item);
    CREATE TABLE IF NOT EXISTS eart_inbox_state (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      gseq INTEGER
    );
  `);
  // A new file's index is current from the start; one that already holds events is built on first listing.
  db.prepare(
    `INSERT OR IGNORE INTO eart_inbox_state (id, gseq)
     SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM eart_audit_events) OR EXISTS (SELECT 1 FROM eart_audit_global) THEN NULL ELSE -1 END`,
  ).run();
  const state = db.prepare(`SELECT gseq FROM eart_inbox_state WHERE id = 1`);
  const covered = () => (state.get() as { gseq: number | null } | undefined)?.gseq;
  const advance = db.prepare(`UPDATE eart_inbox_state SET gseq = ? WHERE id = 1 AND gseq = ?`);
  const deleteRoles = db.prepare(`DELETE FROM eart_inbox_roles WHERE thread_id = ? AND kind = ? AND item = ?`);
  const deleteTask = db.prepare(`DELETE FROM eart_inbox WHERE thread_id = ? AND kind = ? AND item = ?`);
  const putTask = db.prepare(
    `INSERT INTO eart_inbox (thread_id, kind, item, since, task) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (thread_id, kind, item) DO UPDATE SET since = excluded.since, task = excluded.task`,
  );
  const putRole = db.prepare(`INSERT OR IGNORE INTO eart_inbox_roles (role, since, thread_id, kind, item) VALUES (?, ?, ?, ?, ?)`);
  const write = (task: PendingTask) => {
    const item = task.toolCallId ?? "";
    putTask.run(task.threadId, task.kind, item, task.since, JSON.stringify(task));
    for (const role of task.roles ?? []) putRole.run(role, task.since, task.threadId, task.kind, item);
  };
  const rebuild = db.transaction(() => {
    const head = headGseq();
    if (covered() === head) return;
    const index = replay();
    db.prepare(`DELETE FROM eart_inbox_roles`).run();
    db.prepare(`DELETE FROM eart_inbox`).run();
    for (const task of index.entries()) write(task);
    db.prepare(`UPDATE eart_inbox_state SET gseq = ? WHERE id = 1`).run(head);
  });
  const all = db.prepare(`SELECT task FROM eart_inbox ORDER BY since, thread_id, kind, item LIMIT ?`).pluck();
  const forRole = db
    .prepare(
      `SELECT i.task FROM eart_inbox_roles r JOIN eart_inbox i ON i.thread_id = r.thread_id AND i.kind = r.kind AND i.item = r.item
       WHERE r.role = ? ORDER BY r.since, r.thread_id, r.kind, r.item LIMIT ?`,
    )
    .pluck();
  /** The open entries' rows, or undefined when the index is behind the global log. */
  const current = db.transaction((options: PendingOptions) => {
    if (covered() !== headGseq()) return undefined;
    const limit = options.limit ?? -1;
    return (options.role === undefined ? all.all(limit) : forRole.all(options.role, limit)) as string[];
  });
  return {
    keep(events, entry) {
      for (const { key, task } of netInboxChanges(events).values()) {
        deleteRoles.run(...key);
        if (task) write(task);
        else deleteTask.run(...key);
      }
      advance.run(entry.gseq, entry.gseq - 1);
    },
    list(options) {
      let rows = current.deferred(options);
      if (!rows) {
        rebuild.immediate();
        rows = current.deferred(options)!;
      }
      return rows.map((row) => readPendingRow(row, "SQLite"));
    },
  };
}
