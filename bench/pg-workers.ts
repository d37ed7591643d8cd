/**
 * Scale-out benchmark on PostgreSQL: the governed refund agent served by 1, 2 and 4 worker
 * processes that share one database: checkpoints through LangGraph's PostgresSaver, eart's audit
 * log, effect ledger and thread lock in eart's own tables, and the `refunds` table the refund tool
 * writes to. Each conversation pauses for a supervisor's approval on one worker and is approved on
 * another process: cara's request (the run pauses for a supervisor) is served by worker `i % N`,
 * sam's approval by worker `(i + 1) % N`. With one worker, the approvals go to a second process
 * that serves only approvals ("1 worker + 1 approver").
 *
 * A coordinator (this process) makes a fresh schema per worker count, forks the workers
 * (./pg-worker-child.ts, built), keeps `inFlightPerWorker × N` conversations open at once (a closed
 * loop: a conversation starts when one ends), and times each conversation from the request to the
 * end of the approved run. It prints conversations per second and the p50/p99 of a conversation,
 * the round trips each conversation cost by store (counted in the workers), the CPU it cost and
 * how much of the time the audit log's global lock was held, then checks what must hold across
 * processes and throws if it does not: exactly one refund per thread (0 duplicate side effects),
 * every approval ended in a finished thread (0 lost approvals), every audit chain verified, no
 * failed request.
 *
 * The same harness with fewer threads, and an approval sent by two processes at once, is a test
 * (test/crash/pg-workers.test.ts).
 *
 * Usage: `npx tsc -p tsconfig.json && node dist/bench/pg-workers.js`.
 * `EART_BENCH_PG_WORKERS_THREADS` sets the threads per worker count (default 2,000),
 * `EART_BENCH_PG_WORKERS_COUNTS` the worker counts (default `1,2,4`),
 * `EART_BENCH_PG_WORKERS_IN_FLIGHT` the open conversations per worker (default 16),
 * `EART_BENCH_PG_WORKERS_POOL` each worker's pool size (default 4, plus the thread lock's own
 * connection); `EART_BENCH_SKIP_PG_WORKERS=1` skips it. `EART_BENCH_DATABASE_URL` (else
 * `EART_DATABASE_URL`, else the local `test` database) is the PostgreSQL it uses.
 */
import { fork, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import pg from "pg";
import { idempotencyKeyOf } from "eart";
import { scriptedRefundAgentOnPostgres } from "../examples/refund/agent.js";
import type { ApproveResult, AskResult, QueryStats, WorkerError, WorkerReply, WorkerRequest, WorkerStats } from "./pg-worker-child.js";
import { positiveIntFromEnv } from "./stats.js";

export const FINAL_ANSWER = "Your refund of $740 for order 1042 has been issued.";
const REFUND_CALL = "call_1_refund";

/** Options of {@link runPgWorkers}. */
export interface PgWorkersOptions {
  /** The PostgreSQL to use; a schema of its own is made in it and dropped afterwards. */
  url: string;
  /** Conversations (threads) to serve, after one warm-up conversation per process. */
  threads: number;
  /** Worker processes. With 1, a second process serves the approvals. */
  workers: number;
  /** Conversations open at once per worker (default 16). */
  inFlightPerWorker?: number;
  /** Each worker's pool size (default 4; the thread lock holds one connection more). */
  poolMax?: number;
  /**
   * How many threads (spread over the run) get their approval sent by two processes at once, and
   * once more after both answered: it must apply once (default 0).
   */
  doubleApprovals?: number;
  /** The built worker script (default: `pg-worker-child.js` beside this file). */
  childScript?: string;
}

/** A failed request: which thread, which turn, on which process, and the error as the worker saw it. */
export interface PgWorkersFailure {
  threadId: string;
  turn: "ask" | "approve";
  process: number;
  error: WorkerError;
}

/** What one approval sent by two processes at once came to. */
export interface DoubleApprovalOutcome {
  threadId: string;
  /** One per process, in the order they were sent. */
  outcomes: ApproveOutcome[];
  /** The same approval sent again after both settled. */
  replay: ApproveOutcome;
}

/** What one approval request came to on a worker. */
export type ApproveOutcome = { ok: true; last: string } | { ok: false; error: WorkerError };

/** What {@link runPgWorkers} measured and checked. */
export interface PgWorkersResult {
  workers: number;
  /** Processes serving (workers, plus the approver with one worker). */
  processes: number;
  threads: number;
  inFlight: number;
  seconds: number;
  conversationsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Requests that failed (a lost-approval candidate each); the losing half of a double approval is not one. */
  failures: PgWorkersFailure[];
  /** Refund rows beyond one per thread, over every thread (warm-up included). */
  duplicateRefunds: number;
  /** Threads with no refund. */
  missingRefunds: string[];
  /** Threads approved (an approval was sent) that did not end finished with one refund, one approval and one refund execution. */
  lostApprovals: string[];
  /** Threads whose audit chain did not verify. */
  unverifiedChains: string[];
  /** Threads checked (the timed ones and the warm-up ones). */
  checked: number;
  doubleApprovals: DoubleApprovalOutcome[];
  /** Round trips to PostgreSQL and the time they took, by store, per timed conversation (summed over every process). */
  perConversation: QueryStats;
  /** CPU time the worker processes used per timed conversation (ms). */
  workerCpuMs: number;
  /** How busy the machine's CPUs were while the conversations ran (0..1; Linux only, else undefined), whoever used them. */
  machineBusy: number | undefined;
  /**
   * The share of the run's wall time the audit log's global lock was held (0..1), from its grant
   * to the append's COMMIT as the workers saw it: every append in the database takes it, one at a time.
   */
  auditLockHeld: number;
}

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;

/** A forked worker: requests out, replies matched by id. */
class Worker {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #next = 0;
  #stderr = "";
  #exit: Error | undefined;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;

  constructor(readonly index: number, script: string, job: object) {
    this.#child = fork(script, [], { env: { ...process.env, EART_PG_WORKER_JOB: JSON.stringify(job) }, stdio: ["ignore", "inherit", "pipe", "ipc"] });
    this.#child.stderr!.setEncoding("utf8").on("data", (c: string) => (this.#stderr = (this.#stderr + c).slice(-4_000)));
    let readied: () => void;
    let failed: (e: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => ((readied = resolve), (failed = reject)));
    this.#child.on("message", (reply: WorkerReply) => {
      if (reply.type === "ready") return readied();
      const waiting = this.#pending.get(reply.id);
      if (!waiting) return;
      this.#pending.delete(reply.id);
      if (reply.ok) waiting.resolve(reply.value);
      else waiting.reject(Object.assign(new Error(reply.error.message), { worker: reply.error }));
    });
    this.exited = new Promise<void>((resolve) =>
      this.#child.on("exit", (code, signal) => {
        this.#exit = new Error(`worker ${index} (pid ${this.#child.pid}) exited (${code ?? signal}) with requests open:\n${this.#stderr}`);
        failed(new Error(`worker ${index} exited (${code ?? signal}) before it was ready:\n${this.#stderr}`));
        for (const [, waiting] of this.#pending) waiting.reject(this.#exit);
        this.#pending.clear();
        resolve();
      }),
    );
  }

  request<T>(request: WorkerRequest extends infer R ? (R extends WorkerRequest ? Omit<R, "id"> : never) : never): Promise<T> {
    if (this.#exit) return Promise.reject(this.#exit);
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#child.send({ ...request, id } as WorkerRequest);
    });
  }

  kill(): void {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill("SIGKILL");
  }
}

/** The error a worker reported, or a description of a local one. */
const workerErrorOf = (error: unknown): WorkerError =>
  (error as { worker?: WorkerError }).worker ?? { name: (error as Error)?.name ?? "Error", code: null, message: String((error as Error)?.message ?? error).slice(0, 500) };

/** The machine's CPU time so far, busy and total, in clock ticks (from /proc/stat; undefined elsewhere). */
function machineCpu(): { busy: number; total: number } | undefined {
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    // idle and iowait
    return { busy: total - fields[3]! - (fields[4] ?? 0), total };
  } catch {
    return undefined;
  }
}

function sumStats(all: QueryStats[]): QueryStats {
  const out: QueryStats = {};
  for (const s of all) for (const [store, { count, ms }] of Object.entries(s)) {
    const t = (out[store] ??= { count: 0, ms: 0 });
    t.count += count;
    t.ms += ms;
  }
  return out;
}

/**
 * Serves `threads` refund conversations with approvals on `workers` processes sharing one
 * PostgreSQL schema (made fresh, dropped afterwards), each approval on another process than its
 * request, and checks every thread afterwards. Rejects when PostgreSQL cannot be reached or a
 * worker cannot start; failed requests (a worker that dies fails those it had and every later
 * one) and broken invariants are reported in the result.
 * @example
 * ```ts
 * const r = await runPgWorkers({ url: "postgresql://postgres@127.0.0.1:5432/test", threads: 100, workers: 2 });
 * if (r.duplicateRefunds || r.lostApprovals.length || r.unverifiedChains.length) throw new Error("broken");
 * ```
 */
export async function runPgWorkers(options: PgWorkersOptions): Promise<PgWorkersResult> {
  const { url, threads, workers: n, inFlightPerWorker = 16, poolMax = 4, doubleApprovals = 0 } = options;
  if (!Number.isInteger(n) || n < 1) throw new Error(`workers must be a positive integer, got ${n}`);
  const script = options.childScript ?? fileURLToPath(new URL("./pg-worker-child.js", import.meta.url));
  const runId = `${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`;
  const schema = `eart_workers_${runId}`;
  // Thread ids are unique per run too: the thread lock's advisory keys are per database, not per schema.
  const prefix = `pgw-${runId}-${n}`;
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  admin.on("error", () => {});
  const schemaUrl = new URL(url);
  schemaUrl.searchParams.set("options", `-c search_path=${schema}`);
  const processes: Worker[] = [];
  try {
    await admin.query(`CREATE SCHEMA "${schema}"`);
    // LangGraph's tables are made once, before the workers start, as a deployment migrates before
    // it scales out: PostgresSaver.setup() run by several processes at once on a fresh schema
    // fails in all but one ("duplicate key value violates unique constraint pg_type_typname_nsp_index").
    const setupPool = new pg.Pool({ connectionString: schemaUrl.toString(), max: 1 });
    try {
      await new PostgresSaver(setupPool, undefined, { schema }).setup();
    } finally {
      await setupPool.end();
    }
    const count = n === 1 ? 2 : n;
    const job = { url: schemaUrl.toString(), schema, poolMax, turns: 4 * (threads + count) + 100 };
    for (let i = 0; i < count; i++) processes.push(new Worker(i, script, job));
    await Promise.all(processes.map((w) => w.ready));
    // Who serves what: thread i's request on `askers[i % n]`, its approval on `approverOf(i)`.
    const askers = processes.slice(0, n);
    const approverOf = (i: number) => (n === 1 ? processes[1]! : processes[(i + 1) % n]!);
    // The second of a doubled approval: never the first one's process (with 2 workers, the asker).
    const secondApproverOf = (i: number) => (n === 1 ? processes[0]! : processes[(i + 2) % n]!);
    const doubled = new Set<number>(Array.from({ length: Math.min(doubleApprovals, threads) }, (_, k) => Math.floor((k * threads) / Math.min(doubleApprovals, threads))));

    const failures: PgWorkersFailure[] = [];
    const digests = new Map<string, string>();
    const approved = new Set<string>();
    const doubleOutcomes: DoubleApprovalOutcome[] = [];

    const conversation = async (threadId: string, i: number, double: boolean): Promise<number | undefined> => {
      const started = performance.now();
      const asker = askers[i % n]!;
      let asked: AskResult;
      try {
        asked = await asker.request<AskResult>({ op: "ask", threadId });
      } catch (error) {
        failures.push({ threadId, turn: "ask", process: asker.index, error: workerErrorOf(error) });
        return undefined;
      }
      digests.set(threadId, asked.requests[0]!.digest);
      const decisions = asked.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve" as const, digest: r.digest }));
      approved.add(threadId);
      const approvers = double ? [approverOf(i), secondApproverOf(i)] : [approverOf(i)];
      const settled = await Promise.allSettled(approvers.map((w) => w.request<ApproveResult>({ op: "approve", threadId, decisions })));
      const outcomes = settled.map((s) => (s.status === "fulfilled" ? { ok: true as const, last: s.value.last } : { ok: false as const, error: workerErrorOf(s.reason) }));
      const ms = performance.now() - started;
      if (double) {
        // And once more after both settled, as a replayed request: the thread has finished.
        const replay = await approverOf(i)
          .request<ApproveResult>({ op: "approve", threadId, decisions })
          .then((v) => ({ ok: true as const, last: v.last }), (error: unknown) => ({ ok: false as const, error: workerErrorOf(error) }));
        doubleOutcomes.push({ threadId, outcomes, replay });
      }
      const won = outcomes.some((o) => o.ok && o.last === FINAL_ANSWER);
      if (!won) {
        outcomes.forEach((o, k) => {
          if (!o.ok) failures.push({ threadId, turn: "approve", process: approvers[k]!.index, error: o.error });
          else failures.push({ threadId, turn: "approve", process: approvers[k]!.index, error: { name: "Unfinished", code: null, message: `the approved run ended on ${JSON.stringify(o.last)}` } });
        });
        return undefined;
      }
      return ms;
    };

    // Warm-up, untimed: one conversation per process (module loading, JIT, first statements, eart's tables made on first use).
    const warm = processes.map((_, k) => `${prefix}-warm-${k}`);
    await Promise.all(warm.map((t, k) => conversation(t, k % n, false)));

    const statsOf = async () => {
      const all = await Promise.all(processes.map((w) => w.request<WorkerStats>({ op: "stats" })));
      return {
        queries: sumStats(all.map((s) => s.queries)),
        cpuMs: all.reduce((t, s) => t + s.cpuMs, 0),
        auditLockHeldMs: all.reduce((t, s) => t + s.auditLockHeldMs, 0),
        machine: machineCpu(),
      };
    };
    const before = await statsOf();
    const ids = Array.from({ length: threads }, (_, i) => `${prefix}-${i}`);
    const latencies: number[] = [];
    let next = 0;
    const inFlight = inFlightPerWorker * n;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: Math.min(inFlight, threads) }, async () => {
        while (next < threads) {
          const i = next++;
          const ms = await conversation(ids[i]!, i, doubled.has(i));
          if (ms !== undefined) latencies.push(ms);
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const after = await statsOf();
    const perConversation: QueryStats = {};
    for (const [store, { count, ms }] of Object.entries(after.queries)) {
      const b = before.queries[store] ?? { count: 0, ms: 0 };
      if (count > b.count) perConversation[store] = { count: (count - b.count) / threads, ms: (ms - b.ms) / threads };
    }
    const workerCpuMs = (after.cpuMs - before.cpuMs) / threads;
    const auditLockHeld = (after.auditLockHeldMs - before.auditLockHeldMs) / (seconds * 1000);
    const machineBusy = before.machine && after.machine ? (after.machine.busy - before.machine.busy) / Math.max(1, after.machine.total - before.machine.total) : undefined;
    await Promise.all(processes.map((w) => w.request({ op: "close" }).catch(() => {})));
    await Promise.all(processes.map((w) => w.exited));

    // The checks, from the database: what every process wrote.
    const all = [...warm, ...ids];
    const checkPool = new pg.Pool({ connectionString: schemaUrl.toString(), max: 4 });
    checkPool.on("error", () => {});
    try {
      const { agent, auditLog } = await scriptedRefundAgentOnPostgres(checkPool, { schema, turns: 1 });
      const refunds = await checkPool.query<{ key: string | null; n: number }>(`SELECT idempotency_key AS key, count(*)::int AS n FROM refunds GROUP BY idempotency_key`);
      const byKey = new Map(refunds.rows.map((r) => [r.key, r.n]));
      const expectedKeys = new Set(all.flatMap((t) => (digests.has(t) ? [idempotencyKeyOf({ threadId: t, toolCallId: REFUND_CALL, digest: digests.get(t)! })] : [])));
      const totalRefunds = refunds.rows.reduce((s, r) => s + r.n, 0);
      const missingRefunds = all.filter((t) => !digests.has(t) || !byKey.has(idempotencyKeyOf({ threadId: t, toolCallId: REFUND_CALL, digest: digests.get(t)! })));
      // Rows beyond one per thread: a second row under a thread's key, or any row under a key no thread's refund has.
      const duplicateRefunds = totalRefunds - [...expectedKeys].filter((k) => byKey.has(k)).length;

      const ledger = await checkPool.query<{ thread_id: string; n: number }>(
        `SELECT thread_id, count(*)::int AS n FROM eart_effect_ledger WHERE tool_call_id = $1 AND status = 'succeeded' GROUP BY thread_id`,
        [REFUND_CALL],
      );
      const executions = new Map(ledger.rows.map((r) => [r.thread_id, r.n]));

      const lostApprovals: string[] = [];
      const unverifiedChains: string[] = [];
      let cursor = 0;
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (cursor < all.length) {
            const threadId = all[cursor++]!;
            const [state, events, verified] = await Promise.all([
              agent.getState({ configurable: { thread_id: threadId } }),
              auditLog.read(threadId),
              auditLog.verify(threadId),
            ]);
            if (!verified.ok) unverifiedChains.push(threadId);
            if (!approved.has(threadId)) continue;
            const messages = (state.values as { messages?: { content: unknown }[] }).messages ?? [];
            const finished = state.next.length === 0 && messages.at(-1)?.content === FINAL_ANSWER;
            const decided = events.filter((e) => e.type === "approval.decided").length;
            const refunded = events.filter((e) => e.type === "tool.succeeded" && (e.data as { toolCallId?: string }).toolCallId === REFUND_CALL).length;
            if (!finished || decided !== 1 || refunded !== 1 || executions.get(threadId) !== 1) lostApprovals.push(threadId);
          }
        }),
      );

      latencies.sort((a, b) => a - b);
      return {
        workers: n,
        processes: processes.length,
        threads,
        inFlight,
        seconds,
        conversationsPerSecond: latencies.length / seconds,
        p50Ms: percentile(latencies, 50),
        p99Ms: percentile(latencies, 99),
        failures,
        duplicateRefunds,
        missingRefunds,
        lostApprovals: lostApprovals.sort(),
        unverifiedChains: unverifiedChains.sort(),
        checked: all.length,
        doubleApprovals: doubleOutcomes,
        perConversation,
        workerCpuMs,
        machineBusy,
        auditLockHeld,
      };
    } finally {
      await checkPool.end();
    }
  } finally {
    for (const w of processes) w.kill();
    await Promise.all(processes.map((w) => w.exited));
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await admin.end();
  }
}

/** The benchmark's report of one worker count. */
function report(r: PgWorkersResult): void {
  const who = r.workers === 1 ? "1 worker + 1 approver process" : `${r.workers} workers`;
  console.log(`  ${who.padEnd(30)} ${r.conversationsPerSecond.toFixed(1).padStart(6)} conversations/s   p50 ${(r.p50Ms / 1000).toFixed(2)} s   p99 ${(r.p99Ms / 1000).toFixed(2)} s   (${r.threads} in ${r.seconds.toFixed(1)} s, ${r.inFlight} open)`);
  const stores = Object.entries(r.perConversation).sort((a, b) => b[1].count - a[1].count);
  const trips = stores.reduce((s, [, v]) => s + v.count, 0);
  console.log(`    round trips per conversation: ${trips.toFixed(1)} (${stores.map(([k, v]) => `${k} ${v.count.toFixed(1)}`).join(", ")})`);
  console.log(`    statement time per conversation, summed: ${stores.map(([k, v]) => `${k} ${v.ms.toFixed(0)} ms`).join(", ")}`);
  const machine = r.machineBusy === undefined ? "" : `; the machine's ${cpus().length} CPUs ${(100 * r.machineBusy).toFixed(0)}% busy`;
  console.log(`    worker CPU per conversation ${r.workerCpuMs.toFixed(0)} ms (all processes)${machine}; the audit log's global lock held ${(100 * r.auditLockHeld).toFixed(0)}% of the time`);
  console.log(
    `    checked ${r.checked} threads: duplicate refunds ${r.duplicateRefunds}, missing refunds ${r.missingRefunds.length}, lost approvals ${r.lostApprovals.length}, audit chains verified ${r.checked - r.unverifiedChains.length}/${r.checked}, failed requests ${r.failures.length}`,
  );
  if (r.failures.length > 0) console.log(`    first failure: ${r.failures[0]!.threadId} ${r.failures[0]!.turn} on process ${r.failures[0]!.process}: ${r.failures[0]!.error.code ?? r.failures[0]!.error.name}: ${r.failures[0]!.error.message}`);
}

/**
 * The benchmark: 2,000 conversations (`EART_BENCH_PG_WORKERS_THREADS`) at 1, 2 and 4 workers
 * (`EART_BENCH_PG_WORKERS_COUNTS`), each a fresh schema; prints throughput, p50/p99 and round
 * trips per conversation, and throws when a duplicate refund, a lost approval or an unverified
 * chain is found. `EART_BENCH_SKIP_PG_WORKERS=1` skips it.
 * @example
 * ```ts
 * await runPgWorkersBench();
 * ```
 */
export async function runPgWorkersBench(): Promise<PgWorkersResult[]> {
  if (process.env.EART_BENCH_SKIP_PG_WORKERS === "1") return [];
  const url = process.env.EART_BENCH_DATABASE_URL || process.env.EART_DATABASE_URL || "postgresql://postgres@127.0.0.1:5432/test";
  const threads = positiveIntFromEnv("EART_BENCH_PG_WORKERS_THREADS", 2_000);
  const inFlightPerWorker = positiveIntFromEnv("EART_BENCH_PG_WORKERS_IN_FLIGHT", 16);
  const poolMax = positiveIntFromEnv("EART_BENCH_PG_WORKERS_POOL", 4);
  const counts = (process.env.EART_BENCH_PG_WORKERS_COUNTS || "1,2,4").split(",").map((s) => {
    const c = Number(s.trim());
    if (!Number.isInteger(c) || c < 1) throw new Error(`EART_BENCH_PG_WORKERS_COUNTS must list positive integers, got "${process.env.EART_BENCH_PG_WORKERS_COUNTS}"`);
    return c;
  });
  console.log(`PostgreSQL scale-out: ${threads} refund conversations with approvals, each approved on another process than its request`);
  console.log(`  (pool of ${poolMax} + 1 lock connection per process, ${inFlightPerWorker} conversations open per worker)`);
  const results: PgWorkersResult[] = [];
  for (const workers of counts) {
    const r = await runPgWorkers({ url, threads, workers, inFlightPerWorker, poolMax });
    report(r);
    results.push(r);
  }
  const broken = results.filter((r) => r.failures.length > 0 || r.duplicateRefunds > 0 || r.missingRefunds.length > 0 || r.lostApprovals.length > 0 || r.unverifiedChains.length > 0);
  if (broken.length > 0) throw new Error(`PostgreSQL scale-out: invariants broken at ${broken.map((r) => `${r.workers} workers`).join(", ")} (see above)`);
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) await runPgWorkersBench();
