import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import Database from "better-sqlite3";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { MemoryEffectLedger, type EffectLedger, type LedgerOutcome } from "eart";
import { PostgresAuditLog, PostgresEffectLedger } from "eart/postgres";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { effectLedgerSpec, type EffectLedgerSpecOptions } from "eart/testing";
import { failingCases as failingOf, specGround } from "../support/specs.js";

const { dir, mainPool, otherPool } = await specGround("ledger");

effectLedgerSpec("MemoryEffectLedger", () => new MemoryEffectLedger(), { describe, it, expect }, { singleProcess: true });

/** The file of each SQLite ledger, for reopening it. */
const paths = new WeakMap<EffectLedger, string>();
const sqliteLedger = (path: string) => {
  const ledger = new SqliteEffectLedger({ path });
  paths.set(ledger, path);
  return ledger;
};

effectLedgerSpec("SqliteEffectLedger", () => sqliteLedger(join(dir, `${randomUUID()}.sqlite`)), { describe, it, expect }, {
  reopen: (ledger) => sqliteLedger(paths.get(ledger)!),
});

/** The audit log on each SQLite ledger's very connection, as `sqliteStores` opens them. */
const sqliteLogs = new WeakMap<EffectLedger, SqliteAuditLog>();
/** A SQLite ledger and audit log sharing one connection, which closing the ledger closes. */
class SharedConnectionLedger extends SqliteEffectLedger {
  readonly #db: Database.Database;
  constructor(readonly path: string) {
    const db = new Database(path);
    db.pragma("journal_mode = WAL");
    super({ database: db });
    this.#db = db;
    sqliteLogs.set(this, new SqliteAuditLog({ database: db }));
  }
  override close(): void {
    super.close();
    if (this.#db.open) this.#db.close();
  }
}

effectLedgerSpec("SqliteEffectLedger, with the audit log on its connection (sqliteStores)", () => new SharedConnectionLedger(join(dir, `${randomUUID()}.sqlite`)), { describe, it, expect }, {
  reopen: (ledger) => new SharedConnectionLedger((ledger as SharedConnectionLedger).path),
  auditLog: (ledger) => sqliteLogs.get(ledger)!,
});

/** The audit log on each PostgreSQL ledger's pool (`postgresStores` opens them on one). */
const pgLogs = new Map([mainPool, otherPool].map((pool) => [pool, new PostgresAuditLog({ pool })]));
const pgPools = new WeakMap<EffectLedger, pg.Pool>();
const pgLedger = (pool: pg.Pool) => {
  const ledger = new PostgresEffectLedger({ pool });
  pgPools.set(ledger, pool);
  return ledger;
};

effectLedgerSpec("PostgresEffectLedger", () => pgLedger(mainPool), { describe, it, expect }, {
  reopen: () => pgLedger(otherPool),
  auditLog: (ledger) => pgLogs.get(pgPools.get(ledger)!)!,
});

const failingCases = (make: () => EffectLedger, options?: EffectLedgerSpecOptions) => failingOf(effectLedgerSpec, make, { singleProcess: true, ...options });

/** A memory ledger with some of its methods replaced. */
const mutant = (replace: (inner: MemoryEffectLedger) => Partial<EffectLedger>) => (): EffectLedger => {
  const inner = new MemoryEffectLedger();
  return {
    begin: (key, now) => inner.begin(key, now),
    retry: (key, attempt, now) => inner.retry(key, attempt, now),
    finish: (key, outcome, now) => inner.finish(key, outcome, now),
    get: (key) => inner.get(key),
    list: (threadId) => inner.list(threadId),
    sealKey: () => inner.sealKey(),
    ...replace(inner),
  };
};

describe("effectLedgerSpec catches a ledger that breaks its contract", () => {
  it("passes the memory ledger untouched", async () => {
    expect(await failingCases(mutant(() => ({})))).toEqual([]);
  });

  it("a begin that claims a key every time", async () => {
    const failures = await failingCases(mutant((inner) => ({ begin: async (key, now) => ({ ...(await inner.begin(key, now)), claimed: true }) })));
    expect(failures.some((t) => t.startsWith("begin claims a new key"))).toBe(true);
    expect(failures.some((t) => t.startsWith("concurrent begins of one key"))).toBe(true);
  });

  it("a finish that says it recorded an outcome it did not", async () => {
    const failures = await failingCases(mutant((inner) => ({ finish: async (key, outcome, now) => (await inner.finish(key, outcome, now)) || true })));
    expect(failures.some((t) => t.startsWith("finish changes only a started entry"))).toBe(true);
    expect(failures.some((t) => t.startsWith("concurrent finishes of one started entry"))).toBe(true);
  });

  it("a finish that stores a result that is not JSON as a string", async () => {
    const lenient = (o: LedgerOutcome): LedgerOutcome => (o?.status === "succeeded" ? { status: "succeeded", result: String(o.result) } : o);
    const failures = await failingCases(mutant((inner) => ({ finish: (key, outcome, now) => inner.finish(key, lenient(outcome), now) })));
    expect(failures.some((t) => t.startsWith("refuses a finish with a BigInt result"))).toBe(true);
    expect(failures.some((t) => t.startsWith("finish records a succeeded result (an object)"))).toBe(true);
  });

  it("a retry that ignores the expected attempt", async () => {
    const failures = await failingCases(
      mutant((inner) => ({
        retry: async (key, _attempt, now) => {
          const entry = await inner.get(key);
          return entry && inner.retry(key, entry.attempt, now);
        },
      })),
    );
    expect(failures.some((t) => t.startsWith("retry bumps the attempt"))).toBe(true);
  });

  it("a list in tool call order only", async () => {
    const failures = await failingCases(
      mutant((inner) => ({ list: async (threadId) => (await inner.list(threadId)).sort((a, b) => (a.key.toolCallId < b.key.toolCallId ? -1 : 1)) })),
    );
    expect(failures).toEqual(["list returns a thread's entries only, by startedAt, then tool call id, then digest"]);
  });

  it("a seal key that changes on every call", async () => {
    const failures = await failingCases(mutant(() => ({ sealKey: () => randomBytes(32) })));
    expect(failures.some((t) => t.startsWith("sealKey is 32 bytes"))).toBe(true);
  });
});
