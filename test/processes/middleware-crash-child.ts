/**
 * A child process of test/middleware/crash.test.ts: the refund conversation as a LangChain v1
 * `createAgent` agent with `governanceMiddleware` and `guardAgent`, everything on one SQLite file
 * (`sqliteStores`: LangGraph's SqliteSaver, eart's audit log, effect ledger and thread lock; the
 * `refunds` table on the same file). The job comes as JSON in `EART_MW_CHILD_JOB`; the child prints
 * one JSON object per line on stdout and, at the crash point it is given, kills itself with a real
 * SIGKILL (no `finally`, no flush, no lock release).
 *
 * Steps:
 * - `run`: cara asks for the $740 refund (the thread pauses for a supervisor), then sam approves it
 *   in the same process, which dies at `crashAt` (or reports the finished thread).
 * - `continue`: `agent.invoke(null, config)` on the thread, as after a crash (README "Running threads").
 * - `recover`: sam answers the thread's `eart.recovery` request with `decision` (and the request's digest).
 */
import { writeSync } from "node:fs";
import { inspect } from "node:util";
import { HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { Command } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { createAgent } from "langchain";
import { eartErrorOf, pendingApproval, pendingRecovery, type EffectLedger } from "eart";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { executionContextOf } from "eart/nodes";
import { sqliteStores } from "eart/sqlite";
import { scriptedModel } from "eart/testing";
import { REFUND_EXECUTION, refundIdentities } from "../../examples/refund/agent.js";
import { refundScript } from "../../examples/refund/model.js";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { REFUND_CALL_ID, REFUND_REQUEST } from "./harness.js";

/**
 * Where the child dies while the approved refund runs:
 * - `after_effect`: inside `issue_refund`, right after its row was inserted (the ledger entry is `started`)
 * - `after_finish`: right after the ledger recorded the refund `succeeded`, before the tools step's checkpoint
 */
export type MiddlewareCrashPoint = "after_effect" | "after_finish";

export interface MiddlewareChildJob {
  step: "run" | "continue" | "recover";
  /** The SQLite file holding everything. */
  file: string;
  threadId: string;
  crashAt?: MiddlewareCrashPoint;
  /** `true`: `issue_refund` runs as the example declares it (`REFUND_EXECUTION`, idempotent); otherwise with default options (not idempotent). */
  idempotent?: boolean;
  /** `true`: the middleware gets no `ledger` (its default); the audit log and checkpointer still come from the file. */
  defaultLedger?: boolean;
  /** `recover` only. */
  decision?: { type: "retry" | "mark_done" | "abandon"; result?: unknown; message?: string };
}

/** The thread as a child sees it. */
export interface MiddlewareThreadSummary {
  next: string[];
  last: { type: string; content: string } | null;
  refundAnswers: { status: string | undefined; content: string }[];
  approval: string[] | null;
  recovery: { toolCallId: string; reason: string }[] | null;
  verify: { ok: boolean; count?: number; brokenAt?: unknown };
}

export type MiddlewareChildEvent =
  | { event: "paused"; pid: number; summary: MiddlewareThreadSummary }
  | { event: "in_tool"; pid: number; attempt: number | null; idempotencyKey: string | null }
  | { event: "crashing"; pid: number; at: MiddlewareCrashPoint }
  | { event: "result"; pid: number; before?: MiddlewareThreadSummary; summary: MiddlewareThreadSummary }
  | { event: "error"; pid: number; name: string; code: string | null; message: string };

const given = JSON.parse(process.env.EART_MW_CHILD_JOB ?? "null") as MiddlewareChildJob | null;
if (!given) throw new Error("EART_MW_CHILD_JOB is not set");
const job: MiddlewareChildJob = given;

type Emitted = MiddlewareChildEvent extends infer E ? (E extends MiddlewareChildEvent ? Omit<E, "pid"> : never) : never;
/** One line on stdout, written synchronously: it is out before a SIGKILL that follows. */
function emit(event: Emitted): void {
  writeSync(1, `${JSON.stringify({ ...event, pid: process.pid })}\n`);
}

function crash(at: MiddlewareCrashPoint): Promise<never> {
  emit({ event: "crashing", at });
  process.kill(process.pid, "SIGKILL");
  return new Promise<never>(() => {});
}

const crashAt = job.step === "run" ? job.crashAt : undefined;
const stores = sqliteStores(job.file);
// The refunds table on the same file, through a connection of its own (WAL: several connections share it).
const db = new Database(job.file);
db.pragma("journal_mode = WAL");
db.pragma("busy_timeout = 5000");
const tools = createRefundTools(db);

/** `issue_refund`, reporting each invocation, dying at `after_effect` right after its row was written. */
const original = tools.issueRefund;
const issueRefund = tool(
  async (args, config) => {
    const context = executionContextOf(config);
    emit({ event: "in_tool", attempt: context?.attempt ?? null, idempotencyKey: context?.idempotencyKey ?? null });
    const answer: unknown = await original.invoke(args, config);
    if (crashAt === "after_effect") await crash("after_effect");
    return answer as string;
  },
  { name: original.name, description: original.description, schema: original.schema },
);

/** The file's ledger, dying at `after_finish` right after the refund's outcome was recorded. */
function probeLedger(inner: EffectLedger): EffectLedger {
  return {
    begin: (key, now) => inner.begin(key, now),
    retry: (key, expectedAttempt, now) => inner.retry(key, expectedAttempt, now),
    async finish(key, outcome, now) {
      const finished = await inner.finish(key, outcome, now);
      if (finished && key.toolCallId === REFUND_CALL_ID && crashAt === "after_finish") await crash("after_finish");
      return finished;
    },
    get: (key) => inner.get(key),
    list: (threadId) => inner.list(threadId),
    sealKey: () => inner.sealKey(),
  };
}

const governance = governanceMiddleware({
  identities: refundIdentities(),
  policy: refundPolicy,
  auditLog: stores.auditLog,
  ...(job.defaultLedger ? {} : { ledger: probeLedger(stores.ledger) }),
  execution: job.idempotent ? { issue_refund: REFUND_EXECUTION } : {},
  recoveryRoles: ["supervisor"],
});
const agent = guardAgent(
  createAgent({
    model: scriptedModel(refundScript),
    tools: [tools.lookupOrder, tools.viewPaymentDetails, issueRefund],
    checkpointer: stores.checkpointer,
    middleware: [governance],
  }),
  governance,
  { lock: stores.threadLock },
);

const config = { configurable: { thread_id: job.threadId, agent_id: "support-agent", user_id: "cara" } };
/** Supervisor sam: the human answering is the principal of the resuming run. */
const supervisor = { configurable: { thread_id: job.threadId, user_id: "sam" } };

async function summary(): Promise<MiddlewareThreadSummary> {
  const snapshot = await agent.graph.getState(config);
  const messages = ((snapshot.values as { messages?: BaseMessage[] }).messages ?? []) as BaseMessage[];
  const last = messages.at(-1);
  return {
    next: [...snapshot.next],
    last: last ? { type: last.getType(), content: typeof last.content === "string" ? last.content : JSON.stringify(last.content) } : null,
    refundAnswers: messages
      .filter((m): m is ToolMessage => ToolMessage.isInstance(m) && m.tool_call_id === REFUND_CALL_ID)
      .map((m) => ({ status: m.status, content: String(m.content) })),
    approval: pendingApproval(snapshot)?.requests.map((r) => r.toolCallId) ?? null,
    recovery: pendingRecovery(snapshot)?.requests.map((r) => ({ toolCallId: r.toolCallId, reason: r.reason })) ?? null,
    verify: await stores.auditLog.verify(job.threadId),
  };
}

async function main(): Promise<void> {
  switch (job.step) {
    case "run": {
      await agent.invoke({ messages: [new HumanMessage(REFUND_REQUEST)] }, config);
      emit({ event: "paused", summary: await summary() });
      await agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), supervisor);
      emit({ event: "result", summary: await summary() });
      return;
    }
    case "continue": {
      const before = await summary();
      await agent.invoke(null, config);
      emit({ event: "result", before, summary: await summary() });
      return;
    }
    case "recover": {
      const recovery = pendingRecovery(await agent.graph.getState(config));
      if (!recovery) throw new Error(`thread ${job.threadId} is not waiting for a recovery decision`);
      if (!job.decision) throw new Error("no recovery decision given");
      const decisions = recovery.requests.map((r) => ({ toolCallId: r.toolCallId, ...job.decision, digest: r.digest }));
      await agent.invoke(new Command({ resume: { decisions } }), supervisor);
      emit({ event: "result", summary: await summary() });
      return;
    }
  }
}

let ok = true;
try {
  await main();
} catch (error) {
  const e = error as { name?: string; message?: string };
  // createAgent wraps what middleware throws (MiddlewareError, the original as cause): eartErrorOf finds eart's error in it.
  emit({ event: "error", name: e?.name ?? "Error", code: eartErrorOf(error)?.code ?? null, message: e?.message ?? String(error) });
  process.stderr.write(`${inspect(error)}\n`);
  ok = false;
} finally {
  db.close();
  stores.close();
}
process.exit(ok ? 0 : 1);
