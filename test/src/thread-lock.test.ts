import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { mkdtempSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { MemorySaver } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { EartConfigError, MemoryThreadLock, pendingApproval, ThreadLockLostError, StoreError, ThreadBusyError, threadLockFor, type ThreadLock } from "eart";
import { processInstance, type ProcessInstance } from "../../src/threads/lock.js";
import { advisoryLockKey, PostgresThreadLock } from "eart/postgres";
import { SqliteThreadLock } from "eart/sqlite";
import { resumeThread, runThread } from "eart/graphs";
import { tool } from "@langchain/core/tools";
import { z } from "zod";
import { ask, config, refund, refundSetup } from "../support/refund.js";
import { liveEartChild } from "../support/children.js";

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
  it("SQLite: closing a lock releases what it holds (its runs see lost), and closes the file it opened", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "eart-lock-close-")), "locks.sqlite");
    const first = new SqliteThreadLock({ path: file });
    const release = await first.acquire("t-close");
    const other = new SqliteThreadLock({ path: file });
    await expect(other.acquire("t-close")).rejects.toBeInstanceOf(ThreadBusyError);
    first.close();
    expect(release.lost?.aborted).toBe(true);
    expect(release.lost?.reason).toBeInstanceOf(ThreadLockLostError);
    const again = await other.acquire("t-close");
    await again();
    other.close();
    // The file is closed: the closed lock takes nothing more.
    await expect(first.acquire("t-close-2")).rejects.toThrow();
  });

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

  it("PostgresSaver: one lock (one connection of its own) per pool, and the saver's pool gets an 'error' listener", () => {
    const p = pool();
    const saver = new PostgresSaver(p);
    expect(p.listenerCount("error")).toBe(0);
    const lock = threadLockFor(saver);
    expect(threadLockFor(new PostgresSaver(p))).toBe(lock);
    expect(threadLockFor(new PostgresSaver(pool()))).not.toBe(lock);
    // A connection the server drops while idle in the saver's pool no longer ends the process.
    expect(p.listenerCount("error")).toBeGreaterThan(0);
  });
});

/** Terminates the PostgreSQL sessions holding the advisory locks of these threads; returns how many were terminated. */
async function terminateHolders(admin: pg.Pool, threads: string[]): Promise<number> {
  const { rows } = await admin.query<{ ok: boolean }>(
    `SELECT pg_terminate_backend(pid) AS ok FROM (SELECT DISTINCT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY (SELECT k & x'ffffffffffffffff'::bigint FROM unnest($1::bigint[]) AS k)) holders`,
    [threads.map(advisoryLockKey)],
  );
  return rows.filter((r) => r.ok).length;
}

describe("PostgresThreadLock: a connection of its own, bounded", () => {
  it("never holds a connection of the pool it is given: 30 runs hold their locks while the pool's only connection is busy", async () => {
    // A pool of 1 whose connection a run is using: before, each lock took a connection of the
    // pool for the whole run, so this waited for the pool (here: failed after 2 s).
    const p = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 2_000 });
    pools.push(p);
    const inUse = await p.connect();
    const lock = new PostgresThreadLock({ pool: p });
    const other = new PostgresThreadLock({ pool: pool() });
    try {
      const threads = Array.from({ length: 30 }, (_, i) => unique(`own-${i}`));
      const releases = await Promise.all(threads.map((t) => lock.acquire(t)));
      expect(releases.map((r) => r.lost?.aborted)).toEqual(threads.map(() => false));
      // Held against every other session, and the pool still has only its one connection.
      for (const t of threads) await expect(other.acquire(t)).rejects.toBeInstanceOf(ThreadBusyError);
      expect(p.totalCount).toBe(1);
      expect((await inUse.query<{ one: number }>("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
      await Promise.all(releases.map((r) => r()));
      const again = await other.acquire(threads[0]!);
      await again();
    } finally {
      inUse.release();
      await lock.close();
      await other.close();
    }
  });

  it("keeps two runs of this process apart although their advisory locks share one session", async () => {
    const lock = new PostgresThreadLock({ pool: pool() });
    try {
      const thread = unique("same");
      const outcomes = await Promise.allSettled(Array.from({ length: 8 }, () => lock.acquire(thread)));
      const won = outcomes.filter((o): o is PromiseFulfilledResult<Awaited<ReturnType<ThreadLock["acquire"]>>> => o.status === "fulfilled");
      expect(won).toHaveLength(1);
      for (const o of outcomes.filter((o) => o.status === "rejected")) expect((o as PromiseRejectedResult).reason).toBeInstanceOf(ThreadBusyError);
      await won[0]!.value();
      // Released on the server too (a session's advisory locks count up and down).
      const other = new PostgresThreadLock({ pool: pool() });
      await (await other.acquire(thread))();
      await other.close();
    } finally {
      await lock.close();
    }
  });

  it("when its connection drops, every lock on it is lost (ThreadLockLostError), and the next acquire connects again", async () => {
    const lock = new PostgresThreadLock({ pool: pool() });
    try {
      const threads = [unique("drop-a"), unique("drop-b")];
      const [a, b] = await Promise.all(threads.map((t) => lock.acquire(t)));
      expect(await terminateHolders(pool(), threads)).toBe(1); // one session holds both
      for (const release of [a!, b!]) {
        await new Promise<void>((resolve) => (release.lost!.aborted ? resolve() : release.lost!.addEventListener("abort", () => resolve(), { once: true })));
        expect(release.lost!.reason).toBeInstanceOf(ThreadLockLostError);
        await release();
      }
      const again = await lock.acquire(threads[0]!);
      expect(again.lost?.aborted).toBe(false);
      await again();
    } finally {
      await lock.close();
    }
  });

  it("bounds connecting: a server that never answers fails acquire with a typed StoreError, not a hang", async () => {
    const sockets: Socket[] = [];
    const server = createServer((socket) => sockets.push(socket)); // accepts, never answers
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    const lock = new PostgresThreadLock({ connectionString: `postgresql://postgres@127.0.0.1:${port}/test`, timeoutMs: 300 });
    try {
      const error = await lock.acquire(unique("hang")).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect(error).toMatchObject({ code: "store_timeout", store: "thread_lock", operation: "connect" });
    } finally {
      await lock.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("refuses bad bounds with a typed config error", () => {
    expect(() => new PostgresThreadLock({ pool: pool(), timeoutMs: 0 })).toThrow(EartConfigError);
    expect(() => new PostgresThreadLock({ pool: pool(), idleTimeoutMs: -1 })).toThrow(EartConfigError);
  });
});

// ---------------------------------------------------------------------------------------------
// Lock ownership is a process instance, not a pid

/** A live child process running the built eart: takes `thread` in `file` if given, prints its process instance, and waits. */
const liveChild = (file?: string, thread?: string) =>
  liveEartChild<ProcessInstance>(file ? `await new eart.SqliteThreadLock({ path: ${JSON.stringify(file)} }).acquire(${JSON.stringify(thread)});` : "");

describe("SqliteThreadLock: locks of dead instances are taken over, also when their pid is ours again", () => {
  const rowOf = (file: string, thread: string) => {
    const db = new Database(file, { readonly: true });
    try {
      return db.prepare("SELECT pid, instance, started FROM eart_thread_locks WHERE thread_id = ?").get(thread) as { pid: number; instance: string | null; started: string | null };
    } finally {
      db.close();
    }
  };
  const plant = (file: string, thread: string, row: Record<string, unknown>) => {
    const db = new Database(file);
    try {
      const columns = Object.keys(row);
      db.prepare(`INSERT INTO eart_thread_locks (thread_id, owner, ${columns.join(", ")}) VALUES (?, 'planted', ${columns.map(() => "?").join(", ")})`).run(thread, ...Object.values(row));
    } finally {
      db.close();
    }
  };

  it("a lock row of an earlier eart with this process's pid, written before this process started (a restarted PID-1 container), is taken over", async () => {
    const file = lockFile();
    const thread = unique("pid1-legacy");
    // The table as the first version made it, and a row its crashed process left, with the pid this process has now.
    const db = new Database(file);
    db.exec("CREATE TABLE eart_thread_locks (thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, acquired_at TEXT NOT NULL)");
    const beforeThisProcess = new Date(Date.now() - process.uptime() * 1000 - 60_000).toISOString();
    db.prepare("INSERT INTO eart_thread_locks VALUES (?, 'crashed', ?, ?, ?)").run(thread, process.pid, hostname(), beforeThisProcess);
    db.close();
    const release = await new SqliteThreadLock({ path: file }).acquire(thread);
    expect(rowOf(file, thread)).toMatchObject({ pid: process.pid, instance: processInstance().instance });
    await release();
  });

  it("a lock row with this process's pid but another instance's start time is taken over; a live instance's is not", async () => {
    const file = lockFile();
    const thread = unique("pid1");
    const live = liveChild(file, thread);
    try {
      const child = await live.instance;
      const lock = new SqliteThreadLock({ path: file });
      // The child is alive: its lock holds.
      const busy = await lock.acquire(thread).catch((e: unknown) => e);
      expect(busy).toBeInstanceOf(ThreadBusyError);
      expect((busy as ThreadBusyError).message).toContain(`process ${child.pid}`);
      // What a restarted container finds: the row of an instance that had the pid this process has now.
      const other = unique("pid1-restarted");
      plant(file, other, { pid: process.pid, host: child.host, acquired_at: new Date().toISOString(), instance: child.instance, pid_ns: child.pidNamespace, started: child.started, heartbeat_at: Date.now() });
      const release = await lock.acquire(other);
      expect(rowOf(file, other)).toMatchObject({ pid: process.pid, instance: processInstance().instance, started: processInstance().started });
      await release();
      // A reused pid: the child's pid, with another start time, is another process.
      const reused = unique("reused");
      plant(file, reused, { pid: child.pid, host: child.host, acquired_at: new Date().toISOString(), instance: "gone", pid_ns: child.pidNamespace, started: `${child.started}0`, heartbeat_at: Date.now() });
      await (await lock.acquire(reused))();
      // Killed: its own lock is taken over.
      await live.kill();
      await (await lock.acquire(thread))();
    } finally {
      await live.kill();
    }
  });

  it("a holder it cannot check (another container's pid namespace) holds while it renews, and is taken over when it stops", async () => {
    const file = lockFile();
    const lock = new SqliteThreadLock({ path: file, staleMs: 60_000 });
    const me = processInstance();
    const elsewhere = { pid: process.pid, host: me.host, instance: "elsewhere", pid_ns: "pid:[1]", started: "other-boot/1" };
    const renewed = unique("ns-renewed");
    plant(file, renewed, { ...elsewhere, acquired_at: new Date(Date.now() - 3_600_000).toISOString(), heartbeat_at: Date.now() });
    await expect(lock.acquire(renewed)).rejects.toBeInstanceOf(ThreadBusyError);
    const silent = unique("ns-silent");
    plant(file, silent, { ...elsewhere, acquired_at: new Date(Date.now() - 3_600_000).toISOString(), heartbeat_at: Date.now() - 120_000 });
    await (await lock.acquire(silent))();
  });

  it("renews its own locks, and tells the run through `lost` when its row was taken", async () => {
    const file = lockFile();
    const thread = unique("renew");
    const lock = new SqliteThreadLock({ path: file, staleMs: 60 });
    const release = await lock.acquire(thread);
    const db = new Database(file);
    try {
      const beat = () => (db.prepare("SELECT heartbeat_at AS at FROM eart_thread_locks WHERE thread_id = ?").get(thread) as { at: number }).at;
      const first = beat();
      while (beat() === first) await new Promise((r) => setTimeout(r, 10));
      expect(release.lost?.aborted).toBe(false);
      db.prepare("UPDATE eart_thread_locks SET owner = 'someone-else' WHERE thread_id = ?").run(thread);
      await new Promise<void>((resolve) => (release.lost!.aborted ? resolve() : release.lost!.addEventListener("abort", () => resolve(), { once: true })));
      expect(release.lost!.reason).toBeInstanceOf(ThreadLockLostError);
      await release();
      // Its release did not remove the other holder's row.
      expect(db.prepare("SELECT owner FROM eart_thread_locks WHERE thread_id = ?").get(thread)).toEqual({ owner: "someone-else" });
    } finally {
      db.close();
    }
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
