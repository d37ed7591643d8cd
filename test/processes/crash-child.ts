/**
 * A child process of the crash, concurrency and restart tests (test/crash). It builds the governed
 * refund agent from the example's parts, exactly as `openRefundAgent` does, with three probes
 * wrapped around them: the effect ledger, the `issue_refund` tool and the checkpointer's
 * `put` / `putWrites`. The job comes as JSON in `EART_CHILD_JOB` (see ../processes/harness.ts);
 * the child prints one JSON object per line on stdout and kills itself with a real SIGKILL at the
 * crash point it is given.
 */
import { existsSync, writeSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { inspect } from "node:util";
import { HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { Command } from "@langchain/langgraph";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import pg from "pg";
import { pendingApproval, pendingRecovery, type EffectLedger, type LedgerKey } from "eart";
import { PostgresEffectLedger } from "eart/postgres";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedAgent } from "eart/graphs";
import { executionContextOf } from "eart/nodes";
import { REFUND_EXECUTION, refundIdentities } from "../../examples/refund/agent.js";
import { createRefundModel } from "../../examples/refund/model.js";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { REFUND_CALL_ID, REFUND_REQUEST, type ChildEvent, type ChildJob, type ChildTarget, type CrashPoint, type ThreadSummary } from "./harness.js";

const job = JSON.parse(process.env.EART_CHILD_JOB ?? "null") as ChildJob | null;
if (!job) throw new Error("EART_CHILD_JOB is not set");

type Emitted = ChildEvent extends infer E ? (E extends ChildEvent ? Omit<E, "pid"> : never) : never;
/** One line on stdout, written synchronously: it is out before a SIGKILL that follows. */
function emit(event: Emitted): void {
  writeSync(1, `${JSON.stringify({ ...event, pid: process.pid })}\n`);
}

async function waitForFile(path: string): Promise<void> {
  while (!existsSync(path)) await sleep(5);
}

const isRefund = (key: LedgerKey) => key.toolCallId === REFUND_CALL_ID;

/** Checkpoint writes LangGraph has started (its default durability writes them in the background). */
const inflight = new Set<Promise<unknown>>();
function track<T>(promise: Promise<T>): Promise<T> {
  inflight.add(promise);
  promise.then(
    () => inflight.delete(promise),
    () => inflight.delete(promise),
  );
  return promise;
}

/**
 * Dies here. Before a crash inside the tools step, the checkpoint writes of the earlier steps that
 * are already under way are let land, so the crash point is exactly the one named (and not also
 * "before the approval's checkpoint was written").
 */
async function crash(at: CrashPoint, settle: boolean): Promise<never> {
  if (settle) await Promise.allSettled([...inflight]);
  emit({ event: "crashing", at });
  process.kill(process.pid, "SIGKILL");
  return new Promise<never>(() => {});
}

let refundFinished = false;

/** The ledger, with the `before_begin`, `after_begin` and `after_finish` crash points. */
function probeLedger(inner: EffectLedger, at: CrashPoint | undefined): EffectLedger {
  return {
    async begin(key, now) {
      if (at === "before_begin" && isRefund(key)) await crash(at, true);
      const begun = await inner.begin(key, now);
      if (at === "after_begin" && isRefund(key) && begun.claimed) await crash(at, true);
      return begun;
    },
    retry: (key, expectedAttempt, now) => inner.retry(key, expectedAttempt, now),
    async finish(key, outcome, now) {
      const finished = await inner.finish(key, outcome, now);
      if (finished && isRefund(key)) {
        refundFinished = true;
        if (at === "after_finish") await crash(at, true);
      }
      return finished;
    },
    get: (key) => inner.get(key),
    list: (threadId) => inner.list(threadId),
    sealKey: () => inner.sealKey(),
  };
}

/** Does this checkpoint hold the answer of the refund call (i.e. record the tools step)? */
function recordsRefund(checkpoint: { channel_values?: Record<string, unknown> }): boolean {
  const messages = checkpoint.channel_values?.messages;
  return Array.isArray(messages) && messages.some((m) => ToolMessage.isInstance(m) && m.tool_call_id === REFUND_CALL_ID);
}

/** The checkpointer, with the `after_checkpoint` crash point; its writes are tracked. */
function probeCheckpointer(saver: SqliteSaver | PostgresSaver, at: CrashPoint | undefined): void {
  const put = saver.put.bind(saver);
  const putWrites = saver.putWrites.bind(saver);
  saver.put = (async (config, checkpoint, metadata, newVersions) => {
    const saved = await track(put(config, checkpoint, metadata, newVersions));
    if (at === "after_checkpoint" && refundFinished && recordsRefund(checkpoint)) await crash(at, false);
    return saved;
  }) as typeof saver.put;
  saver.putWrites = ((config, writes, taskId) => track(putWrites(config, writes, taskId))) as typeof saver.putWrites;
}

/** The refund agent of `openRefundAgent`, with the probes. */
async function open(target: ChildTarget) {
  const db = new Database(target.file);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const auditLog = new SqliteAuditLog({ database: db });
  const pool = target.postgres ? new pg.Pool({ connectionString: target.postgres }) : undefined;
  pool?.on("error", () => {});
  let checkpointer: SqliteSaver | PostgresSaver;
  if (pool) {
    checkpointer = new PostgresSaver(pool);
    await checkpointer.setup();
  } else {
    checkpointer = new SqliteSaver(db);
  }
  const at = job!.step === "approve" ? job!.crashAt : undefined;
  probeCheckpointer(checkpointer, at);
  // With default options the agent picks the ledger of its checkpointer's store itself.
  const ledger = target.defaults ? undefined : probeLedger(pool ? new PostgresEffectLedger({ pool }) : new SqliteEffectLedger({ database: db }), at);
  const tools = createRefundTools(pool ?? db);
  const original = tools.issueRefund;
  const issueRefund = tool(
    async (args, config) => {
      const context = executionContextOf(config);
      emit({ event: "in_tool", threadId: context?.key.threadId ?? null, attempt: context?.attempt ?? null });
      if (job!.hold) await waitForFile(job!.hold);
      const answer: unknown = await original.invoke(args, config);
      if (at === "after_effect") await crash(at, true);
      // Without the probe ledger (default options) the checkpoint probe learns it here; it still
      // dies only on the checkpoint that records the refund's answer.
      if (target.defaults) refundFinished = true;
      return answer as string;
    },
    { name: original.name, description: original.description, schema: original.schema },
  );
  const agent = createGovernedAgent({
    model: await createRefundModel(),
    tools: [tools.lookupOrder, tools.viewPaymentDetails, issueRefund],
    identities: refundIdentities(),
    policy: refundPolicy,
    checkpointer,
    auditLog,
    ...(ledger ? { ledger } : {}),
    execution: { issue_refund: (target.idempotent ?? job!.idempotent) === false ? { idempotent: false } : REFUND_EXECUTION },
    recoveryRoles: ["supervisor"],
    systemPrompt: "You are a customer-support agent. Look orders up before refunding them.",
  });
  const config = { configurable: { thread_id: target.threadId, agent_id: "support-agent", user_id: "cara" } };
  /** Supervisor sam's resume: the human answering is the authenticated principal of the run, not the payload. */
  const supervisorConfig = { configurable: { thread_id: target.threadId, user_id: "sam" } };

  async function summary(): Promise<ThreadSummary> {
    const snapshot = await agent.getState(config);
    const messages = ((snapshot.values as { messages?: BaseMessage[] }).messages ?? []) as BaseMessage[];
    const last = messages[messages.length - 1];
    const recovery = pendingRecovery(snapshot);
    return {
      threadId: target.threadId,
      next: [...snapshot.next],
      last: last ? { type: last.getType(), content: typeof last.content === "string" ? last.content : JSON.stringify(last.content) } : null,
      refundAnswers: messages
        .filter((m): m is ToolMessage => ToolMessage.isInstance(m) && m.tool_call_id === REFUND_CALL_ID)
        .map((m) => ({ status: m.status, content: String(m.content) })),
      approval: pendingApproval(snapshot)?.requests.map((r) => r.toolCallId) ?? null,
      recovery: recovery
        ? {
            type: recovery.type,
            requests: recovery.requests.map((r) => ({
              toolCallId: r.toolCallId,
              name: r.name,
              reason: r.reason,
              attempt: r.attempt,
              ...(r.error !== undefined ? { error: r.error } : {}),
              resolverRoles: r.resolverRoles,
            })),
          }
        : null,
      verify: await auditLog.verify(target.threadId),
    };
  }

  return {
    agent,
    config,
    supervisorConfig,
    summary,
    close: async () => {
      await pool?.end();
      db.close();
    },
  };
}

type ErrorLike = { name?: string; code?: unknown; message?: string; stack?: string };

/** Reports an error as one JSON line (and its stack on stderr); true when it is a lost race for the thread's lock. */
function report(error: unknown, threadId: string | null): boolean {
  const e = error as ErrorLike;
  emit({ event: "error", threadId, name: e?.name ?? "Error", code: typeof e?.code === "string" ? e.code : null, message: e?.message ?? String(error) });
  process.stderr.write(`${inspect(error)}\n`);
  return e?.code === "thread_busy";
}

/** Runs `step` on every target, each in its own agent, going on after a failure. Returns whether all succeeded. */
async function eachTarget(step: (opened: Awaited<ReturnType<typeof open>>, target: ChildTarget) => Promise<void>): Promise<boolean> {
  let ok = true;
  for (const target of job!.targets) {
    try {
      const opened = await open(target);
      try {
        await step(opened, target);
      } finally {
        await opened.close();
      }
    } catch (error) {
      report(error, target.threadId);
      ok = false;
    }
  }
  return ok;
}

async function main(): Promise<boolean> {
  const [target] = job!.targets;
  if (!target) throw new Error("the job has no target");
  switch (job!.step) {
    case "request":
      return eachTarget(async ({ agent, config, summary }) => {
        await agent.invoke({ messages: [new HumanMessage(REFUND_REQUEST)] }, config);
        emit({ event: "paused", summary: await summary() });
      });
    case "approve": {
      const { agent, config, supervisorConfig, summary, close } = await open(target);
      try {
        const approval = pendingApproval(await agent.getState(config));
        if (!approval) throw new Error(`thread ${target.threadId} is not waiting for an approval`);
        const decisions = approval.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve" as const, digest: r.digest }));
        emit({ event: "ready" });
        if (job!.barrier) await waitForFile(job!.barrier);
        await agent.invoke(new Command({ resume: { approver: { id: "sam" }, decisions } }), supervisorConfig);
        emit({ event: "result", summary: await summary() });
        return true;
      } catch (error) {
        // A lost race for the thread's lock is an expected outcome (the concurrency test); anything else is a failure.
        return report(error, target.threadId);
      } finally {
        await close();
      }
    }
    case "continue":
      return eachTarget(async ({ agent, config, summary }) => {
        const before = await summary();
        await agent.invoke(null, config);
        emit({ event: "result", before, summary: await summary() });
      });
    case "recover":
      return eachTarget(async ({ agent, config, supervisorConfig, summary }, t) => {
        const recovery = pendingRecovery(await agent.getState(config));
        if (!recovery) throw new Error(`thread ${t.threadId} is not waiting for a recovery decision`);
        const choice = t.decision ?? job!.decision;
        if (!choice) throw new Error(`no recovery decision for thread ${t.threadId}`);
        const decisions = recovery.requests.map((r) => ({ toolCallId: r.toolCallId, ...choice, digest: r.digest }));
        await agent.invoke(new Command({ resume: { resolver: { id: "sam" }, decisions } }), supervisorConfig);
        emit({ event: "result", summary: await summary() });
      });
  }
}

let ok: boolean;
try {
  ok = await main();
} catch (error) {
  ok = report(error, null);
}
process.exit(ok ? 0 : 1);
