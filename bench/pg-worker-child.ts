/**
 * One worker process of the multi-process PostgreSQL benchmark (./pg-workers.ts), started by it
 * with `child_process.fork` on the built file (`dist/bench/pg-worker-child.js`). It opens the
 * refund agent on PostgreSQL exactly as a deployment's worker would (LangGraph's PostgresSaver on a
 * small pool, the ledger and thread lock eart picks for it, the audit log on the same pool, the
 * refund tool writing to the shared `refunds` table), then serves what the coordinator sends over
 * the IPC channel: `ask` (cara asks for the $740 refund; the run pauses for a supervisor) and
 * `approve` (supervisor sam answers; the refund runs), one reply per request.
 *
 * It counts its round trips to PostgreSQL and the time each took, by store (checkpoints, audit
 * log, effect ledger, thread lock, refunds), through the pool's client class, which the thread
 * lock's own connection copies: every statement the process sends is counted once.
 *
 * Job (JSON in `EART_PG_WORKER_JOB`): `{ url, schema, poolMax, turns }`, `url` already pointing
 * its `search_path` at `schema`.
 */
import { HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import pg from "pg";
import { pendingApproval } from "eart";
import { scriptedRefundAgentOnPostgres } from "../examples/refund/agent.js";

/** What the coordinator sends. */
export type WorkerRequest =
  | { op: "ask"; id: number; threadId: string }
  | { op: "approve"; id: number; threadId: string; decisions: { toolCallId: string; type: "approve"; digest: string }[] }
  | { op: "stats"; id: number }
  | { op: "close"; id: number };

/** Round trips and the time they took (ms), by store. */
export type QueryStats = Record<string, { count: number; ms: number }>;

/** A worker's counters: its round trips by store, the CPU time it used and how long it held the audit log's global lock (ms). */
export interface WorkerStats {
  queries: QueryStats;
  cpuMs: number;
  auditLockHeldMs: number;
}

/** An error as it crosses the process boundary: eart's `code` kept, so the coordinator branches on it. */
export interface WorkerError {
  name: string;
  code: string | null;
  message: string;
}

/** What a worker answers, one per request (plus `ready` once, when its agent is open). */
export type WorkerReply =
  | { type: "ready"; pid: number }
  | { type: "done"; id: number; ok: true; value: AskResult | ApproveResult | WorkerStats | null }
  | { type: "done"; id: number; ok: false; error: WorkerError };

export interface AskResult {
  requests: { toolCallId: string; digest: string }[];
}

export interface ApproveResult {
  last: string;
}

const REQUEST = "Hi, order 1042 arrived broken. Please refund $740.";

/**
 * The store a statement belongs to, from its text; the audit log's and the checkpointer's split
 * in two. An audit append's first round trip takes the thread's and the global log's advisory
 * locks and reads the heads ("audit lock"), so its time is mostly the wait for the global lock;
 * the rest writes ("audit write").
 */
function storeOf(text: string): string {
  if (/eart_audit/.test(text)) return /pg_advisory_xact_lock/.test(text) ? "audit lock" : /^\s*(SELECT|BEGIN ISOLATION LEVEL REPEATABLE READ)/i.test(text) ? "audit read" : "audit write";
  if (/eart_effect_ledger|eart_seal_keys/.test(text)) return "ledger";
  if (/pg_try_advisory_lock|pg_advisory_unlock\(/.test(text)) return "thread lock";
  if (/checkpoint/.test(text)) return /^\s*(SELECT|WITH)/i.test(text) && !/INSERT|UPDATE|DELETE/i.test(text) ? "checkpoint read" : "checkpoint write";
  if (/\brefunds\b/.test(text)) return "refund";
  return "other";
}

const stats: QueryStats = {};
/** How long audit appends held the audit log's global lock: from its grant to the append's COMMIT (ms). */
let auditLockHeldMs = 0;
function record(store: string, ms: number): void {
  const s = (stats[store] ??= { count: 0, ms: 0 });
  s.count++;
  s.ms += ms;
}

/**
 * node-postgres's client, counting. A `BEGIN` is put on the store of the statement after it and a
 * `COMMIT`/`ROLLBACK` on the store of the one before it, on the same connection: PostgresSaver
 * sends them as statements of their own.
 */
class CountingClient extends pg.Client {}
const plainQuery = pg.Client.prototype.query as (...args: unknown[]) => unknown;
Object.defineProperty(CountingClient.prototype, "query", {
  value: function countedQuery(this: pg.Client & { eartLast?: string; eartBegin?: number; eartHeldSince?: number }, ...args: unknown[]): unknown {
    const first = args[0] as string | { text?: string } | undefined;
    const text = (typeof first === "string" ? first : (first?.text ?? "")).trim();
    const started = performance.now();
    const bare = /^(BEGIN|COMMIT|ROLLBACK)\b/i.test(text) && !/;\s*\S/.test(text);
    const done = () => {
      const ms = performance.now() - started;
      if (bare && /^BEGIN/i.test(text)) {
        this.eartBegin = (this.eartBegin ?? 0) + ms;
        return;
      }
      const store = bare ? (this.eartLast ?? "other") : storeOf(text);
      if (store === "audit lock") this.eartHeldSince = performance.now();
      else if (bare && this.eartHeldSince !== undefined) {
        auditLockHeldMs += performance.now() - this.eartHeldSince;
        this.eartHeldSince = undefined;
      }
      if (this.eartBegin !== undefined) {
        record(store, this.eartBegin);
        this.eartBegin = undefined;
      }
      record(store, ms);
      this.eartLast = store;
    };
    const callback = args.findIndex((a) => typeof a === "function");
    if (callback >= 0) {
      const given = args[callback] as (...r: unknown[]) => void;
      args[callback] = (...r: unknown[]) => {
        done();
        given(...r);
      };
      return plainQuery.apply(this, args);
    }
    const result = plainQuery.apply(this, args);
    if (result && typeof (result as Promise<unknown>).then === "function") (result as Promise<unknown>).then(done, done);
    return result;
  },
});

const job = JSON.parse(process.env.EART_PG_WORKER_JOB ?? "null") as { url: string; schema: string; poolMax: number; turns: number } | null;
if (!job || !process.send) throw new Error("pg-worker-child is started by bench/pg-workers.ts (fork, with EART_PG_WORKER_JOB)");
const send = (reply: WorkerReply) => process.send!(reply);

const pool = new pg.Pool({ connectionString: job.url, max: job.poolMax, Client: CountingClient });
const { agent } = await scriptedRefundAgentOnPostgres(pool, { schema: job.schema, turns: job.turns });

async function serve(request: WorkerRequest): Promise<AskResult | ApproveResult | WorkerStats | null> {
  switch (request.op) {
    case "ask": {
      const paused = await agent.invoke({ messages: [new HumanMessage(REQUEST)] }, { configurable: { thread_id: request.threadId, agent_id: "support-agent", user_id: "cara" } });
      const approval = pendingApproval(paused);
      if (!approval) throw new Error(`thread ${request.threadId} did not pause for approval`);
      return { requests: approval.requests.map((r) => ({ toolCallId: r.toolCallId, digest: r.digest })) };
    }
    case "approve": {
      const done = (await agent.invoke(new Command({ resume: { decisions: request.decisions } }), { configurable: { thread_id: request.threadId, user_id: "sam" } })) as { messages: BaseMessage[] };
      return { last: String(done.messages.at(-1)?.content ?? "") };
    }
    case "stats": {
      const cpu = process.cpuUsage();
      return { queries: structuredClone(stats), cpuMs: (cpu.user + cpu.system) / 1000, auditLockHeldMs };
    }
    case "close":
      await pool.end();
      return null;
  }
}

process.on("message", (request: WorkerRequest) => {
  serve(request).then(
    (value) => {
      send({ type: "done", id: request.id, ok: true, value });
      if (request.op === "close") process.disconnect();
    },
    (error: unknown) => {
      const e = error as { name?: unknown; code?: unknown; message?: unknown } | undefined;
      send({
        type: "done",
        id: request.id,
        ok: false,
        error: { name: String(e?.name ?? "Error"), code: typeof e?.code === "string" ? e.code : null, message: String(e?.message ?? error).slice(0, 500) },
      });
    },
  );
});
send({ type: "ready", pid: process.pid });
