import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EartConfigError,
  idempotencyKeyOf,
  LedgerInputError,
  ledgerFor,
  MemoryEffectLedger,
  StoreError,
  toolCallDigest,
  type EffectLedger,
  type LedgerEntry,
  type LedgerKey,
} from "eart";
import { PostgresEffectLedger } from "eart/postgres";
import { SqliteEffectLedger } from "eart/sqlite";
import { startReadyChild } from "../support/children.js";

// A real PostgreSQL (.ci/run starts it). No skip: without it the PostgreSQL cases fail, loudly.
const PG_URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const dir = mkdtempSync(join(tmpdir(), "eart-ledger-"));
const pools: pg.Pool[] = [];
const closers: (() => unknown)[] = [];
afterAll(async () => {
  for (const close of closers) await close();
  await Promise.all(pools.map((p) => p.end()));
  rmSync(dir, { recursive: true, force: true });
});
const newPool = () => {
  const pool = new pg.Pool({ connectionString: PG_URL });
  pools.push(pool);
  return pool;
};

const at = (second: number) => new Date(Date.UTC(2025, 2, 10, 9, 0, second));
// Digests of two calls on thread "t1". The ledger stores a key's digest as given (it never
// recomputes one), so these serve as the digest of a call on any thread below.
const DIGEST = toolCallDigest("issue_refund", { orderId: "1042", amount: 740 }, "t1");
const OTHER_DIGEST = toolCallDigest("issue_refund", { orderId: "1042", amount: 741 }, "t1");

interface LedgerBackend {
  name: string;
  /** A ledger, a second handle on the same entries (another connection where there is one), and a way to open a third later. */
  open(): Promise<{ ledger: EffectLedger; other: EffectLedger; reopen: () => EffectLedger }>;
}

const backends: LedgerBackend[] = [
  {
    name: "MemoryEffectLedger",
    open: async () => {
      const ledger = new MemoryEffectLedger();
      return { ledger, other: ledger, reopen: () => ledger };
    },
  },
  {
    name: "SqliteEffectLedger",
    open: async () => {
      const path = join(dir, `${randomUUID()}.sqlite`);
      const open = () => {
        const handle = new SqliteEffectLedger({ path });
        closers.push(() => handle.close());
        return handle;
      };
      return { ledger: open(), other: open(), reopen: open };
    },
  },
  {
    name: "PostgresEffectLedger",
    open: async () => {
      const ledger = new PostgresEffectLedger({ connectionString: PG_URL });
      closers.push(() => ledger.close());
      const open = () => new PostgresEffectLedger({ pool: newPool() });
      return { ledger, other: open(), reopen: open };
    },
  },
];

describe.each(backends)("EffectLedger conformance: $name", (backend) => {
  let ledger: EffectLedger;
  let other: EffectLedger;
  let reopen: () => EffectLedger;
  beforeAll(async () => {
    ({ ledger, other, reopen } = await backend.open());
  });
  // Unique per test: the PostgreSQL table outlives the run.
  const thread = () => `test-ledger-${randomUUID()}`;
  const keyOf = (threadId: string, toolCallId = "call_1", digest = DIGEST): LedgerKey => ({ threadId, toolCallId, digest });

  it("begin claims a new key once, as attempt 1, and a second begin returns the existing entry unclaimed", async () => {
    const key = keyOf(thread());
    const first = await ledger.begin(key, at(0));
    const expected: LedgerEntry = { schemaVersion: 1, key, status: "started", attempt: 1, startedAt: at(0).toISOString() };
    expect(first).toEqual({ claimed: true, entry: expected });
    expect(Object.keys(first.entry).sort()).toEqual(["attempt", "key", "schemaVersion", "startedAt", "status"]);
    const second = await ledger.begin(key, at(5));
    expect(second).toEqual({ claimed: false, entry: expected });
    expect(await other.begin(key, at(6))).toEqual({ claimed: false, entry: expected });
    expect(await ledger.get(key)).toEqual(expected);
  });

  it("keys by thread, tool call id and digest: a different digest is a different key", async () => {
    const t = thread();
    const keys = [keyOf(t), keyOf(t, "call_1", OTHER_DIGEST), keyOf(t, "call_2"), keyOf(thread())];
    for (const key of keys) expect((await ledger.begin(key, at(0))).claimed).toBe(true);
    expect(await ledger.finish(keys[0]!, { status: "succeeded", result: { refundId: "r1" } }, at(1))).toBe(true);
    expect((await ledger.get(keys[0]!))?.status).toBe("succeeded");
    for (const key of keys.slice(1)) expect(await ledger.get(key)).toMatchObject({ key, status: "started", attempt: 1 });
    expect(await ledger.get(keyOf(t, "call_3"))).toBeUndefined();
    expect(await ledger.list(t)).toHaveLength(3);
  });

  it("finishes only from started, never twice, and never creates an entry", async () => {
    const t = thread();
    const ok = keyOf(t, "call_ok");
    const bad = keyOf(t, "call_bad");
    expect(await ledger.finish(keyOf(t, "call_none"), { status: "succeeded", result: 1 }, at(1))).toBe(false);
    expect(await ledger.get(keyOf(t, "call_none"))).toBeUndefined();

    await ledger.begin(ok, at(0));
    await ledger.begin(bad, at(0));
    expect(await ledger.finish(ok, { status: "succeeded", result: { refundId: "r-1042" } }, at(2))).toBe(true);
    expect(await ledger.finish(bad, { status: "failed", error: "gateway said no" }, at(3))).toBe(true);
    const succeeded: LedgerEntry = {
      schemaVersion: 1,
      key: ok,
      status: "succeeded",
      attempt: 1,
      startedAt: at(0).toISOString(),
      finishedAt: at(2).toISOString(),
      result: { refundId: "r-1042" },
    };
    const failed: LedgerEntry = {
      schemaVersion: 1,
      key: bad,
      status: "failed",
      attempt: 1,
      startedAt: at(0).toISOString(),
      finishedAt: at(3).toISOString(),
      error: "gateway said no",
    };
    expect(await ledger.get(ok)).toEqual(succeeded);
    expect(await ledger.get(bad)).toEqual(failed);
    expect("result" in (await ledger.get(bad))!).toBe(false);

    // Neither a second outcome nor the other outcome changes a finished entry, from any handle.
    expect(await ledger.finish(ok, { status: "succeeded", result: { refundId: "r-2" } }, at(4))).toBe(false);
    expect(await other.finish(ok, { status: "failed", error: "late" }, at(4))).toBe(false);
    expect(await other.finish(bad, { status: "succeeded", result: "late" }, at(4))).toBe(false);
    expect(await ledger.get(ok)).toEqual(succeeded);
    expect(await other.get(bad)).toEqual(failed);
    // A later begin finds the finished entry and does not claim it.
    expect(await ledger.begin(ok, at(9))).toEqual({ claimed: false, entry: succeeded });
    expect(await other.begin(bad, at(9))).toEqual({ claimed: false, entry: failed });
  });

  it("finishes a concurrently finished entry exactly once", async () => {
    const key = keyOf(thread());
    await ledger.begin(key, at(0));
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? ledger : other).finish(key, { status: "succeeded", result: i }, at(1))),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    expect((await ledger.get(key))?.result).toBe(results.indexOf(true));
  });

  it("retries an unknown outcome by compare-and-set on the attempt", async () => {
    const key = keyOf(thread());
    expect(await ledger.retry(key, 1, at(1))).toBeUndefined();
    expect(await ledger.get(key)).toBeUndefined();

    await ledger.begin(key, at(0));
    expect(await ledger.retry(key, 2, at(1))).toBeUndefined();
    expect(await ledger.get(key)).toMatchObject({ attempt: 1, startedAt: at(0).toISOString() });

    const second = await ledger.retry(key, 1, at(2));
    expect(second).toEqual({ schemaVersion: 1, key, status: "started", attempt: 2, startedAt: at(2).toISOString() });
    // A stale retry (someone else already moved to attempt 2) loses.
    expect(await other.retry(key, 1, at(3))).toBeUndefined();
    expect(await ledger.get(key)).toEqual(second);

    // Concurrent retries of attempt 2: one wins, the rest see the change.
    const racing = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? ledger : other).retry(key, 2, at(4))));
    const winners = racing.filter((e) => e !== undefined);
    expect(winners).toHaveLength(1);
    expect(winners[0]).toMatchObject({ attempt: 3, status: "started" });
    expect((await ledger.get(key))?.attempt).toBe(3);

    // A finished entry is never retried.
    expect(await ledger.finish(key, { status: "failed", error: "timeout" }, at(5))).toBe(true);
    expect(await ledger.retry(key, 3, at(6))).toBeUndefined();
    expect(await ledger.get(key)).toMatchObject({ status: "failed", attempt: 3, startedAt: at(4).toISOString(), finishedAt: at(5).toISOString() });
  });

  it("lists a thread's entries by startedAt, then tool call id, and no other thread's", async () => {
    const t = thread();
    const elsewhere = thread();
    await ledger.begin(keyOf(t, "call_c"), at(2));
    await ledger.begin(keyOf(t, "call_b"), at(1));
    await other.begin(keyOf(t, "call_z"), at(1));
    await ledger.begin(keyOf(t, "call_a"), at(3));
    await ledger.begin(keyOf(t, "call_a", OTHER_DIGEST), at(0));
    await ledger.begin(keyOf(elsewhere, "call_0"), at(0));
    await ledger.finish(keyOf(t, "call_b"), { status: "succeeded", result: null }, at(4));

    const listed = await other.list(t);
    expect(listed.map((e) => [e.key.toolCallId, e.key.digest, e.startedAt])).toEqual([
      ["call_a", OTHER_DIGEST, at(0).toISOString()],
      ["call_b", DIGEST, at(1).toISOString()],
      ["call_z", DIGEST, at(1).toISOString()],
      ["call_c", DIGEST, at(2).toISOString()],
      ["call_a", DIGEST, at(3).toISOString()],
    ]);
    expect(listed[1]).toMatchObject({ status: "succeeded", result: null });
    expect(await ledger.list(elsewhere)).toHaveLength(1);
    expect(await ledger.list(thread())).toEqual([]);
  });

  it("round-trips JSON results exactly, null and falsy values included", async () => {
    const t = thread();
    const results: unknown[] = [
      { refundId: "r-1042", amount: 740.25, lines: [{ sku: "A", qty: 2 }, { sku: "B", qty: 0 }], note: null, ok: true },
      null,
      0,
      false,
      "",
      -12.5e-7,
      [],
      {},
      "unicode: é ✓ 😀, quotes \" and \\ and a NUL \u0000 in text",
      [[1, [2, [3]]], { deep: { deeper: { deepest: "x" } } }],
    ];
    for (const [i, result] of results.entries()) {
      const key = keyOf(t, `call_${i}`);
      await ledger.begin(key, at(i));
      expect(await ledger.finish(key, { status: "succeeded", result }, at(30))).toBe(true);
      const read = await other.get(key);
      expect(read?.status).toBe("succeeded");
      expect("result" in read!).toBe(true);
      expect(read?.result).toStrictEqual(result);
    }
    expect((await ledger.list(t)).map((e) => e.result)).toStrictEqual(results);
  });

  it("returns copies: changing a returned entry changes nothing stored", async () => {
    const key = keyOf(thread());
    const { entry } = await ledger.begin(key, at(0));
    entry.attempt = 99;
    entry.key.digest = "tampered";
    expect(await ledger.finish(key, { status: "succeeded", result: { items: [1] } }, at(1))).toBe(true);
    const read = (await ledger.get(key))!;
    (read.result as { items: number[] }).items.push(2);
    expect(await ledger.get(key)).toMatchObject({ key: { digest: DIGEST }, attempt: 1, result: { items: [1] } });
  });

  it("refuses results that are not JSON, with a typed error, before writing", async () => {
    const key = keyOf(thread());
    await ledger.begin(key, at(0));
    const circular: Record<string, unknown> = { a: 1 };
    circular.self = circular;
    class Refund {
      id = "r1";
    }
    const bad: [string, unknown][] = [
      ["undefined", undefined],
      ["NaN", Number.NaN],
      ["Infinity", Number.POSITIVE_INFINITY],
      ["bigint", 10n],
      ["function", () => 1],
      ["Date", new Date()],
      ["Map", new Map([["a", 1]])],
      ["class instance", new Refund()],
      ["circular", circular],
      ["nested undefined", { a: { b: undefined } }],
      ["array with a symbol", [Symbol("s")]],
    ];
    for (const [what, result] of bad) {
      const error = await ledger.finish(key, { status: "succeeded", result }, at(1)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, what).toBeInstanceOf(LedgerInputError);
      expect((error as LedgerInputError).code, what).toBe("ledger_input_invalid");
      expect((error as LedgerInputError).field, what).toBe("outcome");
      expect((error as LedgerInputError).message, what).toMatch(/JSON/);
    }
    expect(await ledger.get(key)).toEqual({ schemaVersion: 1, key, status: "started", attempt: 1, startedAt: at(0).toISOString() });
  });

  it("refuses malformed keys, outcomes, attempts and dates with typed errors, writing nothing", async () => {
    const t = thread();
    const badKeys: unknown[] = [
      { threadId: "", toolCallId: "c", digest: DIGEST },
      { threadId: t, toolCallId: "c" },
      { threadId: t, toolCallId: 7, digest: DIGEST },
      { threadId: t, toolCallId: "c", digest: DIGEST, extra: 1 },
      { threadId: `${t}\u0000`, toolCallId: "c", digest: DIGEST },
      null,
    ];
    for (const key of badKeys) {
      await expect(ledger.begin(key as LedgerKey, at(0))).rejects.toMatchObject({ name: "LedgerInputError", field: "key" });
      await expect(ledger.get(key as LedgerKey)).rejects.toBeInstanceOf(LedgerInputError);
    }
    const key = keyOf(t);
    await expect(ledger.begin(key, new Date("nope"))).rejects.toMatchObject({ field: "now" });
    await expect(ledger.begin(key, "2025-03-10" as unknown as Date)).rejects.toMatchObject({ field: "now" });
    expect(await ledger.list(t)).toEqual([]);

    await ledger.begin(key, at(0));
    for (const outcome of [{ status: "done", result: 1 }, { status: "failed", error: "" }, { status: "failed" }, { status: "succeeded", result: 1, error: "x" }]) {
      await expect(ledger.finish(key, outcome as never, at(1))).rejects.toMatchObject({ name: "LedgerInputError", field: "outcome" });
    }
    for (const attempt of [0, -1, 1.5, "1"]) {
      await expect(ledger.retry(key, attempt as number, at(1))).rejects.toMatchObject({ name: "LedgerInputError", field: "expectedAttempt" });
    }
    await expect(ledger.list("")).rejects.toMatchObject({ field: "threadId" });
    expect(await ledger.list(t)).toEqual([{ schemaVersion: 1, key, status: "started", attempt: 1, startedAt: at(0).toISOString() }]);
  });

  it("lets exactly one of 20 concurrent begins claim a key, on one handle and across two", async () => {
    for (const handles of [[ledger], [ledger, other]]) {
      const key = keyOf(thread());
      const begins = await Promise.all(Array.from({ length: 20 }, (_, i) => handles[i % handles.length]!.begin(key, at(i))));
      const claimed = begins.filter((b) => b.claimed);
      expect(claimed).toHaveLength(1);
      // Everyone sees the claimer's entry: same attempt, same start.
      for (const b of begins) expect(b.entry).toEqual(claimed[0]!.entry);
      expect(await other.list(key.threadId)).toEqual([claimed[0]!.entry]);
    }
  });

  it("a handle opened after the first one finished sees the finished entry and does not claim it", async () => {
    const key = keyOf(thread());
    expect((await ledger.begin(key, at(0))).claimed).toBe(true);
    expect(await ledger.finish(key, { status: "succeeded", result: { refundId: "r-1042" } }, at(1))).toBe(true);
    const later = reopen();
    expect(await later.begin(key, at(2))).toEqual({
      claimed: false,
      entry: {
        schemaVersion: 1,
        key,
        status: "succeeded",
        attempt: 1,
        startedAt: at(0).toISOString(),
        finishedAt: at(1).toISOString(),
        result: { refundId: "r-1042" },
      },
    });
  });
});

describe("idempotencyKeyOf", () => {
  const key: LedgerKey = { threadId: "t1", toolCallId: "call_1", digest: DIGEST };

  it("is a stable hex SHA-256 of the whole key, independent of property order", () => {
    const value = idempotencyKeyOf(key);
    expect(value).toMatch(/^[0-9a-f]{64}$/);
    expect(idempotencyKeyOf({ digest: DIGEST, toolCallId: "call_1", threadId: "t1" })).toBe(value);
    expect(idempotencyKeyOf({ ...key, digest: OTHER_DIGEST })).not.toBe(value);
    expect(idempotencyKeyOf({ ...key, toolCallId: "call_2" })).not.toBe(value);
    expect(idempotencyKeyOf({ ...key, threadId: "t2" })).not.toBe(value);
    // Fields are not concatenated ambiguously.
    expect(idempotencyKeyOf({ threadId: "a|b", toolCallId: "c", digest: "d" })).not.toBe(
      idempotencyKeyOf({ threadId: "a", toolCallId: "b|c", digest: "d" }),
    );
  });

  it("refuses a malformed key", () => {
    expect(() => idempotencyKeyOf({ ...key, digest: "" })).toThrow(LedgerInputError);
  });
});

describe("PostgresEffectLedger options", () => {
  it("takes the connection string from EART_DATABASE_URL, or refuses to guess", async () => {
    const saved = process.env.EART_DATABASE_URL;
    try {
      delete process.env.EART_DATABASE_URL;
      expect(() => new PostgresEffectLedger()).toThrow(EartConfigError);
      expect(() => new PostgresEffectLedger({ connectionString: PG_URL, pool: newPool() })).toThrow(/either connectionString or pool/);
      expect(() => new PostgresEffectLedger({ conn: PG_URL } as never)).toThrow(EartConfigError);
      process.env.EART_DATABASE_URL = PG_URL;
      const ledger = new PostgresEffectLedger();
      try {
        const key = { threadId: `test-ledger-${randomUUID()}`, toolCallId: "c", digest: DIGEST };
        expect((await ledger.begin(key)).claimed).toBe(true);
      } finally {
        await ledger.close();
      }
    } finally {
      if (saved === undefined) delete process.env.EART_DATABASE_URL;
      else process.env.EART_DATABASE_URL = saved;
    }
  });

  it("migrates idempotently when several ledgers start at once", async () => {
    const ledgers = Array.from({ length: 4 }, () => new PostgresEffectLedger({ pool: newPool() }));
    const threadId = `test-ledger-${randomUUID()}`;
    const begins = await Promise.all(ledgers.map((l) => l.begin({ threadId, toolCallId: "c", digest: DIGEST })));
    expect(begins.filter((b) => b.claimed)).toHaveLength(1);
  });
});

describe("PostgresEffectLedger faults: bounded, typed, reads retried once", () => {
  // A schema of this test's own, so that locking its table blocks no other suite.
  const schema = `eart_ledger_faults_${process.pid}_${randomUUID().slice(0, 8)}`;
  const app = `eart_ledger_faults_${randomUUID().slice(0, 8)}`;
  let admin: pg.Pool;
  beforeAll(async () => {
    admin = newPool();
    await admin.query(`CREATE SCHEMA "${schema}"`);
  });
  afterAll(async () => {
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  });
  const schemaPool = (extra: pg.PoolConfig = {}) => {
    const pool = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${schema}`, application_name: app, ...extra });
    pools.push(pool);
    return pool;
  };
  /**
   * Waits until a session of the ledger (not `not`) waits on a lock, i.e. its statement is blocked,
   * and returns its pid; fails if `pending`, the ledger call, settles first.
   */
  const blockedSession = async (pending: Promise<unknown>, not?: number): Promise<number> => {
    let settled: { value?: unknown; error?: unknown } | undefined;
    pending.then(
      (value) => (settled = { value }),
      (error: unknown) => (settled = { error }),
    );
    while (!settled) {
      const { rows } = await admin.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, [app]);
      const pid = rows.find((r) => r.pid !== not)?.pid;
      if (pid !== undefined) return pid;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`the ledger call settled before its statement was seen blocked: ${String(settled.error ?? JSON.stringify(settled.value))}`);
  };
  /** Holds an ACCESS EXCLUSIVE lock on the ledger's table until the returned function is called. */
  const lockTable = async () => {
    const client = await admin.connect();
    await client.query("BEGIN");
    await client.query(`LOCK TABLE "${schema}".eart_effect_ledger IN ACCESS EXCLUSIVE MODE`);
    return async () => {
      await client.query("COMMIT");
      client.release();
    };
  };

  it("a read whose connection the server terminates mid-statement is run again on a new connection", async () => {
    const ledger = new PostgresEffectLedger({ pool: schemaPool() });
    const key = { threadId: `faults-${randomUUID()}`, toolCallId: "c1", digest: DIGEST };
    await ledger.begin(key);
    const unlock = await lockTable();
    const got = ledger.get(key);
    try {
      const first = await blockedSession(got);
      await admin.query(`SELECT pg_terminate_backend($1)`, [first]);
      await blockedSession(got, first); // the retry, on another session
    } finally {
      await unlock();
    }
    expect(await got).toMatchObject({ key, status: "started", attempt: 1 });
  });

  it("a write whose connection is terminated fails with StoreError store_unavailable and is not run again", async () => {
    const ledger = new PostgresEffectLedger({ pool: schemaPool() });
    const key = { threadId: `faults-${randomUUID()}`, toolCallId: "c1", digest: DIGEST };
    await ledger.get(key); // migrated
    const unlock = await lockTable();
    const begun = ledger.begin(key).catch((e: unknown) => e);
    try {
      await admin.query(`SELECT pg_terminate_backend($1)`, [await blockedSession(begun)]);
    } finally {
      await unlock();
    }
    const error = await begun;
    expect(error).toBeInstanceOf(StoreError);
    expect(error).toMatchObject({ code: "store_unavailable", store: "effect_ledger", operation: "begin", details: expect.objectContaining({ retried: false, pgCode: "57P01" }) });
    expect(await ledger.get(key)).toBeUndefined();
  });

  it("a finish whose connection is terminated before it committed reads the entry, finds it started, and writes it again", async () => {
    const ledger = new PostgresEffectLedger({ pool: schemaPool() });
    const key = { threadId: `faults-${randomUUID()}`, toolCallId: "c1", digest: DIGEST };
    await ledger.begin(key);
    const unlock = await lockTable();
    const finishing = ledger.finish(key, { status: "succeeded", result: { refundId: 7 } });
    try {
      const first = await blockedSession(finishing);
      await admin.query(`SELECT pg_terminate_backend($1)`, [first]);
      await blockedSession(finishing, first); // reading what the lost statement left
    } finally {
      await unlock();
    }
    expect(await finishing).toBe(true);
    expect(await ledger.get(key)).toMatchObject({ status: "succeeded", result: { refundId: 7 }, attempt: 1 });
    // Finished: a second finish changes nothing, as ever.
    expect(await ledger.finish(key, { status: "failed", error: "late" })).toBe(false);
  });

  it("an operation that gets no connection within timeoutMs fails with StoreError store_timeout", async () => {
    const pool = schemaPool({ max: 1 });
    const ledger = new PostgresEffectLedger({ pool, timeoutMs: 200 });
    const key = { threadId: `faults-${randomUUID()}`, toolCallId: "c1", digest: DIGEST };
    await ledger.get(key);
    const busy = await pool.connect(); // the pool's only connection, taken by something else
    try {
      const error = await ledger.get(key).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect(error).toMatchObject({ code: "store_timeout", store: "effect_ledger", operation: "get" });
    } finally {
      busy.release();
    }
    expect(await ledger.get(key)).toBeUndefined(); // and works again once it can
    expect(() => new PostgresEffectLedger({ pool, timeoutMs: 0 })).toThrow(EartConfigError);
  });

  it("ledgerFor gives a PostgresSaver's pool an 'error' listener", () => {
    const pool = newPool();
    expect(pool.listenerCount("error")).toBe(0);
    ledgerFor({ pool });
    expect(pool.listenerCount("error")).toBeGreaterThan(0);
  });
});

describe("EffectLedger across processes", () => {
  const distEntry = join(process.cwd(), "dist", "src", "index.js");

  /** Starts `n` processes that each call begin() `perProcess` times on one key, all released at once; returns every `claimed`. */
  async function raceProcesses(store: "sqlite" | "postgres", target: string, key: LedgerKey, n: number, perProcess: number): Promise<boolean[]> {
    expect(existsSync(distEntry), "run `npm run build` first").toBe(true);
    const script = join(dir, `begin-${randomUUID()}.mjs`);
    writeFileSync(
      script,
      `import { SqliteEffectLedger } from ${JSON.stringify(pathToFileURL(join(dirname(distEntry), "stores", "sqlite", "index.js")).href)};
import { PostgresEffectLedger } from ${JSON.stringify(pathToFileURL(join(dirname(distEntry), "stores", "postgres", "index.js")).href)};
const [store, target, key] = process.argv.slice(2);
const ledger = store === "sqlite" ? new SqliteEffectLedger({ path: target }) : new PostgresEffectLedger({ connectionString: target });
await ledger.get(JSON.parse(key)); // open and migrate before the race
process.stdout.write("ready\\n");
await new Promise((resolve) => process.stdin.once("data", resolve));
const begins = await Promise.all(Array.from({ length: ${perProcess} }, () => ledger.begin(JSON.parse(key))));
process.stdout.write(JSON.stringify(begins.map((b) => b.claimed)) + "\\n");
await ledger.close();
process.exit(0);
`,
    );
    const children = Array.from({ length: n }, () => startReadyChild(script, [store, target, JSON.stringify(key)], "child"));
    await Promise.all(children.map((c) => c.ready));
    for (const c of children) c.child.stdin.write("go\n");
    const claims: boolean[] = [];
    for (const c of children) {
      expect(await c.exited, c.err()).toBe(0);
      claims.push(...(JSON.parse(c.out().split("\n")[1]!) as boolean[]));
    }
    return claims;
  }

  it("SQLite: of 4 processes × 5 concurrent begins on one key, exactly one claims it", async () => {
    const path = join(dir, `${randomUUID()}.sqlite`);
    const key: LedgerKey = { threadId: `test-ledger-${randomUUID()}`, toolCallId: "call_1", digest: DIGEST };
    const claims = await raceProcesses("sqlite", path, key, 4, 5);
    expect(claims).toHaveLength(20);
    expect(claims.filter(Boolean)).toHaveLength(1);
    const ledger = new SqliteEffectLedger({ path });
    closers.push(() => ledger.close());
    expect(await ledger.list(key.threadId)).toMatchObject([{ key, status: "started", attempt: 1 }]);
  });

  it("PostgreSQL: of 4 processes × 5 concurrent begins on one key, exactly one claims it", async () => {
    const key: LedgerKey = { threadId: `test-ledger-${randomUUID()}`, toolCallId: "call_1", digest: DIGEST };
    const claims = await raceProcesses("postgres", PG_URL, key, 4, 5);
    expect(claims).toHaveLength(20);
    expect(claims.filter(Boolean)).toHaveLength(1);
    const ledger = new PostgresEffectLedger({ pool: newPool() });
    expect(await ledger.list(key.threadId)).toMatchObject([{ key, status: "started", attempt: 1 }]);
  });
});

describe("SqliteEffectLedger durability", () => {
  it("syncs every commit (synchronous = FULL), also on a database it shares", async () => {
    const dir = mkdtempSync(join(tmpdir(), "eart-ledger-sync-"));
    const own = new SqliteEffectLedger({ path: join(dir, "own.sqlite") });
    const shared = new Database(join(dir, "shared.sqlite"));
    shared.pragma("journal_mode = WAL");
    shared.pragma("synchronous = NORMAL"); // a caller's setting that would not sync each commit
    expect(shared.pragma("synchronous", { simple: true })).toBe(1);
    new SqliteEffectLedger({ database: shared });
    expect(shared.pragma("synchronous", { simple: true })).toBe(2);
    await expect(own.list("nobody")).resolves.toEqual([]);
    own.close();
    shared.close();
    rmSync(dir, { recursive: true, force: true });
  });
});
