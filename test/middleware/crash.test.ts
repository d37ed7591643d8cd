import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SqliteAuditLog } from "eart/sqlite";
import { FINAL_ANSWER, REFUND_CALL_ID } from "../processes/harness.js";
import type { MiddlewareChildEvent, MiddlewareChildJob, MiddlewareThreadSummary } from "../processes/middleware-crash-child.js";

/**
 * Exactly once across a real crash, for a LangChain v1 `createAgent` agent with
 * `governanceMiddleware` + `guardAgent`. Process A (test/processes/middleware-crash-child.ts, run
 * from dist) asks for the $740 refund, gets supervisor sam's approval and kills itself with
 * SIGKILL while the approved refund runs: right after `issue_refund` inserted its row
 * (`after_effect`), or right after the ledger recorded it `succeeded` (`after_finish`), in both
 * cases before the tools step's checkpoint. Process B opens the same SQLite file (checkpoints,
 * audit log, ledger, thread lock and the refunds table: `sqliteStores`) and continues the thread
 * with `agent.invoke(null, config)`. The refund row must exist once, the refund tool must not act
 * again (or, declared idempotent, run again only under the same key), the thread must finish with
 * the model's answer, and the audit chain must verify.
 *
 * guardAgent runs with `durability: "sync"`, so the approval's checkpoint is written before the
 * tools step starts: B finds the thread at `tools`, its approval recorded.
 */

const CHILD = resolve("dist/test/processes/middleware-crash-child.js");

interface ChildRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  events: MiddlewareChildEvent[];
}

function runChild(job: MiddlewareChildJob, timeoutMs = 45_000): Promise<ChildRun> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CHILD], {
      env: { ...process.env, OPENAI_API_KEY: "", EART_MW_CHILD_JOB: JSON.stringify(job) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    child.on("error", reject);
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      const events = stdout
        .split("\n")
        .map((line) => line.trim())
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as MiddlewareChildEvent);
      resolvePromise({ status, signal, stdout, stderr, events });
    });
  });
}

const eventsOf = <K extends MiddlewareChildEvent["event"]>(run: ChildRun, kind: K) =>
  run.events.filter((e): e is Extract<MiddlewareChildEvent, { event: K }> => e.event === kind);
const shown = (run: ChildRun) => `status ${run.status} signal ${run.signal}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`;

/** The single `result` of a run that exited 0, or an error showing what the child printed. */
function resultOf(run: ChildRun): { before?: MiddlewareThreadSummary; summary: MiddlewareThreadSummary } {
  const results = eventsOf(run, "result");
  if (results.length !== 1 || run.status !== 0) throw new Error(`expected one result and exit 0, got ${shown(run)}`);
  return results[0]!;
}

const dirs: string[] = [];
beforeAll(() => {
  if (!existsSync(CHILD)) throw new Error(`${CHILD} is missing: build first (npx tsc -p tsconfig.json; npm test builds)`);
});
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function newCase(name: string) {
  const dir = mkdtempSync(join(tmpdir(), "eart-mw-crash-"));
  dirs.push(dir);
  return { file: join(dir, "agent.sqlite"), threadId: `mw-crash-${name}` };
}

/** The refunds rows and the refund's ledger entry, read straight from the file. */
function inspectFile(file: string, threadId: string) {
  const db = new Database(file, { fileMustExist: true, readonly: true });
  try {
    const exists = (table: string) => db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(table) !== undefined;
    return {
      rows: exists("refunds") ? (db.prepare(`SELECT order_id AS orderId, amount, tool_call_id AS toolCallId, idempotency_key AS idempotencyKey FROM refunds ORDER BY id`).all() as { orderId: string; amount: number; toolCallId: string; idempotencyKey: string }[]) : [],
      ledger: exists("eart_effect_ledger")
        ? (db.prepare(`SELECT status, attempt FROM eart_effect_ledger WHERE thread_id = ? AND tool_call_id = ?`).get(threadId, REFUND_CALL_ID) as { status: string; attempt: number } | undefined)
        : undefined,
    };
  } finally {
    db.close();
  }
}

async function auditOf(file: string, threadId: string) {
  const log = new SqliteAuditLog({ path: file });
  try {
    const events = await log.read(threadId);
    const refund = events.filter((e) => (e.data as { toolCallId?: string }).toolCallId === REFUND_CALL_ID).map((e) => e.type);
    return { verify: await log.verify(threadId), types: events.map((e) => e.type), refund };
  } finally {
    log.close();
  }
}

/** Process A: the refund conversation up to sam's approval, dying at `crashAt` inside the approved refund. */
async function crashAfterApproval(job: Omit<MiddlewareChildJob, "step">) {
  const run = await runChild({ ...job, step: "run" });
  const paused = eventsOf(run, "paused");
  expect(paused, shown(run)).toHaveLength(1);
  expect(paused[0]!.summary).toMatchObject({ approval: [REFUND_CALL_ID], recovery: null, refundAnswers: [], verify: { ok: true } });
  expect(eventsOf(run, "crashing").map((e) => e.at), shown(run)).toEqual([job.crashAt]);
  expect(run.signal).toBe("SIGKILL");
  expect(eventsOf(run, "in_tool")).toHaveLength(1);
  return run;
}

describe("governanceMiddleware: a process killed while the approved refund runs; another process continues the thread", () => {
  it("after the refund's row was written (outcome unknown), a refund that is not idempotent goes to a human, is marked done, and is never run again", async () => {
    const c = newCase("effect-nonidem");
    await crashAfterApproval({ ...c, crashAt: "after_effect" });
    // The row is written, the ledger entry is `started`: the outcome is unknown to eart.
    expect(inspectFile(c.file, c.threadId)).toMatchObject({ rows: [{ orderId: "1042", amount: 740, toolCallId: REFUND_CALL_ID }], ledger: { status: "started", attempt: 1 } });

    const cont = await runChild({ ...c, step: "continue" });
    const continued = resultOf(cont);
    // The approval is answered in the tools step that runs the refund, whose checkpoint was not
    // saved: the thread still shows the request; the answer sam gave stands (the audit log says so).
    expect(continued.before).toMatchObject({ next: ["tools"], approval: [REFUND_CALL_ID], refundAnswers: [] });
    // Not run blindly: the call waits for a supervisor's recovery decision.
    expect(eventsOf(cont, "in_tool")).toEqual([]);
    expect(continued.summary).toMatchObject({ recovery: [{ toolCallId: REFUND_CALL_ID, reason: "outcome_unknown" }], verify: { ok: true } });
    expect(inspectFile(c.file, c.threadId).rows).toHaveLength(1);

    // Sam checks the refunds system: the row is there; the call is marked done with it.
    const recover = await runChild({ ...c, step: "recover", decision: { type: "mark_done", result: { refundId: 1, orderId: "1042", amount: 740, status: "refunded" } } });
    const recovered = resultOf(recover);
    expect(eventsOf(recover, "in_tool")).toEqual([]);
    expect(recovered.summary).toMatchObject({ next: [], recovery: null, approval: null, last: { type: "ai", content: FINAL_ANSWER }, verify: { ok: true } });
    expect(recovered.summary.refundAnswers).toHaveLength(1);
    expect(inspectFile(c.file, c.threadId).rows).toHaveLength(1);
    const audit = await auditOf(c.file, c.threadId);
    expect(audit.verify).toMatchObject({ ok: true });
    expect(audit.refund.filter((t) => t === "tool.started")).toHaveLength(1);
    expect(audit.types).toContain("run.completed");
  });

  it("after the ledger recorded the refund's success (before the step's checkpoint), the recorded result is replayed: the tool is not called again", async () => {
    const c = newCase("finish");
    await crashAfterApproval({ ...c, crashAt: "after_finish" });
    expect(inspectFile(c.file, c.threadId)).toMatchObject({ rows: [{ toolCallId: REFUND_CALL_ID }], ledger: { status: "succeeded", attempt: 1 } });

    const cont = await runChild({ ...c, step: "continue" });
    const continued = resultOf(cont);
    expect(continued.before).toMatchObject({ next: ["tools"], approval: [REFUND_CALL_ID], refundAnswers: [] });
    expect(eventsOf(cont, "in_tool")).toEqual([]);
    expect(continued.summary).toMatchObject({ next: [], recovery: null, approval: null, last: { type: "ai", content: FINAL_ANSWER }, verify: { ok: true } });
    expect(continued.summary.refundAnswers).toEqual([{ status: "success", content: expect.stringContaining('"status":"refunded"') }]);
    expect(inspectFile(c.file, c.threadId).rows).toHaveLength(1);
    const audit = await auditOf(c.file, c.threadId);
    expect(audit.verify).toMatchObject({ ok: true });
    expect(audit.refund).toContain("tool.replayed");
    expect(audit.refund.filter((t) => t === "tool.started")).toHaveLength(1);
  });

  it("after the refund's row was written, a refund declared idempotent for its tool name (execution: { issue_refund }) runs again under the same key: still one row", async () => {
    const c = newCase("effect-idem");
    const first = await crashAfterApproval({ ...c, crashAt: "after_effect", idempotent: true });
    const key = eventsOf(first, "in_tool")[0]!.idempotencyKey;
    expect(inspectFile(c.file, c.threadId)).toMatchObject({ rows: [{ toolCallId: REFUND_CALL_ID, idempotencyKey: key }], ledger: { status: "started", attempt: 1 } });

    const cont = await runChild({ ...c, step: "continue", idempotent: true });
    const continued = resultOf(cont);
    expect(continued.before).toMatchObject({ next: ["tools"], approval: [REFUND_CALL_ID], refundAnswers: [] });
    // Run again, with the same key: the refunds system returns the first refund instead of paying twice.
    expect(eventsOf(cont, "in_tool")).toEqual([expect.objectContaining({ attempt: 2, idempotencyKey: key })]);
    expect(continued.summary).toMatchObject({ next: [], recovery: null, last: { type: "ai", content: FINAL_ANSWER }, verify: { ok: true } });
    expect(inspectFile(c.file, c.threadId)).toMatchObject({ rows: [{ toolCallId: REFUND_CALL_ID }], ledger: { status: "succeeded", attempt: 2 } });
    expect(inspectFile(c.file, c.threadId).rows).toHaveLength(1);
    expect((await auditOf(c.file, c.threadId)).verify).toMatchObject({ ok: true });
  });

  it("with default options (no ledger given, as the prebuilt agent allows), the thread crashed in one process is finished by another without repeating the refund", async () => {
    // DESIGN invariant 5: at most once across crashes and processes "with default options". The
    // prebuilt agent takes its ledger from the checkpointer's store (ledgerFor); the middleware
    // should too, or the records sealed by process A are not recognised by process B.
    const c = newCase("defaults");
    await crashAfterApproval({ ...c, crashAt: "after_effect", defaultLedger: true });
    expect(inspectFile(c.file, c.threadId).rows).toHaveLength(1);

    const cont = await runChild({ ...c, step: "continue", defaultLedger: true });
    expect(eventsOf(cont, "error"), shown(cont)).toEqual([]);
    const continued = resultOf(cont);
    expect(eventsOf(cont, "in_tool")).toEqual([]);
    // The outcome is unknown (the refund is not declared idempotent): a supervisor decides.
    expect(continued.summary).toMatchObject({ recovery: [{ toolCallId: REFUND_CALL_ID, reason: "outcome_unknown" }], verify: { ok: true } });
    expect(inspectFile(c.file, c.threadId).rows).toHaveLength(1);
  });
});
