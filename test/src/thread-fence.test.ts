/**
 * The thread locks' fences: a run that lost its lease without hearing of it writes nothing more.
 * PostgreSQL (its session dropped, another process took the thread): each hold records a new token
 * for the thread, and eart's audit log and effect ledger check it in the transaction of every write
 * the run makes for its thread. SQLite (its event loop stalled past staleMs, another container took
 * the thread): each hold reads its lock row before each write.
 */
import { Annotation, END, START, StateGraph } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StoreError, ThreadBusyError, ThreadLockLostError, withThreadFence, type ReleaseThreadLock, type ThreadFence } from "eart";
import { guardResumes } from "eart/graphs";
import { PostgresAuditLog, PostgresEffectLedger, PostgresThreadLock } from "eart/postgres";
import { SqliteAuditLog, SqliteEffectLedger, SqliteThreadLock } from "eart/sqlite";
import Database from "better-sqlite3";

// A real PostgreSQL (.ci/run starts it). No skip: without it these tests fail.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const runId = `${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`;
const schema = `eart_fence_${runId}`;
const unique = (tag: string) => `fence-${tag}-${runId}-${Math.random().toString(36).slice(2, 8)}`;

const inSchema = (name: string) => {
  const u = new URL(url);
  u.searchParams.set("options", `-c search_path=${name}`);
  return u.toString();
};

let admin: pg.Pool;
let pool: pg.Pool;
const closing: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  admin = new pg.Pool({ connectionString: url, max: 2 });
  await admin.query(`CREATE SCHEMA "${schema}"`);
  pool = new pg.Pool({ connectionString: inSchema(schema), max: 4 });
});

afterAll(async () => {
  for (const close of closing.reverse()) await close().catch(() => {});
  await pool?.end();
  await admin?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
  await admin?.end();
});

function lock(options: { timeoutMs?: number; on?: pg.Pool } = {}): PostgresThreadLock {
  const l = new PostgresThreadLock({ pool: options.on ?? pool, ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}) });
  closing.push(() => l.close());
  return l;
}

function stores(on: pg.Pool = pool) {
  return { auditLog: new PostgresAuditLog({ pool: on }), ledger: new PostgresEffectLedger({ pool: on }) };
}

const key = (threadId: string, toolCallId = "c1") => ({ threadId, toolCallId, digest: `d-${toolCallId}` });
const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

/** A hold's fence, as a run that has not heard its lock was lost still holds it. */
function fenceOf(release: ReleaseThreadLock): ThreadFence {
  expect(release.fence).toBeDefined();
  return { ...release.fence!, lost: new AbortController().signal };
}

describe("a hold's fence, checked in the lock's database", () => {
  it("a hold whose thread another process has taken since claims nothing and appends nothing; the new holder's writes go through", async () => {
    const { auditLog, ledger } = stores();
    const thread = unique("stale");
    const first = await lock().acquire(thread);
    const stale = fenceOf(first);
    await withThreadFence(stale, () => auditLog.append({ threadId: thread, type: "run.started" }));
    // The first holder's session is gone (it does not know yet); another process takes the thread.
    await first();
    const second = await lock().acquire(thread);
    expect(second.fence!.postgres!.token).not.toBe(stale.postgres!.token);
    expect(second.fence!.postgres!.key).toBe(stale.postgres!.key);

    // Every write the stale run still makes for its thread is refused, typed, and leaves nothing.
    const refused = await Promise.all([
      errorOf(withThreadFence(stale, () => auditLog.append({ threadId: thread, type: "run.started", data: { by: "the stale run" } }))),
      errorOf(withThreadFence(stale, () => ledger.begin(key(thread, "plain")))),
      errorOf(withThreadFence(stale, () => ledger.begin(key(thread, "audited"), new Date(), { log: auditLog, events: [{ threadId: thread, type: "tool.started" }] }))),
    ]);
    for (const error of refused) {
      expect(error).toBeInstanceOf(ThreadLockLostError);
      expect((error as ThreadLockLostError).threadId).toBe(thread);
    }
    expect((await auditLog.read(thread)).map((e) => e.type)).toEqual(["run.started"]);
    expect(await ledger.get(key(thread, "plain"))).toBeUndefined();
    expect(await ledger.get(key(thread, "audited"))).toBeUndefined();

    // The holder now: the same writes are made, and the chain verifies.
    const now = second.fence!;
    await withThreadFence(now, () => auditLog.append({ threadId: thread, type: "run.started", data: { by: "the holder" } }));
    expect((await withThreadFence(now, () => ledger.begin(key(thread, "plain")))).claimed).toBe(true);
    expect((await withThreadFence(now, () => ledger.begin(key(thread, "audited"), new Date(), { log: auditLog, events: [{ threadId: thread, type: "tool.started" }] }))).claimed).toBe(true);
    // A retry of a started attempt is a new claim: the stale run may not make it either.
    expect(await errorOf(withThreadFence(stale, () => ledger.retry(key(thread, "plain"), 1)))).toBeInstanceOf(ThreadLockLostError);
    expect((await ledger.get(key(thread, "plain")))?.attempt).toBe(1);
    expect((await withThreadFence(now, () => ledger.retry(key(thread, "plain"), 1)))?.attempt).toBe(2);
    expect((await auditLog.read(thread)).map((e) => e.data.by ?? e.type)).toEqual(["run.started", "the holder", "tool.started"]);
    expect(await auditLog.verify(thread)).toMatchObject({ ok: true });
    await second();
  });

  it("a run that has heard its lock is lost is refused before it reaches the database; other threads' writes are not fenced by it", async () => {
    const { auditLog, ledger } = stores();
    const thread = unique("heard");
    const release = await lock().acquire(thread);
    const lost = new AbortController();
    lost.abort(new ThreadLockLostError(thread, new Error("the lock's connection ended")));
    const fence = { ...release.fence!, lost: lost.signal };
    const error = await errorOf(withThreadFence(fence, () => ledger.begin(key(thread))));
    expect(error).toBe(lost.signal.reason);
    expect(await ledger.get(key(thread))).toBeUndefined();
    // Another thread's event, appended from inside the fenced run (an escalation elsewhere), is not this fence's.
    const other = unique("other");
    await withThreadFence(fence, () => auditLog.append({ threadId: other, type: "run.started" }));
    expect((await auditLog.read(other)).map((e) => e.type)).toEqual(["run.started"]);
    await release();
  });

  it("two runs of one process, interleaved: each write is checked against its own run's fence", async () => {
    const { auditLog } = stores();
    const [a, b] = [unique("a"), unique("b")];
    // Run a's lease was taken over (its fence is stale); run b holds its thread.
    const firstA = await lock().acquire(a);
    const staleA = fenceOf(firstA);
    await firstA();
    const taken = await lock().acquire(a);
    const rb = await lock().acquire(b);
    const outcomes = await Promise.all([
      withThreadFence(staleA, async () => {
        const out: unknown[] = [];
        for (let i = 0; i < 4; i++) {
          out.push(await errorOf(auditLog.append({ threadId: a, type: "run.started" })));
          await new Promise((r) => setImmediate(r));
        }
        return out;
      }),
      withThreadFence(rb.fence, async () => {
        for (let i = 0; i < 4; i++) {
          await auditLog.append({ threadId: b, type: "run.started" });
          await new Promise((r) => setImmediate(r));
        }
      }),
    ]);
    expect(outcomes[0]!.every((e) => e instanceof ThreadLockLostError)).toBe(true);
    expect((await auditLog.read(a)).length).toBe(0);
    expect((await auditLog.read(b)).length).toBe(4);
    await Promise.all([taken(), rb()]);
  });
});

describe("taking a thread waits for its last holder's write in flight", () => {
  /** Holds the fence row of `thread` share-locked, as the last holder's append does during its transaction. */
  async function writeInFlight(lockKey: string) {
    const client = await pool.connect();
    await client.query(`BEGIN; SELECT token FROM eart_thread_fences WHERE key = ${lockKey}::bigint FOR SHARE`);
    return {
      async end() {
        await client.query("COMMIT");
        client.release();
      },
    };
  }

  it("a new hold's token is written only once the last holder's write has ended: the write that began first lands first", async () => {
    const thread = unique("order");
    const first = await lock().acquire(thread);
    const key = first.fence!.postgres!.key;
    await first();
    const inFlight = await writeInFlight(key);
    const order: string[] = [];
    const taking = lock().acquire(thread).then((release) => (order.push("taken"), release));
    await new Promise((r) => setTimeout(r, 300));
    order.push("write ended");
    await inFlight.end();
    const second = await taking;
    expect(order).toEqual(["write ended", "taken"]);
    await second();
  });

  it("a write that holds the token past half the bound fails the new hold with store_timeout, and leaves no lock behind", async () => {
    const thread = unique("stuck");
    const first = await lock().acquire(thread);
    const key = first.fence!.postgres!.key;
    await first();
    const inFlight = await writeInFlight(key);
    const error = await errorOf(lock({ timeoutMs: 600 }).acquire(thread));
    expect(error).toBeInstanceOf(StoreError);
    expect((error as StoreError).code).toBe("store_timeout");
    await inFlight.end();
    // Nothing of the failed hold is left: the thread is free, and held once more it is busy to others.
    const again = await lock().acquire(thread);
    expect(await errorOf(lock().acquire(thread))).toBeInstanceOf(ThreadBusyError);
    await again();
  });
});

describe("where the lock is not in the stores' database", () => {
  it("a lock of another schema leaves these stores' writes unchecked (no token of the thread here)", async () => {
    const elsewhere = `${schema}_x`;
    await admin.query(`CREATE SCHEMA "${elsewhere}"`);
    const other = new pg.Pool({ connectionString: inSchema(elsewhere), max: 2 });
    closing.push(async () => {
      await other.end();
      await admin.query(`DROP SCHEMA IF EXISTS "${elsewhere}" CASCADE`);
    });
    const { auditLog, ledger } = stores();
    const thread = unique("elsewhere");
    const release = await lock({ on: other }).acquire(thread);
    await withThreadFence(release.fence, () => auditLog.append({ threadId: thread, type: "run.started" }));
    expect((await withThreadFence(release.fence, () => ledger.begin(key(thread)))).claimed).toBe(true);
    await release();
  });
});

describe("SQLite: a hold whose row another container took", () => {
  /** One file for the lock and the stores, as `sqliteStores` opens them; the takeover is the other container's write of the row. */
  function onOneFile() {
    const database = new Database(":memory:");
    closing.push(async () => database.close());
    const lock = new SqliteThreadLock({ database });
    closing.push(async () => lock.close());
    return { database, lock, auditLog: new SqliteAuditLog({ database }), ledger: new SqliteEffectLedger({ database }) };
  }
  /** What a SqliteThreadLock of another container writes when it takes the thread over: the lock row and the thread's last holder. */
  const takeOver = (database: Database.Database, thread: string) =>
    database.transaction(() => {
      database.prepare(`UPDATE eart_thread_fences SET owner = 'another-container' WHERE thread_id = ?`).run(thread);
      return database.prepare(`UPDATE eart_thread_locks SET owner = 'another-container', host = 'elsewhere', heartbeat_at = ? WHERE thread_id = ?`).run(Date.now(), thread).changes;
    })();

  it("claims nothing and appends nothing once its row is another holder's; until then its writes go through", async () => {
    const { database, lock, auditLog, ledger } = onOneFile();
    const thread = unique("sqlite");
    const release = await lock.acquire(thread);
    await withThreadFence(release.fence, () => auditLog.append({ threadId: thread, type: "run.started" }));
    expect((await withThreadFence(release.fence, () => ledger.begin(key(thread, "before")))).claimed).toBe(true);
    expect(takeOver(database, thread)).toBe(1);
    const refused = await Promise.all([
      errorOf(withThreadFence(release.fence, () => auditLog.append({ threadId: thread, type: "run.started", data: { by: "the stalled run" } }))),
      errorOf(withThreadFence(release.fence, () => ledger.begin(key(thread, "after")))),
      errorOf(withThreadFence(release.fence, () => ledger.retry(key(thread, "before"), 1))),
    ]);
    for (const error of refused) expect(error).toBeInstanceOf(ThreadLockLostError);
    // The hold is now known lost: its run's signal is aborted too.
    expect(release.lost?.aborted).toBe(true);
    expect((await auditLog.read(thread)).map((e) => e.data.by ?? e.type)).toEqual(["run.started"]);
    expect(await ledger.get(key(thread, "after"))).toBeUndefined();
    expect((await ledger.get(key(thread, "before")))?.attempt).toBe(1);
    await release();
  });

  it("a state write (updateState) whose hold another container took while it was on its way saves nothing; unstalled, the same write lands", async () => {
    const { database, lock } = onOneFile();
    const saver = new SqliteSaver(database);
    // Whenever the test says so, the next read of a checkpoint stalls past staleMs: another container takes the thread meanwhile.
    let stallNext: string | undefined;
    const getTuple = saver.getTuple.bind(saver);
    saver.getTuple = async (config) => {
      if (stallNext !== undefined) {
        expect(takeOver(database, stallNext)).toBe(1);
        stallNext = undefined;
      }
      return getTuple(config);
    };
    const State = Annotation.Root({ note: Annotation<string>() });
    const graph = guardResumes(new StateGraph(State).addNode("write", () => ({ note: "written by the run" })).addEdge(START, "write").addEdge("write", END).compile({ checkpointer: saver }), { lock });
    const thread = unique("sqlite-state-write");
    const config = { configurable: { thread_id: thread } };
    await graph.invoke({ note: "asked" }, config);
    const before = await graph.getState(config);

    stallNext = thread;
    const refused = await errorOf(graph.updateState(config, { note: "written by the stalled caller" }));
    expect(refused).toBeInstanceOf(ThreadLockLostError);
    expect(stallNext).toBeUndefined();
    const after = await graph.getState(config);
    expect(after.values).toEqual({ note: "written by the run" });
    expect(after.config.configurable?.checkpoint_id).toBe(before.config.configurable?.checkpoint_id);

    // The control: the takeover above left the thread to the other container, whose hold has
    // since ended (its row is removed as a release would); a write with nothing stalled lands.
    database.prepare(`DELETE FROM eart_thread_locks WHERE thread_id = ?`).run(thread);
    await graph.updateState(config, { note: "written by the caller" });
    expect((await graph.getState(config)).values).toEqual({ note: "written by the caller" });
  });

  it("a run still writing after its hold was released (its caller gave up) writes while nobody took the thread since, and nothing once someone did", async () => {
    const { lock, auditLog } = onOneFile();
    const thread = unique("sqlite-released");
    const release = await lock.acquire(thread);
    await release();
    await withThreadFence(release.fence, () => auditLog.append({ threadId: thread, type: "run.started" }));
    expect((await auditLog.read(thread)).length).toBe(1);
    // Another run took the thread and let it go again: the lock row is gone, the thread's last holder is not the first.
    await (await lock.acquire(thread))();
    expect(await errorOf(withThreadFence(release.fence, () => auditLog.append({ threadId: thread, type: "run.started" })))).toBeInstanceOf(ThreadLockLostError);
    expect((await auditLog.read(thread)).length).toBe(1);
  });
});
