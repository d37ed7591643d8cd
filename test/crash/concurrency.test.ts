import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SqliteAuditLog } from "eart/sqlite";
import { assertChildBuilt, eventsOf, FINAL_ANSWER, REFUND_CALL_ID, runChild, type ChildEvent, type ChildRun, type ChildTarget } from "../processes/harness.js";

/**
 * Several processes resume the same paused thread at the same moment (PostgreSQL checkpoints,
 * ledger and advisory thread lock, as `openRefundAgent({ postgres })` sets them up). Exactly one
 * of them takes the thread's lock and runs the refund; every other one gets ThreadBusyError and
 * runs nothing. No timing is relied on: the children start on a common barrier file, and the
 * winner's refund waits inside the tool (holding the lock) until every other child has reported.
 */

// A real PostgreSQL (.ci/run starts it). No skip: without it this suite fails, loudly.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const runId = `${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
const SIZES = [2, 4, 8] as const;

let admin: pg.Pool;
const dirs: string[] = [];
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
};
const schemas: string[] = [];
const threads = new Map<number, ChildTarget & { schema: string }>();

beforeAll(async () => {
  assertChildBuilt();
  admin = new pg.Pool({ connectionString: url });
  admin.on("error", () => {});
  await new PostgresSaver(admin).setup();
  for (const n of SIZES) {
    const schema = `eart_race_${runId}_${n}`;
    schemas.push(schema);
    await admin.query(`CREATE SCHEMA "${schema}"`);
    const postgres = new URL(url);
    postgres.searchParams.set("options", `-c search_path=${schema}`);
    const file = join(tempDir("eart-race-"), "audit.sqlite");
    threads.set(n, { file, threadId: `race-${runId}-${n}`, postgres: postgres.toString(), schema });
  }
  // One process pauses the three threads: each waits for a supervisor.
  const request = await runChild({ step: "request", targets: [...threads.values()].map(({ schema: _schema, ...t }) => t) });
  expect(request.stderr).toBe("");
  expect(request.status).toBe(0);
  expect(eventsOf(request, "paused").map((p) => p.summary.approval)).toEqual(SIZES.map(() => [REFUND_CALL_ID]));
}, 60_000);

afterAll(async () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  if (!admin) return;
  for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  const ids = [...threads.values()].map((t) => t.threadId);
  for (const table of ["checkpoint_writes", "checkpoint_blobs", "checkpoints"]) {
    await admin.query(`DELETE FROM public.${table} WHERE thread_id = ANY($1)`, [ids]);
  }
  await admin.end();
});

/** Calls `check` on every event of every child; resolves when it returns true, rejects if the children all end first. */
function watcher() {
  const events: ChildEvent[] = [];
  const waiters: { check: () => boolean; resolve: () => void }[] = [];
  return {
    events,
    onEvent(e: ChildEvent) {
      events.push(e);
      for (const w of [...waiters]) {
        if (w.check()) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    },
    until(check: () => boolean, ended: Promise<ChildRun[]>, what: string): Promise<void> {
      if (check()) return Promise.resolve();
      return Promise.race([
        new Promise<void>((resolve) => waiters.push({ check, resolve })),
        ended.then((runs) => {
          throw new Error(`the children ended before ${what}:\n${runs.map((r) => `${r.status} ${r.signal}\n${r.stdout}\n${r.stderr}`).join("\n---\n")}`);
        }),
      ]);
    },
  };
}

describe("concurrent resumes of one paused thread from several processes (PostgreSQL)", () => {
  it.each(SIZES)("%i processes approve at once: one refund, every other one gets ThreadBusyError", async (n) => {
    const { schema, ...target } = threads.get(n)!;
    const dir = tempDir("eart-race-sync-");
    const barrier = join(dir, "go");
    const hold = join(dir, "release");
    const w = watcher();
    const children = Promise.all(Array.from({ length: n }, () => runChild({ step: "approve", targets: [target], barrier, hold }, { onEvent: w.onEvent })));

    // Every child has loaded the paused thread and its approval request; then they all go at once.
    await w.until(() => w.events.filter((e) => e.event === "ready").length === n, children, `all ${n} were ready`);
    writeFileSync(barrier, "");
    // Wait until every child is either inside the refund tool or has given up on the thread.
    const inTool = () => w.events.filter((e) => e.event === "in_tool");
    const busy = () => w.events.filter((e) => e.event === "error");
    await w.until(() => inTool().length + busy().length === n, children, "every child reported");
    expect(inTool()).toHaveLength(1);
    // Only now may the winner's refund go on: until here it held the lock.
    writeFileSync(hold, "");
    const runs = await children;

    for (const run of runs) {
      expect(run.signal, run.stderr).toBeNull();
      expect(run.status, run.stderr).toBe(0);
    }
    const winners = runs.filter((r) => eventsOf(r, "result").length > 0);
    const losers = runs.filter((r) => eventsOf(r, "error").length > 0);
    expect(winners).toHaveLength(1);
    expect(losers).toHaveLength(n - 1);
    const winner = eventsOf(winners[0]!, "result")[0]!;
    expect(winner.pid).toBe(inTool()[0]!.pid);
    for (const loser of losers) {
      expect(eventsOf(loser, "error")).toEqual([
        expect.objectContaining({ name: "ThreadBusyError", code: "thread_busy", threadId: target.threadId, message: expect.stringContaining(`Thread "${target.threadId}" is busy`) }),
      ]);
      expect(eventsOf(loser, "in_tool")).toEqual([]);
      expect(eventsOf(loser, "result")).toEqual([]);
    }

    // The thread ended, completed, with the model's final answer.
    expect(winner.summary).toMatchObject({ next: [], approval: null, recovery: null, last: { type: "ai", content: FINAL_ANSWER }, verify: { ok: true } });
    expect(winner.summary.refundAnswers).toHaveLength(1);

    // Exactly one refund row; one ledger entry, run once.
    const rows = await admin.query(`SELECT tool_call_id AS "toolCallId", amount FROM "${schema}".refunds`);
    expect(rows.rows).toEqual([{ toolCallId: REFUND_CALL_ID, amount: 740 }]);
    const ledger = await admin.query(`SELECT tool_call_id AS "toolCallId", status, attempt FROM "${schema}".eart_effect_ledger WHERE thread_id = $1 ORDER BY tool_call_id`, [target.threadId]);
    expect(ledger.rows).toEqual([
      { toolCallId: "call_0_lookup", status: "succeeded", attempt: 1 },
      { toolCallId: REFUND_CALL_ID, status: "succeeded", attempt: 1 },
    ]);

    // The losers wrote nothing: one approval decision, one start, one success in a chain that verifies.
    const log = new SqliteAuditLog({ path: target.file });
    try {
      const events = await log.read(target.threadId);
      expect(events.filter((e) => e.type === "approval.decided")).toHaveLength(1);
      expect(events.filter((e) => e.type === "tool.started" && (e.data as { toolCallId?: string }).toolCallId === REFUND_CALL_ID)).toHaveLength(1);
      expect(events.filter((e) => e.type === "tool.succeeded" && (e.data as { toolCallId?: string }).toolCallId === REFUND_CALL_ID)).toHaveLength(1);
      expect(await log.verify(target.threadId)).toMatchObject({ ok: true, count: events.length });
    } finally {
      log.close();
    }
  });
});
