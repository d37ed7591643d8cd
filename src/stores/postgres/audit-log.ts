import { createHash } from "node:crypto";
import type pg from "pg";
import {
  groupByThread,
  markAppended,
  sealEventsWithJson,
  toInputList,
  verifyChain,
  type AuditEvent,
  type AuditEventInput,
  type AuditLog,
  type AuditVerification,
  type AuditVerifyOptions,
  type ChainHead,
} from "../../audit/log.js";
import { headSigner, type AuditSigningKey, type HeadSigner, type SignedChainHead } from "../../audit/signing.js";
import { globalHeadSigner, nextGlobalEntry, type GlobalEntry, type GlobalHead, type SignedGlobalHead, type ThreadHead } from "../../audit/global.js";
import type { GlobalLogSnapshot } from "../../audit/log.js";
import { parseJsonOr, rowToEvent, type EventRow } from "../../audit/rows.js";
import { AuditStoreError, EartConfigError, EartError } from "../../errors.js";
import { INBOX_EVENT_TYPES, InboxIndex, netInboxChanges, parsePendingOptions, readPendingRow, type PendingOptions, type PendingTask } from "../../audit/inbox.js";
import { checkFence, fenceOf, fenceRead, type PostgresFence } from "./fence.js";
import { connectWithin, inTransaction, isConnectionLoss, migrationOnce, openPostgres, releasing, type PostgresLocation } from "./connection.js";

/**
 * Where the PostgreSQL audit log lives (a connection string, else `EART_DATABASE_URL`, or a pool
 * to share), optionally an Ed25519 `signingKey` that signs each thread's head on every append, and
 * `timeoutMs` (default 30 s), the bound on an append: on getting a connection, and on each of its
 * statements on the server (`lock_timeout`, `statement_timeout`), so an append queued behind a
 * stuck writer fails with `audit_store_failure` and appends nothing instead of waiting forever.
 */
export type PostgresAuditLogOptions = PostgresLocation & { signingKey?: AuditSigningKey; timeoutMs?: number };

/** SQLSTATEs of a statement PostgreSQL cancelled at eart's bound: query_canceled (statement_timeout) and lock_not_available (lock_timeout). */
const TIMED_OUT = new Set(["57014", "55P03"]);

const EVENTS = "eart_audit_events";
const HEADS = "eart_audit_heads";
const GLOBAL = "eart_audit_global";
const GLOBAL_HEADS = "eart_audit_global_heads";
const GLOBAL_SIGNED = "eart_audit_global_signed";
const INBOX = "eart_inbox";
const INBOX_STATE = "eart_inbox_state";
/** How reads that must agree with each other begin: one read-only snapshot. */
const SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
/** The advisory lock that orders appends on the global log: taken after the threads' locks, by every writer. */
const GLOBAL_LOCK = `${0x65617275}, 0`;

/**
 * First key of the two-key advisory locks this log takes (the bytes of "eart"). The two-key lock
 * space is apart from the one-key space of `PostgresThreadLock`, so a run holding its thread's
 * lock can still append to that thread's audit chain.
 */
const LOCK_NAMESPACE = 0x65617274;

const COLUMNS = "thread_id, seq, id, type, at, schema_version, data, prev_hash, hash";


/** The second key of a thread's advisory lock: 32 bits of the SHA-256 of its id (a collision only serialises two threads). */
function lockKey(threadId: string): number {
  return createHash("sha256").update(threadId).digest().readInt32BE(0);
}

/**
 * Audit log in PostgreSQL (tables `eart_audit_events` and `eart_audit_heads`, created on first
 * use), shared by every process and machine on the database.
 *
 * An append is one transaction: `pg_advisory_xact_lock` on each thread it touches, each in its own
 * statement and in one order for every writer; then, in new statements (so they see the previous
 * holder's commit), the heads are read, the events inserted in one multi-row `INSERT … SELECT
 * unnest(…)` and the heads updated. (A lock taken inside the INSERT would come too late: that
 * statement's snapshot, taken before the lock is granted, would miss the previous append and fork
 * the chain.) `PRIMARY KEY (thread_id, seq)` and `UNIQUE (thread_id, prev_hash)` are the net: a
 * writer that skipped the lock fails instead of forking the chain. (`UNIQUE (prev_hash)` alone
 * would refuse the second thread ever started, as every first event follows the same genesis hash.)
 * An append of a thread made by a run that holds its `PostgresThreadLock` checks, in the same
 * transaction, that the lock's fencing token is still the run's (`ThreadLockLostError` and nothing
 * appended when another process took the thread meanwhile).
 *
 * `verify` reads the events and the head in one REPEATABLE READ transaction, so appends running at
 * the same time never make it report a false break. It detects changed, deleted, inserted and
 * reordered events and a deleted last event (the head); with a `signingKey` (or `publicKey` given
 * to `verify`), also a chain and head rewritten by someone without the private key.
 * @example
 * ```ts
 * const auditLog = new PostgresAuditLog({ connectionString: process.env.EART_DATABASE_URL });
 * await auditLog.append([{ threadId: "t1", type: "run.started" }, { threadId: "t2", type: "run.started" }]);
 * await auditLog.verify("t1");
 * await auditLog.close();
 * ```
 */
export class PostgresAuditLog implements AuditLog {
  readonly #pool: pg.Pool;
  readonly #owned: boolean;
  readonly #migrate: () => Promise<void>;
  readonly #signer: HeadSigner | undefined;
  readonly #globalSigner: { sign(head: GlobalHead): SignedGlobalHead } | undefined;
  readonly #timeoutMs: number;

  constructor(options: PostgresAuditLogOptions = {}) {
    const { signingKey, timeoutMs = 30_000, ...location } = (options ?? {}) as PostgresAuditLogOptions;
    if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new EartConfigError("timeoutMs", `a positive whole number of milliseconds, got ${String(timeoutMs)}`);
    this.#timeoutMs = timeoutMs;
    this.#signer = signingKey === undefined ? undefined : headSigner(signingKey);
    this.#globalSigner = signingKey === undefined ? undefined : globalHeadSigner(signingKey);
    ({ pool: this.#pool, owned: this.#owned } = openPostgres(location));
    const tables = migrationOnce(
      this.#pool,
      EVENTS,
      `CREATE TABLE IF NOT EXISTS ${EVENTS} (
         thread_id TEXT NOT NULL,
         seq INTEGER NOT NULL CHECK (seq >= 0),
         id TEXT NOT NULL,
         type TEXT NOT NULL,
         at TEXT NOT NULL,
         schema_version INTEGER NOT NULL,
         data TEXT NOT NULL,
         prev_hash TEXT NOT NULL,
         hash TEXT NOT NULL,
         PRIMARY KEY (thread_id, seq),
         CONSTRAINT ${EVENTS}_prev_hash_key UNIQUE (thread_id, prev_hash)
       );
       CREATE TABLE IF NOT EXISTS ${HEADS} (
         thread_id TEXT PRIMARY KEY,
         seq INTEGER NOT NULL,
         hash TEXT NOT NULL,
         signed_head TEXT
       );
       CREATE TABLE IF NOT EXISTS ${GLOBAL} (
         gseq BIGINT PRIMARY KEY CHECK (gseq >= 0),
         prev_hash TEXT NOT NULL UNIQUE,
         hash TEXT NOT NULL
       );
       CREATE TABLE IF NOT EXISTS ${GLOBAL_HEADS} (
         thread_id TEXT NOT NULL,
         gseq BIGINT NOT NULL,
         seq INTEGER NOT NULL,
         hash TEXT NOT NULL,
         PRIMARY KEY (thread_id, gseq)
       );
       CREATE TABLE IF NOT EXISTS ${GLOBAL_SIGNED} (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         head TEXT NOT NULL
       );
       CREATE TABLE IF NOT EXISTS ${INBOX} (
         thread_id TEXT COLLATE "C" NOT NULL,
         kind TEXT COLLATE "C" NOT NULL,
         item TEXT COLLATE "C" NOT NULL,
         since TEXT COLLATE "C" NOT NULL,
         roles TEXT[],
         task TEXT NOT NULL,
         PRIMARY KEY (thread_id, kind, item)
       );
       CREATE INDEX IF NOT EXISTS ${INBOX}_since ON ${INBOX} (since, thread_id, kind, item);
       CREATE INDEX IF NOT EXISTS ${INBOX}_roles ON ${INBOX} USING GIN (roles);
       CREATE TABLE IF NOT EXISTS ${INBOX_STATE} (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         gseq BIGINT
       );
       -- A new database's index is current from the start; one that already holds events is built on first listing.
       INSERT INTO ${INBOX_STATE} (id, gseq)
       SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM ${EVENTS}) OR EXISTS (SELECT 1 FROM ${GLOBAL}) THEN NULL ELSE -1 END
       ON CONFLICT (id) DO NOTHING;`,
    );
    let baseline: Promise<void> | undefined;
    this.#migrate = async () => {
      await tables();
      // A database written before the global log: one first entry records every thread's head as it stands.
      baseline ??= this.#baseline().catch((error: unknown) => {
        baseline = undefined;
        throw error;
      });
      await baseline;
    };
    appenders.set(this, { pool: this.#pool, within: () => this.#within() });
  }

  async #baseline(): Promise<void> {
    const client = await this.#pool.connect();
    try {
      await client.query(`BEGIN ISOLATION LEVEL READ COMMITTED`);
      await client.query(`SELECT pg_advisory_xact_lock(${GLOBAL_LOCK})`);
      const { rows: any } = await client.query(`SELECT 1 FROM ${GLOBAL} LIMIT 1`);
      // Not a database whose inbox index was current up to an entry of the global log: it had a
      // global log, emptied since; a first entry over the heads as they stand now would vouch for
      // whatever was done to them. It stays empty, and verify says so.
      const { rows: inbox } = await client.query<{ gseq: string | number | null }>(`SELECT gseq FROM ${INBOX_STATE} WHERE id = 1`);
      const hadGlobalLog = inbox[0]?.gseq !== null && inbox[0]?.gseq !== undefined && Number(inbox[0].gseq) >= 0;
      if (any.length === 0 && !hadGlobalLog) {
        const { rows } = await client.query<{ thread_id: string; seq: number; hash: string }>(`SELECT thread_id, seq, hash FROM ${HEADS} ORDER BY thread_id COLLATE "C"`);
        if (rows.length > 0) await this.#insertGlobal(client, nextGlobalEntry(null, rows.map((r) => ({ threadId: r.thread_id, seq: r.seq, hash: r.hash }))));
      }
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  /**
   * Writes a global entry and its signed head (the caller holds the global lock in a transaction).
   * With `advanceInbox` (an append that kept the inbox index), the index is marked current up to
   * this entry, only if it was current up to the one before: an index left behind (a database
   * written before it, or by a writer that does not keep it) stays behind until it is rebuilt.
   */
  async #insertGlobal(client: pg.PoolClient, entry: GlobalEntry, advanceInbox = false): Promise<SignedGlobalHead | undefined> {
    const global = this.#globalWrite(entry, advanceInbox, 1);
    await client.query(`WITH ${global.ctes} ${global.signed}`, global.params);
    return global.signedHead;
  }

  /**
   * The statement parts that write a global entry, its heads and its signed head, and move the
   * inbox index's mark with `advanceInbox` (see {@link #insertGlobal}), their parameters numbered
   * from `$first`: CTEs (`ctes`) and the final statement (`signed`), to stand in one statement
   * alone or after other CTEs on other tables.
   */
  #globalWrite(entry: GlobalEntry, advanceInbox: boolean, first: number): { ctes: string; signed: string; params: unknown[]; signedHead: SignedGlobalHead | undefined } {
    const signedHead = this.#globalSigner?.sign(entry);
    const $ = (i: number) => `$${first + i - 1}`;
    return {
      ctes: `g AS (INSERT INTO ${GLOBAL} (gseq, prev_hash, hash) VALUES (${$(1)}, ${$(2)}, ${$(3)})),
            h AS (INSERT INTO ${GLOBAL_HEADS} (thread_id, gseq, seq, hash) SELECT t, ${$(1)}, s, x FROM unnest(${$(4)}::text[], ${$(5)}::int[], ${$(6)}::text[]) AS u(t, s, x)),
            i AS (UPDATE ${INBOX_STATE} SET gseq = ${$(1)} WHERE id = 1 AND ${$(8)}::boolean AND gseq = ${$(1)}::bigint - 1)`,
      signed: `INSERT INTO ${GLOBAL_SIGNED} (id, head) SELECT 1, ${$(7)}::text WHERE ${$(7)}::text IS NOT NULL
       ON CONFLICT (id) DO UPDATE SET head = excluded.head`,
      params: [entry.gseq, entry.prevHash, entry.hash, entry.heads.map((h) => h.threadId), entry.heads.map((h) => h.seq), entry.heads.map((h) => h.hash), signedHead ? JSON.stringify(signedHead) : null, advanceInbox],
      signedHead,
    };
  }

  async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
    const groups = groupByThread(toInputList(events));
    if (groups.size === 0) return [];
    return this.#run("append to", async () => {
      await this.#migrate();
      const fence = await fenceOf(this.#pool, groups.keys());
      const client = await connectWithin(this.#pool, this.#timeoutMs, () => new AuditStoreError(`Cannot append to the PostgreSQL audit log: no connection within ${this.#timeoutMs} ms; nothing was appended`));
      return releasing(client, () => this.#appendIn(client, groups, fence));
    });
  }

  async #appendIn(client: pg.PoolClient, groups: Map<string, AuditEventInput[]>, fence: PostgresFence | undefined): Promise<AuditEvent[]> {
    // One round trip, several statements: each lock in its own statement, then the heads read by
    // a later statement of the same transaction, whose snapshot is taken after every lock is held.
    // READ COMMITTED is spelled out: under a REPEATABLE READ default the snapshot would be the first statement's.
    const results = (await client.query(
      `BEGIN ISOLATION LEVEL READ COMMITTED;
       ${this.#bounds().join("\n")}
       ${this.#locksAndReads(client, [...groups.keys()], fence)}`,
    )) as unknown as pg.QueryResult[];
    const marks = await this.#writeIn(client, groups, results, fence);
    await client.query("COMMIT");
    marks();
    return marks.events;
  }

  /** The bounds an append puts on its statements on the server, one statement each (`SET LOCAL`: for its transaction). */
  #bounds(): string[] {
    return [`SET LOCAL lock_timeout = ${this.#timeoutMs};`, `SET LOCAL statement_timeout = ${this.#timeoutMs};`];
  }

  /**
   * The statements that open an append, in a READ COMMITTED transaction: the lock of each thread,
   * each in its own statement and in one order for every writer, the global log's lock last (after
   * every thread lock, in every writer: no deadlock), then the threads' heads and the global head
   * (the query's last two results), read by later statements, whose snapshot is taken after every
   * lock is held. With the `fence` of the run appending, its thread's token is read (and
   * share-locked) before the heads: the third last result.
   */
  #locksAndReads(client: pg.PoolClient, threadIds: readonly string[], fence: PostgresFence | undefined): string {
    const keys = [...new Set(threadIds.map(lockKey))].sort((a, b) => a - b);
    return `${keys.map((k) => `SELECT pg_advisory_xact_lock(${LOCK_NAMESPACE}, ${k});`).join("\n")}
       SELECT pg_advisory_xact_lock(${GLOBAL_LOCK});
       ${fence ? fenceRead(fence) : ""}
       SELECT thread_id, seq, hash FROM ${HEADS} WHERE thread_id IN (${threadIds.map((id) => client.escapeLiteral(id)).join(", ")});
       SELECT gseq, hash FROM ${GLOBAL} ORDER BY gseq DESC LIMIT 1;`;
  }

  /**
   * The writes of an append, after the query that ended with {@link #locksAndReads} (its
   * `results`): the events, the heads (signed with a `signingKey`), the inbox index's changes and
   * the global entry, after the `fence` is checked (a run that lost its thread's lock to another
   * writes nothing: `ThreadLockLostError`). Commits nothing: returns what marks the stored events
   * once the caller has committed (and the events, as stored).
   */
  async #writeIn(client: pg.PoolClient, groups: Map<string, AuditEventInput[]>, results: pg.QueryResult[], fence: PostgresFence | undefined): Promise<(() => void) & { events: AuditEvent[] }> {
    if (fence) checkFence(fence, results[results.length - 3]);
    const heads = new Map(
      (results[results.length - 2]!.rows as { thread_id: string; seq: number; hash: string }[]).map((r) => [r.thread_id, { seq: r.seq, hash: r.hash } satisfies ChainHead]),
    );
    const globalRow = results[results.length - 1]!.rows[0] as { gseq: string | number; hash: string } | undefined;
    const globalHead: GlobalHead | null = globalRow ? { gseq: Number(globalRow.gseq), hash: globalRow.hash } : null;
    const newHeads: ThreadHead[] = [];

    const columns: unknown[][] = Array.from({ length: 9 }, () => []);
    const headColumns: unknown[][] = Array.from({ length: 4 }, () => []);
    const out: AuditEvent[] = [];
    for (const [threadId, inputs] of groups) {
      const sealed = sealEventsWithJson(heads.get(threadId) ?? null, inputs);
      for (const { event, dataJson } of sealed) {
        const row = [event.threadId, event.seq, event.id, event.type, event.at, event.schemaVersion, dataJson, event.prevHash, event.hash];
        for (let i = 0; i < row.length; i++) columns[i]!.push(row[i]);
        out.push(event);
      }
      const last = sealed[sealed.length - 1]!.event;
      newHeads.push({ threadId, seq: last.seq, hash: last.hash });
      const signed = this.#signer?.sign({ threadId, seq: last.seq, hash: last.hash });
      [threadId, last.seq, last.hash, signed ? JSON.stringify(signed) : null].forEach((v, i) => headColumns[i]!.push(v));
    }
    // One statement writes it all: the events, the inbox index's net changes (most appends change
    // nothing there and leave them out), the heads, and the global entry with its heads, signed
    // head and the inbox index's mark. Each part writes a table of its own (keys distinct within
    // each), so none depends on what another writes; one round trip fewer under the global lock.
    const inbox = inboxColumns(out);
    const entry = nextGlobalEntry(globalHead, newHeads);
    const global = this.#globalWrite(entry, true, 14 + (inbox ? inbox.length : 0));
    await client.query(
      `WITH inserted AS (
         INSERT INTO ${EVENTS} (${COLUMNS})
         SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[])
       )${inbox ? APPEND_INBOX_CHANGES : ""},
       heads AS (
         INSERT INTO ${HEADS} (thread_id, seq, hash, signed_head)
         SELECT * FROM unnest($10::text[], $11::int[], $12::text[], $13::text[])
         ON CONFLICT (thread_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, signed_head = excluded.signed_head
       ),
       ${global.ctes}
       ${global.signed}`,
      [...columns, ...headColumns, ...(inbox ?? []), ...global.params],
    );
    return Object.assign(() => markAppended(out, entry, global.signedHead), { events: out });
  }

  /** What {@link postgresAppendWithin} hands a store on this log's pool. */
  #within(): PostgresAppendWithin {
    return {
      ready: () => this.#migrate(),
      bounds: () => this.#bounds(),
      open: (client, events, fence) => {
        const groups = groupByThread(toInputList(events));
        const held = fence && groups.has(fence.threadId) ? fence : undefined;
        return { sql: this.#locksAndReads(client, [...groups.keys()], held), write: (results) => this.#writeIn(client, groups, results, held) };
      },
    };
  }

  async globalLog(): Promise<GlobalLogSnapshot> {
    return this.#read("read the global log of", async () => {
      await this.#migrate();
      // One statement after another: a client runs one query at a time.
      const [global, heads, signed] = await inTransaction(
        this.#pool,
        async (client) =>
          [
            await client.query<{ gseq: string; prev_hash: string; hash: string }>(`SELECT gseq, prev_hash, hash FROM ${GLOBAL} ORDER BY gseq`),
            await client.query<{ thread_id: string; gseq: string; seq: number; hash: string }>(`SELECT thread_id, gseq, seq, hash FROM ${GLOBAL_HEADS} ORDER BY gseq, thread_id COLLATE "C"`),
            await client.query<{ head: string }>(`SELECT head FROM ${GLOBAL_SIGNED} WHERE id = 1`),
          ] as const,
        SNAPSHOT,
      );
      const entries = global.rows.map((r): GlobalEntry => ({ gseq: Number(r.gseq), heads: [], prevHash: r.prev_hash, hash: r.hash }));
      const byGseq = new Map(entries.map((e) => [e.gseq, e]));
      for (const r of heads.rows) byGseq.get(Number(r.gseq))?.heads.push({ threadId: r.thread_id, seq: r.seq, hash: r.hash });
      const last = entries.at(-1);
      return {
        entries,
        recorded: last ? { gseq: last.gseq, hash: last.hash } : null,
        ...(signed.rows[0] ? { signedHead: parseJsonOr(signed.rows[0].head) as SignedGlobalHead } : {}),
        ...(this.#signer ? { publicKey: this.#signer.publicKey } : {}),
      };
    });
  }

  async globalHead(): Promise<{ head: GlobalHead | null; signed?: SignedGlobalHead }> {
    return this.#read("read the global head of", async () => {
      await this.#migrate();
      const { rows } = await this.#pool.query<{ gseq: string; hash: string; signed: string | null }>(
        `SELECT g.gseq, g.hash, s.head AS signed FROM (SELECT gseq, hash FROM ${GLOBAL} ORDER BY gseq DESC LIMIT 1) g LEFT JOIN ${GLOBAL_SIGNED} s ON s.id = 1`,
      );
      const row = rows[0];
      if (!row) return { head: null };
      return { head: { gseq: Number(row.gseq), hash: row.hash }, ...(row.signed ? { signed: parseJsonOr(row.signed) as SignedGlobalHead } : {}) };
    });
  }

  async read(threadId: string): Promise<AuditEvent[]> {
    return this.#read("read", async () => {
      await this.#migrate();
      const { rows } = await this.#pool.query<EventRow>(`SELECT ${COLUMNS} FROM ${EVENTS} WHERE thread_id = $1 ORDER BY seq`, [threadId]);
      return rows.map(rowToEvent);
    });
  }

  async verify(threadId: string, options: AuditVerifyOptions = {}): Promise<AuditVerification> {
    const [rows, head, logged] = await this.#read("verify", async () => {
      await this.#migrate();
      // One snapshot for the events and the heads, whatever commits meanwhile.
      const [events, heads, logged] = await inTransaction(
        this.#pool,
        async (client) =>
          [
            await client.query<EventRow>(`SELECT ${COLUMNS} FROM ${EVENTS} WHERE thread_id = $1 ORDER BY seq`, [threadId]),
            await client.query<{ seq: number; hash: string; signed_head: string | null }>(`SELECT seq, hash, signed_head FROM ${HEADS} WHERE thread_id = $1`, [threadId]),
            // A row of the heads record counts only with its entry in the global log.
            await client.query<{ seq: number; hash: string }>(
              `SELECT h.seq, h.hash FROM ${GLOBAL_HEADS} h JOIN ${GLOBAL} g ON g.gseq = h.gseq WHERE h.thread_id = $1 ORDER BY h.gseq DESC LIMIT 1`,
              [threadId],
            ),
          ] as const,
        SNAPSHOT,
      );
      return [events.rows, heads.rows[0], logged.rows[0] ?? null] as const;
    });
    const events: unknown[] = rows.map((row) => {
      try {
        return rowToEvent(row);
      } catch {
        return { id: row.id, malformed: true };
      }
    });
    return verifyChain(threadId, events, head ? { seq: head.seq, hash: head.hash } : null, {
      ...options,
      publicKey: options.publicKey ?? this.#signer?.publicKey,
      signedHead: head?.signed_head == null ? undefined : parseJsonOr(head.signed_head),
      globalHead: logged,
    });
  }

  /**
   * What waits for a human, from the inbox index (table `eart_inbox`), kept in the transaction of
   * every append. An index behind the global log (a database written before it existed, or
   * appended to by a writer that does not keep it) is rebuilt from the events first, under the
   * global log's lock, so no append slips between the rebuild and the mark that it is current.
   */
  async pending(options?: PendingOptions): Promise<PendingTask[]> {
    const { role, limit } = parsePendingOptions(options);
    const rows = await this.#read("list what waits in", async () => {
      await this.#migrate();
      const list = () =>
        this.#pool.query<{ current: boolean; task: string | null }>(
          `SELECT s.current, l.task FROM (
             SELECT (SELECT gseq FROM ${INBOX_STATE} WHERE id = 1) IS NOT DISTINCT FROM coalesce((SELECT gseq FROM ${GLOBAL} ORDER BY gseq DESC LIMIT 1), -1) AS current
           ) s
           LEFT JOIN LATERAL (
             SELECT task, since, thread_id, kind, item FROM ${INBOX}
             WHERE s.current${role === undefined ? "" : " AND roles @> ARRAY[$2::text]"}
             ORDER BY since, thread_id, kind, item LIMIT $1
           ) l ON true
           ORDER BY l.since, l.thread_id, l.kind, l.item`,
          role === undefined ? [limit ?? null] : [limit ?? null, role],
        );
      let result = await list();
      if (!result.rows[0]?.current) {
        await this.#rebuildInbox();
        result = await list();
      }
      return result.rows;
    });
    return rows.flatMap((r) => (r.task === null ? [] : [readPendingRow(r.task, "PostgreSQL")]));
  }

  /** Rebuilds the inbox index from the events, when it is behind the global log (see {@link pending}). */
  async #rebuildInbox(): Promise<void> {
    await inTransaction(
      this.#pool,
      async (client) => {
        await client.query(`SET LOCAL lock_timeout = ${this.#timeoutMs}; SET LOCAL statement_timeout = ${this.#timeoutMs}`);
        await client.query(`SELECT pg_advisory_xact_lock(${GLOBAL_LOCK})`);
        const { rows: state } = await client.query<{ covered: string | null; head: string }>(
          `SELECT (SELECT gseq FROM ${INBOX_STATE} WHERE id = 1) AS covered, coalesce((SELECT gseq FROM ${GLOBAL} ORDER BY gseq DESC LIMIT 1), -1) AS head`,
        );
        const { covered, head } = state[0]!;
        if (covered !== null && Number(covered) === Number(head)) return;
        const index = new InboxIndex();
        const { rows } = await client.query<{ thread_id: string; seq: number; type: AuditEvent["type"]; at: string; data: string }>(
          `SELECT thread_id, seq, type, at, data FROM ${EVENTS} WHERE type = ANY($1::text[]) ORDER BY thread_id, seq`,
          [INBOX_EVENT_TYPES],
        );
        for (const row of rows) {
          const data = parseJsonOr(row.data);
          // An event whose data does not parse is reported by verify; it opens and closes nothing here.
          if (typeof data !== "object" || data === null || Array.isArray(data)) continue;
          index.apply({ threadId: row.thread_id, seq: row.seq, type: row.type, at: row.at, data: data as Record<string, unknown> });
        }
        const columns = inboxColumns([], index.entries());
        await client.query(`DELETE FROM ${INBOX}`);
        if (columns) await client.query(`WITH ${inboxChangesSql(1)} SELECT 1`, columns);
        await client.query(`UPDATE ${INBOX_STATE} SET gseq = $1 WHERE id = 1`, [head]);
      },
      "BEGIN ISOLATION LEVEL READ COMMITTED",
    );
  }

  async listThreads(): Promise<string[]> {
    return this.#read("list threads of", async () => {
      await this.#migrate();
      const { rows } = await this.#pool.query<{ thread_id: string }>(`SELECT thread_id FROM ${EVENTS} GROUP BY thread_id ORDER BY thread_id COLLATE "C"`);
      return rows.map((r) => r.thread_id);
    });
  }

  /** The thread's signed head, when it has one (written by a log given a `signingKey`). */
  async signedHead(threadId: string): Promise<SignedChainHead | undefined> {
    return this.#read("read the signed head of", async () => {
      await this.#migrate();
      const { rows } = await this.#pool.query<{ signed_head: string | null }>(`SELECT signed_head FROM ${HEADS} WHERE thread_id = $1`, [threadId]);
      const text = rows[0]?.signed_head;
      return text == null ? undefined : (parseJsonOr(text) as SignedChainHead);
    });
  }

  /** Ends the connection pool (only when this log created it). */
  async close(): Promise<void> {
    if (this.#owned && !this.#pool.ended) await this.#pool.end();
  }

  /**
   * A read: run once more, on a new connection, when the connection was lost (a server restart,
   * failover or terminated session), before it fails with {@link AuditStoreError}. Appends are not
   * retried: one whose commit was not confirmed may be stored, and a second would add its events
   * again.
   */
  async #read<T>(what: string, body: () => Promise<T>): Promise<T> {
    return this.#run(what, () =>
      body().catch((error: unknown) => {
        if (!isConnectionLoss(error)) throw error;
        return body();
      }),
    );
  }

  async #run<T>(what: string, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (error) {
      if (error instanceof EartError) throw error;
      const pgError = error as { code?: string; constraint?: string; message?: string };
      const message =
        pgError.code !== undefined && TIMED_OUT.has(pgError.code)
          ? `no answer within ${this.#timeoutMs} ms (${pgError.message ?? pgError.code}); nothing was appended`
          : pgError.code === "23505"
          ? `a write conflicted with the chain (${pgError.constraint ?? "unique constraint"}): another writer appended to the thread without its lock, or the head was changed`
          : isConnectionLoss(error)
            ? `the connection to PostgreSQL was lost (${pgError.message ?? String(error)})`
            : (pgError.message ?? String(error));
      throw new AuditStoreError(`Cannot ${what} the PostgreSQL audit log: ${message}`, { cause: error });
    }
  }
}

/**
 * An append of a {@link PostgresAuditLog} run inside a transaction a store on the same pool holds
 * (the effect ledger's claim and finish), so its writes and the events commit together. The
 * caller opens the transaction (`BEGIN ISOLATION LEVEL READ COMMITTED`, then `bounds()`), runs its
 * own statements, then `open(…).sql` (the log's locks and reads, in the same query or a later
 * one: they must be the query's last statements), hands that query's results to `write`, commits,
 * and then calls what `write` returned. Everything the log's own append does happens, in its
 * order: thread locks, the global lock, heads, events, signed heads, inbox index, global entry.
 */
export interface PostgresAppendWithin {
  /** The log's tables, created (and a pre-global-log database's baseline written) on first use. */
  ready(): Promise<void>;
  /** The `SET LOCAL` bounds of an append, one statement each. */
  bounds(): string[];
  /** The append's statements and its writes; with the `fence` of the run (from {@link fenceOf} on the pool), checked in its transaction. */
  open(client: pg.PoolClient, events: readonly AuditEventInput[], fence?: PostgresFence): { sql: string; write(results: pg.QueryResult[]): Promise<(() => void) & { events: AuditEvent[] }> };
}

const appenders = new WeakMap<object, { pool: pg.Pool; within: () => PostgresAppendWithin }>();

/**
 * The append of `log` to run inside a transaction on `pool`, when `log` is a
 * {@link PostgresAuditLog} on that very pool (undefined otherwise). Internal to the PostgreSQL
 * stores: not exported from `eart/postgres`.
 */
export function postgresAppendWithin(log: unknown, pool: pg.Pool): PostgresAppendWithin | undefined {
  const own = typeof log === "object" && log !== null ? appenders.get(log) : undefined;
  return own && own.pool === pool ? own.within() : undefined;
}

/**
 * The CTEs that write the inbox index's net changes, from parameters `$first`… (see
 * {@link inboxColumns}): the entries closed, then the entries opened or replaced.
 */
function inboxChangesSql(first: number): string {
  const $ = (i: number) => `$${first + i}`;
  return `closed AS (
         DELETE FROM ${INBOX} WHERE (thread_id, kind, item) IN (SELECT * FROM unnest(${$(0)}::text[], ${$(1)}::text[], ${$(2)}::text[]))
       ),
       opened AS (
         INSERT INTO ${INBOX} (thread_id, kind, item, since, roles, task)
         SELECT t, k, i, s, CASE WHEN r IS NULL THEN NULL ELSE ARRAY(SELECT json_array_elements_text(r::json)) END, x
         FROM unnest(${$(3)}::text[], ${$(4)}::text[], ${$(5)}::text[], ${$(6)}::text[], ${$(7)}::text[], ${$(8)}::text[]) AS u(t, k, i, s, r, x)
         ON CONFLICT (thread_id, kind, item) DO UPDATE SET since = excluded.since, roles = excluded.roles, task = excluded.task
       )`;
}

/** What an append's statement adds to write the inbox index (its parameters follow the 13 of the events and heads). */
const APPEND_INBOX_CHANGES = `,
       ${inboxChangesSql(14)}`;

/** The parameters of {@link inboxChangesSql} for stored events (and tasks to open), or undefined when they change nothing. */
function inboxColumns(events: readonly AuditEvent[], open: Iterable<PendingTask> = []): unknown[][] | undefined {
  const closed: string[][] = [[], [], []];
  const opened: (string | null)[][] = [[], [], [], [], [], []];
  const put = (task: PendingTask) =>
    [task.threadId, task.kind, task.toolCallId ?? "", task.since, task.roles && JSON.stringify(task.roles), JSON.stringify(task)].forEach((v, i) => opened[i]!.push(v));
  for (const { key, task } of netInboxChanges(events).values()) {
    if (task) put(task);
    else key.forEach((v, i) => closed[i]!.push(v));
  }
  for (const task of open) put(task);
  return closed[0]!.length + opened[0]!.length === 0 ? undefined : [...closed, ...opened];
}
