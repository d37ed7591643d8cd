import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemorySaver } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { advisoryLockKey, EartConfigError, MemoryThreadLock, pendingApproval, ThreadLockLostError, PostgresThreadLock, SqliteThreadLock, ThreadBusyError, threadLockFor, type ThreadLock } from "eart";
import { resumeThread, runThread } from "eart/graphs";
import { tool } from "@langchain/core/tools";
import { z } from "zod";
import { ask, config, refund, refundSetup } from "../support/refund.js";

// A real PostgreSQL (.ci/run starts it). No skip: without it these tests fail.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const pools: pg.Pool[] = [];
const pool = () => {
  const p = new pg.Pool({ connectionString: url });
  pools.push(p);
  return p;
};
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
});

const require = createRequire(import.meta.url);
const unique = (prefix: string) => `${prefix}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;

function lockSpec(name: string, make: () => [ThreadLock, ThreadLock]) {
  describe(`${name}: one holder per thread`, () => {
    it("refuses a second holder with ThreadBusyError until the first releases", async () => {
      const [a, b] = make();
      const thread = unique("lock");
      const release = await a.acquire(thread);
      const error = await b.acquire(thread).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ThreadBusyError);
      expect((error as ThreadBusyError).threadId).toBe(thread);
      expect((error as ThreadBusyError).code).toBe("thread_busy");
      // Other threads are not affected.
      const other = await b.acquire(`${thread}-other`);
      await other();
      await release();
      await release(); // twice is harmless
      const again = await b.acquire(thread);
      await again();
    });

    it("refuses a thread id that is not a non-empty string", async () => {
      const [a] = make();
      await expect(a.acquire("")).rejects.toBeInstanceOf(EartConfigError);
    });
  });
}

lockSpec("MemoryThreadLock", () => {
  const lock = new MemoryThreadLock();
  return [lock, lock];
});
const lockFile = () => join(mkdtempSync(join(tmpdir(), "eart-lock-")), "locks.sqlite");
lockSpec("SqliteThreadLock", () => {
  const file = lockFile();
  return [new SqliteThreadLock({ path: file }), new SqliteThreadLock({ path: file })];
});
lockSpec("PostgresThreadLock", () => [new PostgresThreadLock({ pool: pool() }), new PostgresThreadLock({ pool: pool() })]);

describe("locks left by dead holders", () => {
  it("SQLite: a lock whose process has died is taken over", async () => {
    const file = lockFile();
    const thread = unique("dead");
    // A child process takes the lock and exits without releasing it.
    const script = `
      const Database = require(${JSON.stringify(require.resolve("better-sqlite3"))});
      const db = new Database(${JSON.stringify(file)});
      db.exec("CREATE TABLE IF NOT EXISTS eart_thread_locks (thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, acquired_at TEXT NOT NULL)");
      db.prepare("INSERT INTO eart_thread_locks VALUES (?, 'x', ?, ?, ?)").run(${JSON.stringify(thread)}, process.pid, require("os").hostname(), new Date().toISOString());
    `;
    expect(spawnSync(process.execPath, ["-e", script]).status).toBe(0);
    const lock = new SqliteThreadLock({ path: file });
    const release = await lock.acquire(thread);
    const db = new Database(file, { readonly: true });
    expect(db.prepare("SELECT pid FROM eart_thread_locks WHERE thread_id = ?").get(thread)).toEqual({ pid: process.pid });
    db.close();
    await release();
  });

  it("PostgreSQL: the advisory lock goes away when the holder process is killed", async () => {
    const thread = unique("dead");
    // A child process takes the thread's advisory lock and is then killed with SIGKILL.
    const script = `
      const pg = require(${JSON.stringify(require.resolve("pg"))});
      const client = new pg.Client({ connectionString: ${JSON.stringify(url)} });
      client.connect().then(() => client.query("SELECT pg_advisory_lock($1::bigint)", [${JSON.stringify(advisoryLockKey(thread))}])).then(() => console.log("locked"));
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => child.stdout.on("data", (d: Buffer) => String(d).includes("locked") && resolve()));
    const other = new PostgresThreadLock({ pool: pool() });
    await expect(other.acquire(thread)).rejects.toBeInstanceOf(ThreadBusyError);
    const exited = new Promise((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");
    // The server notices the closed connection and drops its session locks.
    let release: (() => Promise<void>) | undefined;
    for (let i = 0; i < 100 && !release; i++) {
      release = await other.acquire(thread).catch(async (e: unknown) => {
        if (!(e instanceof ThreadBusyError)) throw e;
        await new Promise((r) => setTimeout(r, 50));
        return undefined;
      });
    }
    expect(release).toBeTypeOf("function");
    await release!();
  });
});

describe("a lock lost while held", () => {
  it("PostgreSQL: a killed session aborts `lost` with ThreadLockLostError instead of crashing the process", async () => {
    const thread = unique("lost");
    const release = await new PostgresThreadLock({ pool: pool() }).acquire(thread);
    expect(release.lost?.aborted).toBe(false);
    const admin = pool();
    const killed = await admin.query(
      `SELECT pg_terminate_backend(l.pid) AS ok FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
         AND ((l.classid::bigint << 32) | l.objid::bigint) = ($1::bigint & x'ffffffffffffffff'::bigint)`,
      [advisoryLockKey(thread)],
    );
    expect(killed.rows).toEqual([{ ok: true }]);
    await new Promise<void>((resolve) => (release.lost!.aborted ? resolve() : release.lost!.addEventListener("abort", () => resolve(), { once: true })));
    expect(release.lost!.reason).toBeInstanceOf(ThreadLockLostError);
    expect((release.lost!.reason as ThreadLockLostError).threadId).toBe(thread);
    await release(); // does not throw; the dead client is discarded
    const again = await new PostgresThreadLock({ pool: pool() }).acquire(thread);
    await again();
  });
});

describe("threadLockFor", () => {
  it("picks the lock that fits the checkpointer", () => {
    const memory = new MemorySaver();
    expect(threadLockFor(memory)).toBeInstanceOf(MemoryThreadLock);
    expect(threadLockFor(memory)).toBe(threadLockFor(memory));
    expect(threadLockFor(new SqliteSaver(new Database(":memory:")))).toBeInstanceOf(SqliteThreadLock);
    const saver = new PostgresSaver(pool());
    expect(threadLockFor(saver)).toBeInstanceOf(PostgresThreadLock);
  });
});

describe("the governed agent holds the thread's lock", () => {
  it("refuses a second concurrent resume with ThreadBusyError; the refund runs once", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const setup = refundSetup([[refund("c1", 740)]], {
      tools: (t) => [
        t.lookupOrder,
        t.viewPaymentDetails,
        tool(
          async (args, cfg) => {
            entered();
            await gate;
            return t.issueRefund.invoke(args, cfg);
          },
          { name: "issue_refund", schema: z.object({ orderId: z.string(), amount: z.number(), reason: z.string().optional() }) },
        ),
      ],
    });
    await setup.agent.invoke(ask(), config("busy-1"));
    // Supervisor sam answers: he is the principal of the resuming run, and the decision carries the request's digest.
    const digest = pendingApproval(await setup.agent.getState(config("busy-1")))!.requests[0]!.digest;
    const resume = { decisions: [{ toolCallId: "c1", type: "approve", digest }] };
    const first = resumeThread(setup.agent, resume, config("busy-1", "sam"));
    await inside;
    const second = await resumeThread(setup.agent, resume, config("busy-1", "sam")).catch((e: unknown) => e);
    expect(second).toBeInstanceOf(ThreadBusyError);
    const direct = await setup.agent.invoke(null, config("busy-1")).catch((e: unknown) => e);
    expect(direct).toBeInstanceOf(ThreadBusyError);
    release();
    const done = await first;
    expect(done.approval).toBeUndefined();
    expect(done.recovery).toBeUndefined();
    expect(setup.refunds()).toHaveLength(1);
    // Released: the thread can be used again.
    const run = await runThread(setup.agent, ask("thanks"), config("busy-1"));
    expect(run.values).toHaveProperty("messages");
  });

  it("resumeThread refuses an unknown thread with a typed error", async () => {
    const setup = refundSetup([]);
    const error = await resumeThread(setup.agent, { decisions: [] }, config("nope", "sam")).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe("thread_unknown");
  });
});
