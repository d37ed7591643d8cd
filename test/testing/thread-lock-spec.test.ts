import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { EartConfigError, MemoryThreadLock, ThreadBusyError, type ReleaseThreadLock, type ThreadLock } from "eart";
import { PostgresThreadLock } from "eart/postgres";
import { SqliteThreadLock } from "eart/sqlite";
import { threadLockSpec, type ThreadLockSpecOptions } from "eart/testing";
import { failingCases as failingOf, PG_URL } from "../support/specs.js";


const dir = mkdtempSync(join(tmpdir(), "eart-lock-spec-"));
// Advisory locks are database-wide, not per schema: the spec's thread ids are unique per test.
// Each PostgresThreadLock holds a connection of its own, which the spec closes after each test.
const pool = new pg.Pool({ connectionString: PG_URL });
// The SQLite lock does not own a connection it could close: this file opens and closes them.
const databases: Database.Database[] = [];
afterAll(async () => {
  for (const db of databases) if (db.open) db.close();
  await pool.end();
  rmSync(dir, { recursive: true, force: true });
});

threadLockSpec("MemoryThreadLock", () => new MemoryThreadLock(), { describe, it, expect }, { singleProcess: true });

/** The file of each SQLite lock, for reopening it. */
const paths = new WeakMap<ThreadLock, string>();
/** A short lease, so the spec holds a lock past it quickly (the default is 30 s). */
const STALE_MS = 300;
const sqliteLock = (path: string) => {
  const database = new Database(path);
  database.pragma("journal_mode = WAL");
  databases.push(database);
  const lock = new SqliteThreadLock({ database, staleMs: STALE_MS });
  paths.set(lock, path);
  return lock;
};

threadLockSpec("SqliteThreadLock", () => sqliteLock(join(dir, `${randomUUID()}.sqlite`)), { describe, it, expect }, {
  reopen: (lock) => sqliteLock(paths.get(lock)!),
  leaseMs: STALE_MS,
});

threadLockSpec("PostgresThreadLock", () => new PostgresThreadLock({ pool }), { describe, it, expect }, {
  reopen: () => new PostgresThreadLock({ pool }),
});

const failingCases = (make: () => ThreadLock, options?: ThreadLockSpecOptions) => failingOf(threadLockSpec, make, { singleProcess: true, ...options });

/** An in-memory lock with one flaw chosen by `flaw`. */
class FlawedLock implements ThreadLock {
  readonly #held = new Set<string>();
  constructor(readonly flaw: "waits" | "release-frees-anyone" | "check-then-take" | "accepts-any-id") {}

  async acquire(threadId: string): Promise<ReleaseThreadLock> {
    if (this.flaw !== "accepts-any-id" && (typeof threadId !== "string" || threadId === "")) throw new EartConfigError("threadId", "must be a non-empty string");
    if (this.flaw === "waits") while (this.#held.has(threadId)) await new Promise((resolve) => setTimeout(resolve, 5));
    const busy = this.#held.has(threadId);
    if (this.flaw === "check-then-take") await new Promise((resolve) => setTimeout(resolve, 1));
    if (busy) throw new ThreadBusyError(threadId, "this process");
    this.#held.add(threadId);
    let released = false;
    return async () => {
      if (released && this.flaw !== "release-frees-anyone") return;
      released = true;
      this.#held.delete(threadId);
    };
  }
}

describe("threadLockSpec catches a lock that breaks its contract", () => {
  it("a lock that waits for a held thread instead of refusing it", async () => {
    const failures = await failingCases(() => new FlawedLock("waits"), { busyWithinMs: 100 });
    expect(failures.some((t) => t.startsWith("a held thread refuses a second acquire"))).toBe(true);
  });

  it("a release that, called again, frees a later holder's lock", async () => {
    const failures = await failingCases(() => new FlawedLock("release-frees-anyone"));
    expect(failures).toEqual(["release is idempotent: a second call resolves and never frees a later holder's lock"]);
  });

  it("an acquire that checks, then takes in a second step", async () => {
    const failures = await failingCases(() => new FlawedLock("check-then-take"));
    expect(failures).toEqual(["concurrent acquires of one thread, across handles: exactly one wins, every other gets ThreadBusyError"]);
  });

  it("an acquire that takes any thread id", async () => {
    const failures = await failingCases(() => new FlawedLock("accepts-any-id"));
    expect(failures.some((t) => t.startsWith("refuses an empty thread id"))).toBe(true);
  });
});
