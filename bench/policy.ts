/**
 * Benchmark: latency of one policy decision (`engine.decide(request)`) on the typed rules
 * (`definePolicy`) and on Cedar (`createCedarPolicyEngine`), at 20 and at 1,000 rules, with the
 * engines built (and Cedar's policy set preparsed) once, outside the clock.
 *
 * The two rule sets are generated to be equivalent: one allow rule per tool `tool_i` with a limit on
 * `args.amountCents`, plus two forbids, a require_approval rule and an escalate rule, so every path
 * (allow, deny by a rule, default deny, require_approval, escalate) is timed. Before timing, both
 * engines must give the expected effect, rule ids and approver roles on every request of the mix.
 *
 * Timing: `performance.now()` around each call (sub-microsecond resolution in Node), so p50 and
 * p99 are per decision; the timer's own cost is measured and printed, not subtracted.
 */
import { definePolicy, DEFAULT_DENY_POLICY_ID, type PolicyDecision, type PolicyEngine, type PolicyRequest, type PolicyRule } from "eart";
import { createCedarPolicyEngine } from "eart/cedar";

/** Target: typed rules p99 at most this many microseconds at 1,000 rules. */
export const TYPED_P99_TARGET_US = 20;
/** Target: Cedar p99 at most this many microseconds at 20 policies. */
export const CEDAR_P99_TARGET_US = 1_000;

const SIZES = [20, 1_000] as const;
/** Rules beside the per-tool allow rules: two forbids, one require_approval, one escalate. */
const EXTRA_RULES = 4;
/** Distinct requests the timed loop cycles over. */
const MIX_SIZE = 97;
/** Rounds per size; the engines alternate which goes first in each, so drift (JIT, GC) hits both. */
const ROUNDS = 4;

/** Timed decisions per engine and size (after warm-up); Cedar at 1,000 policies is the slow one. */
const ITERATIONS: Record<"typed" | "cedar", Record<(typeof SIZES)[number], number>> = {
  typed: { 20: 20_000, 1_000: 20_000 },
  cedar: { 20: 20_000, 1_000: 5_000 },
};
const WARMUP: Record<"typed" | "cedar", number> = { typed: 5_000, cedar: 500 };

const ESCALATE_LIMIT = 5_000_000;
const APPROVAL_LIMIT = 1_000_000;

/** The generated rule set of one size, in a form both engines are built from. */
interface RuleSet {
  size: number;
  /** Tools with an allow rule: `tool_0` .. `tool_{allowCount-1}`. */
  allowCount: number;
  limitOf: (i: number) => number;
  approvalTools: string[];
  escalateTools: string[];
}

function ruleSet(size: number): RuleSet {
  const allowCount = size - EXTRA_RULES;
  const spread = (k: number) => Array.from({ length: k }, (_, j) => `tool_${Math.floor(((j + 0.5) * allowCount) / k)}`);
  return {
    size,
    allowCount,
    limitOf: (i) => 1_000 + 100 * i,
    approvalTools: spread(Math.max(2, Math.floor(allowCount / 4))),
    escalateTools: spread(Math.max(2, Math.floor(allowCount / 8))),
  };
}

/** The same rules as typed rules, in the same order (forbids, allows, approval, escalate). */
function typedEngine(set: RuleSet): PolicyEngine {
  const rules: PolicyRule[] = [
    { id: "forbid_payment", effect: "deny", when: (r) => r.context.sensitivity.includes("payment"), reason: "No tool calls on payment data" },
    { id: "forbid_negative", effect: "deny", when: (r) => Number(r.tool.args.amountCents) < 0, reason: "Negative amounts are refused" },
  ];
  for (let i = 0; i < set.allowCount; i++) {
    const limit = set.limitOf(i);
    rules.push({ id: `rule_${i}`, tools: [`tool_${i}`], effect: "allow", when: (r) => Number(r.tool.args.amountCents) <= limit });
  }
  rules.push(
    {
      id: "approve_high",
      tools: set.approvalTools,
      effect: "require_approval",
      approverRoles: ["supervisor"],
      when: (r) => Number(r.tool.args.amountCents) <= APPROVAL_LIMIT,
    },
    { id: "escalate_huge", tools: set.escalateTools, effect: "escalate", when: (r) => Number(r.tool.args.amountCents) > ESCALATE_LIMIT },
  );
  return definePolicy({ name: `bench-${set.size}`, rules });
}

/** The same rules as Cedar policies. */
function cedarEngine(set: RuleSet): PolicyEngine {
  const actions = (tools: string[]) => tools.map((t) => `Action::"${t}"`).join(", ");
  const lines = [
    `@id("forbid_payment") @reason("No tool calls on payment data")
forbid(principal, action, resource) when { context.sensitivity.contains("payment") };`,
    `@id("forbid_negative") @reason("Negative amounts are refused")
forbid(principal, action, resource) when { context.args.amountCents < 0 };`,
  ];
  for (let i = 0; i < set.allowCount; i++) {
    lines.push(`@id("rule_${i}") permit(principal, action == Action::"tool_${i}", resource) when { context.args.amountCents <= ${set.limitOf(i)} };`);
  }
  lines.push(
    `@id("approve_high") @requires_approval("supervisor")
permit(principal, action in [${actions(set.approvalTools)}], resource) when { context.args.amountCents <= ${APPROVAL_LIMIT} };`,
    `@id("escalate_huge") @escalate("Huge amounts go to a human")
permit(principal, action in [${actions(set.escalateTools)}], resource) when { context.args.amountCents > ${ESCALATE_LIMIT} };`,
  );
  return createCedarPolicyEngine({ policies: lines.join("\n") });
}

/** What both engines must decide, worked out from the rule set independently of either engine. */
interface Expected {
  effect: PolicyDecision["effect"];
  policyIds: string[];
  approverRoles?: string[];
}

interface Case {
  request: PolicyRequest;
  expected: Expected;
}

const IDENTITY: PolicyRequest["identity"] = {
  schemaVersion: 1,
  id: "support-agent",
  roles: ["support"],
  tools: [],
  dataScopes: ["orders"],
  onBehalfOf: { id: "cara", roles: ["customer"] },
  source: "configurable.user_id",
};

/**
 * `MIX_SIZE` requests over tools spread across the whole set (and a few unknown tools): amounts
 * under the tool's limit, over it, far over it, negative, and calls on a thread holding payment data.
 */
function requestMix(set: RuleSet): Case[] {
  const cases: Case[] = [];
  for (let k = 0; k < MIX_SIZE; k++) {
    const kind = k % 10;
    const unknown = k % 13 === 12;
    // Over-limit and huge amounts go half the time to tools that have the approval or escalate rule.
    const pick = (tools: string[]) => Number(tools[(k * 31) % tools.length]!.slice("tool_".length));
    const index = unknown
      ? set.size + k
      : kind === 5 && k % 20 < 10
        ? pick(set.approvalTools)
        : kind === 7 && k % 20 < 10
          ? pick(set.escalateTools)
          : (k * 7919) % set.allowCount;
    const tool = `tool_${index}`;
    const limit = unknown ? 0 : set.limitOf(index);
    const amountCents =
      kind <= 4 ? Math.floor(limit / 2) + k : kind <= 6 ? limit + 1 + k : kind === 7 ? ESCALATE_LIMIT + 1 + k : kind === 8 ? -1 - k : k;
    const payment = kind === 9;
    const request: PolicyRequest = {
      identity: IDENTITY,
      tool: { name: tool, args: { orderId: `order-${k}`, amountCents } },
      context: { items: [], sensitivity: payment ? ["payment"] : [] },
      threadId: `thread-${k}`,
    };
    cases.push({ request, expected: expectedDecision(set, tool, index, amountCents, payment, unknown) });
  }
  return cases;
}

function expectedDecision(set: RuleSet, tool: string, index: number, amountCents: number, payment: boolean, unknown: boolean): Expected {
  const denies = [...(payment ? ["forbid_payment"] : []), ...(amountCents < 0 ? ["forbid_negative"] : [])];
  if (denies.length > 0) return { effect: "deny", policyIds: denies };
  if (set.escalateTools.includes(tool) && amountCents > ESCALATE_LIMIT) return { effect: "escalate", policyIds: ["escalate_huge"] };
  if (!unknown && amountCents <= set.limitOf(index)) return { effect: "allow", policyIds: [`rule_${index}`] };
  if (set.approvalTools.includes(tool) && amountCents <= APPROVAL_LIMIT) {
    return { effect: "require_approval", policyIds: ["approve_high"], approverRoles: ["supervisor"] };
  }
  return { effect: "deny", policyIds: [DEFAULT_DENY_POLICY_ID] };
}

/** Throws unless the engine decides every case as expected, synchronously (the loop times sync calls). */
function verify(name: string, engine: PolicyEngine, cases: readonly Case[]): void {
  for (const { request, expected } of cases) {
    const raw = engine.decide(request);
    if (raw instanceof Promise) throw new Error(`${name}: decide() returned a promise; the benchmark times synchronous decisions`);
    const got: Expected = { effect: raw.effect, policyIds: raw.policyIds, ...(raw.effect === "require_approval" ? { approverRoles: raw.approverRoles } : {}) };
    if (JSON.stringify(got) !== JSON.stringify(expected) || (raw.effect === "deny" && raw.evaluationError)) {
      throw new Error(
        `${name} decided ${request.tool.name} ${JSON.stringify(request.tool.args)} sensitivity=${JSON.stringify(request.context.sensitivity)} as ${JSON.stringify(raw)}, expected ${JSON.stringify(expected)}`,
      );
    }
  }
}

/** Keeps the decisions observable, so no call can be optimised away. */
let sink = 0;

/** Times `count` decisions, cycling over the cases from `offset`; returns microseconds per call. */
function timeDecisions(engine: PolicyEngine, cases: readonly Case[], count: number, offset: number, out: number[]): void {
  for (let i = 0; i < count; i++) {
    const request = cases[(offset + i) % cases.length]!.request;
    const start = performance.now();
    const decision = engine.decide(request) as PolicyDecision;
    const elapsed = performance.now() - start;
    out.push(elapsed * 1_000);
    sink += decision.policyIds.length;
  }
}

/** Cost of the two `performance.now()` calls around a decision, in microseconds (median). */
function timerOverheadUs(): number {
  const samples: number[] = [];
  for (let i = 0; i < 20_000; i++) {
    const start = performance.now();
    samples.push((performance.now() - start) * 1_000);
  }
  return latency(samples).p50;
}

/** Latency summary, in microseconds. */
export interface Latency {
  count: number;
  mean: number;
  p50: number;
  p99: number;
  max: number;
}

/**
 * Mean, median, 99th percentile and maximum of a list of samples.
 * @example
 * ```ts
 * latency([1, 2, 3, 4]).p50 // 2.5
 * ```
 */
export function latency(samples: readonly number[]): Latency {
  if (samples.length === 0) throw new Error("no samples");
  const sorted = Float64Array.from(samples).sort();
  const mid = sorted.length / 2;
  const p50 = sorted.length % 2 === 1 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  const p99 = sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)]!;
  let sum = 0;
  for (const x of sorted) sum += x;
  return { count: sorted.length, mean: sum / sorted.length, p50, p99, max: sorted[sorted.length - 1]! };
}

interface Row {
  engine: "typed" | "cedar";
  size: number;
  stats: Latency;
}

const us = (x: number) => x.toFixed(2);
const ratio = (a: number, b: number) => `${(a / b).toFixed(1)}x`;

/**
 * Runs the policy decision benchmark and prints its table, the targets and the Cedar/typed ratios.
 * Throws before timing if the two engines disagree with the expected decisions.
 * @example
 * ```ts
 * await runPolicyBench();
 * ```
 */
export async function runPolicyBench(): Promise<void> {
  const started = performance.now();
  const rows: Row[] = [];
  const mixes = new Map<number, Record<string, number>>();

  for (const size of SIZES) {
    const set = ruleSet(size);
    const engines = { typed: typedEngine(set), cedar: cedarEngine(set) };
    const cases = requestMix(set);
    const mix: Record<string, number> = {};
    for (const c of cases) {
      const key = c.expected.policyIds[0] === DEFAULT_DENY_POLICY_ID ? "default deny" : c.expected.effect;
      mix[key] = (mix[key] ?? 0) + 1;
    }
    if (Object.keys(mix).length !== 5) throw new Error(`request mix at ${size} rules misses a path: ${JSON.stringify(mix)}`);
    mixes.set(size, mix);

    // A benchmark of a broken path is worthless: check both engines before any timing.
    verify(`typed rules at ${size}`, engines.typed, cases);
    verify(`Cedar at ${size}`, engines.cedar, cases);

    const order = ["typed", "cedar"] as const;
    for (const name of order) timeDecisions(engines[name], cases, WARMUP[name], 0, []);
    const samples = { typed: [] as number[], cedar: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      for (const name of round % 2 === 0 ? order : [...order].reverse()) {
        const total = ITERATIONS[name][size];
        const perRound = Math.floor(total / ROUNDS) + (round < total % ROUNDS ? 1 : 0);
        timeDecisions(engines[name], cases, perRound, round * 31, samples[name]);
      }
    }
    // Still deciding the same after the timed loop.
    verify(`typed rules at ${size}`, engines.typed, cases);
    verify(`Cedar at ${size}`, engines.cedar, cases);
    for (const name of order) rows.push({ engine: name, size, stats: latency(samples[name]) });
  }
  if (sink === 0) throw new Error("no decision was observed");

  const find = (engine: Row["engine"], size: number) => rows.find((r) => r.engine === engine && r.size === size)!.stats;
  const typed1000 = find("typed", 1_000);
  const cedar20 = find("cedar", 20);
  const typedMet = typed1000.p99 <= TYPED_P99_TARGET_US;
  const cedarMet = cedar20.p99 <= CEDAR_P99_TARGET_US;

  console.log(`\neart bench: policy decision latency, preparsed engines, one decide() per sample (µs)`);
  console.log(`node ${process.version}; ${MIX_SIZE} requests cycled; warm-up ${WARMUP.typed} typed / ${WARMUP.cedar} Cedar; ${ROUNDS} alternating rounds`);
  for (const [size, mix] of mixes) console.log(`request mix at ${size} rules: ${Object.entries(mix).map(([k, n]) => `${k} ${n}`).join(", ")}`);
  console.log();
  console.table(
    rows.map(({ engine, size, stats }) => ({
      engine: engine === "typed" ? "typed rules" : "Cedar",
      rules: size,
      decisions: stats.count,
      "mean µs": us(stats.mean),
      "p50 µs": us(stats.p50),
      "p99 µs": us(stats.p99),
      "max µs": us(stats.max),
    })),
  );
  console.log(`timer: performance.now() before and after each call; its own cost (~${us(timerOverheadUs())} µs) is included, not subtracted`);
  console.log();
  for (const size of SIZES) {
    const t = find("typed", size);
    const c = find("cedar", size);
    console.log(`ratio Cedar/typed at ${size}: p50 ${ratio(c.p50, t.p50)}, p99 ${ratio(c.p99, t.p99)}, mean ${ratio(c.mean, t.mean)}`);
  }
  console.log(`target: typed rules p99 <= ${TYPED_P99_TARGET_US} µs at 1,000 rules: ${us(typed1000.p99)} µs, ${typedMet ? "MET" : "NOT MET"}`);
  console.log(`target: Cedar p99 <= ${CEDAR_P99_TARGET_US} µs at 20 policies: ${us(cedar20.p99)} µs, ${cedarMet ? "MET" : "NOT MET"}`);
  console.log(`(policy section: ${((performance.now() - started) / 1_000).toFixed(1)} s)`);
}
