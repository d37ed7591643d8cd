// The child process of ./pg-faults.test.ts (plain JavaScript on the built package: run
// "npm run build" first). It runs the governed refund agent exactly as a user would with default
// options on PostgreSQL (LangGraph's PostgresSaver on a default pool with no 'error' listener of
// its own, the ledger and thread lock eart picks for it, the audit log on the same pool), while the
// test terminates its connections. It must never crash: an uncaught error ends it with a non-zero
// exit code, which the test reports.
//
// Job (JSON in EART_FAULTS_JOB): { url, threads: string[], concurrency }.
// Phase 1: every thread runs its conversation (cara asks, the run pauses for approval, sam
// approves), `concurrency` at a time; a conversation that fails is noted and left. The child then
// waits for a line on stdin. Phase 2: every failed thread is driven to its end (resumed, approved,
// re-asked, whatever its state needs). One JSON object per line on stdout.
import { writeSync } from "node:fs";
import { createInterface } from "node:readline";
import { AIMessage, HumanMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import pg from "pg";
import { pendingApproval, pendingRecovery } from "../../dist/src/index.js";
import { scriptedRefundAgentOnPostgres } from "../../dist/examples/refund/agent.js";

const REQUEST = "Hi, order 1042 arrived broken. Please refund $740.";
const FINAL_ANSWER = "Your refund of $740 for order 1042 has been issued.";
const job = JSON.parse(process.env.EART_FAULTS_JOB ?? "null");
if (!job) throw new Error("EART_FAULTS_JOB is not set");

/** One line on stdout, written synchronously. */
const emit = (event) => writeSync(1, `${JSON.stringify(event)}\n`);
const describe = (error) => ({ name: error?.name ?? "Error", code: typeof error?.code === "string" ? error.code : null, message: String(error?.message ?? error).slice(0, 300) });

const pool = new pg.Pool({ connectionString: job.url });
const schema = new URL(job.url).searchParams.get("options").replace("-c search_path=", "");
const { agent, auditLog } = await scriptedRefundAgentOnPostgres(pool, { schema, turns: 100_000 });

const asCara = (threadId) => ({ configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" } });
const asSam = (threadId) => ({ configurable: { thread_id: threadId, user_id: "sam" } });
const ask = () => ({ messages: [new HumanMessage(REQUEST)] });
const lastOf = (values) => values?.messages?.at(-1);
const finished = (values) => {
  const last = lastOf(values);
  return AIMessage.isInstance(last) && last.content === FINAL_ANSWER;
};

async function approve(threadId, request) {
  const decisions = request.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve", digest: r.digest }));
  return agent.invoke(new Command({ resume: { decisions } }), asSam(threadId));
}

/** Phase 1: the conversation as a customer and a supervisor have it. */
async function conversation(threadId) {
  const request = pendingApproval(await agent.invoke(ask(), asCara(threadId)));
  if (!request) throw new Error(`thread ${threadId} did not pause for approval`);
  if (!finished(await approve(threadId, request))) throw new Error(`thread ${threadId} did not finish`);
}

/** Phase 2: whatever the thread's state, the next step towards its end. Returns the attempts it took. */
async function driveToEnd(threadId) {
  let lastError;
  for (let attempt = 1; attempt <= 8; attempt++) {
    try {
      const state = await agent.getState(asCara(threadId));
      if (finished(state.values) && state.next.length === 0) return attempt;
      const approval = pendingApproval(state);
      const recovery = pendingRecovery(state);
      if (approval) await approve(threadId, approval);
      else if (recovery) {
        const decisions = recovery.requests.map((r) => ({ toolCallId: r.toolCallId, type: "retry", digest: r.digest }));
        await agent.invoke(new Command({ resume: { decisions } }), asSam(threadId));
      } else if ((state.values?.messages ?? []).length === 0 && state.next.length === 0) await agent.invoke(ask(), asCara(threadId));
      else await agent.invoke(null, asCara(threadId));
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError ?? new Error(`thread ${threadId} did not reach its end`);
}

/** Runs `work` on every item, `concurrency` at a time. */
async function each(items, concurrency, work) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await work(items[next++]);
    }),
  );
}

// A first conversation before the faults: the example's refund tool creates its table on first use.
const [warmup, ...threads] = job.threads;
await conversation(warmup);
emit({ event: "ready" });

const failed = [];
await each(threads, job.concurrency, async (threadId) => {
  try {
    await conversation(threadId);
    emit({ event: "done", threadId });
  } catch (error) {
    failed.push(threadId);
    emit({ event: "failed", threadId, ...describe(error) });
  }
});
emit({ event: "phase1", failed: failed.length });

// Phase 2 once the test has stopped terminating connections.
const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once("line", resolve));
lines.close();
const stuck = [];
await each(failed, job.concurrency, async (threadId) => {
  try {
    emit({ event: "recovered", threadId, attempts: await driveToEnd(threadId) });
  } catch (error) {
    stuck.push(threadId);
    emit({ event: "stuck", threadId, ...describe(error) });
  }
});
emit({ event: "summary", failed: failed.length, stuck });
await pool.end();
process.exit(stuck.length === 0 ? 0 : 2);
