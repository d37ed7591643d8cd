/**
 * Benchmark: eart's `governanceMiddleware` beside LangChain's `humanInTheLoopMiddleware` and
 * beside `createAgent` alone, per conversation, side by side in one run.
 *
 * Three LangChain v1 `createAgent` agents on the same scripted model (examples/refund/model.ts),
 * the same refund tools (examples/refund/tools.ts, each agent on its own in-memory SQLite
 * `refunds` table) and the same checkpointer kind (`MemorySaver`):
 * - plain: `createAgent` alone;
 * - HITL: `createAgent` + `humanInTheLoopMiddleware`, interrupting `issue_refund` when the amount
 *   is over $100 (the `when` predicate): the same line eart's refund policy draws, so on the
 *   auto-allowed path neither middleware pauses and on the approval path both do;
 * - governance: `createAgent` + `governanceMiddleware` + `guardAgent` (identities from
 *   examples/refund/identities.json, the refund policy, `MemoryAuditLog`, `MemoryEffectLedger`,
 *   standard redactions on: the defaults);
 * - floor: `createAgent` + a middleware that does no work but has the shape eart's does: one
 *   state channel declared through its `stateSchema`, a `wrapModelCall` that calls the model, a
 *   `wrapToolCall` that pauses (`interrupt`) where HITL does and otherwise runs the tool. What any
 *   middleware of that shape costs before it governs anything: `createAgent` parses a middleware's
 *   declared state with a zod object it builds (and compiles) again on every model call.
 * - prebuilt: eart's own governed agent (`createGovernedAgent`, a LangGraph `StateGraph`) with the
 *   same identities, policy, stores and redaction defaults: what the approval round trip costs
 *   there beside `createAgent` + HITL middleware (the speed-and-scale target, at most 0.85x).
 *
 * Two paths, each conversation on a fresh thread:
 * - auto: "Please refund order 1043 for $60.": lookup, a $60 refund, the model's final text; one
 *   invoke. Neither middleware pauses.
 * - approval: "Please refund order 1042 for $740.": lookup, a $740 refund that pauses (HITL: its
 *   `when`; eart: the policy requires a supervisor), then the resume that approves it
 *   (`{ decisions: [{ type: "approve" }] }`; eart checks it comes from a supervisor: user sam in
 *   `configurable.user_id`), the refund and the final text; timed from the first invoke to the end
 *   of the resume. The plain agent has no pause: its approval path is the same conversation in one
 *   invoke (what the round trip costs on top of the work is in the ratios to it).
 * Every agent gets the same run configuration (`thread_id`, `agent_id` support-agent, `user_id`
 * cara; on the resume `user_id` sam); only eart reads the identities.
 *
 * After each conversation, outside the clock: its outcome is checked (the final text, exactly one
 * refund row of the right order and amount, the pause where there must be one), then the thread's
 * checkpoints are deleted and the refunds table emptied, so heaps do not grow with checkpoints.
 * Each variant is warmed up; rounds interleave the variants and alternate their order and the
 * order of the paths.
 *
 * Usage: run by `npm run bench` after the refund benchmark, or alone:
 * `npm run build && node dist/bench/middleware.js`. `EART_BENCH_MIDDLEWARE_THREADS` sets the timed
 * conversations per variant and path (default 300).
 */
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { Command, interrupt, MemorySaver, ReducedValue, StateSchema } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { createAgent, createMiddleware, humanInTheLoopMiddleware } from "langchain";
import { z } from "zod";
import { MemoryAuditLog, MemoryEffectLedger } from "eart";
import { createGovernedAgent } from "eart/graphs";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { scriptedModel } from "eart/testing";
import identities from "../examples/refund/identities.json" with { type: "json" };
import { refundScript } from "../examples/refund/model.js";
import { refundPolicy } from "../examples/refund/policy.js";
import { createRefundTools } from "../examples/refund/tools.js";
import { positiveIntFromEnv, summarise, type Stats } from "./stats.js";

/** Target: the governance middleware at most the time of the HITL middleware, on both paths. */
export const MIDDLEWARE_TARGET_RATIO = 1.0;
/** Target: eart's prebuilt agent's approval round trip at most 0.85x the HITL middleware's. */
export const PREBUILT_APPROVAL_TARGET_RATIO = 0.85;
const WARMUP_THREADS = 40;
const ROUNDS = 5;
/** Model calls per conversation on either path: lookup, refund, final text. */
const MODEL_CALLS_PER_CONVERSATION = 3;

type Path = "auto" | "approval";
const PATHS: readonly Path[] = ["auto", "approval"];

/** What the customer asks on each path, and what the model answers at the end. */
const CONVERSATION: Record<Path, { request: string; orderId: string; amount: number; answer: string }> = {
  auto: { request: "Please refund order 1043 for $60.", orderId: "1043", amount: 60, answer: "Your refund of $60 for order 1043 has been issued." },
  approval: { request: "Please refund order 1042 for $740.", orderId: "1042", amount: 740, answer: "Your refund of $740 for order 1042 has been issued." },
};

/** The run configuration every agent gets: the customer's turn, then the supervisor's resume. */
const askConfig = (threadId: string) => ({ configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" } });
const resumeConfig = (threadId: string) => ({ configurable: { thread_id: threadId, user_id: "sam" } });
const APPROVE = { decisions: [{ type: "approve" as const }] };

type Result = { messages: BaseMessage[]; __interrupt__?: unknown[] };

/** One timed conversation: its total time, and on the approval path the pause and the resume. */
interface Timing {
  total: number;
  pause?: number;
  resume?: number;
}

interface MiddlewareVariant {
  name: "plain" | "HITL" | "floor" | "governance" | "prebuilt";
  /** Whether the approval path pauses for a human (every variant but plain). */
  pauses: boolean;
  /** Runs one conversation of `path` on a fresh thread, timed; throws if it paused where it must not or did not where it must. */
  run(path: Path, threadId: string): Promise<{ timing: Timing; result: Result }>;
  /** Outside the clock: checks the outcome, then deletes the thread's checkpoints and empties the refunds table. */
  settle(path: Path, threadId: string, result: Result): Promise<void>;
  /** Model calls so far (the scripted model keeps them). */
  modelCalls(): number;
  auditLog?: MemoryAuditLog;
}

const interrupted = (result: Result) => Array.isArray(result.__interrupt__) && result.__interrupt__.length > 0;

function createVariant(name: MiddlewareVariant["name"], modelTurns: number): MiddlewareVariant {
  const db = new Database(":memory:");
  const tools = createRefundTools(db);
  const model = scriptedModel(refundScript, { turns: modelTurns });
  const checkpointer = new MemorySaver();
  const auditLog = name === "governance" || name === "prebuilt" ? new MemoryAuditLog() : undefined;
  let agent: { invoke(input: unknown, config: unknown): Promise<unknown> };
  if (name === "plain") {
    agent = createAgent({ model, tools: tools.all, checkpointer });
  } else if (name === "HITL") {
    const hitl = humanInTheLoopMiddleware({
      interruptOn: {
        issue_refund: { allowedDecisions: ["approve", "edit", "reject"], when: (request) => Number(request.toolCall.args.amount) > 100 },
      },
    });
    agent = createAgent({ model, tools: tools.all, checkpointer, middleware: [hitl] });
  } else if (name === "floor") {
    agent = createAgent({ model, tools: tools.all, checkpointer, middleware: [floorMiddleware()] });
  } else if (name === "prebuilt") {
    agent = createGovernedAgent({ model, tools: tools.all, identities, policy: refundPolicy, checkpointer, auditLog, ledger: new MemoryEffectLedger() });
  } else {
    const governance = governanceMiddleware({ identities, policy: refundPolicy, auditLog, ledger: new MemoryEffectLedger() });
    agent = guardAgent(createAgent({ model, tools: tools.all, checkpointer, middleware: [governance] }), governance);
  }
  const pauses = name !== "plain";
  const selectRefunds = db.prepare(`SELECT order_id AS orderId, amount FROM refunds`);
  const clearRefunds = db.prepare(`DELETE FROM refunds`);

  return {
    name,
    pauses,
    auditLog,
    modelCalls: () => model.calls.length,
    async run(path, threadId) {
      const input = { messages: [new HumanMessage(CONVERSATION[path].request)] };
      const start = performance.now();
      const first = (await agent.invoke(input, askConfig(threadId))) as Result;
      if (path === "auto" || !pauses) {
        const total = performance.now() - start;
        if (interrupted(first)) throw new Error(`${name} ${path} ${threadId}: paused where it must not`);
        return { timing: { total }, result: first };
      }
      const paused = performance.now();
      if (!interrupted(first)) throw new Error(`${name} ${path} ${threadId}: did not pause for approval`);
      const done = (await agent.invoke(new Command({ resume: APPROVE }), resumeConfig(threadId))) as Result;
      const end = performance.now();
      return { timing: { total: end - start, pause: paused - start, resume: end - paused }, result: done };
    },
    async settle(path, threadId, result) {
      const fail = (why: string): never => {
        throw new Error(`${name} ${path} ${threadId} did not complete the refund conversation: ${why}`);
      };
      const expected = CONVERSATION[path];
      if (interrupted(result)) fail("it is still paused");
      const last = result.messages.at(-1);
      if (!last || !AIMessage.isInstance(last) || last.content !== expected.answer) fail(`last message is ${last ? JSON.stringify(last.content) : "missing"}`);
      const rows = selectRefunds.all() as { orderId: string; amount: number }[];
      if (rows.length !== 1 || rows[0]!.orderId !== expected.orderId || rows[0]!.amount !== expected.amount) fail(`refunds are ${JSON.stringify(rows)}`);
      clearRefunds.run();
      await checkpointer.deleteThread(threadId);
    },
  };
}

/**
 * The floor variant's middleware: eart's shape without its work (one declared channel, as
 * governanceMiddleware's `_eart`; the model and tool calls wrapped; the pause in the tool step).
 */
function floorMiddleware() {
  const state = new StateSchema({
    _floor: new ReducedValue(z.custom<unknown>(() => true), { inputSchema: z.custom<unknown>(() => true), reducer: (_current: unknown, update: unknown) => update }),
  });
  return createMiddleware({
    name: "FloorMiddleware",
    stateSchema: state,
    wrapModelCall: (request, handler) => handler(request),
    wrapToolCall: (request, handler) => {
      if (request.toolCall.name === "issue_refund" && Number(request.toolCall.args.amount) > 100) interrupt({ action: request.toolCall.name });
      return handler(request);
    },
  });
}

const ms = (x: number) => x.toFixed(3);
const mean = (xs: readonly number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
const ratioText = (a: Stats, b: Stats) => `mean ${(a.mean / b.mean).toFixed(2)}x, median ${(a.median / b.median).toFixed(2)}x`;

/**
 * Runs the benchmark and prints, per path, each variant's mean, median and p95 per conversation,
 * and the ratios governance/HITL (against the target), HITL/plain and governance/plain.
 * @example
 * ```ts
 * await runMiddlewareBench();
 * ```
 */
export async function runMiddlewareBench(): Promise<void> {
  const threads = positiveIntFromEnv("EART_BENCH_MIDDLEWARE_THREADS", 300);
  const modelTurns = (WARMUP_THREADS + threads) * PATHS.length * MODEL_CALLS_PER_CONVERSATION + 50;
  const variants = (["plain", "HITL", "floor", "governance", "prebuilt"] as const).map((name) => createVariant(name, modelTurns));
  const started = performance.now();

  // Warm-up, not counted: every conversation must complete, or nothing is timed.
  for (const variant of variants) {
    for (const path of PATHS) {
      for (let i = 0; i < WARMUP_THREADS; i++) {
        const threadId = `warmup-${path}-${i}`;
        const before = variant.modelCalls();
        const { result } = await variant.run(path, threadId);
        if (variant.modelCalls() - before !== MODEL_CALLS_PER_CONVERSATION) {
          throw new Error(`${variant.name} ${path}: ${variant.modelCalls() - before} model calls, expected ${MODEL_CALLS_PER_CONVERSATION}`);
        }
        await variant.settle(path, threadId, result);
      }
    }
  }
  for (const governed of variants.filter((v) => v.auditLog)) {
    for (const path of PATHS) {
      const verification = await governed.auditLog!.verify(`warmup-${path}-0`);
      if (!verification.ok || verification.count === 0) throw new Error(`${governed.name} audit chain of warmup-${path}-0 is broken or empty: ${JSON.stringify(verification)}`);
    }
  }

  // Interleaved rounds: each round runs every variant on both paths; the order of the variants
  // rotates and the order of the paths alternates, so drift (JIT, GC) hits every variant alike.
  const samples = new Map<string, Timing[]>();
  const key = (v: MiddlewareVariant, p: Path) => `${v.name}/${p}`;
  const rounds = Math.min(ROUNDS, threads);
  for (let round = 0; round < rounds; round++) {
    const perRound = Math.floor(threads / rounds) + (round < threads % rounds ? 1 : 0);
    const order = variants.map((_, i) => variants[(i + round) % variants.length]!);
    const paths = round % 2 === 0 ? PATHS : [...PATHS].reverse();
    for (const path of paths) {
      for (const variant of order) {
        const list = samples.get(key(variant, path)) ?? [];
        samples.set(key(variant, path), list);
        for (let i = 0; i < perRound; i++) {
          const threadId = `r${round}-${path}-${i}`;
          const { timing, result } = await variant.run(path, threadId);
          list.push(timing);
          await variant.settle(path, threadId, result);
        }
      }
    }
  }
  const seconds = (performance.now() - started) / 1000;

  console.log(
    `\neart bench: createAgent middleware, refund conversation per conversation (${threads} per variant and path, ${WARMUP_THREADS} warm-up, ${rounds} interleaved rounds, ${seconds.toFixed(1)} s)`,
  );
  console.log("plain: createAgent alone; HITL: + humanInTheLoopMiddleware (issue_refund when amount > $100); floor: + a middleware of eart's shape doing no work (one declared state channel, model and tool calls wrapped, the pause in the tool step); governance: + governanceMiddleware + guardAgent (memory audit log and ledger, redaction on); prebuilt: eart's createGovernedAgent (same stores and defaults)");
  let met = true;
  let prebuiltMet = false;
  for (const path of PATHS) {
    const stats = new Map(variants.map((v) => [v.name, summarise(samples.get(key(v, path))!.map((t) => t.total))]));
    console.log(
      path === "auto"
        ? `\nauto-allowed path: lookup + $60 refund + final text, one invoke (no pause in any variant)`
        : `\napproval path: lookup + $740 refund paused for approval + resume approving it (sam) + final text, first invoke to end of resume (plain: no pause, one invoke)`,
    );
    console.table(
      variants.map((v) => {
        const s = stats.get(v.name)!;
        const timings = samples.get(key(v, path))!;
        const row: Record<string, string | number> = { variant: v.name, conversations: s.count, "mean ms": ms(s.mean), "median ms": ms(s.median), "p95 ms": ms(s.p95) };
        if (path === "approval") {
          row["pause mean ms"] = v.pauses ? ms(mean(timings.map((t) => t.pause!))) : "-";
          row["resume mean ms"] = v.pauses ? ms(mean(timings.map((t) => t.resume!))) : "-";
        }
        return row;
      }),
    );
    const plain = stats.get("plain")!;
    const hitl = stats.get("HITL")!;
    const gov = stats.get("governance")!;
    const pathMet = gov.mean / hitl.mean <= MIDDLEWARE_TARGET_RATIO && gov.median / hitl.median <= MIDDLEWARE_TARGET_RATIO;
    met &&= pathMet;
    console.log(`ratio governance/HITL:  ${ratioText(gov, hitl)}   target: governance middleware at most the time of HITL middleware (<= ${MIDDLEWARE_TARGET_RATIO.toFixed(2)}x, mean and median): ${pathMet ? "MET" : "NOT MET"}`);
    console.log(`ratio HITL/plain:       ${ratioText(hitl, plain)}`);
    console.log(`ratio governance/plain: ${ratioText(gov, plain)}`);
    const floor = stats.get("floor")!;
    console.log(`ratio floor/HITL:       ${ratioText(floor, hitl)}   (a middleware of eart's shape that does no work)`);
    console.log(`ratio governance/floor: ${ratioText(gov, floor)}   (eart's work: identity, policy, seals, ledger, redaction, audit chain)`);
    const prebuilt = stats.get("prebuilt")!;
    if (path === "approval") {
      prebuiltMet = prebuilt.mean / hitl.mean <= PREBUILT_APPROVAL_TARGET_RATIO && prebuilt.median / hitl.median <= PREBUILT_APPROVAL_TARGET_RATIO;
      console.log(`ratio prebuilt/HITL:    ${ratioText(prebuilt, hitl)}   target: eart's prebuilt agent's approval round trip at most ${PREBUILT_APPROVAL_TARGET_RATIO.toFixed(2)}x HITL middleware (mean and median): ${prebuiltMet ? "MET" : "NOT MET"}`);
    } else {
      console.log(`ratio prebuilt/HITL:    ${ratioText(prebuilt, hitl)}`);
    }
    console.log(`ratio prebuilt/plain:   ${ratioText(prebuilt, plain)}`);
  }
  console.log(`\ntarget: governance middleware at most the time of HITL middleware on both paths (<= ${MIDDLEWARE_TARGET_RATIO.toFixed(2)}x): ${met ? "MET" : "NOT MET"}`);
  console.log(`target: prebuilt agent's approval round trip at most ${PREBUILT_APPROVAL_TARGET_RATIO.toFixed(2)}x HITL middleware: ${prebuiltMet ? "MET" : "NOT MET"}`);
}

if (import.meta.url === `file://${process.argv[1]}`) await runMiddlewareBench();
