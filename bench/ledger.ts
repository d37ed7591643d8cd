/**
 * Benchmark: per-call time of one governed tool execution (`createGovernedToolNode` with an
 * effect ledger in memory, in SQLite and in PostgreSQL, and with the ledger and the audit log in
 * one store: the embedded default, one SQLite connection; PostgreSQL, one pool) against
 * LangGraph's prebuilt `ToolNode` running the same tool, and the ratio governed/ToolNode for each.
 *
 * One sample is one node call with one tool call in the last AI message, awaited to the end, both
 * nodes in the same LangGraph node wrapper (see `AsGraphNode`). Every call has a fresh tool call
 * id, so every governed sample is a first execution: `ledger.begin` (claims the key) and the
 * `tool.started` append, the tool, `ledger.finish` and the `tool.succeeded` append. Where the
 * ledger and the audit log share a store, each pair is one commit (two per call); otherwise four.
 * The replay path (the same call again: the recorded result, the tool not called) is timed
 * separately, on the calls of the first table.
 *
 * It prints the durability each store runs at, read from the connections the stores use (SQLite
 * `PRAGMA synchronous`, PostgreSQL `SHOW synchronous_commit`; the bench never changes them), and
 * the commits per first execution, counted outside the clock on the same stores: for SQLite, the
 * commit frames of the write-ahead log; for PostgreSQL, the committed transactions that wrote
 * (and writing statements outside one), seen by a counting wrapper around the pool.
 *
 * The tool is a cheap LangChain `tool()` with a zod schema that returns its arguments as JSON, so
 * what is measured is the overhead around it. Inputs (the AI message, the allowed decision record,
 * sealed with the ledger's seal key as the policy gate seals it) are built before each block and
 * results are checked after it, outside the clock. The config
 * carries an `AbortSignal`, as LangGraph's config to a node always does.
 *
 * Env: `EART_BENCH_LEDGER_CALLS` (timed calls per variant, default 1,000);
 * `EART_BENCH_DATABASE_URL` (else `EART_DATABASE_URL`, else the local `test` database; the bench
 * works in a schema of its own there, dropped at the end); `EART_BENCH_SKIP_LEDGER_POSTGRES=1`
 * drops the PostgreSQL variants.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AIMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { ToolNode } from "@langchain/langgraph/prebuilt";
import Database from "better-sqlite3";
import {
  DecisionRecordSchema,
  MemoryAuditLog,
  MemoryEffectLedger,
  Sealer,
  toolCallDigest,
  type AuditLog,
  type DecisionRecord,
  type EffectLedger,
} from "eart";
import { PostgresAuditLog, PostgresEffectLedger } from "eart/postgres";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedToolNode } from "eart/nodes";
import pg from "pg";
import { z } from "zod";
import { positiveIntFromEnv } from "./stats.js";

const DEFAULT_CALLS = 1_000;
const WARMUP_CALLS = 200;
/** First executions whose commits are counted, after the timed ones (not timed). */
const COUNTED_CALLS = 50;
const ROUNDS = 5;
const TOOL_NAME = "echo_order";
const DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test";

/** Every thread id of this run starts with this, so the run never touches another's rows. */
const RUN_PREFIX = `bench-${process.pid}-${Date.now()}`;

/** Per-call summary, in microseconds. */
interface PerCall {
  count: number;
  mean: number;
  median: number;
  p95: number;
}

function perCall(samples: readonly number[]): PerCall {
  if (samples.length === 0) throw new Error("no samples");
  const sorted = Float64Array.from(samples).sort();
  const mid = sorted.length / 2;
  const median = sorted.length % 2 === 1 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  let sum = 0;
  for (const x of sorted) sum += x;
  return { count: sorted.length, mean: sum / sorted.length, median, p95: sorted[Math.min(sorted.length - 1, Math.ceil(0.95 * sorted.length) - 1)]! };
}

/** What counts a store's durable commits over a stretch of calls (outside the clock). */
interface CommitCounter {
  start(): void | Promise<void>;
  stop(): number | Promise<number>;
}

/**
 * Counts the commits of a SQLite database in WAL mode from its write-ahead log: every commit ends
 * with a commit frame (one that records the database size), and a transaction that wrote nothing
 * writes none. `start` empties the log (`wal_checkpoint(TRUNCATE)`) and stops automatic
 * checkpoints on `db`, so the log holds every commit until `stop` counts them (and restores them).
 * Only `db`'s connection may write meanwhile.
 * @example
 * ```ts
 * const counter = sqliteCommitCounter(db);
 * counter.start(); await work(); const commits = counter.stop();
 * ```
 */
export function sqliteCommitCounter(db: Database.Database): CommitCounter {
  let auto = 1_000;
  return {
    start() {
      auto = Number(db.pragma("wal_autocheckpoint", { simple: true }));
      db.pragma("wal_autocheckpoint = 0");
      const [result] = db.pragma("wal_checkpoint(TRUNCATE)") as { busy: number }[];
      if (result?.busy !== 0) throw new Error(`${db.name}: the write-ahead log could not be emptied`);
    },
    stop() {
      const wal = readFileSync(`${db.name}-wal`);
      db.pragma(`wal_autocheckpoint = ${auto}`);
      return commitFrames(wal);
    },
  };
}

/** The commit frames of a write-ahead log written from empty (header salts checked, so no stale frame counts). */
function commitFrames(wal: Buffer): number {
  if (wal.length < 32) return 0;
  const pageSize = wal.readUInt32BE(8) === 1 ? 65_536 : wal.readUInt32BE(8);
  const [salt1, salt2] = [wal.readUInt32BE(16), wal.readUInt32BE(20)];
  let commits = 0;
  for (let at = 32; at + 24 + pageSize <= wal.length; at += 24 + pageSize) {
    if (wal.readUInt32BE(at + 8) !== salt1 || wal.readUInt32BE(at + 12) !== salt2) break;
    if (wal.readUInt32BE(at + 4) !== 0) commits++;
  }
  return commits;
}

/**
 * A pool that counts the commits that wrote eart's ledger or audit log, as its users send them: a
 * `COMMIT` of a transaction with a statement that writes one of their tables (INSERT, UPDATE or
 * DELETE), and such a statement outside any transaction (one commit of its own). Everything goes
 * to `pool` untouched.
 * @example
 * ```ts
 * const counted = countingPool(pool);
 * const ledger = new PostgresEffectLedger({ pool: counted.pool });
 * counted.counter.start(); await work(); const commits = counted.counter.stop();
 * ```
 */
export function countingPool(pool: pg.Pool): { pool: pg.Pool; counter: CommitCounter } {
  let commits = 0;
  // Writes to eart's ledger and audit tables (not, say, the seal key's, written once).
  const WRITE = /\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(eart_effect_ledger|eart_audit_\w+|eart_inbox\w*)\b/i;
  const textOf = (query: unknown): string => (typeof query === "string" ? query : ((query as { text?: string } | null)?.text ?? "")).trim();
  const forward = <T extends object>(target: T, prop: string | symbol): unknown => {
    const value = Reflect.get(target, prop, target) as unknown;
    return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
  };
  const client = (inner: pg.PoolClient): pg.PoolClient => {
    let inTransaction = false;
    let wrote = false;
    return new Proxy(inner, {
      get(target, prop) {
        if (prop !== "query") return forward(target, prop);
        return (...args: unknown[]) => {
          const text = textOf(args[0]);
          if (/^BEGIN\b/i.test(text)) [inTransaction, wrote] = [true, false];
          if (/^COMMIT;?$/i.test(text)) {
            if (wrote) commits++;
            inTransaction = false;
          } else if (/^ROLLBACK;?$/i.test(text)) {
            inTransaction = false;
          } else if (WRITE.test(text)) {
            if (inTransaction) wrote = true;
            else commits++;
          }
          return (target.query as (...a: unknown[]) => unknown)(...args);
        };
      },
    });
  };
  const counted = new Proxy(pool, {
    get(target, prop) {
      if (prop === "query") {
        return (...args: unknown[]) => {
          if (WRITE.test(textOf(args[0]))) commits++;
          return (target.query as (...a: unknown[]) => unknown)(...args);
        };
      }
      if (prop === "connect") return async () => client(await target.connect());
      return forward(target, prop);
    },
  });
  let from = 0;
  return {
    pool: counted,
    counter: {
      start: () => void (from = commits),
      stop: () => commits - from,
    },
  };
}

/** The tool both sides run: one definition, one instance per variant so each counts its own runs. */
function createEchoTool(): { tool: StructuredToolInterface; runs: () => number } {
  let runs = 0;
  const echo = tool(
    async (args) => {
      runs++;
      return JSON.stringify(args);
    },
    {
      name: TOOL_NAME,
      description: "Echo an order id and an amount.",
      schema: z.object({ orderId: z.string(), amount: z.number() }),
    },
  );
  return { tool: echo, runs: () => runs };
}

/** One node call: the state and config handed to the node, and the content the tool must answer. */
interface Call {
  threadId: string;
  toolCallId: string;
  expected: string;
  state: { messages: BaseMessage[]; decisions: DecisionRecord[] };
  config: LangGraphRunnableConfig;
}

/**
 * A call with its allowed decision record, as the policy gate would have written it: sealed for
 * the thread with the seal key of the variant's ledger (the governed node refuses unsealed
 * records). ToolNode reads no decisions: its calls carry the record unsealed.
 */
function makeCall(threadId: string, i: number, sealer?: Sealer): Call {
  const toolCallId = `call-${i}`;
  const args = { orderId: `order-${i}`, amount: (i % 100) + 1 };
  const messageId = `ai-${i}`;
  const message = new AIMessage({ id: messageId, content: "", tool_calls: [{ id: toolCallId, name: TOOL_NAME, args, type: "tool_call" }] });
  const decision = DecisionRecordSchema.parse({
    schemaVersion: 1,
    toolCallId,
    messageId,
    name: TOOL_NAME,
    args,
    digest: toolCallDigest(TOOL_NAME, args, threadId),
    verdict: { effect: "allow", reasons: ["bench"], policyIds: ["bench.allow"], version: "bench" },
    status: "allowed",
    requestedBy: { agentId: "bench-agent", userId: "bench-user" },
    decidedAt: new Date().toISOString(),
  });
  return {
    threadId,
    toolCallId,
    expected: JSON.stringify(args),
    state: { messages: [message], decisions: [sealer ? sealer.decision(threadId, decision) : decision] },
    // LangGraph hands every node a config with the run's AbortSignal; one per call, like one run each.
    config: { signal: new AbortController().signal, configurable: { thread_id: threadId } },
  };
}

type NodeOutput = { messages: BaseMessage[]; decisions?: DecisionRecord[] };

interface Variant {
  /** Row label. */
  name: string;
  /** Short id, part of its thread ids. */
  key: string;
  /** What one sample of this variant does, for the legend. */
  includes: string;
  run(call: Call): Promise<NodeOutput>;
  runs: () => number;
  /** Present on the governed variants. */
  governed?: { ledger: EffectLedger; auditLog: AuditLog };
  /** Counts the commits of its persistent stores (none: in memory). */
  commits?: CommitCounter;
  /** Governed variants: seals their calls' decision records with the ledger's key (set before the warm-up). */
  sealer?: Sealer;
  close(): Promise<void>;
}

function toolNodeVariant(): Variant {
  const echo = createEchoTool();
  const node = new ToolNode([echo.tool]);
  return {
    name: "LangGraph ToolNode",
    key: "toolnode",
    includes: "ToolNode.invoke({ messages: [aiMessage] }, config): its Runnable wrapper (config merge, AsyncLocalStorage), tool.invoke (schema parse, callbacks), ToolMessage. No ledger, no audit, no decision check",
    run: (call) => node.invoke({ messages: call.state.messages }, call.config) as Promise<NodeOutput>,
    runs: echo.runs,
    close: async () => {},
  };
}

type GovernedNode = ReturnType<typeof createGovernedToolNode>;

/**
 * The governed node inside the wrapper `StateGraph.addNode` puts around a function node: a
 * `RunnableCallable` with `trace: false`, the class (and the setting) ToolNode runs in too, so
 * both sides pay the same wrapper. LangGraph does not export `RunnableCallable`; a ToolNode
 * subclass with no tools, whose `run` is the governed node, is that wrapper and nothing more.
 */
class AsGraphNode extends ToolNode<NodeOutput> {
  readonly #node: GovernedNode;

  constructor(node: GovernedNode) {
    super([]);
    this.#node = node;
  }

  protected override run(input: unknown, config: LangGraphRunnableConfig): Promise<NodeOutput> {
    return this.#node(input as Call["state"], config);
  }
}

function governedVariant(name: string, key: string, includes: string, ledger: EffectLedger, auditLog: AuditLog, close: () => Promise<void>, commits?: CommitCounter): Variant {
  const echo = createEchoTool();
  const node = new AsGraphNode(createGovernedToolNode({ tools: [echo.tool], auditLog, ledger }));
  return { name, key, includes, run: (call) => node.invoke(call.state, call.config), runs: echo.runs, governed: { ledger, auditLog }, close, ...(commits ? { commits } : {}) };
}

/** A SQLite file opened as eart opens one (`openSqlite`: WAL, busy timeout), its connection handed to the stores. */
function sqliteFile(path: string): Database.Database {
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  return db;
}

/** What `PRAGMA synchronous` reads on a connection, by name. */
const synchronousOf = (db: Database.Database): string => ["OFF", "NORMAL", "FULL", "EXTRA"][Number(db.pragma("synchronous", { simple: true }))] ?? "?";

/** Throws unless the node answered the call with the tool's result (and, governed, recorded it executed). */
function check(variant: Variant, call: Call, output: NodeOutput): void {
  const fail = (why: string): never => {
    throw new Error(`${variant.name}: ${call.threadId}/${call.toolCallId}: ${why}`);
  };
  const messages = output.messages ?? [];
  const message = messages[0];
  if (messages.length !== 1 || !message || !ToolMessage.isInstance(message)) return fail(`expected one ToolMessage, got ${messages.length} messages`);
  if (message.status !== "success" || message.tool_call_id !== call.toolCallId || message.content !== call.expected) {
    fail(`answered ${message.status} ${JSON.stringify(message.content)}, expected ${call.expected}`);
  }
  if (variant.governed) {
    const statuses = (output.decisions ?? []).map((d) => d.status).join(",");
    if (statuses !== "executed") fail(`decisions are "${statuses}", expected "executed"`);
  }
}

/** Times each call of the block (µs), then checks every output (outside the clock). */
async function timeBlock(variant: Variant, calls: readonly Call[], out: number[]): Promise<void> {
  const outputs: NodeOutput[] = [];
  for (const call of calls) {
    const start = performance.now();
    const output = await variant.run(call);
    out.push((performance.now() - start) * 1_000);
    outputs.push(output);
  }
  calls.forEach((call, i) => check(variant, call, outputs[i]!));
}

/** Runs `rounds` rounds; in each, every variant runs its block, the order rotating by one per round. */
async function interleaved(
  variants: readonly Variant[],
  rounds: number,
  blockOf: (variant: Variant, round: number) => Call[],
  samples: Map<Variant, number[]>,
): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    const shift = round % variants.length;
    for (const variant of [...variants.slice(shift), ...variants.slice(0, shift)]) {
      await timeBlock(variant, blockOf(variant, round), samples.get(variant)!);
    }
  }
}

const us = (x: number) => x.toFixed(1);
const times = (a: number, b: number) => `${(a / b).toFixed(2)}x`;

/**
 * Runs the ledger benchmark and prints its tables: first executions (governed per ledger and
 * ToolNode, with the ratios), then replays. Throws if any call is answered wrongly, a tool runs a
 * number of times other than once per first execution, or a ledger or audit chain disagrees.
 * @example
 * ```ts
 * await runLedgerBench();
 * ```
 */
export async function runLedgerBench(): Promise<void> {
  const started = performance.now();
  const calls = positiveIntFromEnv("EART_BENCH_LEDGER_CALLS", DEFAULT_CALLS);
  const rounds = Math.min(ROUNDS, calls);
  const withPostgres = process.env.EART_BENCH_SKIP_LEDGER_POSTGRES !== "1";
  const databaseUrl = process.env.EART_BENCH_DATABASE_URL || process.env.EART_DATABASE_URL || DEFAULT_DATABASE_URL;

  const dir = mkdtempSync(join(tmpdir(), "eart-bench-ledger-"));
  const schema = `eart_bench_ledger_${process.pid}_${Date.now()}`;
  const variants: Variant[] = [];
  let admin: pg.Client | undefined;
  try {
    // One audit log for the three ledger variants, so the ledger is the only thing that differs.
    const sharedAudit = new MemoryAuditLog();
    /** Per store, the durability its connection runs at, read as the bench runs (never set by it). */
    const durability: string[] = [];
    variants.push(toolNodeVariant());
    variants.push(governedVariant("governed, memory ledger", "mem", "MemoryEffectLedger", new MemoryEffectLedger(), sharedAudit, async () => {}));
    const ledgerDb = sqliteFile(join(dir, "ledger.sqlite"));
    const sqliteLedger = new SqliteEffectLedger({ database: ledgerDb });
    durability.push(`SQLite ledger file: journal_mode=${String(ledgerDb.pragma("journal_mode", { simple: true }))}, synchronous=${synchronousOf(ledgerDb)}`);
    variants.push(
      governedVariant("governed, SQLite ledger", "sqlite", "SqliteEffectLedger on its own file (WAL), audit in the shared MemoryAuditLog", sqliteLedger, sharedAudit, async () => void ledgerDb.close(), sqliteCommitCounter(ledgerDb)),
    );
    let pgInfo = "";
    if (withPostgres) {
      admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect().catch((error: unknown) => {
        throw new Error(`PostgreSQL at ${new URL(databaseUrl).host} is unreachable (${(error as Error).message}); set EART_BENCH_DATABASE_URL, or EART_BENCH_SKIP_LEDGER_POSTGRES=1 to leave it out`, { cause: error });
      });
      await admin.query(`CREATE SCHEMA ${schema}`);
      const version = (await admin.query<{ server_version: string }>("SHOW server_version")).rows[0]!.server_version;
      pgInfo = `PostgreSQL ${version} at ${new URL(databaseUrl).host}, schema ${schema}`;
      const newPool = () => countingPool(new pg.Pool({ connectionString: databaseUrl, options: `-c search_path=${schema}` }));
      const ledgerPool = newPool();
      const pgLedger = new PostgresEffectLedger({ pool: ledgerPool.pool });
      variants.push(
        governedVariant("governed, PostgreSQL ledger", "pg", "PostgresEffectLedger on a pool of its own, audit in the shared MemoryAuditLog", pgLedger, sharedAudit, () => ledgerPool.pool.end(), ledgerPool.counter),
      );
      const storesPool = newPool();
      variants.push(
        governedVariant(
          "governed, PostgreSQL stores",
          "pgstores",
          "PostgresEffectLedger + PostgresAuditLog on one pool, as postgresStores opens them",
          new PostgresEffectLedger({ pool: storesPool.pool }),
          new PostgresAuditLog({ pool: storesPool.pool }),
          () => storesPool.pool.end(),
          storesPool.counter,
        ),
      );
      for (const [label, pool] of [["PostgreSQL ledger pool", ledgerPool.pool], ["PostgreSQL stores pool", storesPool.pool]] as const) {
        const commit = (await pool.query<{ synchronous_commit: string }>("SHOW synchronous_commit")).rows[0]!.synchronous_commit;
        const fsync = (await pool.query<{ fsync: string }>("SHOW fsync")).rows[0]!.fsync;
        durability.push(`${label}: synchronous_commit=${commit}, fsync=${fsync}`);
      }
    }
    // The embedded default: one SQLite file, one connection for the ledger and the audit log, as the refund example opens it.
    const embeddedDb = sqliteFile(join(dir, "embedded.sqlite"));
    const embeddedAudit = new SqliteAuditLog({ database: embeddedDb });
    variants.push(
      governedVariant(
        "governed, embedded default",
        "embedded",
        "SqliteEffectLedger + SqliteAuditLog on one SQLite connection (WAL), as the refund example and sqliteStores open them",
        new SqliteEffectLedger({ database: embeddedDb }),
        embeddedAudit,
        async () => {
          embeddedAudit.close();
          embeddedDb.close();
        },
        sqliteCommitCounter(embeddedDb),
      ),
    );
    durability.push(`SQLite embedded file: journal_mode=${String(embeddedDb.pragma("journal_mode", { simple: true }))}, synchronous=${synchronousOf(embeddedDb)}`);
    const governed = variants.filter((v) => v.governed);
    // The seal key of each ledger (the PostgreSQL one reads, or creates, it with a query): before any call is built.
    for (const v of governed) v.sealer = new Sealer(await v.governed!.ledger.sealKey());
    const callOf = (v: Variant, threadId: string, i: number) => makeCall(threadId, i, v.sealer);
    const threadOf = (variant: Variant, round: number | "warmup" | "counted") => `${RUN_PREFIX}-${variant.key}-${typeof round === "number" ? `r${round}` : round}`;

    // Warm-up, not counted: first executions, then replays of the same calls. Also runs the
    // PostgreSQL migration and fills the pool before any timing.
    const warmup = new Map(variants.map((v) => [v, Array.from({ length: WARMUP_CALLS }, (_, i) => callOf(v, threadOf(v, "warmup"), i))]));
    for (const v of variants) await timeBlock(v, warmup.get(v)!, []);
    for (const v of governed) await timeBlock(v, warmup.get(v)!, []);

    // First executions: every call a new key.
    const blocks = new Map<Variant, Call[][]>();
    for (const v of variants) {
      blocks.set(
        v,
        Array.from({ length: rounds }, (_, round) => {
          const n = Math.floor(calls / rounds) + (round < calls % rounds ? 1 : 0);
          return Array.from({ length: n }, (_, i) => callOf(v, threadOf(v, round), i));
        }),
      );
    }
    const first = new Map<Variant, number[]>(variants.map((v) => [v, []]));
    await interleaved(variants, rounds, (v, round) => blocks.get(v)![round]!, first);
    const runsAfterFirst = new Map(variants.map((v) => [v, v.runs()]));

    // Replays: the same calls again, so each finds its finished ledger entry.
    const replay = new Map<Variant, number[]>(governed.map((v) => [v, []]));
    await interleaved(governed, rounds, (v, round) => blocks.get(v)![round]!, replay);

    // Commits per first execution, outside the clock, on the same stores: a block of new calls.
    const commitsPerCall = new Map<Variant, number>();
    for (const v of governed.filter((v) => v.commits)) {
      const block = Array.from({ length: COUNTED_CALLS }, (_, i) => callOf(v, threadOf(v, "counted"), i));
      await v.commits!.start();
      await timeBlock(v, block, []);
      commitsPerCall.set(v, (await v.commits!.stop()) / COUNTED_CALLS);
    }

    // Exactly one tool run per first execution, none per replay; ledgers and audit chains agree.
    for (const v of variants) {
      const expectedRuns = WARMUP_CALLS + calls;
      const counted = commitsPerCall.has(v) ? COUNTED_CALLS : 0;
      if (runsAfterFirst.get(v) !== expectedRuns || v.runs() !== expectedRuns + counted) {
        throw new Error(`${v.name}: the tool ran ${runsAfterFirst.get(v)} times after the first executions and ${v.runs()} after the replays and the counted calls, expected ${expectedRuns} and ${expectedRuns + counted}`);
      }
    }
    for (const v of governed) {
      const { ledger, auditLog } = v.governed!;
      const threads = [threadOf(v, "warmup"), ...Array.from({ length: rounds }, (_, r) => threadOf(v, r))];
      const sizes = [WARMUP_CALLS, ...blocks.get(v)!.map((b) => b.length)];
      for (const [i, threadId] of threads.entries()) {
        const entries = await ledger.list(threadId);
        const bad = entries.filter((e) => e.status !== "succeeded" || e.attempt !== 1);
        if (entries.length !== sizes[i] || bad.length > 0) throw new Error(`${v.name}: ledger of ${threadId} has ${entries.length} entries (expected ${sizes[i]}), ${bad.length} not succeeded at attempt 1`);
        const verification = await auditLog.verify(threadId);
        // tool.started + tool.succeeded per first execution, tool.replayed per replay.
        if (!verification.ok || verification.count !== 3 * sizes[i]!) {
          throw new Error(`${v.name}: audit chain of ${threadId}: ${JSON.stringify(verification)}, expected ok with ${3 * sizes[i]!} events`);
        }
      }
    }

    const toolNode = perCall(first.get(variants[0]!)!);
    console.log(`\neart bench: one tool call per node call, governed tool node + effect ledger vs LangGraph ToolNode (µs per call)`);
    console.log(`node ${process.version}; ${calls} timed calls per variant after ${WARMUP_CALLS} warm-up; ${rounds} rounds, variant order rotating each round`);
    console.log(`tool: "${TOOL_NAME}", a LangChain tool() with a zod schema returning its args as JSON, the same definition in every variant`);
    console.log(`config of every call: { signal, configurable: { thread_id } }, the signal standing for the run's, as LangGraph passes to a node`);
    console.log(`SQLite: files in ${dir}${withPostgres ? `; ${pgInfo}` : "; PostgreSQL skipped (EART_BENCH_SKIP_LEDGER_POSTGRES=1)"}`);
    console.log(`durability each store runs at, read from its connection (SqliteEffectLedger sets synchronous=FULL on its connection; the bench sets nothing):`);
    for (const line of durability) console.log(`- ${line}`);
    console.log(`\nfirst execution (every call a new tool call id):`);
    console.table(
      variants.map((v) => {
        const s = perCall(first.get(v)!);
        return {
          variant: v.name,
          calls: s.count,
          "mean µs": us(s.mean),
          "median µs": us(s.median),
          "p95 µs": us(s.p95),
          "x ToolNode mean": times(s.mean, toolNode.mean),
          "x ToolNode median": times(s.median, toolNode.median),
          "+µs median": v === variants[0] ? "" : us(s.median - toolNode.median),
          "commits/call": commitsPerCall.has(v) ? commitsPerCall.get(v)!.toFixed(2) : "",
        };
      }),
    );
    console.log(`\nreplay (the same calls again: the recorded result is returned, the tool is not called; ToolNode has no replay and would run the tool again):`);
    console.table(
      governed.map((v) => {
        const s = perCall(replay.get(v)!);
        return { variant: v.name, calls: s.count, "mean µs": us(s.mean), "median µs": us(s.median), "p95 µs": us(s.p95), "x ToolNode mean": times(s.mean, toolNode.mean), "x ToolNode median": times(s.median, toolNode.median) };
      }),
    );
    console.log(`\nwhat one sample includes:`);
    console.log(`- ${variants[0]!.includes}`);
    console.log(
      `- governed: the node in the wrapper StateGraph.addNode gives a function node (RunnableCallable, trace: false: config merge, AsyncLocalStorage, as ToolNode's): decision check (its seal verified), digest, ` +
        `ledger.begin and the audit append of tool.started (one commit where the ledger and the audit log share a store), tool.invoke (as ToolNode's; no timeout set, so the run's own signal), ` +
        `ledger.finish and the audit append of tool.succeeded (likewise one commit), ` +
        `the decision update; replay: ledger.begin (not claimed: the recorded entry) and one audit append of tool.replayed`,
    );
    console.log(`- the memory, SQLite and PostgreSQL ledger rows share one MemoryAuditLog, so only the ledger differs between them`);
    for (const v of governed) console.log(`- ${v.name}: ${v.includes}`);
    console.log(`- commits/call: durable commits per first execution, counted on ${COUNTED_CALLS} more calls outside the clock (SQLite: commit frames in the write-ahead log; PostgreSQL: committed transactions that wrote the ledger or audit tables, seen by a wrapper around the pool)`);
    console.log(`checked outside the clock: every answer, one tool run per first execution and none per replay, every ledger entry succeeded at attempt 1, every audit chain verified`);
    console.log(`(ledger section: ${((performance.now() - started) / 1_000).toFixed(1)} s)`);
  } finally {
    for (const v of variants) await v.close();
    if (admin) {
      // The run's own schema: nothing of it is left in the database.
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
      await admin.end();
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
