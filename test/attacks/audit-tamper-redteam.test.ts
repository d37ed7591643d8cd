/**
 * Red team: the audit log is tamper-evident (README "## Audit log").
 *
 * The attacker has write access to the store (a DBA, an app holding the DB password, someone
 * editing the JSONL files), never the signing key, and wants to hide or alter an approval or a
 * refund without `verify` / `verifyAuditStore` noticing. One `it` per attack asserts the
 * documented guarantee. The pass found four gaps, now closed: each such test is titled "Found and
 * closed" and its comment says what went undetected before the fix.
 */
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import {
  createJsonlExporter,
  createTraceExport,
  generateAuditSigningKey,
  JsonlAuditLog,
  verifyAuditStore,
  type AuditEvent,
  type AuditLog,
  type SignedGlobalHead,
} from "eart";
import { SqliteAuditLog } from "eart/sqlite";
import { PostgresAuditLog } from "eart/postgres";
import { globalEntryHash, GLOBAL_GENESIS_HASH, type GlobalHead } from "../../src/audit/global.js";
import { canonicalJson } from "../../src/internal/canonical.js";

const PG_URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const dir = mkdtempSync(join(tmpdir(), "eart-rt-audit-"));
const pools: pg.Pool[] = [];
const schemas: string[] = [];
const admin = new pg.Pool({ connectionString: PG_URL, max: 2 });
const closers: (() => unknown)[] = [];

afterAll(async () => {
  for (const c of closers) await Promise.resolve(c()).catch(() => {});
  await Promise.all(pools.map((p) => p.end().catch(() => {})));
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => {});
  await admin.end();
  rmSync(dir, { recursive: true, force: true });
});

const { privateKey, publicKey } = generateAuditSigningKey();
const tmp = (ext: string) => join(dir, `${randomUUID()}.${ext}`);
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
/** An event's hash as eart computes it: SHA-256 of the RFC 8785 JSON of everything but `hash`. */
const rehash = (e: Omit<AuditEvent, "hash"> & { hash?: string }) => {
  const { hash: _drop, ...rest } = e;
  return sha256(canonicalJson(rest));
};

// ---------------------------------------------------------------------------------------------
// Stores under attack, with raw SQL access as the attacker has it

type Sql = (text: string, params?: unknown[]) => Promise<Record<string, unknown>[]>;
interface SqlStore {
  kind: "sqlite" | "postgres";
  log: AuditLog;
  sql: Sql;
  /** The application restarting: a new store object on the same storage, with the writers' key if it signs. */
  reopen(): AuditLog;
  /** Where this store keeps a thread's signed head. */
  setSignedHead(threadId: string, head: unknown): Promise<void>;
}

function openSqlite(signed: boolean): SqlStore {
  const path = tmp("sqlite");
  const make = () => {
    const log = new SqliteAuditLog({ path, ...(signed ? { signingKey: privateKey } : {}) });
    closers.push(() => log.close());
    return log;
  };
  const sql: Sql = async (text, params = []) => {
    const db = new Database(path);
    try {
      const st = db.prepare(text);
      if (st.reader) return st.all(...params) as Record<string, unknown>[];
      st.run(...params);
      return [];
    } finally {
      db.close();
    }
  };
  return {
    kind: "sqlite",
    log: make(),
    sql,
    reopen: make,
    setSignedHead: async (t, head) => void (await sql(`UPDATE eart_audit_signed_heads SET head = ? WHERE thread_id = ?`, [JSON.stringify(head), t])),
  };
}

async function openPostgres(signed: boolean): Promise<SqlStore> {
  const schema = `eart_rt_${randomUUID().replace(/-/g, "")}`;
  schemas.push(schema);
  await admin.query(`CREATE SCHEMA ${schema}`);
  const pool = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${schema}`, max: 3 });
  pools.push(pool);
  const make = () => new PostgresAuditLog({ pool, ...(signed ? { signingKey: privateKey } : {}) });
  const sql: Sql = async (text, params = []) => {
    let n = 0;
    return (await pool.query(text.replace(/\?/g, () => `$${++n}`), params)).rows as Record<string, unknown>[];
  };
  return {
    kind: "postgres",
    log: make(),
    sql,
    reopen: make,
    setSignedHead: async (t, head) => void (await sql(`UPDATE eart_audit_heads SET signed_head = ? WHERE thread_id = ?`, [JSON.stringify(head), t])),
  };
}

const SQL_KINDS = [
  { kind: "sqlite" as const, open: async (signed: boolean) => openSqlite(signed) },
  { kind: "postgres" as const, open: openPostgres },
];

/**
 * The story every attack starts from: a refund of thread T waits for an approval, alice approves
 * 100, the refund runs; another thread U goes on after it. Global entries 0..4.
 */
async function story(log: AuditLog, prefix = "refund") {
  const T = `${prefix}-${randomUUID()}`;
  const U = `other-${randomUUID()}`;
  await log.append([
    { threadId: T, type: "run.started", data: { input: "refund order 1042" } },
    { threadId: U, type: "run.started", data: { input: "hello" } },
  ]); // g0
  await log.append({
    threadId: T,
    type: "approval.requested",
    data: { requests: [{ toolCallId: "c1", name: "refund", approverRoles: ["supervisor"] }] },
  }); // g1
  const beforeApproval = { seq: 1, hash: (await log.read(T))[1]!.hash, signed: await log.signedHead?.(T) };
  await log.append({
    threadId: T,
    type: "approval.decided",
    data: { toolCallId: "c1", approverId: "alice", decision: "approve", status: "approved", amount: 100, fee: 0, "bénéficiaire": "bob" },
  }); // g2
  await log.append({ threadId: T, type: "tool.succeeded", data: { toolCallId: "c1", name: "refund", result: "refunded 100" } }); // g3
  await log.append({ threadId: U, type: "run.completed", data: {} }); // g4
  const witness = await log.globalHead!();
  return { T, U, beforeApproval, witness: (witness.signed ?? witness.head) as GlobalHead | SignedGlobalHead };
}

/** Cuts thread T back to `head` (the approval and refund deleted) in the events and heads tables. */
async function cutThread(s: SqlStore, T: string, head: { seq: number; hash: string; signed?: unknown }) {
  await s.sql(`DELETE FROM eart_audit_events WHERE thread_id = ? AND seq > ?`, [T, head.seq]);
  await s.sql(`UPDATE eart_audit_heads SET seq = ?, hash = ? WHERE thread_id = ?`, [head.seq, head.hash, T]);
  if (head.signed !== undefined) await s.setSignedHead(T, head.signed);
}

/** One row in eart_audit_global_heads past the end of the global log: no global entry has that gseq. */
const ORPHAN_GSEQ = 1_000_000_000;
const addOrphan = (s: SqlStore, T: string, seq: number, hash: string) =>
  s.sql(`INSERT INTO eart_audit_global_heads (thread_id, gseq, seq, hash) VALUES (?, ?, ?, ?)`, [T, ORPHAN_GSEQ, seq, hash]);

const types = (events: AuditEvent[]) => events.map((e) => e.type);

// ---------------------------------------------------------------------------------------------

describe.each(SQL_KINDS)("$kind: a thread rolled back past its approval", ({ open }) => {
  it("control, unsigned: the rollback alone is caught by the global log (verify and --all), even though no hash was forged", async () => {
    const s = await open(false);
    const { T, beforeApproval, witness } = await story(s.log);
    await cutThread(s, T, beforeApproval);
    expect(types(await s.log.read(T))).toEqual(["run.started", "approval.requested"]); // the tampering is real
    const v = await s.log.verify(T);
    expect(v.ok).toBe(false);
    expect(!v.ok && v.brokenAt.reason).toBe("global_mismatch");
    const all = await verifyAuditStore(s.log, { witness });
    expect(all.ok).toBe(false);
    expect(all.problems.map((p) => p.kind)).toContain("thread_mismatch");
  });

  // Found by the pass, closed (high; SQLite and PostgreSQL): one extra row in eart_audit_global_heads whose gseq is past
  // the end of the global log (no eart_audit_global row has it) becomes the thread's "latest head
  // in the global log". `verify` reads it with `SELECT seq, hash FROM eart_audit_global_heads WHERE
  // thread_id = ? ORDER BY gseq DESC LIMIT 1` (SqliteAuditLog#logged, PostgresAuditLog.verify), and
  // `globalLog()` silently drops heads rows without an entry (`byGseq.get(r.gseq)?.heads.push`),
  // so `verifyAuditStore` finds the global log intact, and it never compares a thread's chain with
  // `check.latest` (the heads of the verified global log): it trusts `log.verify`. Result: the
  // approval and the refund deleted (events + heads row cut back, one INSERT), no hash forged, and
  // `verify`, `verifyAuditStore` and `verifyAuditStore` with a witness all say ok.
  // Fix: in src/audit/verify.ts verifyAuditStore, compare each thread's chain end with
  // `check.latest` (global_mismatch when they differ), and in both stores take `logged` from the
  // entries (`JOIN eart_audit_global g USING (gseq)`) and report heads rows without an entry as a
  // global_hash problem in globalLog().
  it("unsigned: the same rollback with one orphan global-heads row added is caught by verify and verifyAuditStore (it passed before the fix)", async () => {
    const s = await open(false);
    const { T, beforeApproval, witness } = await story(s.log);
    await cutThread(s, T, beforeApproval);
    await addOrphan(s, T, beforeApproval.seq, beforeApproval.hash);
    expect(types(await s.log.read(T))).toEqual(["run.started", "approval.requested"]);
    expect((await s.log.globalLog!()).entries.find((e) => e.gseq === 2)!.heads).toEqual([expect.objectContaining({ threadId: T, seq: 2 })]); // the log still knows
    const v = await s.log.verify(T);
    const all = await verifyAuditStore(s.log, { witness });
    expect({ verify: v.ok, all: all.ok }).toEqual({ verify: false, all: false });
  });

  it("control, signed: a rollback to a genuinely signed earlier head is caught by the global log, with the public key alone", async () => {
    const s = await open(true);
    const { T, beforeApproval, witness } = await story(s.log);
    expect(beforeApproval.signed).toBeDefined();
    await cutThread(s, T, beforeApproval);
    const auditor = s.reopen();
    const v = await auditor.verify(T, { publicKey });
    expect(v.ok).toBe(false);
    expect(!v.ok && v.brokenAt.reason).toBe("global_mismatch");
    expect((await verifyAuditStore(auditor, { publicKey, witness })).ok).toBe(false);
  });

  // Found by the pass, closed (high; SQLite and PostgreSQL): as above, on a signing store. The README's row "a thread
  // rolled back to an earlier (signed) head ... | the global log (`verify`, `--all`)" does not hold:
  // the old signed chain head is genuine, the global log and its signed head are untouched, and
  // the orphan row is what `verify` compares the chain with. `verify(T, { publicKey })` and
  // `verifyAuditStore(log, { publicKey, witness })` (signed witness) both say ok. Same fix.
  it("signed: a rollback to an earlier signed head with one orphan global-heads row added is caught by verify and verifyAuditStore with publicKey and a signed witness (it passed before the fix)", async () => {
    const s = await open(true);
    const { T, beforeApproval, witness } = await story(s.log);
    await cutThread(s, T, beforeApproval);
    await addOrphan(s, T, beforeApproval.seq, beforeApproval.hash);
    expect(types(await s.log.read(T))).toEqual(["run.started", "approval.requested"]);
    expect(witness).toHaveProperty("signature");
    const auditor = s.reopen();
    const v = await auditor.verify(T, { publicKey });
    const all = await verifyAuditStore(auditor, { publicKey, witness });
    expect({ verify: v.ok, all: all.ok }).toEqual({ verify: false, all: false });
  });

  it("signed, with a witness: the global log deleted whole and the thread rolled back is caught (rollback), also after the app restarted", async () => {
    const s = await open(true);
    const { T, beforeApproval, witness } = await story(s.log);
    await cutThread(s, T, beforeApproval);
    for (const t of ["eart_audit_global", "eart_audit_global_heads", "eart_audit_global_signed"]) await s.sql(`DELETE FROM ${t}`);
    const restarted = s.reopen();
    const all = await verifyAuditStore(restarted, { publicKey, witness });
    expect(all.ok).toBe(false);
    expect(all.problems.map((p) => p.kind)).toContain("rollback");
  });

  it("signed, before any restart: the global log deleted whole and the thread rolled back is caught without a witness", async () => {
    const s = await open(true);
    const { T, beforeApproval } = await story(s.log);
    await cutThread(s, T, beforeApproval);
    for (const t of ["eart_audit_global", "eart_audit_global_heads", "eart_audit_global_signed"]) await s.sql(`DELETE FROM ${t}`);
    // The PostgreSQL store object already ran its baseline; the SQLite one runs it only in its constructor.
    const all = await verifyAuditStore(s.log, { publicKey });
    expect(all.ok).toBe(false);
  });

  // Found by the pass, closed (medium; SQLite and PostgreSQL, signing stores, no witness): the migration path for "a
  // store written before the global log" is a signing oracle. The attacker empties the three
  // eart_audit_global* tables and cuts thread T back to an earlier genuinely signed head; when the
  // application restarts, the store sees no global entry and writes a baseline entry from the
  // (tampered) heads table, signed with the writers' key (SqliteAuditLog constructor, the
  // `this.#db.transaction(() => { if (this.#globalHead.get() !== undefined) return; ... })`;
  // PostgresAuditLog#baseline). `verifyAuditStore(log, { publicKey })` then says ok: the README's
  // "a thread rolled back to an earlier (signed) head" and "global log entries removed ... its
  // signed head" rows do not hold without a witness. Fix: never baseline a store that carries
  // evidence it was written with a global log (a non-NULL eart_inbox_state.gseq >= 0, or better a
  // marker row written when the tables are created); refuse to append and report `global_head`
  // ("the global log is missing") instead.
  it("signed: the global log emptied and a thread rolled back: the app's restart signs no fresh baseline over it, and verifyAuditStore({ publicKey }) reports it (before the fix it said ok)", async () => {
    const s = await open(true);
    const { T, beforeApproval } = await story(s.log);
    await cutThread(s, T, beforeApproval);
    for (const t of ["eart_audit_global", "eart_audit_global_heads", "eart_audit_global_signed"]) await s.sql(`DELETE FROM ${t}`);
    const restarted = s.reopen();
    await restarted.listThreads(); // any first use (PostgreSQL migrates lazily)
    expect(types(await restarted.read(T))).toEqual(["run.started", "approval.requested"]);
    const v = await restarted.verify(T, { publicKey });
    const all = await verifyAuditStore(restarted, { publicKey });
    expect({ verify: v.ok, all: all.ok }).toEqual({ verify: false, all: false });
  });
});

// ---------------------------------------------------------------------------------------------

/** Rewrites the approval's amount in thread T and recomputes every later hash, the head, and the whole global log (unsigned). */
async function rewriteApproval(s: SqlStore, T: string, amount: number) {
  const events = await s.log.read(T);
  const newHash = new Map<number, string>();
  let prev = events[1]!.hash;
  for (const e of events.slice(2)) {
    const data = e.type === "approval.decided" ? { ...e.data, amount } : e.data;
    const changed = { ...e, data, prevHash: prev };
    const hash = rehash(changed);
    await s.sql(`UPDATE eart_audit_events SET data = ?, prev_hash = ?, hash = ? WHERE thread_id = ? AND seq = ?`, [canonicalJson(data), prev, hash, T, e.seq]);
    newHash.set(e.seq, hash);
    prev = hash;
  }
  await s.sql(`UPDATE eart_audit_heads SET hash = ? WHERE thread_id = ?`, [prev, T]);
  const { entries } = await s.log.globalLog!();
  let gprev = GLOBAL_GENESIS_HASH;
  for (const entry of entries) {
    const heads = entry.heads.map((h) => (h.threadId === T && newHash.has(h.seq) ? { ...h, hash: newHash.get(h.seq)! } : h));
    for (const h of heads) await s.sql(`UPDATE eart_audit_global_heads SET hash = ? WHERE thread_id = ? AND gseq = ?`, [h.hash, h.threadId, entry.gseq]);
    const hash = globalEntryHash({ gseq: entry.gseq, heads, prevHash: gprev });
    await s.sql(`UPDATE eart_audit_global SET prev_hash = ?, hash = ? WHERE gseq = ?`, [gprev, hash, entry.gseq]);
    gprev = hash;
  }
}

describe("SQLite: an approval's amount rewritten and every hash after it recomputed (chain, head, global log)", () => {
  it("unsigned, no witness: not caught, as documented (only signing or a witness can see a consistent rewrite)", async () => {
    const s = openSqlite(false);
    const { T } = await story(s.log);
    await rewriteApproval(s, T, 100_000);
    expect((await s.log.read(T)).find((e) => e.type === "approval.decided")!.data.amount).toBe(100_000);
    expect((await verifyAuditStore(s.log)).ok).toBe(true);
  });

  it("unsigned, with a witness taken before: caught (the global entry at the witness differs)", async () => {
    const s = openSqlite(false);
    const { T, witness } = await story(s.log);
    await rewriteApproval(s, T, 100_000);
    const all = await verifyAuditStore(s.log, { witness });
    expect(all.ok).toBe(false);
    expect(all.problems.find((p) => p.kind === "rollback")?.detail).toMatch(/rewritten/);
  });

  it("signed: caught with the public key alone (the thread's signed head and the signed global head no longer match)", async () => {
    const s = openSqlite(true);
    const { T } = await story(s.log);
    await rewriteApproval(s, T, 100_000);
    const auditor = new SqliteAuditLog({ path: (await s.sql(`PRAGMA database_list`))[0]!.file as string });
    closers.push(() => auditor.close());
    const v = await auditor.verify(T, { publicKey });
    expect(v.ok).toBe(false);
    expect(["signature_invalid", "head_mismatch"]).toContain(!v.ok && v.brokenAt.reason); // the signed head no longer matches
    const kinds = (await verifyAuditStore(auditor, { publicKey })).problems.map((p) => p.kind);
    expect(kinds).toEqual(expect.arrayContaining(["thread_broken", "global_signature"]));
  });

  it("signed: a rollback to an older signed head with the thread's later global-heads rows deleted passes the per-thread verify (documented: global log edits need --all), and --all catches it", async () => {
    const s = openSqlite(true);
    const { T, beforeApproval } = await story(s.log);
    await cutThread(s, T, beforeApproval);
    await s.sql(`DELETE FROM eart_audit_global_heads WHERE thread_id = ? AND gseq > 1`, [T]);
    expect((await s.log.verify(T, { publicKey })).ok).toBe(true); // per-thread verify trusts the global-heads table
    const all = await verifyAuditStore(s.log, { publicKey });
    expect(all.problems.map((p) => p.kind)).toContain("global_hash");
  });
});

// LEAK (medium; SQLite only): what verify checks is a re-serialisation, not the stored text. The
// stores write the RFC 8785 text of `data`, but `verify` parses the `data` column and hashes
// canonicalJson(JSON.parse(text)). A duplicate key put in front (`{"amount":100000,"amount":100,…}`)
// verifies (JSON.parse keeps the last), while SQLite's own json_extract(data, '$.amount') returns
// the FIRST: every report, dashboard or reconciliation written in SQL over eart_audit_events sees an
// approval of 100000 that `verify`/`verifyAuditStore` (signed too) call intact. (PostgreSQL's json
// and jsonb keep the last, so it agrees with eart there; a JSONL line has the same property for
// first-wins SIEM parsers.) Fix: in verify (rowToEvent / firstBadLink in src/audit/log.ts, and
// JsonlAuditLog#eventsOf), require the stored data text to equal canonicalJson of its parse
// (hash_mismatch / malformed otherwise): the stores only ever write canonical text, so the check
// is a string compare.
describe("SQLite: stored text versus what is hashed", () => {
  it("a duplicate key put in front of the stored data text (SQL reads the forged amount) is caught by verify and verifyAuditStore, signed (before the fix they said ok)", async () => {
    const s = openSqlite(true);
    const { T } = await story(s.log);
    await s.sql(`UPDATE eart_audit_events SET data = '{"amount":100000,' || substr(data, 2) WHERE thread_id = ? AND type = 'approval.decided'`, [T]);
    const [row] = await s.sql(`SELECT json_extract(data, '$.amount') AS amount FROM eart_audit_events WHERE thread_id = ? AND type = 'approval.decided'`, [T]);
    expect(row!.amount).toBe(100000); // what SQL sees
    expect((await s.log.read(T)).find((e) => e.type === "approval.decided")!.data.amount).toBe(100); // what eart reads
    const v = await s.log.verify(T, { publicKey });
    const all = await verifyAuditStore(s.log, { publicKey });
    expect({ verify: v.ok, all: all.ok }).toEqual({ verify: false, all: false });
  });
});

describe("SQLite: thread identity games (unsigned)", () => {
  it("two threads' chains swapped (events, heads and global heads renamed) are caught: the hash covers threadId", async () => {
    const s = openSqlite(false);
    const { T, U } = await story(s.log);
    for (const table of ["eart_audit_events", "eart_audit_heads", "eart_audit_global_heads"]) {
      await s.sql(`UPDATE ${table} SET thread_id = CASE thread_id WHEN ? THEN ? WHEN ? THEN ? END WHERE thread_id IN (?, ?)`, [T, "swap-tmp", U, T, T, U]);
      await s.sql(`UPDATE ${table} SET thread_id = ? WHERE thread_id = 'swap-tmp'`, [U]);
    }
    expect((await s.log.read(U))[1]!.type).toBe("approval.requested"); // the swap is real
    expect((await s.log.verify(T)).ok).toBe(false);
    expect((await s.log.verify(U)).ok).toBe(false);
    expect((await verifyAuditStore(s.log)).ok).toBe(false);
  });

  it("a thread duplicated verbatim under a new id is caught, and one re-hashed under the new id is an unlogged thread", async () => {
    const s = openSqlite(false);
    const { T } = await story(s.log);
    const copy = `copy-${randomUUID()}`;
    await s.sql(`INSERT INTO eart_audit_events SELECT ?, seq, id, type, at, schema_version, data, prev_hash, hash FROM eart_audit_events WHERE thread_id = ?`, [copy, T]);
    await s.sql(`INSERT INTO eart_audit_heads SELECT ?, seq, hash FROM eart_audit_heads WHERE thread_id = ?`, [copy, T]);
    expect(await s.log.listThreads()).toContain(copy);
    const v = await s.log.verify(copy);
    expect(!v.ok && v.brokenAt.reason).toBe("hash_mismatch");
    // Re-hashed for the new id: the chain is right, the global log never saw it.
    let prev = "0".repeat(64);
    for (const e of await s.log.read(copy)) {
      const hash = rehash({ ...e, prevHash: prev });
      await s.sql(`UPDATE eart_audit_events SET prev_hash = ?, hash = ? WHERE thread_id = ? AND seq = ?`, [prev, hash, copy, e.seq]);
      prev = hash;
    }
    await s.sql(`UPDATE eart_audit_heads SET hash = ? WHERE thread_id = ?`, [prev, copy]);
    const all = await verifyAuditStore(s.log);
    expect(all.problems).toEqual([expect.objectContaining({ kind: "unlogged_thread", threadId: copy })]);
  });

  // Found by the pass, closed (high; SQLite, PostgreSQL the same code): the orphan global-heads row also launders a
  // fabricated thread: verifyAuditStore derives `unlogged_thread` only from `log.verify`'s
  // global_mismatch, which the orphan row satisfies. Fix as for the rollback above.
  it("unsigned: a fabricated thread with one orphan global-heads row is caught by verifyAuditStore, with a witness (it passed before the fix)", async () => {
    const s = openSqlite(false);
    const { witness } = await story(s.log);
    const fake = `refund-${randomUUID()}`;
    const e0 = { schemaVersion: 1 as const, id: randomUUID(), threadId: fake, seq: 0, type: "approval.decided" as const, at: new Date().toISOString(), data: { toolCallId: "c7", approverId: "alice", decision: "approve", amount: 9999 }, prevHash: "0".repeat(64) };
    const hash = rehash(e0);
    await s.sql(`INSERT INTO eart_audit_events VALUES (?, 0, ?, ?, ?, 1, ?, ?, ?)`, [fake, e0.id, e0.type, e0.at, canonicalJson(e0.data), e0.prevHash, hash]);
    await s.sql(`INSERT INTO eart_audit_heads VALUES (?, 0, ?)`, [fake, hash]);
    await addOrphan(s, fake, 0, hash);
    expect(await s.log.listThreads()).toContain(fake);
    expect((await verifyAuditStore(s.log, { witness })).ok).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------

describe("a whole store restored from a backup, and the witness an exporter carried out", () => {
  /** The newest global head in a JSONL export, as `eart audit verify --witness` takes it. */
  const witnessFromExport = (path: string): GlobalHead | SignedGlobalHead => {
    let best: (GlobalHead & { signed?: SignedGlobalHead }) | undefined;
    for (const line of readFileSync(path, "utf8").split("\n").filter(Boolean)) {
      const h = (JSON.parse(line) as { globalHead?: GlobalHead & { signed?: SignedGlobalHead } }).globalHead;
      if (h && (!best || h.gseq > best.gseq)) best = h;
    }
    return (best!.signed ?? best!) as GlobalHead | SignedGlobalHead;
  };

  it("SQLite, signed: the restore passes without a witness (documented), and a signed witness from the JSONL export catches it, also after new appends cover its gseq", async () => {
    const path = tmp("sqlite");
    const exportPath = tmp("export.jsonl");
    const backup = tmp("sqlite");
    let log = new SqliteAuditLog({ path, signingKey: privateKey });
    const traced = createTraceExport({ auditLog: log, exporters: [createJsonlExporter({ path: exportPath, redaction: false })] });
    const T = `refund-${randomUUID()}`;
    await traced.append({ threadId: T, type: "approval.requested", data: { requests: [{ toolCallId: "c1" }] } });
    const db = new Database(path);
    db.exec(`VACUUM INTO '${backup}'`);
    db.close();
    await traced.append({ threadId: T, type: "approval.decided", data: { toolCallId: "c1", approverId: "alice", decision: "reject" } });
    await traced.append({ threadId: T, type: "run.completed", data: {} });
    await traced.shutdown({ timeoutMs: 5_000 });
    log.close();
    const witness = witnessFromExport(exportPath);
    expect(witness).toMatchObject({ gseq: 2, signature: expect.any(String) });
    for (const f of [path, `${path}-wal`, `${path}-shm`]) rmSync(f, { force: true });
    copyFileSync(backup, path);
    log = new SqliteAuditLog({ path, signingKey: privateKey });
    closers.push(() => log.close());
    expect(types(await log.read(T))).toEqual(["approval.requested"]); // the restore is real
    expect((await verifyAuditStore(log, { publicKey })).ok).toBe(true); // documented: needs a witness
    const caught = await verifyAuditStore(log, { publicKey, witness });
    expect(caught.problems.map((p) => p.kind)).toEqual(["rollback"]);
    // The restored store goes on and its global log passes the witness's gseq: still caught.
    await log.append({ threadId: T, type: "approval.decided", data: { toolCallId: "c1", approverId: "alice", decision: "approve" } });
    await log.append({ threadId: T, type: "run.completed", data: {} });
    const later = await verifyAuditStore(log, { publicKey, witness });
    expect(later.problems.find((p) => p.kind === "rollback")?.detail).toMatch(/rewritten/);
  });

  it("a forged signed witness (another key) is refused, not trusted", async () => {
    const s = openSqlite(true);
    const { witness } = await story(s.log);
    const other = generateAuditSigningKey();
    const forged = { ...(witness as SignedGlobalHead), keyId: other.keyId };
    const all = await verifyAuditStore(s.log, { publicKey, witness: forged });
    expect(all.problems.map((p) => p.kind)).toContain("global_signature");
  });
});

// ---------------------------------------------------------------------------------------------

function openJsonl(signed: boolean, path = tmp("jsonl")) {
  const log = new JsonlAuditLog({ path, ...(signed ? { signingKey: privateKey } : {}) });
  closers.push(() => log.close());
  return { path, log };
}
const lines = (path: string) => readFileSync(path, "utf8").split("\n").filter(Boolean);
const writeLines = (path: string, ls: string[]) => writeFileSync(path, ls.map((l) => `${l}\n`).join(""));
/** A copy of a JSONL log (events and heads files), for one variant of an attack each. */
function copyJsonl(path: string): string {
  const to = tmp("jsonl");
  copyFileSync(path, to);
  copyFileSync(`${path}.heads`, `${to}.heads`);
  return to;
}

describe("JSONL files edited by hand", () => {
  it("signed: both files cut back consistently to an earlier commit pass without a witness (documented) and are caught with one", async () => {
    const { path, log } = openJsonl(true);
    const T = `refund-${randomUUID()}`;
    await log.append({ threadId: T, type: "approval.requested", data: { requests: [{ toolCallId: "c1" }] } });
    const cut = { events: statSync(path).size, heads: statSync(`${path}.heads`).size };
    await log.append({ threadId: T, type: "approval.decided", data: { toolCallId: "c1", approverId: "alice", decision: "reject" } });
    const { signed } = await log.globalHead();
    log.close();
    truncateSync(path, cut.events);
    truncateSync(`${path}.heads`, cut.heads);
    const auditor = openJsonl(true, path).log;
    expect(types(await auditor.read(T))).toEqual(["approval.requested"]);
    expect((await verifyAuditStore(auditor, { publicKey })).ok).toBe(true);
    expect((await verifyAuditStore(auditor, { publicKey, witness: signed! })).problems.map((p) => p.kind)).toEqual(["rollback"]);
  });

  it("commit-line surgery is caught: the last commit removed, a middle one removed, an older commit (older signed head) replayed at the end", async () => {
    const { path, log } = openJsonl(true);
    const { T } = await story(log);
    log.close();
    const heads = lines(`${path}.heads`);
    const variants: [string, string[]][] = [
      ["last removed", heads.slice(0, -1)],
      ["middle removed", [...heads.slice(0, 2), ...heads.slice(3)]],
      ["older replayed", [...heads, heads[1]!]],
    ];
    for (const [name, edited] of variants) {
      const p = copyJsonl(path);
      writeLines(`${p}.heads`, edited);
      const auditor = openJsonl(true, p).log;
      const all = await verifyAuditStore(auditor, { publicKey });
      expect({ name, ok: all.ok }).toEqual({ name, ok: false });
    }
  });

  it("field games on one event line: a string seq, another schemaVersion, an NFD key are caught; 2.0 for 2, whitespace and key order are the same event", async () => {
    const { path, log } = openJsonl(false);
    const { T } = await story(log);
    log.close();
    const idx = lines(path).findIndex((l) => l.includes('"approval.decided"'));
    const caught: [string, (l: string) => string][] = [
      ["string seq", (l) => l.replace('"seq":2', '"seq":"2"')],
      ["schemaVersion 2", (l) => l.replace('"schemaVersion":1', '"schemaVersion":2')],
      ["NFD key", (l) => l.replace("bénéficiaire", "bénéficiaire".normalize("NFD"))],
      ["amount negated", (l) => l.replace('"amount":100', '"amount":-100')],
    ];
    const same: [string, (l: string) => string][] = [
      ["2.0", (l) => l.replace('"seq":2', '"seq":2.0')],
      ["1e2", (l) => l.replace('"amount":100', '"amount":1e2')],
      ["-0", (l) => l.replace('"fee":0', '"fee":-0')],
      ["whitespace and key order", (l) => JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(l) as object).reverse()), null, 0).replace(/,"/g, ', "')],
    ];
    const original = await openJsonl(false, copyJsonl(path)).log.read(T);
    for (const [name, edit, expected] of [...caught.map(([n, e]) => [n, e, false] as const), ...same.map(([n, e]) => [n, e, true] as const)]) {
      const p = copyJsonl(path);
      const ls = lines(p);
      const edited = edit(ls[idx]!);
      expect({ name, changed: edited !== ls[idx] }).toEqual({ name, changed: true });
      ls[idx] = edited;
      writeLines(p, ls);
      const auditor = openJsonl(false, p).log;
      expect({ name, ok: (await auditor.verify(T)).ok }).toEqual({ name, ok: expected });
      if (expected) expect(canonicalJson(await auditor.read(T))).toEqual(canonicalJson(original)); // the same event for every JSON reader
    }
  });

  it("control: a forged, correctly chained event line for the thread inserted mid-file is caught", async () => {
    const { path, log } = openJsonl(false);
    const { T } = await story(log);
    log.close();
    const ls = lines(path);
    const events = ls.map((l) => JSON.parse(l) as AuditEvent);
    const at = events.findIndex((e) => e.threadId === T && e.seq === 1);
    const forged = { ...events[at]!, id: randomUUID(), seq: 2, type: "approval.decided" as const, data: { toolCallId: "c1", approverId: "mallory", decision: "approve", amount: 5000 }, prevHash: events[at]!.hash };
    const line = JSON.stringify({ ...forged, hash: rehash(forged) });
    writeLines(path, [...ls.slice(0, at + 1), line, ...ls.slice(at + 1)]);
    const auditor = openJsonl(false, path).log;
    expect((await auditor.verify(T)).ok).toBe(false);
  });

  // Found by the pass, closed (medium; JSONL, signed or not, with or without a witness): `JsonlAuditLog#eventsOf` skips
  // any line that does not contain the literal text JSON.stringify(threadId) before parsing it. A
  // forged event line whose threadId is written with a JSON escape ("\u0072efund-…" is
  // "refund-…") parses to the very thread, so jq, a SIEM or any JSON reader of this "SIEM-friendly"
  // file sees a second `approval.decided` (mallory approving 5000) in thread T, while `read(T)`,
  // `verify(T, { publicKey })` and `verifyAuditStore(log, { publicKey, witness })` never look at it
  // (listThreads parses it, finds T, and says nothing). The commit lines' `end` offsets, which
  // nothing verifies and no signature covers, are shifted by the line's length so later appends
  // go on as normal. The README's "an event ... inserted | the thread's chain" does not hold.
  // Fix: in src/audit/jsonl.ts, parse every line (or fall back to parsing when the needle misses),
  // count the events of each thread in verifyAuditStore / verify against the file (every parseable
  // line must belong to a verified chain), and check the last commit's `end` against the events
  // file's size (and cover `end` by the global entry's hash).
  it("a forged event line whose threadId is JSON-escaped is read as every JSON reader reads it, and caught by verify and verifyAuditStore (before the fix eart skipped it)", async () => {
    const { path, log } = openJsonl(true);
    const { T, witness } = await story(log);
    log.close();
    const ls = lines(path);
    const events = ls.map((l) => JSON.parse(l) as AuditEvent);
    const at = events.findIndex((e) => e.threadId === T && e.seq === 2);
    const forged = { ...events[at]!, id: randomUUID(), data: { toolCallId: "c1", approverId: "mallory", decision: "approve", status: "approved", amount: 5000 } };
    const line = JSON.stringify({ ...forged, hash: rehash(forged) }).replace(JSON.stringify(T), `"\\u${T.charCodeAt(0).toString(16).padStart(4, "0")}${T.slice(1)}"`);
    const offset = Buffer.byteLength(ls.slice(0, at + 1).map((l) => `${l}\n`).join(""));
    writeLines(path, [...ls.slice(0, at + 1), line, ...ls.slice(at + 1)]);
    const shift = Buffer.byteLength(`${line}\n`);
    writeLines(
      `${path}.heads`,
      lines(`${path}.heads`).map((l) => {
        const c = JSON.parse(l) as { end: number };
        return JSON.stringify({ ...c, end: c.end > offset ? c.end + shift : c.end }); // same key order, only `end` moves
      }),
    );
    // What a SIEM or jq sees: two approvals of c1 in thread T.
    const seen = lines(path).map((l) => JSON.parse(l) as AuditEvent).filter((e) => e.threadId === T && e.type === "approval.decided");
    expect(seen.map((e) => e.data.approverId)).toEqual(["alice", "mallory"]);
    const auditor = openJsonl(true, path).log;
    // eart reads the line as every JSON reader does (it used to skip it), so the chain shows it.
    expect((await auditor.read(T)).filter((e) => e.type === "approval.decided")).toHaveLength(2);
    await auditor.append({ threadId: T, type: "run.completed", data: {} }); // the log goes on as normal
    const v = await auditor.verify(T, { publicKey });
    const all = await verifyAuditStore(auditor, { publicKey, witness });
    expect({ verify: v.ok, all: all.ok }).toEqual({ verify: false, all: false });
  });
});

// ---------------------------------------------------------------------------------------------

describe("SQLite: the inbox index is a listing, never an authority", () => {
  it("a forged index row is listed, a deleted one hides a request, verifyAuditStore does not look; the chain is unchanged and an index marked stale is rebuilt from the events", async () => {
    const s = openSqlite(true);
    const { T } = await story(s.log);
    const W = `waiting-${randomUUID()}`;
    await s.log.append({ threadId: W, type: "approval.requested", data: { requests: [{ toolCallId: "w1", name: "refund", approverRoles: ["supervisor"] }] } });
    const real = await s.log.pending!();
    expect(real.map((t) => [t.threadId, t.toolCallId])).toEqual([[W, "w1"]]);
    // Forge a request on T (closed in the chain) and delete W's real one.
    const task = { ...real[0]!, threadId: T, toolCallId: "c9", seq: 1 };
    await s.sql(`INSERT INTO eart_inbox (thread_id, kind, item, since, task) VALUES (?, 'approval', 'c9', ?, ?)`, [T, task.since, JSON.stringify(task)]);
    await s.sql(`DELETE FROM eart_inbox WHERE thread_id = ?`, [W]);
    expect((await s.log.pending!()).map((t) => [t.threadId, t.toolCallId])).toEqual([[T, "c9"]]);
    // The chain, which is what verify and the graph go by, holds no request c9 and is intact.
    expect(JSON.stringify(await s.log.read(T))).not.toContain('"c9"');
    expect((await verifyAuditStore(s.log, { publicKey })).ok).toBe(true);
    // Marking the index stale makes the next listing replay the events: the truth comes back.
    await s.sql(`UPDATE eart_inbox_state SET gseq = NULL WHERE id = 1`);
    expect((await s.log.pending!()).map((t) => [t.threadId, t.toolCallId])).toEqual([[W, "w1"]]);
  });
});

// Every file this test wrote is under `dir` (removed in afterAll); every PostgreSQL table is in a
// schema of its own (dropped in afterAll).
