import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { idempotencyKeyOf, type LedgerKey } from "eart";
import { advisoryLockKey } from "eart/postgres";
import { SqliteAuditLog } from "eart/sqlite";
import {
  assertChildBuilt,
  CRASH_POINTS,
  eventsOf,
  FINAL_ANSWER,
  limiter,
  REFUND_CALL_ID,
  runChild,
  type ChildEvent,
  type ChildRun,
  type ChildTarget,
  type CrashPoint,
  type RecoveryChoice,
} from "../processes/harness.js";

/**
 * Exactly once across real crashes. For each crash point, a child process approves the paused
 * refund and kills itself with SIGKILL there; a NEW process continues the thread (and, when it
 * pauses for recovery, the test answers as supervisor sam). The refund row must exist exactly
 * once, the thread must end with the model's final answer, and the audit chain must verify. On a
 * SQLite file and on PostgreSQL, with the example's idempotent refund (an unknown outcome is
 * retried with the same key) and with a non-idempotent one (an unknown outcome goes to a human).
 *
 * LangGraph's default durability ("async") writes a step's checkpoint while the next step already
 * runs. So that each crash point is exactly the one named, the child lets the checkpoint writes
 * already under way land before it dies inside the tools step (points before_begin … after_finish):
 * the approval's checkpoint is durable, the tools step's is not. See crash-child.ts.
 */

// A real PostgreSQL (.ci/run starts it). No skip: without it this suite fails, loudly.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const runId = `${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;

let admin: pg.Pool;
const dirs: string[] = [];
const schemas: string[] = [];
const pgThreads: string[] = [];

beforeAll(async () => {
  assertChildBuilt();
  admin = new pg.Pool({ connectionString: url });
  admin.on("error", () => {});
  await admin.query("SELECT 1");
  // LangGraph's checkpoint tables (schema public, as openRefundAgent uses them): set up once here,
  // so that the children's own setup() never races on a fresh database.
  const saver = new PostgresSaver(admin);
  await saver.setup();
});

afterAll(async () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  if (!admin) return;
  for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  if (pgThreads.length > 0) {
    for (const table of ["checkpoint_writes", "checkpoint_blobs", "checkpoints"]) {
      await admin.query(`DELETE FROM public.${table} WHERE thread_id = ANY($1)`, [pgThreads]);
    }
  }
  await admin.end();
});

/** One case: its own SQLite file and, on PostgreSQL, its own schema (refunds and ledger tables) and thread. */
interface Case {
  backend: "sqlite" | "postgres";
  idempotent: boolean;
  /** Built with default options: the ledger comes from the checkpointer's store. */
  defaults: boolean;
  at: CrashPoint;
  target: ChildTarget;
  file: string;
  threadId: string;
  schema?: string;
}

async function makeCase(backend: "sqlite" | "postgres", idempotent: boolean, at: CrashPoint, defaults: boolean): Promise<Case> {
  const dir = mkdtempSync(join(tmpdir(), "eart-crash-"));
  dirs.push(dir);
  const file = join(dir, "refund.sqlite");
  const threadId = `crash-${runId}-${backend}-${idempotent ? "idem" : "nonidem"}${defaults ? "-defaults" : ""}-${at}`;
  if (backend === "sqlite") return { backend, idempotent, defaults, at, file, threadId, target: { file, threadId, idempotent, defaults } };
  const schema = `eart_crash_${runId}_${idempotent ? "i" : "n"}${defaults ? "d" : ""}_${at}`;
  schemas.push(schema);
  await admin.query(`CREATE SCHEMA "${schema}"`);
  const postgres = new URL(url);
  postgres.searchParams.set("options", `-c search_path=${schema}`);
  pgThreads.push(threadId);
  return { backend, idempotent, defaults, at, file, threadId, schema, target: { file, threadId, postgres: postgres.toString(), idempotent, defaults } };
}

interface Row {
  id: number;
  orderId: string;
  amount: number;
  toolCallId: string;
  idempotencyKey: string;
}
interface LedgerRow {
  status: string;
  attempt: number;
  digest: string;
}

/** The refunds rows and the ledger entry of the refund call, read straight from the case's database. */
async function inspect(c: Case): Promise<{ rows: Row[]; ledger: LedgerRow | undefined }> {
  const rowsSql = `SELECT id, order_id AS "orderId", amount, tool_call_id AS "toolCallId", idempotency_key AS "idempotencyKey" FROM refunds ORDER BY id`;
  const ledgerSql = `SELECT status, attempt, digest FROM eart_effect_ledger WHERE thread_id = $1 AND tool_call_id = $2`;
  if (c.backend === "sqlite") {
    const db = new Database(c.file, { fileMustExist: true });
    try {
      const exists = (table: string) => db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(table) !== undefined;
      return {
        rows: exists("refunds") ? (db.prepare(rowsSql).all() as Row[]) : [],
        ledger: exists("eart_effect_ledger") ? (db.prepare(ledgerSql.replace("$1", "?").replace("$2", "?")).get(c.threadId, REFUND_CALL_ID) as LedgerRow | undefined) : undefined,
      };
    } finally {
      db.close();
    }
  }
  const client = await admin.connect();
  try {
    await client.query(`SET search_path = "${c.schema}"`);
    // issue_refund and the ledger create their tables on first use: a crash before that leaves none.
    const exists = async (table: string) => (await client.query<{ t: string | null }>(`SELECT to_regclass($1)::text AS t`, [table])).rows[0]?.t != null;
    const rows = (await exists("refunds")) ? (await client.query<Row>(rowsSql)).rows : [];
    const ledger = (await exists("eart_effect_ledger")) ? (await client.query<LedgerRow>(ledgerSql, [c.threadId, REFUND_CALL_ID])).rows[0] : undefined;
    return { rows, ledger };
  } finally {
    await client.query("RESET search_path").catch(() => {});
    client.release();
  }
}

/**
 * A killed child's PostgreSQL session (and its advisory thread lock) ends once the server sees the
 * socket close; wait for that rather than racing it (a continuation would get ThreadBusyError).
 */
async function waitUntilUnlocked(threadId: string): Promise<void> {
  const client = await admin.connect();
  try {
    for (let i = 0; i < 400; i++) {
      const { rows } = await client.query<{ locked: boolean }>(`SELECT pg_try_advisory_lock($1::bigint) AS locked`, [advisoryLockKey(threadId)]);
      if (rows[0]?.locked) {
        await client.query(`SELECT pg_advisory_unlock($1::bigint)`, [advisoryLockKey(threadId)]);
        return;
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`the thread lock of ${threadId} is still held 10 s after its holder was killed`);
  } finally {
    client.release();
  }
}

async function auditOf(c: Case) {
  const log = new SqliteAuditLog({ path: c.file });
  try {
    // The refund's events, in chain order.
    const refund = (await log.read(c.threadId)).filter((e) => (e.data as { toolCallId?: string }).toolCallId === REFUND_CALL_ID);
    const refundEvents = (type: string) => refund.filter((e) => e.type === type);
    return { verify: await log.verify(c.threadId), refund, refundEvents };
  } finally {
    log.close();
  }
}

/** What each crash point leaves behind, and whether the outcome of the refund is then unknown. */
const expected: Record<CrashPoint, { rows: number; ledger: { status: string; attempt: number } | undefined; unknownOutcome: boolean }> = {
  before_begin: { rows: 0, ledger: undefined, unknownOutcome: false },
  after_begin: { rows: 0, ledger: { status: "started", attempt: 1 }, unknownOutcome: true },
  after_effect: { rows: 1, ledger: { status: "started", attempt: 1 }, unknownOutcome: true },
  after_finish: { rows: 1, ledger: { status: "succeeded", attempt: 1 }, unknownOutcome: false },
  after_checkpoint: { rows: 1, ledger: { status: "succeeded", attempt: 1 }, unknownOutcome: false },
};

/**
 * The matrix. The non-idempotent refund on PostgreSQL only at the two points where the outcome is
 * unknown; at the others it behaves as the idempotent one (nothing is retried).
 */
const suites = [
  { backend: "sqlite", idempotent: true, defaults: false, points: CRASH_POINTS },
  { backend: "sqlite", idempotent: false, defaults: false, points: CRASH_POINTS },
  { backend: "postgres", idempotent: true, defaults: false, points: CRASH_POINTS },
  { backend: "postgres", idempotent: false, defaults: false, points: ["after_begin", "after_effect"] },
  // Default options: no ledger given, the agent takes its checkpointer's store. A crashed thread
  // finished by another process still runs the refund once.
  { backend: "sqlite", idempotent: false, defaults: true, points: ["after_effect", "after_checkpoint"] },
  { backend: "postgres", idempotent: false, defaults: true, points: ["after_effect", "after_checkpoint"] },
] as const;

/** Everything observed for one case, asserted by its test. */
interface Observed {
  approve: ChildRun;
  crashed: Awaited<ReturnType<typeof inspect>>;
  continued: ChildEvent[];
  recoveredWith?: RecoveryChoice;
  recovered?: ChildEvent[];
  after: Awaited<ReturnType<typeof inspect>>;
  audit: Awaited<ReturnType<typeof auditOf>>;
}

const cases: Case[] = [];
const observed = new Map<string, Observed>();
const caseOf = (backend: string, idempotent: boolean, defaults: boolean, at: CrashPoint) =>
  cases.find((c) => c.backend === backend && c.idempotent === idempotent && c.defaults === defaults && c.at === at)!;
const forThread = (run: ChildRun, threadId: string) =>
  run.events.filter((e) => ("summary" in e && e.summary.threadId === threadId) || ((e.event === "error" || e.event === "in_tool") && e.threadId === threadId));

// The children run here, batched to spare the CPU: ONE process pauses every thread, one process
// per case approves and dies, then ONE new process continues every thread (each thread in its own
// agent, database files and schema) and one answers the recovery requests. The tests below assert
// on what was observed, case by case.
beforeAll(async () => {
  for (const s of suites) for (const at of s.points) cases.push(await makeCase(s.backend, s.idempotent, at, s.defaults));

  const request = await runChild({ step: "request", targets: cases.map((c) => c.target) });
  const paused = eventsOf(request, "paused");
  if (request.status !== 0 || paused.length !== cases.length) throw new Error(`request failed: ${request.stdout}\n${request.stderr}`);
  for (const p of paused) {
    expect(p.summary).toMatchObject({ next: ["policyGate"], approval: [REFUND_CALL_ID], recovery: null, verify: { ok: true } });
  }

  const slot = limiter(4);
  const approvals = await Promise.all(cases.map((c) => slot(() => runChild({ step: "approve", targets: [c.target], crashAt: c.at }))));
  const crashed = await Promise.all(cases.map((c) => inspect(c)));
  for (const c of cases.filter((c) => c.backend === "postgres")) await waitUntilUnlocked(c.threadId);

  const cont = await runChild({ step: "continue", targets: cases.map((c) => c.target) });
  // The human checks the refunds system for each thread waiting for recovery: the row is there
  // (mark the call done with it) or not (retry it).
  const decisions = new Map<string, RecoveryChoice>();
  for (const c of cases) {
    const result = forThread(cont, c.threadId).find((e) => e.event === "result");
    if (result?.event !== "result" || !result.summary.recovery) continue;
    const row = (await inspect(c)).rows[0];
    decisions.set(c.threadId, row ? { type: "mark_done", result: { refundId: row.id, orderId: row.orderId, amount: row.amount, status: "refunded" } } : { type: "retry" });
  }
  const recover = decisions.size > 0 ? await runChild({ step: "recover", targets: cases.filter((c) => decisions.has(c.threadId)).map((c) => ({ ...c.target, decision: decisions.get(c.threadId)! })) }) : undefined;

  for (const [i, c] of cases.entries()) {
    observed.set(c.threadId, {
      approve: approvals[i]!,
      crashed: crashed[i]!,
      continued: forThread(cont, c.threadId),
      ...(decisions.has(c.threadId) ? { recoveredWith: decisions.get(c.threadId)!, recovered: forThread(recover!, c.threadId) } : {}),
      after: await inspect(c),
      audit: await auditOf(c),
    });
  }
}, 180_000);

describe.each(suites)("a SIGKILL while approving the refund ($backend, idempotent: $idempotent, default options: $defaults)", ({ backend, idempotent, defaults, points }) => {
  it.each(points)("at %s: a new process finishes the thread with exactly one refund", (at) => {
    const c = caseOf(backend, idempotent, defaults, at);
    const o = observed.get(c.threadId)!;
    const want = expected[at];

    // 1. The approving process died at the crash point, of a real SIGKILL.
    expect(o.approve.signal, o.approve.stderr).toBe("SIGKILL");
    expect(o.approve.status).toBeNull();
    expect(eventsOf(o.approve, "crashing").map((e) => e.at)).toEqual([at]);
    expect(eventsOf(o.approve, "result")).toEqual([]);
    // The crashed run called the tool only when it died after `begin` had returned and the tool had started.
    expect(eventsOf(o.approve, "in_tool").map((e) => e.attempt)).toEqual(at === "before_begin" || at === "after_begin" ? [] : [1]);

    // 2. What it left: the ledger and the refunds table as the crash point says.
    expect(o.crashed.rows).toHaveLength(want.rows);
    expect(o.crashed.ledger ? { status: o.crashed.ledger.status, attempt: o.crashed.ledger.attempt } : undefined).toEqual(want.ledger);

    // 3. A new process continued the thread from its last checkpoint.
    const continued = o.continued.find((e) => e.event === "result");
    expect(continued, JSON.stringify(o.continued)).toBeDefined();
    if (continued?.event !== "result") return;
    expect(continued.pid).not.toBe(eventsOf(o.approve, "crashing")[0]!.pid);
    if (at === "after_checkpoint") {
      // The checkpoint of the tools step was written: the refund is answered, the tools step not run again.
      expect(continued.before!.refundAnswers).toHaveLength(1);
      expect(continued.before!.next).not.toContain("tools");
    } else {
      // The last checkpoint is the approval's: the tools step runs again, through the ledger.
      expect(continued.before!.refundAnswers).toEqual([]);
      expect(continued.before!.next).toEqual(["tools"]);
    }
    expect(continued.before!.verify.ok).toBe(true);

    let final = continued.summary;
    const asksHuman = want.unknownOutcome && !idempotent;
    if (asksHuman) {
      // Nobody knows whether the refund happened: a non-idempotent tool is not re-run blindly.
      expect(final.recovery).toEqual({
        type: "eart.recovery",
        requests: [{ toolCallId: REFUND_CALL_ID, name: "issue_refund", reason: "outcome_unknown", attempt: 1, resolverRoles: ["supervisor"] }],
      });
      expect(final.next).toEqual(["recovery"]);
      expect(final.refundAnswers).toEqual([]);
      // sam retried when there was no row, and marked the call done with the row when there was one.
      expect(o.recoveredWith?.type).toBe(want.rows === 0 ? "retry" : "mark_done");
      const recovered = o.recovered?.find((e) => e.event === "result");
      expect(recovered, JSON.stringify(o.recovered)).toBeDefined();
      if (recovered?.event !== "result") return;
      final = recovered.summary;
    } else {
      expect(o.recoveredWith).toBeUndefined();
    }

    // 4. The thread finished with the model's final answer.
    expect(final.recovery).toBeNull();
    expect(final.approval).toBeNull();
    expect(final.next).toEqual([]);
    expect(final.last).toEqual({ type: "ai", content: FINAL_ANSWER });

    // 5. Exactly one refund, made with eart's key for this call, and the answer names that row.
    expect(o.after.rows).toHaveLength(1);
    const key: LedgerKey = { threadId: c.threadId, toolCallId: REFUND_CALL_ID, digest: o.after.ledger!.digest };
    expect(o.after.rows[0]).toMatchObject({ orderId: "1042", amount: 740, toolCallId: REFUND_CALL_ID, idempotencyKey: idempotencyKeyOf(key) });
    expect(final.refundAnswers).toHaveLength(1);
    expect(final.refundAnswers[0]!.status).toBe("success");
    expect(JSON.parse(final.refundAnswers[0]!.content)).toMatchObject({ refundId: o.after.rows[0]!.id, orderId: "1042", amount: 740, status: "refunded" });
    // The ledger: succeeded, with a second start only where the tool really ran again.
    const reran = want.unknownOutcome && (idempotent || o.recoveredWith?.type === "retry");
    expect(o.after.ledger).toMatchObject({ status: "succeeded", attempt: reran ? 2 : 1 });
    // Which process called the tool after the crash, and with which attempt: never when the ledger
    // knew the outcome (the refunds table's own unique key would hide a second call; this does not).
    const calledAfter = [...o.continued, ...(o.recovered ?? [])].filter((e) => e.event === "in_tool").map((e) => (e as { attempt: number }).attempt);
    expect(calledAfter).toEqual(at === "before_begin" ? [1] : reran ? [2] : []);

    // 6. The audit chain verifies and tells the same story.
    expect(o.audit.verify).toMatchObject({ ok: true });
    expect(final.verify.ok).toBe(true);
    // No gap: every attempt the ledger started has its `tool.started`, and the success its one
    // `tool.succeeded`, in that order. A crash between a ledger write and the audit event after it
    // (after_begin: the claim of attempt 1; after_finish: its success) leaves the event to the next
    // run, which writes it from the ledger before anything else it records for the call.
    const attemptOf = (e: { data: unknown }) => (e.data as { attempt: number }).attempt;
    const finalAttempt = reran ? 2 : 1;
    const lifecycle = new Set(["tool.started", "tool.succeeded", "tool.replayed", "tool.recovery_requested"]);
    expect(o.audit.refund.filter((e) => lifecycle.has(e.type)).map((e) => `${e.type} ${attemptOf(e)}`)).toEqual([
      "tool.started 1",
      ...(asksHuman ? ["tool.recovery_requested 1"] : []),
      ...(reran ? ["tool.started 2"] : []),
      `tool.succeeded ${finalAttempt}`,
      ...(at === "after_finish" ? ["tool.replayed 1"] : []),
    ]);
    expect(o.audit.refundEvents("tool.replayed").map((e) => (e.data as { status: string }).status)).toEqual(at === "after_finish" ? ["succeeded"] : []);
    // Marked as written from the ledger exactly where the gap was, and nowhere else.
    const reconstructed = o.audit.refund.filter((e) => (e.data as { reconstructed?: string }).reconstructed !== undefined);
    expect(reconstructed.map((e) => ({ type: e.type, attempt: attemptOf(e), reconstructed: (e.data as { reconstructed?: string }).reconstructed }))).toEqual(
      at === "after_begin"
        ? [{ type: "tool.started", attempt: 1, reconstructed: "ledger" }]
        : at === "after_finish"
          ? [{ type: "tool.succeeded", attempt: 1, reconstructed: "ledger" }]
          : [],
    );
    if (at === "after_begin") expect(reconstructed[0]!.data).toMatchObject({ name: "issue_refund", digest: o.after.ledger!.digest, startedAt: expect.any(String) });
    if (at === "after_finish") {
      // The same preview the normal path writes: the ledger's result, as the model saw it.
      expect(reconstructed[0]!.data).toMatchObject({ name: "issue_refund", digest: o.after.ledger!.digest, result: final.refundAnswers[0]!.content, truncated: false });
    }
    expect(o.audit.refundEvents("tool.recovery_requested")).toHaveLength(asksHuman ? 1 : 0);
    expect(o.audit.refundEvents("tool.recovery_decided").map((e) => e.data as { decision: string; resolverId: string })).toEqual(
      asksHuman ? [expect.objectContaining({ decision: o.recoveredWith!.type, resolverId: "sam" })] : [],
    );
  });
});
