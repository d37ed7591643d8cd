import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FINAL_ANSWER, runPgWorkers, type PgWorkersResult } from "../../bench/pg-workers.js";

/**
 * The refund agent scaled out on PostgreSQL: 2 and 4 worker processes share one database
 * (checkpoints through LangGraph's PostgresSaver, eart's audit log, effect ledger and thread lock
 * in eart's tables, the `refunds` table the refund tool writes). Each thread's request runs on one
 * worker and pauses for a supervisor; its approval runs on another process. Some approvals are
 * sent by two processes at once, as a double-clicked approve button or a replayed request would:
 * one applies, the other is refused with a typed error, and the refund runs once.
 *
 * The harness is the benchmark's (bench/pg-workers.ts); it makes a schema of its own and drops it.
 * The workers run the built package (`npm run build` first): plain processes, so a crash is a
 * crash, and the checks are made from the database, from what every process wrote.
 */

// A real PostgreSQL (.ci/run starts it). No skip: without it this suite fails, loudly.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const CHILD = fileURLToPath(new URL("../../dist/bench/pg-worker-child.js", import.meta.url));

let admin: pg.Pool;

beforeAll(async () => {
  if (!existsSync(CHILD)) throw new Error(`${CHILD} is missing: run "npm run build" (npm test does) before these tests`);
  admin = new pg.Pool({ connectionString: url, max: 1 });
  await admin.query("SELECT 1");
});

afterAll(async () => {
  await admin?.end();
});

/** What must hold after any run: no duplicate side effect, no lost approval, every chain verified, nothing failed. */
function expectInvariants(r: PgWorkersResult, threads: number, processes: number): void {
  expect(r.failures).toEqual([]);
  expect(r.duplicateRefunds).toBe(0);
  expect(r.missingRefunds).toEqual([]);
  expect(r.lostApprovals).toEqual([]);
  expect(r.unverifiedChains).toEqual([]);
  // The timed threads and one warm-up thread per process, all checked.
  expect(r.checked).toBe(threads + processes);
  expect(r.processes).toBe(processes);
}

/**
 * Each approval sent twice at once applied once: one run finished the thread, the other was
 * refused, typed; sent a third time afterwards, it is refused as the thread has finished. (That
 * each thread has one refund, one approval decision and one refund execution is checked for every
 * thread by expectInvariants.)
 */
function expectAppliedOnce(r: PgWorkersResult, doubled: number): void {
  expect(r.doubleApprovals).toHaveLength(doubled);
  for (const { threadId, outcomes, replay } of r.doubleApprovals) {
    expect(replay, threadId).toMatchObject({ ok: false, error: { code: "thread_not_paused" } });
    expect(outcomes, threadId).toHaveLength(2);
    const won = outcomes.filter((o) => o.ok);
    const lost = outcomes.filter((o) => !o.ok);
    expect(won, threadId).toEqual([{ ok: true, last: FINAL_ANSWER }]);
    // Refused while the other run held the thread (thread_busy), or after it finished (thread_not_paused).
    expect(lost.map((o) => (o.ok ? null : o.error.code)), threadId).toSatisfy((codes: (string | null)[]) => codes.length === 1 && ["thread_busy", "thread_not_paused"].includes(codes[0]!));
  }
}

describe("the refund agent on several worker processes sharing PostgreSQL", () => {
  it("2 workers, 60 threads, each approved on the other worker, 8 approvals sent by both at once: one refund per thread, no lost approval, every chain verified", async () => {
    const r = await runPgWorkers({ url, threads: 60, workers: 2, inFlightPerWorker: 8, poolMax: 3, doubleApprovals: 8, childScript: CHILD });
    // A figure for the record, not an assertion.
    console.log(`pg-workers: 2 workers, ${r.threads} conversations in ${r.seconds.toFixed(1)} s (${r.conversationsPerSecond.toFixed(1)}/s)`);
    expectInvariants(r, 60, 2);
    expectAppliedOnce(r, 8);
  }, 90_000);

  it("4 workers, 60 threads, each approved on the next worker, 8 approvals sent by two workers at once: the same", async () => {
    const r = await runPgWorkers({ url, threads: 60, workers: 4, inFlightPerWorker: 4, poolMax: 3, doubleApprovals: 8, childScript: CHILD });
    console.log(`pg-workers: 4 workers, ${r.threads} conversations in ${r.seconds.toFixed(1)} s (${r.conversationsPerSecond.toFixed(1)}/s)`);
    expectInvariants(r, 60, 4);
    expectAppliedOnce(r, 8);
  }, 90_000);

  it("PostgreSQL out of reach: the run fails at once, naming the connection", async () => {
    const started = performance.now();
    await expect(runPgWorkers({ url: "postgresql://postgres@127.0.0.1:1/test", threads: 1, workers: 2, childScript: CHILD })).rejects.toThrow(/ECONNREFUSED|connect/);
    expect(performance.now() - started).toBeLessThan(10_000);
  });
});
