import { HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { idempotencyKeyOf, pendingApproval } from "eart";
import { scriptedRefundAgentOnPostgres } from "../../examples/refund/agent.js";

/**
 * Load on PostgreSQL: the prebuilt refund agent on LangGraph's PostgresSaver with its default
 * pool (10 connections), the ledger and thread lock it picks for that checkpointer by default,
 * and the audit log on the same pool. 50 and 200 conversations run at once; each pauses for a
 * supervisor's approval and is approved. Every conversation must finish with the final answer,
 * with exactly one refund per thread and an audit chain that verifies.
 *
 * Before the thread lock got a connection of its own, each run held one of the pool's 10
 * connections for the whole run and needed a second one: 10 runs at once took the whole pool and
 * waited for each other forever (no conversation of 50 finished).
 */

// A real PostgreSQL (.ci/run starts it). No skip: without it this suite fails, loudly.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const runId = `${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
const schema = `eart_load_${runId}`;
const REQUEST = "Hi, order 1042 arrived broken. Please refund $740.";
const FINAL_ANSWER = "Your refund of $740 for order 1042 has been issued.";

let admin: pg.Pool;
const opened: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  admin = new pg.Pool({ connectionString: url, max: 2 });
  await admin.query(`CREATE SCHEMA "${schema}"`);
});

afterAll(async () => {
  for (const o of opened) await o.close();
  if (!admin) return;
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.end();
});

/** The refund agent with default options on one default-sized pool whose tables live in this file's schema. */
async function openAgent() {
  const connectionString = new URL(url);
  connectionString.searchParams.set("options", `-c search_path=${schema}`);
  // No 'error' listener of our own: eart must not need one to survive a dropped connection.
  const pool = new pg.Pool({ connectionString: connectionString.toString() });
  const { agent, auditLog } = await scriptedRefundAgentOnPostgres(pool, { schema, turns: 10_000 });
  const handle = { agent, auditLog, pool, close: () => pool.end() };
  opened.push(handle);
  return handle;
}

type Opened = Awaited<ReturnType<typeof openAgent>>;

/** One conversation: cara asks for the refund, the run pauses for approval, supervisor sam approves. */
async function conversation({ agent }: Opened, threadId: string): Promise<{ digest: string; last: string }> {
  const asked = await agent.invoke({ messages: [new HumanMessage(REQUEST)] }, { configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" } });
  const request = pendingApproval(asked);
  if (!request || request.requests.length !== 1) throw new Error(`thread ${threadId} did not pause for one approval`);
  const [pending] = request.requests;
  const done = await agent.invoke(new Command({ resume: { decisions: [{ toolCallId: pending!.toolCallId, type: "approve", digest: pending!.digest }] } }), {
    configurable: { thread_id: threadId, user_id: "sam" },
  });
  const messages = (done as { messages: BaseMessage[] }).messages;
  return { digest: pending!.digest, last: String(messages[messages.length - 1]?.content) };
}

async function load(n: number) {
  const opened = await openAgent();
  const threads = Array.from({ length: n }, (_, i) => `load-${runId}-${n}-${i}`);
  const started = performance.now();
  const outcomes = await Promise.allSettled(threads.map((t) => conversation(opened, t)));
  const seconds = (performance.now() - started) / 1000;
  // A figure for the record, not an assertion.
  console.log(`pg-load: ${n} concurrent conversations in ${seconds.toFixed(1)} s (${(n / seconds).toFixed(1)} conversations/s)`);

  const failures = outcomes.flatMap((o, i) => (o.status === "rejected" ? [`${threads[i]}: ${(o.reason as Error)?.stack ?? String(o.reason)}`] : []));
  expect(failures).toEqual([]);
  const results = outcomes.map((o) => (o as PromiseFulfilledResult<{ digest: string; last: string }>).value);
  expect(results.map((r) => r.last)).toEqual(threads.map(() => FINAL_ANSWER));

  // Exactly one refund per thread: the refund tool forwards eart's idempotency key of the call.
  const expected = threads.map((threadId, i) => idempotencyKeyOf({ threadId, toolCallId: "call_1_refund", digest: results[i]!.digest })).sort();
  const { rows } = await admin.query<{ key: string; n: number }>(
    `SELECT idempotency_key AS key, count(*)::int AS n FROM "${schema}".refunds WHERE idempotency_key = ANY($1) GROUP BY idempotency_key ORDER BY idempotency_key`,
    [expected],
  );
  expect(rows).toEqual(expected.map((key) => ({ key, n: 1 })));
  // (A refund that waited past its 10 s timeout for a pool connection is retried under the same key: attempt 2, still one refund.)
  const ledger = await admin.query<{ status: string; n: number }>(
    `SELECT status, count(*)::int AS n FROM "${schema}".eart_effect_ledger WHERE thread_id = ANY($1) AND tool_call_id = 'call_1_refund' GROUP BY status`,
    [threads],
  );
  expect(ledger.rows).toEqual([{ status: "succeeded", n }]);

  // Every thread's audit chain verifies and records one approval and one refund.
  for (const threadId of threads) {
    const events = await opened.auditLog.read(threadId);
    expect(events.filter((e) => e.type === "approval.decided"), threadId).toHaveLength(1);
    expect(events.filter((e) => e.type === "tool.succeeded" && (e.data as { toolCallId?: string }).toolCallId === "call_1_refund"), threadId).toHaveLength(1);
    expect(await opened.auditLog.verify(threadId), threadId).toMatchObject({ ok: true, count: events.length });
  }
}

describe("the refund agent on PostgresSaver under concurrent load (default options)", () => {
  it("50 concurrent conversations with approvals all finish: one refund each, every chain verified", async () => {
    await load(50);
  }, 90_000);

  it("200 concurrent conversations with approvals all finish: one refund each, every chain verified", async () => {
    await load(200);
  }, 90_000);
});
