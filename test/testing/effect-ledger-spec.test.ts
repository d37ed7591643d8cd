import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { MemoryEffectLedger, type EffectLedger, type LedgerOutcome } from "eart";
import { PostgresEffectLedger } from "eart/postgres";
import { SqliteEffectLedger } from "eart/sqlite";
import { effectLedgerSpec, type EffectLedgerSpecOptions } from "eart/testing";

// A real PostgreSQL. No skip: without it the PostgreSQL cases fail, loudly.
const PG_URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";

const dir = mkdtempSync(join(tmpdir(), "eart-ledger-spec-"));
// A schema of this run's own: its table and its seal key are this file's alone.
const SCHEMA = `ledger_spec_${randomUUID().replace(/-/g, "")}`;
const pools: pg.Pool[] = [];
const newPool = () => {
  const pool = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${SCHEMA}` });
  pools.push(pool);
  return pool;
};
const admin = newPool();
await admin.query(`CREATE SCHEMA ${SCHEMA}`);
// Two pools for the ledgers (a handle and the handles reopened beside it), shared by every test,
// so the number of connections stays bounded.
const [mainPool, otherPool] = [newPool(), newPool()];
afterAll(async () => {
  await admin.query(`DROP SCHEMA ${SCHEMA} CASCADE`).catch(() => {});
  await Promise.all(pools.map((p) => p.end()));
  rmSync(dir, { recursive: true, force: true });
});

effectLedgerSpec("MemoryEffectLedger", () => new MemoryEffectLedger(), { describe, it, expect });

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

effectLedgerSpec("PostgresEffectLedger", () => new PostgresEffectLedger({ pool: mainPool }), { describe, it, expect }, {
  reopen: () => new PostgresEffectLedger({ pool: otherPool }),
});

/** The titles of the spec's cases that fail on a ledger made by `make`. */
async function failingCases(make: () => EffectLedger, options?: EffectLedgerSpecOptions): Promise<string[]> {
  const failures: string[] = [];
  const pending: Promise<unknown>[] = [];
  const recorder = {
    describe: (_: string, body: () => void) => body(),
    it: (title: string, body: () => void | Promise<void>) => void pending.push(Promise.resolve().then(body).catch(() => failures.push(title))),
    expect,
  };
  effectLedgerSpec("mutant", make, recorder, options);
  await Promise.all(pending);
  return failures;
}

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
