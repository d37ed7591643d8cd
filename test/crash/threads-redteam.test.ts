/**
 * Red-team pass on RUNNING THREADS, as an attacker and as bad luck: the per-thread lock
 * (PostgreSQL advisory lock on a connection of its own, SQLite lock table with takeover of dead
 * holders, in-process lock), `runThread` / `resumeThread`, `unfinishedThreads` / `continueThread`,
 * and the resume guard's read of the thread under the lock. The guarantee attacked: one run at a
 * time per thread; a second concurrent run or resume throws ThreadBusyError before anything runs;
 * nothing runs twice; a crashed or stuck holder never lets two runs act together, and never wedges
 * a thread for good.
 *
 * Found, and now closed (each a test below that failed before its fix):
 * 1. runThread / resumeThread (and so continueThread / `eart continue` on a graph that does not
 *    take its own lock) never handed the lock's `lost` signal to the run: when the PostgreSQL
 *    lock's session was killed, or a SQLite row taken over, the run went on without the lock while
 *    another process held the thread. The run is now aborted through its signal, as under the guard.
 * 2. A PostgreSQL lock whose network went silent while the server dropped the session (a failover)
 *    was taken over and its run acted anyway (keepalive notices in hours): the lock's connection
 *    now answers a heartbeat every `timeoutMs / 2` while it holds locks.
 * 3. SQLite: a release that met SQLITE_BUSY past busy_timeout was dropped: the thread stayed
 *    locked by a live process until it restarted, and a finished run was reported failed. The
 *    release is now retried at each beat and never fails the run.
 * 4. SQLite: a worker thread that died holding a lock left it held for the life of the process
 *    (same pid, same start time read as alive): another realm of the process is now known by its
 *    renewals only.
 * 5. PostgreSQL: a server idle_session_timeout killed the lock's idle session under a working run:
 *    the lock's connection turns it off for itself.
 * 6. updateState was not under the thread lock: one made while a run held the thread was accepted
 *    and then silently dropped. It now takes the lock (ThreadBusyError while a run holds it).
 * 7. unfinishedThreads listed a thread whose run was under way as one that stopped: a thread
 *    whose lock is held is not listed, and continueThread of it is ThreadBusyError.
 * 8. The PostgreSQL advisory-lock key named the thread id only: two tenants in two schemas of one
 *    database blocked each other's threads of the same id (only runs were blocked, nothing
 *    crossed). The key is now in the space of the schema the lock's search_path resolves to.
 * 9. A SQLite holder in another container whose event loop stalled past staleMs was taken over as
 *    designed and acted once more when it woke, before its heartbeat told it. Each hold's fence
 *    now reads its lock row before each checkpoint the guard's graph saves (and each write of
 *    eart's stores), so it stops at the next step's boundary with ThreadLockLostError.
 * Held (plain `it`): a live same-host holder stalled far past staleMs is never taken over; four
 * processes racing to take over one dead holder get one lock; a tool re-entering its own thread
 * gets ThreadBusyError without deadlock; continueThread of a running thread, a second supervisor's
 * answer beside a continue of a recorded approval, and a customer's message beside an approval
 * under guardAgent all get ThreadBusyError with one refund; odd thread ids (NUL, 64 KB, look-alike
 * Unicode, lone surrogates) get their own locks on all three backends; a PostgreSQL holder in a
 * terminated worker thread frees its lock.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { HumanMessage } from "@langchain/core/messages";
import { Annotation, Command, END, interrupt, MemorySaver, START, StateGraph } from "@langchain/langgraph";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tool } from "@langchain/core/tools";
import { z } from "zod";
import { eartErrorOf, MemoryAuditLog, MemoryThreadLock, pendingApproval, ThreadBusyError, ThreadLockLostError, type AuditEvent, type AuditEventInput, type ReleaseThreadLock, type ThreadLock } from "eart";
import { advisoryLockKey, PostgresThreadLock } from "eart/postgres";
import { SqliteThreadLock } from "eart/sqlite";
import { continueThread, defineApp, guardResumes, resumeThread, runThread, unfinishedThreads } from "eart/graphs";
import { freezingProxy } from "../support/pg-proxy.js";
import { ask, config, lookup, refund, refundSetup, type Call } from "../support/refund.js";
import { middlewareRefundSetup } from "../support/middleware-agent.js";
import { startJsonLinesChild, type JsonLinesChild } from "../support/children.js";
import { processInstance } from "../../src/threads/lock.js";

const PG_URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const CHILD = fileURLToPath(new URL("./threads-redteam-child.mjs", import.meta.url));
const DIST = new URL("../../dist/src/index.js", import.meta.url);
const unique = (prefix: string) => `zzt-${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => unknown)[] = [];
let admin: pg.Pool;
const dir = mkdtempSync(join(tmpdir(), "eart-zz-threads-"));

beforeAll(() => {
  if (!existsSync(DIST)) throw new Error(`${DIST.pathname} is missing: run "npm run build" before these tests`);
  admin = new pg.Pool({ connectionString: PG_URL, max: 2 });
  admin.on("error", () => {});
});

afterAll(async () => {
  for (const clean of cleanups.reverse()) await Promise.resolve(clean()).catch(() => {});
  await admin?.end();
  rmSync(dir, { recursive: true, force: true });
});

const pgPool = () => {
  const p = new pg.Pool({ connectionString: PG_URL, max: 2 });
  p.on("error", () => {});
  cleanups.push(() => p.end());
  return p;
};

/** Terminates the PostgreSQL sessions holding the advisory locks of these threads; returns how many. */
async function terminateHolders(threads: string[]): Promise<number> {
  const { rows } = await admin.query<{ ok: boolean }>(
    `SELECT pg_terminate_backend(pid) AS ok FROM (SELECT DISTINCT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY (SELECT k & x'ffffffffffffffff'::bigint FROM unnest($1::bigint[]) AS k)) holders`,
    [threads.map(advisoryLockKey)],
  );
  return rows.filter((r) => r.ok).length;
}

/** Tries `lock.acquire(thread)` until it is granted (ThreadBusyError meanwhile); gives up after `tries`. */
async function acquireWhenFree(lock: ThreadLock, thread: string, tries = 200, everyMs = 25): Promise<ReleaseThreadLock | undefined> {
  for (let i = 0; i < tries; i++) {
    try {
      return await lock.acquire(thread);
    } catch (error) {
      if (!(error instanceof ThreadBusyError)) throw error;
      await sleep(everyMs);
    }
  }
  return undefined;
}

/** A lock that forwards to another and keeps what each acquire returned (to watch its `lost`). */
function watched(inner: ThreadLock): ThreadLock & { held: ReleaseThreadLock[] } {
  const held: ReleaseThreadLock[] = [];
  return {
    held,
    async acquire(threadId: string) {
      const release = await inner.acquire(threadId);
      held.push(release);
      return release;
    },
  };
}

const abortedOnce = (signal: AbortSignal | undefined) =>
  new Promise<void>((resolve) => (signal!.aborted ? resolve() : signal!.addEventListener("abort", () => resolve(), { once: true })));

const settle = (p: Promise<unknown>) =>
  p.then(
    () => "completed",
    (e: unknown) => e,
  );

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
}
const deferred = (): Deferred => {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
};

/**
 * A graph of its own (no eart node): `ask` pauses with interrupt() when `{ pause: true }` was given,
 * `wait` blocks until the test opens its gate, `act` is the side effect. Each step records which run
 * (configurable.run) did it, in order.
 */
function ownGraph(checkpointer = new MemorySaver()) {
  const log: string[] = [];
  const gate = deferred();
  const inside = new Map<string, Deferred>();
  const entered = (run: string) => {
    if (!inside.has(run)) inside.set(run, deferred());
    return inside.get(run)!;
  };
  const State = Annotation.Root({
    pause: Annotation<boolean>({ reducer: (_a, b) => b, default: () => false }),
    steps: Annotation<string[]>({ reducer: (a, b) => [...a, ...b], default: () => [] }),
  });
  const runOf = (config: { configurable?: Record<string, unknown> }) => String(config.configurable?.run ?? "?");
  const graph = new StateGraph(State)
    .addNode("ask", (state) => {
      if (state.pause) interrupt({ question: "go on?" });
      return { steps: ["ask"] };
    })
    .addNode("wait", async (_state, config) => {
      const run = runOf(config);
      log.push(`${run}:wait`);
      entered(run).resolve();
      await gate.promise;
      return { steps: [`${run}:wait`] };
    })
    .addNode("act", (_state, config) => {
      log.push(`${runOf(config)}:act`);
      return { steps: [`${runOf(config)}:act`] };
    })
    .addEdge(START, "ask")
    .addEdge("ask", "wait")
    .addEdge("wait", "act")
    .addEdge("act", END)
    .compile({ checkpointer });
  return { graph, log, open: gate.resolve, inside: (run: string) => entered(run).promise };
}

const cfg = (thread: string, run: string) => ({ configurable: { thread_id: thread, run } });

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("a lock lost while its run goes on", () => {
  it("runThread on a graph of one's own, PostgreSQL lock: the lock's connection is killed mid-run; the run stops (ThreadLockLostError) and never acts while another process holds the thread", async () => {
    const thread = unique("rt-pg-lost");
    const mine = watched(new PostgresThreadLock({ pool: pgPool() }));
    const other = new PostgresThreadLock({ pool: pgPool() });
    cleanups.push(() => other.close());
    const g = ownGraph();
    const runA = settle(runThread(g.graph, { steps: [] }, cfg(thread, "A"), { lock: mine }));
    await g.inside("A");
    // The lock's backend is terminated (failover, restart, an idle-session killer): the lock is gone,
    // and the lock itself says so to its holder.
    expect(await terminateHolders([thread])).toBe(1);
    await abortedOnce(mine.held[0]!.lost);
    expect(mine.held[0]!.lost!.reason).toBeInstanceOf(ThreadLockLostError);
    // Another process takes the thread now, as it may.
    const releaseB = await acquireWhenFree(other, thread);
    expect(releaseB).toBeTypeOf("function");
    g.open();
    const outcome = await runA;
    await releaseB!();
    // The guarantee: run A does not act while B holds the thread.
    expect(g.log).not.toContain("A:act");
    expect(outcome).toBeInstanceOf(ThreadLockLostError);
  });

  it("resumeThread on a graph of one's own, SQLite lock: its row is taken over mid-run; the run stops and never acts while the new holder has the thread", async () => {
    const file = join(dir, "resume-takeover.sqlite");
    const thread = unique("rt-sqlite-taken");
    const mine = watched(new SqliteThreadLock({ path: file, staleMs: 90 }));
    const g = ownGraph();
    await runThread(g.graph, { pause: true, steps: [] }, cfg(thread, "A"), { lock: mine });
    expect(mine.held).toHaveLength(1);
    const runA = settle(resumeThread(g.graph, "yes", cfg(thread, "A"), { lock: mine }));
    await g.inside("A");
    // What a takeover looks like to the holder: another instance's row (as after staleMs without a beat).
    const db = new Database(file);
    cleanups.push(() => db.close());
    expect(db.prepare("UPDATE eart_thread_locks SET owner = 'other-process', instance = 'other' WHERE thread_id = ?").run(thread).changes).toBe(1);
    await abortedOnce(mine.held[1]!.lost);
    expect(mine.held[1]!.lost!.reason).toBeInstanceOf(ThreadLockLostError);
    g.open();
    const outcome = await runA;
    expect(g.log).not.toContain("A:act");
    expect(outcome).toBeInstanceOf(ThreadLockLostError);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
// Child processes (./threads-redteam-child.mjs on the built package) and a network that can fail silently.

/** A child on ./threads-redteam-child.mjs running `job`, killed when the file's tests end. */
function startChild(job: Record<string, unknown>): JsonLinesChild {
  const child = startJsonLinesChild([CHILD], { EART_THREADS_JOB: JSON.stringify(job) });
  cleanups.push(child.kill);
  return child;
}

/** {@link freezingProxy} to the test's PostgreSQL, closed when the file's tests end. */
async function frozenLater(): Promise<{ url: string; freeze(): void }> {
  const proxy = await freezingProxy(PG_URL);
  cleanups.push(proxy.close);
  return proxy;
}

describe("a lock lost without its holder knowing", () => {
  it("guarded graph, PostgreSQL lock: the network to the lock's server goes silent and the server drops the session (failover); another process takes the thread; the first run never acts again", async () => {
    const proxy = await frozenLater();
    const thread = unique("pg-silent");
    const lock = new PostgresThreadLock({ connectionString: proxy.url, timeoutMs: 1_000 });
    const mine = watched(lock);
    const other = new PostgresThreadLock({ pool: pgPool() });
    cleanups.push(() => other.close());
    const g = ownGraph();
    const app = guardResumes(g.graph, { lock: mine });
    const runA = settle(app.invoke({ steps: [] }, cfg(thread, "A")));
    await g.inside("A");
    proxy.freeze();
    // The server side of the lock's session ends (the old primary is gone, or the server timed it out).
    expect(await terminateHolders([thread])).toBe(1);
    const releaseB = await acquireWhenFree(other, thread);
    expect(releaseB).toBeTypeOf("function");
    expect(mine.held[0]!.lost!.aborted).toBe(false);
    // Time enough for a bounded check of the lock's connection (timeoutMs 1 s) to notice.
    for (let i = 0; i < 60 && !mine.held[0]!.lost!.aborted; i++) await sleep(50);
    g.open();
    const outcome = await runA;
    await releaseB!();
    expect(g.log).not.toContain("A:act");
    expect(outcome).toBeInstanceOf(ThreadLockLostError);
  });

  // Was a hole: taken over as designed (its holder cannot be checked from here), the stalled run
  // acted once more when it woke, before its heartbeat found the row taken. Now the checkpoint of
  // its stalled step is refused by its fence (the row is another holder's): it never acts.
  it("SQLite lock, holder in another container (host it cannot check) whose event loop stalls past staleMs: taken over, and the stalled run never acts once it wakes", async () => {
    const file = join(dir, "stall-foreign.sqlite");
    const flag = join(dir, "stall-foreign.go");
    const thread = unique("sqlite-stall-foreign");
    const child = startChild({ mode: "stall", file, thread, staleMs: 600, flag, host: "another-container" });
    await child.until((e) => e.event === "stalling");
    const lock = new SqliteThreadLock({ path: file, staleMs: 600 });
    cleanups.push(() => lock.close());
    // Not by a timer: the child's event loop is blocked, so it renews nothing; after staleMs it reads as gone.
    const releaseB = await acquireWhenFree(lock, thread, 400, 25);
    expect(releaseB).toBeTypeOf("function");
    expect(child.alive()).toBe(true);
    writeFileSync(flag, "");
    const end = await child.until((e) => e.event === "result" || e.event === "error");
    await releaseB!();
    expect(child.events.map((e) => e.event)).not.toContain("act");
    expect(end).toMatchObject({ event: "error", name: "ThreadLockLostError" });
  });

  it("SQLite lock, holder on this host alive but stalled far past staleMs: never taken over; it finishes, then the thread is free", async () => {
    const file = join(dir, "stall-local.sqlite");
    const flag = join(dir, "stall-local.go");
    const thread = unique("sqlite-stall-local");
    const child = startChild({ mode: "stall", file, thread, staleMs: 300, flag });
    await child.until((e) => e.event === "stalling");
    const lock = new SqliteThreadLock({ path: file, staleMs: 300 });
    cleanups.push(() => lock.close());
    const since = Date.now();
    const refusals: unknown[] = [];
    while (Date.now() - since < 1_500) {
      refusals.push(await lock.acquire(thread).then((r) => (r(), "granted"), (e: unknown) => e));
      await sleep(50);
    }
    expect(child.alive()).toBe(true);
    writeFileSync(flag, "");
    expect(await child.until((e) => e.event === "result" || e.event === "error")).toMatchObject({ event: "result", steps: ["stall", "act"] });
    expect(refusals.length).toBeGreaterThan(3);
    for (const r of refusals) expect(r).toBeInstanceOf(ThreadBusyError);
    await child.exited;
    await (await lock.acquire(thread))();
  });
});

describe("SQLite: takeover of a dead holder, and a release that fails", () => {
  it("four processes race to take over one dead holder's lock at the same moment: exactly one gets it", async () => {
    const file = join(dir, "race-takeover.sqlite");
    const thread = unique("race-takeover");
    const barrier = join(dir, "race-takeover.go");
    const setup = new SqliteThreadLock({ path: file });
    setup.close();
    // A holder that died: a process of this host and pid namespace that exited.
    const dead = Number(spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString());
    expect(Number.isInteger(dead) && dead > 0).toBe(true);
    const me = processInstance();
    const db = new Database(file);
    db.prepare(
      `INSERT INTO eart_thread_locks (thread_id, owner, pid, host, acquired_at, instance, pid_ns, started, heartbeat_at) VALUES (?, 'crashed', ?, ?, ?, 'crashed', ?, ?, ?)`,
    ).run(thread, dead, me.host, new Date().toISOString(), me.pidNamespace, me.started, Date.now());
    db.close();
    const children = Array.from({ length: 4 }, () => startChild({ mode: "take", file, thread, barrier }));
    for (const c of children) await c.until((e) => e.event === "ready");
    writeFileSync(barrier, "");
    const outcomes = await Promise.all(children.map((c) => c.until((e) => e.event === "won" || e.event === "lost")));
    for (const c of children) c.send("done");
    expect(outcomes.filter((o) => o.event === "won")).toHaveLength(1);
    for (const o of outcomes.filter((o) => o.event === "lost")) expect(o).toMatchObject({ name: "ThreadBusyError", code: "thread_busy" });
    await Promise.all(children.map((c) => c.exited));
  });

  it("a release that meets a long write transaction of another process (SQLITE_BUSY past busy_timeout) does not leave the thread locked for as long as this process lives", async () => {
    const file = join(dir, "release-busy.sqlite");
    const thread = unique("release-busy");
    const lock = new SqliteThreadLock({ path: file, staleMs: 3_000 });
    cleanups.push(() => lock.close());
    const writer = startChild({ mode: "writer", file });
    await writer.until((e) => e.event === "ready");
    const g = ownGraph();
    const run = settle(runThread(g.graph, { steps: [] }, cfg(thread, "A"), { lock }));
    await g.inside("A");
    // Another process of the app writes the shared file for longer than busy_timeout (5 s): a big
    // export, a VACUUM, a backup, a slow disk.
    writer.send("lock");
    await writer.until((e) => e.event === "locked");
    g.open();
    const outcome = await run;
    writer.send("commit");
    await writer.until((e) => e.event === "committed");
    writer.send("exit");
    expect(g.log).toEqual(["A:wait", "A:act"]);
    void outcome;
    // The writer is gone. The thread must not stay locked by this live process.
    const release = await acquireWhenFree(lock, thread, 40, 250);
    expect(release, `the thread is still locked after its run ended (${String((outcome as Error)?.message ?? outcome)})`).toBeTypeOf("function");
    await release!();
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
// The prebuilt agent and the createAgent middleware, in one process.

/** The prebuilt refund agent whose order lookup runs `during` and then waits for the test's gate (its run holds the thread meanwhile). */
function slowLookupAgent(turns: Call[][], during: () => Promise<unknown> = async () => undefined) {
  const gate = deferred();
  const inside = deferred();
  let lookups = 0;
  const s = refundSetup(turns, {
    tools: (t) => [
      tool(
        async (args: { orderId: string }, c) => {
          lookups++;
          inside.resolve();
          await during();
          await gate.promise;
          return t.lookupOrder.invoke(args, c);
        },
        { name: "lookup_order", description: "Look up an order by id.", schema: z.object({ orderId: z.string() }) },
      ),
      t.viewPaymentDetails,
      t.issueRefund,
    ],
  });
  return { ...s, open: gate.resolve, inside: inside.promise, lookups: () => lookups };
}

const texts = (values: unknown) => ((values as { messages?: { content?: unknown }[] }).messages ?? []).map((m) => String(m.content));

describe("re-entrancy, continue and state writes while a run holds the thread", () => {
  it("a tool that runs the same agent on its own thread gets ThreadBusyError at once: no deadlock, no second run", async () => {
    const thread = unique("reentrant");
    let inner: unknown;
    let agent: ReturnType<typeof refundSetup>["agent"] | undefined;
    const s = slowLookupAgent([[lookup("l1")]], async () => {
      inner = await settle(agent!.invoke(ask("and now refund it"), config(thread)));
    });
    agent = s.agent;
    s.open();
    const out = await s.agent.invoke(ask(), config(thread));
    expect(inner).toBeInstanceOf(ThreadBusyError);
    expect((inner as ThreadBusyError).threadId).toBe(thread);
    expect(s.lookups()).toBe(1);
    // The inner input was never stored: one human message, the lookup's answer, the model's text.
    expect(texts(out).filter((t) => t.includes("and now refund it"))).toEqual([]);
    expect(s.refunds()).toEqual([]);
    // And the thread is free again.
    await s.agent.invoke(ask("thanks"), config(thread));
  });

  it("continueThread (eart continue) of a thread whose run is under way right now gets ThreadBusyError and runs nothing twice", async () => {
    const thread = unique("continue-running");
    const s = slowLookupAgent([[lookup("l1")], [refund("r1", 50)]]);
    const app = defineApp({ auditLog: s.auditLog, graphs: { "support-agent": s.agent } });
    const run = settle(s.agent.invoke(ask(), config(thread)));
    await s.inside;
    const continued = await settle(continueThread(app, thread));
    s.open();
    expect(await run).toBe("completed");
    expect(continued).toBeInstanceOf(ThreadBusyError);
    expect(s.lookups()).toBe(1);
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["r1"]);
    expect(await unfinishedThreads(app)).toEqual([]);
  });

  it("unfinishedThreads (eart pending) does not list a thread whose run is under way right now as one that stopped", async () => {
    const thread = unique("listed-running");
    const s = slowLookupAgent([[lookup("l1")]]);
    const app = defineApp({ auditLog: s.auditLog, graphs: { "support-agent": s.agent } });
    const run = settle(s.agent.invoke(ask(), config(thread)));
    await s.inside;
    const listed = await unfinishedThreads(app);
    s.open();
    expect(await run).toBe("completed");
    expect(listed.map((t) => t.threadId)).not.toContain(thread);
  });

  it("updateState while a run holds the thread: refused with ThreadBusyError (its write would be superseded by the run's next checkpoint)", async () => {
    const thread = unique("update-during-run");
    let wrote: unknown;
    let agent: ReturnType<typeof refundSetup>["agent"] | undefined;
    const s = slowLookupAgent([[lookup("l1")]], async () => {
      wrote = await settle(agent!.updateState(config(thread), { messages: [new HumanMessage("note: the customer also wants a call back")] }));
    });
    agent = s.agent;
    s.open();
    await s.agent.invoke(ask(), config(thread));
    const after = await s.agent.getState(config(thread));
    expect(wrote).toBeInstanceOf(ThreadBusyError);
    expect(texts(after.values)).not.toContain("note: the customer also wants a call back");
    // With the run over, the same write goes through.
    await s.agent.updateState(config(thread), { messages: [new HumanMessage("note: the customer also wants a call back")] });
    expect(texts((await s.agent.getState(config(thread))).values)).toContain("note: the customer also wants a call back");
  });

  it("an approval recorded before a crash: continueThread (as the recorded approver) and a second supervisor's reject at once: one run, the recorded answer stands, one refund", async () => {
    const thread = unique("continue-vs-reject");
    /** An audit log that fails once right after recording sam's approval: the process died there. */
    class DiesAfterApproval extends MemoryAuditLog {
      armed = true;
      override async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
        const stored = await super.append(events);
        if (this.armed && stored.some((e) => e.type === "approval.decided")) {
          this.armed = false;
          throw new Error("the process died after approval.decided");
        }
        return stored;
      }
    }
    const auditLog = new DiesAfterApproval();
    const gate = deferred();
    const inside = deferred();
    const s = refundSetup([[refund("c1", 740)]], {
      auditLog,
      tools: (t) => [
        t.lookupOrder,
        t.viewPaymentDetails,
        tool(
          async (args: { orderId: string; amount: number }, c) => {
            inside.resolve();
            await gate.promise;
            return t.issueRefund.invoke(args, c);
          },
          { name: "issue_refund", description: "Refund an order.", schema: z.object({ orderId: z.string(), amount: z.number(), reason: z.string().optional() }) },
        ),
      ],
    });
    const digest = pendingApproval(await s.agent.invoke(ask(), config(thread)))!.requests[0]!.digest;
    const answer = (type: string) => new Command({ resume: { decisions: [{ toolCallId: "c1", type, digest }] } });
    await expect(s.agent.invoke(answer("approve"), config(thread, "sam"))).rejects.toThrow("the process died after approval.decided");
    const app = defineApp({ auditLog, graphs: { "support-agent": s.agent } });
    expect(await unfinishedThreads(app)).toEqual([expect.objectContaining({ threadId: thread, kind: "answered", answeredBy: "sam" })]);
    const continued = settle(continueThread(app, thread));
    await inside.promise;
    const reject = await settle(s.agent.invoke(answer("reject"), config(thread, "sue")));
    const nudge = await settle(s.agent.invoke(null, config(thread, "omar")));
    gate.resolve();
    expect(await continued).toBe("completed");
    expect(reject).toBeInstanceOf(ThreadBusyError);
    expect(nudge).toBeInstanceOf(ThreadBusyError);
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    // Afterwards the thread has nothing to answer: the late reject is refused and runs nothing.
    expect(eartErrorOf(await settle(s.agent.invoke(answer("reject"), config(thread, "sue"))))?.code).toBe("thread_not_paused");
    const decided = (await auditLog.read(thread)).filter((e) => e.type === "approval.decided");
    expect(decided.map((e) => [e.data.approverId, e.data.decision])).toEqual([["sam", "approve"]]);
    expect(await auditLog.verify(thread)).toMatchObject({ ok: true });
  });

  it("createAgent middleware (guardAgent): the customer's new message while the supervisor's approval runs the refund gets ThreadBusyError; one refund", async () => {
    const thread = unique("mw-input-vs-resume");
    const gate = deferred();
    const inside = deferred();
    const s = middlewareRefundSetup([[refund("c1", 740)]], {
      wrapRefund: (real) => async (args, c) => {
        inside.resolve();
        await gate.promise;
        return real(args, c);
      },
    });
    const paused = await s.agent.invoke(ask() as never, config(thread));
    const digest = pendingApproval(paused)!.requests[0]!.digest;
    const approval = settle(s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest }] } }) as never, config(thread, "sam")));
    await inside.promise;
    const input = await settle(s.agent.invoke({ messages: [new HumanMessage("hello? where is my refund?")] } as never, config(thread)));
    const again = await settle(s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest }] } }) as never, config(thread, "sue")));
    gate.resolve();
    expect(await approval).toBe("completed");
    expect(eartErrorOf(input)?.code).toBe("thread_busy");
    expect(eartErrorOf(again)?.code).toBe("thread_busy");
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("thread ids and lock keys", () => {
  const odd = (tag: string) => [
    `${tag}-a\u0000b`,
    `${tag}-a\u0000c`,
    `${tag}-a`,
    `${tag}-${"x".repeat(64 * 1024)}`,
    `${tag}-${"x".repeat(64 * 1024 - 1)}y`,
    `${tag}-caf\u00e9`, // NFC
    `${tag}-cafe\u0301`, // NFD: looks the same, is another id (LangGraph's checkpointers key them apart too)
    `${tag}-\u{1F600}`,
    `${tag}-\uD800`, // a lone surrogate
  ];

  for (const [name, make] of [
    ["MemoryThreadLock", () => [new MemoryThreadLock(), undefined]],
    ["SqliteThreadLock", () => [new SqliteThreadLock({ path: join(dir, "odd-ids.sqlite") }), new SqliteThreadLock({ path: join(dir, "odd-ids.sqlite") })]],
    ["PostgresThreadLock", () => [new PostgresThreadLock({ pool: pgPool() }), new PostgresThreadLock({ pool: pgPool() })]],
  ] as const) {
    it(`${name}: ids with NUL, 64 KB ids differing in the last character, look-alike Unicode and lone surrogates each get their own lock; the same id is busy`, async () => {
      const [lock, otherHandle] = (make as () => [ThreadLock, ThreadLock | undefined])();
      const other = otherHandle ?? lock;
      cleanups.push(() => (lock as { close?: () => unknown }).close?.());
      cleanups.push(() => (other as { close?: () => unknown }).close?.());
      const ids = odd(unique(name));
      const releases = [];
      for (const id of ids) releases.push(await lock.acquire(id));
      expect(releases).toHaveLength(ids.length);
      for (const id of ids) {
        const error = await other.acquire(id).catch((e: unknown) => e);
        expect(error, JSON.stringify(id.slice(-12))).toBeInstanceOf(ThreadBusyError);
        expect((error as ThreadBusyError).threadId).toBe(id);
      }
      for (const release of releases) await release();
      for (const id of ids) await (await other.acquire(id))();
    });
  }

  // Was a hole: the advisory-lock key named the thread id only, so two tenants blocked each other.
  it("PostgreSQL: two deployments in two schemas of one database (two tenants) do not lock each other's threads of the same id; one tenant's two handles do", async () => {
    const thread = unique("tenant-thread");
    await admin.query(`CREATE SCHEMA IF NOT EXISTS tenant_a; CREATE SCHEMA IF NOT EXISTS tenant_b`);
    const tenant = (schema: string) => {
      const u = new URL(PG_URL);
      u.searchParams.set("options", `-c search_path=${schema}`);
      const lock = new PostgresThreadLock({ connectionString: u.toString() });
      cleanups.push(() => lock.close());
      return lock;
    };
    const a = tenant("tenant_a");
    const b = tenant("tenant_b");
    const releaseA = await a.acquire(thread);
    // Tenant B's own thread of that id (a customer number, an order id) is not tenant A's.
    const fromB = await settle(b.acquire(thread).then((release) => release()));
    // Tenant A's other worker (another handle, the same schema) is kept out; so is one on the default schema's key space.
    const fromA = await tenant("tenant_a").acquire(thread).catch((e: unknown) => e);
    await releaseA();
    expect(fromB).toBe("completed");
    expect(fromA).toBeInstanceOf(ThreadBusyError);
    // A search_path that names a schema not created yet is its own space too (by its text), not the default one's.
    const missing = tenant("tenant_not_created");
    const onPublic = new PostgresThreadLock({ pool: pgPool() });
    cleanups.push(() => onPublic.close());
    const releasePublic = await onPublic.acquire(thread);
    const fromMissing = await settle(missing.acquire(thread).then((release) => release()));
    await releasePublic();
    expect(fromMissing).toBe("completed");
  });
});

describe("PostgreSQL: a healthy holder keeps its lock", () => {
  it("a server-side idle_session_timeout (on the pool's settings, the role or the database) does not take a held lock from a run that is still working", async () => {
    const thread = unique("idle-session");
    // A common hardening against leaked connections; the lock's connection copies the pool's settings.
    const pool = new pg.Pool({ connectionString: PG_URL, max: 2, options: "-c idle_session_timeout=700" });
    pool.on("error", () => {});
    cleanups.push(() => pool.end());
    expect((await pool.query<{ idle_session_timeout: string }>("SHOW idle_session_timeout")).rows[0]!.idle_session_timeout).toBe("700ms");
    const mine = watched(new PostgresThreadLock({ pool }));
    const g = ownGraph();
    const app = guardResumes(g.graph, { lock: mine });
    const run = settle(app.invoke({ steps: [] }, cfg(thread, "A")));
    await g.inside("A");
    // The step works for a few seconds (a slow payment gateway, a model): the lock's connection is idle meanwhile.
    for (let i = 0; i < 50 && !mine.held[0]!.lost!.aborted; i++) await sleep(50);
    g.open();
    const outcome = await run;
    expect(mine.held[0]!.lost!.aborted, String((mine.held[0]!.lost!.reason as Error)?.message)).toBe(false);
    expect(outcome).toBe("completed");
    expect(g.log).toEqual(["A:wait", "A:act"]);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("a holder that is a worker thread of a live process", () => {
  /** A worker thread (running the built eart) that takes `thread` with the lock `make` builds, says "held", and idles until terminated. */
  const holderWorker = (make: string, thread: string) => {
    const worker = new Worker(
      `const { parentPort, workerData } = require("node:worker_threads");
       (async () => {
         const eart = { ...(await import(workerData.sqlite)), ...(await import(workerData.postgres)) };
         const lock = ${make};
         await lock.acquire(workerData.thread);
         parentPort.postMessage("held");
         setInterval(() => {}, 1000);
       })().catch((e) => parentPort.postMessage(String(e && e.stack || e)));`,
      {
        eval: true,
        workerData: {
          thread,
          file: join(dir, "worker-holder.sqlite"),
          url: PG_URL,
          sqlite: new URL("../../dist/src/stores/sqlite/index.js", import.meta.url).href,
          postgres: new URL("../../dist/src/stores/postgres/index.js", import.meta.url).href,
        },
      },
    );
    cleanups.push(() => worker.terminate());
    const held = new Promise<unknown>((resolve) => worker.once("message", resolve));
    return { worker, held };
  };

  it("SQLite: a worker thread terminated while it holds a lock (worker.terminate(), a pool's task timeout) does not leave the thread locked for as long as the process lives", async () => {
    const thread = unique("worker-sqlite");
    const { worker, held } = holderWorker(`new eart.SqliteThreadLock({ path: workerData.file, staleMs: 300 })`, thread);
    expect(await held).toBe("held");
    const lock = new SqliteThreadLock({ path: join(dir, "worker-holder.sqlite"), staleMs: 300 });
    cleanups.push(() => lock.close());
    // While the worker lives, its lock holds against this thread of the process too.
    expect(await lock.acquire(thread).catch((e: unknown) => e)).toBeInstanceOf(ThreadBusyError);
    await worker.terminate();
    // The holder is gone; its heartbeat stopped with it. Ten times staleMs later the thread is free.
    const release = await acquireWhenFree(lock, thread, 60, 50);
    expect(release, "the dead worker's lock still holds").toBeTypeOf("function");
    await release!();
  });

  it("PostgreSQL: a worker thread terminated while it holds a lock: its session closes with it and the thread is free", async () => {
    const thread = unique("worker-pg");
    const { worker, held } = holderWorker(`new eart.PostgresThreadLock({ connectionString: workerData.url })`, thread);
    expect(await held).toBe("held");
    const lock = new PostgresThreadLock({ pool: pgPool() });
    cleanups.push(() => lock.close());
    expect(await lock.acquire(thread).catch((e: unknown) => e)).toBeInstanceOf(ThreadBusyError);
    await worker.terminate();
    const release = await acquireWhenFree(lock, thread, 200, 50);
    expect(release, "the dead worker's session still holds the lock").toBeTypeOf("function");
    await release!();
  });
});
