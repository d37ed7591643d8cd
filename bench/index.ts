/**
 * Benchmark: per-invoke time of the same scripted refund conversation (auto-allowed, no
 * approval) on a bare LangGraph agent and on eart's governed agent, side by side in one run.
 * After each timed invoke, outside the clock, the thread's checkpoints are deleted from the
 * variant's `MemorySaver`, so the heap does not grow through the run (an agent in production keeps
 * checkpoints in a database) and garbage collection weighs the same on every round.
 *
 * Then the middleware benchmark (./middleware.ts): LangChain v1 `createAgent` alone, with LangChain's
 * `humanInTheLoopMiddleware` (interrupting `issue_refund` over $100) and with eart's
 * `governanceMiddleware` + `guardAgent`, on the same scripted refund conversation and tools, per
 * conversation, on two paths: auto-allowed (lookup + $60 refund, no pause anywhere) and the
 * approval round trip ($740 refund paused, then the resume approving it, timed from the first
 * invoke to the end of the resume). Prints mean and median per variant and path and the ratios
 * governance/HITL (target: at most 1.00x on both paths), HITL/plain and governance/plain.
 * `EART_BENCH_SKIP_MIDDLEWARE=1` skips it; `EART_BENCH_MIDDLEWARE_THREADS` sets the timed
 * conversations per variant and path (default 300).
 *
 * Then the policy decision latency benchmark (./policy.ts): typed rules and Cedar at 20 and at
 * 1,000 rules. `EART_BENCH_SKIP_POLICY=1` skips it.
 *
 * Then what one hostile input costs as it grows (./exhaustion.ts): redaction, context screening
 * and the token hold-back at n and 8n, against a growth target. `EART_BENCH_SKIP_EXHAUSTION=1` skips it.
 *
 * Usage: `npm run bench`, or `EART_BENCH_THREADS=200 npm run bench` for a shorter run.
 * `EART_BENCH_SKIP_REFUND=1` skips the refund benchmark (for quick iteration on the others); every
 * part has an `EART_BENCH_SKIP_*` variable of its own, and by default all run.
 *
 * Then the governed tool execution benchmark (./ledger.ts): the governed tool node with the effect
 * ledger in memory, in SQLite and in PostgreSQL against LangGraph's `ToolNode` on the same tool,
 * per call, and the ratio. `EART_BENCH_SKIP_LEDGER=1` skips it; `EART_BENCH_LEDGER_CALLS` sets
 * the timed calls per variant (default 1,000); `EART_BENCH_DATABASE_URL` (else `EART_DATABASE_URL`,
 * else postgresql://postgres@127.0.0.1:5432/test) is the PostgreSQL it uses, and
 * `EART_BENCH_SKIP_LEDGER_POSTGRES=1` leaves PostgreSQL out.
 *
 * Then the cost of the authority check per governed call (./authority.ts): the one-time read of
 * the seal key from each store, and the per-call seal and check. `EART_BENCH_SKIP_AUTHORITY=1`
 * skips it; `EART_BENCH_AUTHORITY_CALLS` sets the calls per store (default 20,000).
 *
 * Then the audit append throughput benchmark (./audit.ts): events per second appended to the
 * memory, JSONL file, SQLite and PostgreSQL audit logs, 100 events per append over 4 threads and
 * one event per append, against the targets (≥ 70,000/s in memory, ≥ 10,000/s to PostgreSQL,
 * batched). `EART_BENCH_SKIP_AUDIT=1` skips it; `EART_BENCH_AUDIT_EVENTS` sets the timed events
 * per batched variant (default 50,000) and `EART_BENCH_AUDIT_SINGLE_EVENTS` per single-event
 * variant (default 5,000); `EART_BENCH_SKIP_AUDIT_POSTGRES=1` leaves PostgreSQL out (it uses the
 * same database as the ledger benchmark).
 *
 * Then, in fresh processes of its own (./export-run.ts), the export benchmark (./export.ts): the
 * governed refund conversation with export off, with LangSmith + OpenTelemetry export on the
 * export worker (the defaults) and on the graph's thread (to a local receiver in a child
 * process), per invoke, pooled over the processes, and the ratios (target: the defaults ≤ 1.05×).
 * `EART_BENCH_SKIP_EXPORT=1` skips it; `EART_BENCH_EXPORT_THREADS` sets the timed threads per
 * variant (default 3,000) and `EART_BENCH_EXPORT_PROCESSES` the processes (default 3).
 *
 * First of all, the import time of `eart` beside `@langchain/langgraph` in fresh processes
 * (./import.ts). `EART_BENCH_SKIP_IMPORT=1` skips it; `EART_BENCH_IMPORT_RUNS` sets the processes.
 *
 * Then the load benchmark on PostgreSQL (./pg-load.ts): 1,000 concurrent refund conversations
 * with approvals on PostgresSaver with default options, conversations per second and p50/p99.
 * `EART_BENCH_SKIP_PG_LOAD=1` skips it; `EART_BENCH_PG_LOAD_CONVERSATIONS` sets the count.
 *
 * Then the inbox index (./inbox.ts): what waits for a role, listed through the audit store's index
 * at 10,000 threads on SQLite and PostgreSQL, beside a full scan (target ≤ 50 ms).
 * `EART_BENCH_SKIP_INBOX=1` skips it; `EART_BENCH_INBOX_THREADS` sets the threads.
 *
 * Last, the scale-out benchmark (./pg-workers.ts): 1, 2 and 4 worker processes on one PostgreSQL
 * serving 2,000 refund conversations, each approved on another process than its request:
 * throughput, p50/p99, round trips per conversation and the invariants (no duplicate refund, no
 * lost approval, every chain verified). `EART_BENCH_SKIP_PG_WORKERS=1` skips it;
 * `EART_BENCH_PG_WORKERS_THREADS` sets the threads.
 */
import { runAuditBench } from "./audit.js";
import { runImportBench } from "./import.js";
import { runInboxBench } from "./inbox.js";
import { runPgWorkersBench } from "./pg-workers.js";
import { runAuthorityBench } from "./authority.js";
import { runExhaustionBench } from "./exhaustion.js";
import { runExportBench } from "./export.js";
import { runLedgerBench } from "./ledger.js";
import { runMiddlewareBench } from "./middleware.js";
import { runPgLoadBench } from "./pg-load.js";
import { runPolicyBench } from "./policy.js";
import { positiveIntFromEnv, summarise } from "./stats.js";
import { assertCompleted, createBareVariant, createGovernedVariant, MODEL_CALLS_PER_THREAD, type Variant } from "./refund.js";

/** Target (speed and scale): governed per-invoke time (mean and median) at most this multiple of bare, with the authority checks, redaction defaults and audit on. */
export const TARGET_RATIO = 1.1;
/** Target: the standard redactions cost at most this multiple of the same agent without them. */
export const REDACTION_TARGET_RATIO = 1.05;
const WARMUP_THREADS = 50;
const ROUNDS = 5;

/**
 * Runs `count` fresh threads one after the other; returns the time of each invoke. Each thread's
 * checkpoints are deleted after its invoke, outside the clock (see `Variant.forget`).
 */
async function runThreads(variant: Variant, prefix: string, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await variant.run(`${prefix}-${i}`);
    times.push(performance.now() - start);
    await variant.forget(`${prefix}-${i}`);
  }
  return times;
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
const ms = (x: number) => x.toFixed(3);

async function main(): Promise<void> {
  const threads = positiveIntFromEnv("EART_BENCH_THREADS", 1_000);
  const modelTurns = (WARMUP_THREADS + threads) * MODEL_CALLS_PER_THREAD;
  const bare = createBareVariant(modelTurns);
  const governed = createGovernedVariant(modelTurns);
  // The same agent with redaction off: what the default standard redactions cost.
  const unredacted = createGovernedVariant(modelTurns, { name: "governed, redaction off", redaction: false });
  const variants = [bare, governed, unredacted];

  // Warm-up, not counted: every thread must complete the conversation, or nothing is timed.
  for (const variant of variants) {
    for (let i = 0; i < WARMUP_THREADS; i++) {
      const threadId = `warmup-${i}`;
      assertCompleted(variant, threadId, await variant.run(threadId));
    }
  }
  const verification = await governed.auditLog.verify("warmup-0");
  if (!verification.ok || verification.count === 0) throw new Error(`governed audit chain of warmup-0 is broken or empty: ${JSON.stringify(verification)}`);

  // Alternate which variant goes first in each round, so drift (JIT, GC, heap growth) hits both.
  const samples = new Map<Variant, number[]>(variants.map((v) => [v, []]));
  const heapAfter = new Map<Variant, number>();
  const rounds = Math.min(ROUNDS, threads);
  for (let round = 0; round < rounds; round++) {
    const perRound = Math.floor(threads / rounds) + (round < threads % rounds ? 1 : 0);
    for (const variant of round % 2 === 0 ? variants : [...variants].reverse()) {
      samples.get(variant)!.push(...(await runThreads(variant, `r${round}`, perRound)));
      heapAfter.set(variant, process.memoryUsage().heapUsed);
    }
  }

  // Every timed thread issued exactly one refund (checked after timing, outside the clock).
  for (const variant of variants) {
    const timed = [...variant.refundsByThread].filter(([id]) => !id.startsWith("warmup-"));
    const wrong = timed.filter(([, n]) => n !== 1);
    if (timed.length !== threads || wrong.length > 0) {
      throw new Error(`${variant.name}: ${timed.length} timed threads refunded (expected ${threads}), ${wrong.length} with a count other than 1`);
    }
  }

  const stats = new Map(variants.map((v) => [v, summarise(samples.get(v)!)]));
  const b = stats.get(bare)!;
  const g = stats.get(governed)!;
  const ratio = { mean: g.mean / b.mean, median: g.median / b.median };
  // Both must hold: the mean carries GC pauses, which in one process land on either variant.
  const met = ratio.mean <= TARGET_RATIO && ratio.median <= TARGET_RATIO;

  console.log(`eart bench: refund conversation, auto-allowed path (${threads} threads per variant, ${WARMUP_THREADS} warm-up, ${rounds} alternating rounds)`);
  console.log(`node ${process.version}\n`);
  console.table(
    variants.map((v) => {
      const s = stats.get(v)!;
      return { variant: v.name, threads: s.count, "mean ms": ms(s.mean), "median ms": ms(s.median), "p95 ms": ms(s.p95), "heap used after": mb(heapAfter.get(v)!) };
    }),
  );
  console.log("heap used: process.memoryUsage().heapUsed right after the variant's last block (informative; one shared heap)");
  console.log(`\nratio governed/bare: mean ${ratio.mean.toFixed(2)}x, median ${ratio.median.toFixed(2)}x`);
  console.log(`target: governed <= ${TARGET_RATIO}x bare (mean and median): ${met ? "MET" : "NOT MET"}`);
  const u = stats.get(unredacted)!;
  const redactionRatio = { mean: g.mean / u.mean, median: g.median / u.median };
  const redactionMet = redactionRatio.mean <= REDACTION_TARGET_RATIO && redactionRatio.median <= REDACTION_TARGET_RATIO;
  console.log(
    `\nredaction (standard rules, on by default) per conversation: ${ms(g.mean - u.mean)} ms mean; ratio governed/redaction off: ` +
      `mean ${redactionRatio.mean.toFixed(3)}x, median ${redactionRatio.median.toFixed(3)}x`,
  );
  console.log(`target: redaction on <= ${REDACTION_TARGET_RATIO}x off (mean and median): ${redactionMet ? "MET" : "NOT MET"}`);
}

if (process.env.EART_BENCH_SKIP_IMPORT !== "1") await runImportBench();
if (process.env.EART_BENCH_SKIP_REFUND !== "1") await main();
if (process.env.EART_BENCH_SKIP_MIDDLEWARE !== "1") await runMiddlewareBench();
if (process.env.EART_BENCH_SKIP_POLICY !== "1") await runPolicyBench();
if (process.env.EART_BENCH_SKIP_EXHAUSTION !== "1") runExhaustionBench();
if (process.env.EART_BENCH_SKIP_LEDGER !== "1") await runLedgerBench();
if (process.env.EART_BENCH_SKIP_AUTHORITY !== "1") await runAuthorityBench();
if (process.env.EART_BENCH_SKIP_AUDIT !== "1") await runAuditBench();
// In fresh processes of its own (./export-run.ts): a fresh heap, as the export variants are compared.
if (process.env.EART_BENCH_SKIP_EXPORT !== "1") await runExportBench();
if (process.env.EART_BENCH_SKIP_PG_LOAD !== "1") await runPgLoadBench();
if (process.env.EART_BENCH_SKIP_INBOX !== "1") await runInboxBench();
if (process.env.EART_BENCH_SKIP_PG_WORKERS !== "1") await runPgWorkersBench();
