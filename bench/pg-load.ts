/**
 * Load benchmark on PostgreSQL: the refund agent on LangGraph's PostgresSaver with its default pool
 * (10 connections) and default options (the ledger and thread lock eart picks for the saver, the
 * audit log on the same pool), N conversations at once, each pausing for a supervisor's approval
 * and approved. Prints conversations per second and the latency of a conversation (p50, p99), then
 * checks every conversation finished with one refund and a verifying audit chain.
 *
 * The 50- and 200-conversation cases are tests (test/crash/pg-load.test.ts); 1,000 takes about a
 * minute on 2 cores, too long for the suite, so it lives here.
 *
 * Usage: `npm run build && node dist/bench/pg-load.js`. `EART_BENCH_PG_LOAD_CONVERSATIONS` sets N
 * (default 1,000); `EART_BENCH_DATABASE_URL` (else `EART_DATABASE_URL`, else the local `test`
 * database) is the PostgreSQL it uses, in a schema of its own that it drops afterwards.
 */
import { HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import pg from "pg";
import { pendingApproval } from "eart";
import { scriptedRefundAgentOnPostgres } from "../examples/refund/agent.js";

const REQUEST = "Hi, order 1042 arrived broken. Please refund $740.";
const FINAL_ANSWER = "Your refund of $740 for order 1042 has been issued.";

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

export async function runPgLoadBench(n = Number(process.env.EART_BENCH_PG_LOAD_CONVERSATIONS ?? 1_000)): Promise<void> {
  const url = process.env.EART_BENCH_DATABASE_URL || process.env.EART_DATABASE_URL || "postgresql://postgres@127.0.0.1:5432/test";
  const schema = `eart_bench_load_${process.pid}_${Date.now().toString(36)}`;
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  await admin.query(`CREATE SCHEMA "${schema}"`);
  const connectionString = new URL(url);
  connectionString.searchParams.set("options", `-c search_path=${schema}`);
  const pool = new pg.Pool({ connectionString: connectionString.toString() });
  try {
    const { agent, auditLog } = await scriptedRefundAgentOnPostgres(pool, { schema, turns: 4 * n + 10 });
    const conversation = async (threadId: string): Promise<number> => {
      const started = performance.now();
      const request = pendingApproval(await agent.invoke({ messages: [new HumanMessage(REQUEST)] }, { configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" } }));
      if (!request) throw new Error(`${threadId} did not pause for approval`);
      const decisions = request.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve" as const, digest: r.digest }));
      const done = (await agent.invoke(new Command({ resume: { decisions } }), { configurable: { thread_id: threadId, user_id: "sam" } })) as { messages: BaseMessage[] };
      if (done.messages.at(-1)?.content !== FINAL_ANSWER) throw new Error(`${threadId} did not finish`);
      return performance.now() - started;
    };

    const threads = Array.from({ length: n }, (_, i) => `bench-load-${i}`);
    const started = performance.now();
    const outcomes = await Promise.allSettled(threads.map(conversation));
    const seconds = (performance.now() - started) / 1000;
    const latencies = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : [])).sort((a, b) => a - b);
    const failed = outcomes.filter((o) => o.status === "rejected") as PromiseRejectedResult[];
    console.log(`PostgreSQL load: ${n} concurrent conversations with approvals (default pool of 10)`);
    console.log(`  finished ${latencies.length}/${n} in ${seconds.toFixed(1)} s: ${(latencies.length / seconds).toFixed(1)} conversations/s`);
    if (latencies.length > 0) console.log(`  conversation latency p50 ${(percentile(latencies, 50) / 1000).toFixed(1)} s, p99 ${(percentile(latencies, 99) / 1000).toFixed(1)} s`);
    if (failed.length > 0) console.log(`  failed: ${failed.length}, first: ${(failed[0]!.reason as Error)?.message}`);

    const { rows } = await admin.query<{ rows: number; keys: number }>(`SELECT count(*)::int AS rows, count(DISTINCT idempotency_key)::int AS keys FROM "${schema}".refunds`);
    let verified = 0;
    for (const threadId of threads) if ((await auditLog.verify(threadId)).ok) verified++;
    console.log(`  refunds ${rows[0]!.rows} (distinct keys ${rows[0]!.keys}), audit chains verified ${verified}/${n}`);
  } finally {
    await pool.end();
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await admin.end();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await runPgLoadBench();
