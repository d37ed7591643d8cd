/**
 * Benchmark: per-call time of one governed tool execution (`createGovernedToolNode` with an
 * effect ledger in memory, in SQLite and in PostgreSQL) against LangGraph's prebuilt `ToolNode`
 * running the same tool, and the ratio governed/ToolNode for each ledger.
 *
 * One sample is one node call with one tool call in the last AI message, awaited to the end, both
 * nodes in the same LangGraph node wrapper (see `AsGraphNode`). Every call has a fresh tool call
 * id, so every governed sample is a first execution: `ledger.begin` (claims the key), an audit
 * append (`tool.started`), the tool, `ledger.finish`, an audit append (`tool.succeeded`).
 * The replay path (the same call again: the recorded result, the tool not called) is timed
 * separately, on the calls of the first table.
 *
 * The tool is a cheap LangChain `tool()` with a zod schema that returns its arguments as JSON, so
 * what is measured is the overhead around it. Inputs (the AI message, the allowed decision record,
 * sealed with the ledger's seal key as the policy gate seals it) are built before each block and
 * results are checked after it, outside the clock. The config
 * carries an `AbortSignal`, as LangGraph's config to a node always does.
 *
 * Env: `EART_BENCH_LEDGER_CALLS` (timed calls per variant, default 1,000);
 * `EART_BENCH_DATABASE_URL` (else `EART_DATABASE_URL`, else the local `test` database);
 * `EART_BENCH_SKIP_LEDGER_POSTGRES=1` drops the PostgreSQL variant.
 */
import { mkdtempSync, rmSync } from "node:fs";
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
import { PostgresEffectLedger } from "eart/postgres";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedToolNode } from "eart/nodes";
import pg from "pg";
import { z } from "zod";
import { positiveIntFromEnv } from "./stats.js";

const DEFAULT_CALLS = 1_000;
const WARMUP_CALLS = 200;
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

function governedVariant(name: string, key: string, includes: string, ledger: EffectLedger, auditLog: AuditLog, close: () => Promise<void>): Variant {
  const echo = createEchoTool();
  const node = new AsGraphNode(createGovernedToolNode({ tools: [echo.tool], auditLog, ledger }));
  return { name, key, includes, run: (call) => node.invoke(call.state, call.config), runs: echo.runs, governed: { ledger, auditLog }, close };
}

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
  const variants: Variant[] = [];
  let admin: pg.Client | undefined;
  try {
    // One audit log for the three ledger variants, so the ledger is the only thing that differs.
    const sharedAudit = new MemoryAuditLog();
    variants.push(toolNodeVariant());
    variants.push(governedVariant("governed, memory ledger", "mem", "MemoryEffectLedger", new MemoryEffectLedger(), sharedAudit, async () => {}));
    const sqliteLedger = new SqliteEffectLedger({ path: join(dir, "ledger.sqlite") });
    variants.push(governedVariant("governed, SQLite ledger", "sqlite", "SqliteEffectLedger({ path }): its own file, WAL", sqliteLedger, sharedAudit, async () => sqliteLedger.close()));
    let pgInfo = "";
    if (withPostgres) {
      const pgLedger = new PostgresEffectLedger({ connectionString: databaseUrl });
      variants.push(governedVariant("governed, PostgreSQL ledger", "pg", "PostgresEffectLedger({ connectionString }): its own pool, one query per ledger call", pgLedger, sharedAudit, () => pgLedger.close()));
      admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect().catch((error: unknown) => {
        throw new Error(`PostgreSQL at ${new URL(databaseUrl).host} is unreachable (${(error as Error).message}); set EART_BENCH_DATABASE_URL, or EART_BENCH_SKIP_LEDGER_POSTGRES=1 to leave it out`, { cause: error });
      });
      const version = (await admin.query<{ server_version: string }>("SHOW server_version")).rows[0]!.server_version;
      const commit = (await admin.query<{ synchronous_commit: string }>("SHOW synchronous_commit")).rows[0]!.synchronous_commit;
      pgInfo = `PostgreSQL ${version} at ${new URL(databaseUrl).host}, synchronous_commit=${commit}`;
    }
    // The embedded default: one SQLite file opened as the refund example opens it.
    const embeddedDb = new Database(join(dir, "embedded.sqlite"));
    embeddedDb.pragma("journal_mode = WAL");
    embeddedDb.pragma("busy_timeout = 5000");
    const embeddedAudit = new SqliteAuditLog({ database: embeddedDb });
    variants.push(
      governedVariant("governed, embedded default", "embedded", "SqliteEffectLedger + SqliteAuditLog sharing one SQLite file (WAL), as the refund example", new SqliteEffectLedger({ database: embeddedDb }), embeddedAudit, async () => {
        embeddedAudit.close();
        embeddedDb.close();
      }),
    );
    const synchronous = ["OFF", "NORMAL", "FULL", "EXTRA"][Number(embeddedDb.pragma("synchronous", { simple: true }))] ?? "?";
    const governed = variants.filter((v) => v.governed);
    // The seal key of each ledger (the PostgreSQL one reads, or creates, it with a query): before any call is built.
    for (const v of governed) v.sealer = new Sealer(await v.governed!.ledger.sealKey());
    const callOf = (v: Variant, threadId: string, i: number) => makeCall(threadId, i, v.sealer);
    const threadOf = (variant: Variant, round: number | "warmup") => `${RUN_PREFIX}-${variant.key}-${round === "warmup" ? "warmup" : `r${round}`}`;

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

    // Exactly one tool run per first execution, none per replay; ledgers and audit chains agree.
    for (const v of variants) {
      const expectedRuns = WARMUP_CALLS + calls;
      if (runsAfterFirst.get(v) !== expectedRuns || v.runs() !== expectedRuns) {
        throw new Error(`${v.name}: the tool ran ${runsAfterFirst.get(v)} times after the first executions and ${v.runs()} after the replays, expected ${expectedRuns} both times`);
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
    console.log(`SQLite: files in ${dir}, journal_mode=WAL, synchronous=${synchronous} (not set by eart: better-sqlite3's build default)${withPostgres ? `; ${pgInfo}` : "; PostgreSQL skipped (EART_BENCH_SKIP_LEDGER_POSTGRES=1)"}`);
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
        `ledger.begin, audit append of tool.started, tool.invoke (as ToolNode's; no timeout set, so the run's own signal), ledger.finish, audit append of tool.succeeded, ` +
        `the decision update; replay: ledger.begin (not claimed: the recorded entry) and one audit append of tool.replayed`,
    );
    console.log(`- the memory, SQLite and PostgreSQL ledger rows share one MemoryAuditLog, so only the ledger differs between them`);
    for (const v of governed) console.log(`- ${v.name}: ${v.includes}${v.key === "embedded" ? " (audit in the same file, not the shared MemoryAuditLog)" : ""}`);
    console.log(`checked outside the clock: every answer, one tool run per first execution and none per replay, every ledger entry succeeded at attempt 1, every audit chain verified`);
    console.log(`(ledger section: ${((performance.now() - started) / 1_000).toFixed(1)} s)`);
  } finally {
    for (const v of variants) await v.close();
    if (admin) {
      // Only this run's rows (its unique thread prefix): the table is shared with tests.
      await admin.query(`DELETE FROM eart_effect_ledger WHERE left(thread_id, length($1)) = $1`, [`${RUN_PREFIX}-`]).catch(() => {});
      await admin.end();
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
