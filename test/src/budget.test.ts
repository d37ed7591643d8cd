import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  defineBudgets,
  definePolicy,
  EartConfigError,
  MemoryBudgetStore,
  PolicyDefinitionError,
  type AgentIdentity,
  type BudgetGuard,
  type BudgetRuleInput,
  type BudgetStore,
  type PolicyDecision,
  type PolicyDefinition,
} from "eart";
import { BudgetVerdictSchema, type BudgetRequest } from "../../src/policy/budget.js";
import { PolicyDescriptionSchema } from "../../src/policy/engine.js";
import { PostgresBudgetStore } from "eart/postgres";
import { SqliteBudgetStore } from "eart/sqlite";

// A real PostgreSQL (.ci/run starts it). No skip: without it the PostgreSQL cases fail, loudly.
const PG_URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const dir = mkdtempSync(join(tmpdir(), "eart-budget-"));
const pools: pg.Pool[] = [];
const closers: (() => unknown)[] = [];
afterAll(async () => {
  for (const close of closers) await close();
  await Promise.all(pools.map((p) => p.end()));
  rmSync(dir, { recursive: true, force: true });
});
const tempDb = () => join(dir, `${randomUUID()}.sqlite`);
const newPool = () => {
  const pool = new pg.Pool({ connectionString: PG_URL });
  pools.push(pool);
  return pool;
};

const HEX64 = /^[0-9a-f]{64}$/;

const identity = (agentId = "support-agent", userId = "cara"): AgentIdentity => ({
  schemaVersion: 1,
  id: agentId,
  roles: ["support"],
  tools: ["issue_refund", "lookup_order"],
  dataScopes: ["orders"],
  onBehalfOf: { id: userId, roles: ["customer"] },
  source: "configurable.user_id",
});

/** A mutable clock: tests move `clock.now`. */
function testClock(iso: string) {
  const clock = { now: new Date(iso), fn: () => clock.now };
  return clock;
}

/** The caller's side: check, run, charge, and merge the update with the `budget` channel reducer. */
class Thread {
  budget: Record<string, number> = {};
  constructor(
    readonly guard: BudgetGuard,
    readonly threadId: string,
    readonly who: AgentIdentity = identity(),
  ) {}
  req(name: string, args: Record<string, unknown> = {}): BudgetRequest {
    return { identity: this.who, threadId: this.threadId, tool: { name, args }, threadCounters: this.budget };
  }
  check(name: string, args: Record<string, unknown> = {}) {
    return this.guard.check(this.req(name, args));
  }
  /** Charges as the tool node would after the call ran; returns the update it merged. */
  async charge(name: string, args: Record<string, unknown> = {}) {
    const update = await this.guard.charge(this.req(name, args));
    this.budget = { ...this.budget, ...update };
    return update;
  }
  /** Check, and charge when within budget. Returns the verdict. */
  async call(name: string, args: Record<string, unknown> = {}) {
    const verdict = await this.check(name, args);
    if (!verdict) await this.charge(name, args);
    return verdict;
  }
}

const refundsPerAgentPerDay: BudgetRuleInput = {
  id: "refunds.daily",
  tools: ["issue_refund"],
  scope: "agent",
  window: "day",
  maxSum: { arg: "amount", max: 2000 },
  onExceed: "deny",
  reason: "At most $2,000 refunded per agent per day",
};

function budgetError(rules: unknown, options?: unknown): PolicyDefinitionError | EartConfigError {
  try {
    defineBudgets(rules as BudgetRuleInput[], options as never);
  } catch (error) {
    if (error instanceof PolicyDefinitionError || error instanceof EartConfigError) return error;
    throw error;
  }
  throw new Error("defineBudgets did not throw");
}

const base: BudgetRuleInput = { id: "r", tools: ["t"], scope: "thread", window: "day", maxCalls: 1, onExceed: "deny" };

describe("defineBudgets: rule and option validation", () => {
  it("accepts a valid rule set and versions it by content", () => {
    const a = defineBudgets([base, refundsPerAgentPerDay], { store: new MemoryBudgetStore() });
    const b = defineBudgets([base, refundsPerAgentPerDay], { store: new MemoryBudgetStore() });
    const c = defineBudgets([{ ...base, maxCalls: 2 }, refundsPerAgentPerDay], { store: new MemoryBudgetStore() });
    const d = defineBudgets([base, { ...refundsPerAgentPerDay, maxSum: { arg: "amount", max: 2001 } }], { store: new MemoryBudgetStore() });
    expect(a.version).toMatch(HEX64);
    expect(b.version).toBe(a.version);
    expect(c.version).not.toBe(a.version);
    expect(d.version).not.toBe(a.version);
  });

  it.each([
    ["a duplicate id", [base, { ...base }], "r", /Duplicate budget rule id "r"/],
    ["no limit at all", [{ ...base, maxCalls: undefined }], "r", /maxCalls, maxSum or both/],
    ["require_approval without approverRoles", [{ ...base, onExceed: "require_approval" }], "r", /approverRoles/],
    ["approverRoles on a deny rule", [{ ...base, approverRoles: ["supervisor"] }], "r", /only a require_approval/],
    ["an empty tool list", [{ ...base, id: "e", tools: [] }], "e", /tools/],
    ["an unknown scope", [{ ...base, scope: "tenant" }], "r", /scope/],
    ["an unknown window", [{ ...base, window: "week" }], "r", /window/],
    ["a zero window", [{ ...base, window: 0 }], "r", /window/],
    ["a fractional window", [{ ...base, window: 1.5 }], "r", /window/],
    ["negative maxCalls", [{ ...base, maxCalls: -1 }], "r", /maxCalls/],
    ["a maxSum without arg", [{ ...base, maxSum: { max: 5 } }], "r", /maxSum\.arg/],
    ["a negative maxSum", [{ ...base, maxSum: { arg: "amount", max: -5 } }], "r", /maxSum\.max/],
    ["an unknown key", [{ ...base, per: "day" }], "r", /per|Unrecognized/],
    ["an empty id", [{ ...base, id: "" }], undefined, /id/],
  ])("rejects %s, naming the rule", (_name, rules, ruleId, message) => {
    const error = budgetError([{ ...base, id: "ok" }, ...(rules as unknown[])]);
    expect(error).toBeInstanceOf(PolicyDefinitionError);
    expect((error as PolicyDefinitionError).code).toBe("policy_invalid");
    expect((error as PolicyDefinitionError).ruleId).toBe(ruleId);
    expect(error.message).toMatch(message);
  });

  it("rejects rules that are not an array", () => {
    expect(budgetError({ rules: [] })).toBeInstanceOf(PolicyDefinitionError);
  });

  it("needs a store when a rule counts across threads, and not otherwise", () => {
    const error = budgetError([base, refundsPerAgentPerDay]);
    expect(error).toBeInstanceOf(EartConfigError);
    expect((error as EartConfigError).field).toBe("store");
    expect(error.message).toMatch(/refunds\.daily/);
    expect(() => defineBudgets([base])).not.toThrow();
  });

  it("rejects bad options with a config error naming the option", () => {
    expect((budgetError([base], { store: {} }) as EartConfigError).field).toBe("store");
    expect((budgetError([base], { clock: "now" }) as EartConfigError).field).toBe("clock");
    expect((budgetError([base], { stor: new MemoryBudgetStore() }) as EartConfigError).field).toBe("options");
  });
});

/** The error a policy definition throws. */
function policyError(definition: unknown): PolicyDefinitionError {
  try {
    definePolicy(definition as PolicyDefinition);
  } catch (error) {
    if (error instanceof PolicyDefinitionError) return error;
    throw error;
  }
  throw new Error("definePolicy did not throw");
}

// Budgets and typed policies are compiled by one rule compiler (src/policy/rules.ts): the same
// checks, the same errors, the same tool lookup, the same kind of version.
describe("budgets and policies share one rule compiler", () => {
  const policyRule = (id: string, extra: Record<string, unknown> = {}) => ({ id, effect: "allow", ...extra });

  it("refuse a duplicate id with the same error, naming the id", () => {
    const fromBudgets = budgetError([{ ...base, id: "a" }, { ...base, id: "b" }, { ...base, id: "a" }]) as PolicyDefinitionError;
    const fromPolicy = policyError({ rules: [policyRule("a"), policyRule("b"), policyRule("a")] });
    for (const [error, kind] of [
      [fromBudgets, "budget rule"],
      [fromPolicy, "policy rule"],
    ] as const) {
      expect(error).toBeInstanceOf(PolicyDefinitionError);
      expect(error.code).toBe("policy_invalid");
      expect(error.ruleId).toBe("a");
      expect(error.message).toBe(`Duplicate ${kind} id "a"`);
    }
  });

  it("refuse an unknown field with the same error, naming the rule, where it is and the field", () => {
    const fromBudgets = budgetError([base, { ...base, id: "typo", tool: ["t"] }]) as PolicyDefinitionError;
    const fromPolicy = policyError({ rules: [policyRule("ok"), policyRule("typo", { tool: ["t"] })] });
    expect([fromBudgets.ruleId, fromPolicy.ruleId]).toEqual(["typo", "typo"]);
    expect(fromBudgets.message).toBe('Invalid budget rule at 1 ("typo"): Unrecognized key: "tool"');
    expect(fromPolicy.message).toBe('Invalid policy at rules.1: Unrecognized key: "tool"');
  });

  it.each([
    ["an empty tool list", [], 'must name at least one tool, or be "*" for every tool'],
    ['"*" inside the list', ["lookup_order", "*"], 'write tools: "*" (not ["*"]) for a rule over every tool'],
    ["an empty tool name", [""], "must be a non-empty string"],
  ])("refuse %s the same way", (_name, tools, message) => {
    const fromBudgets = budgetError([{ ...base, id: "bad", tools }]) as PolicyDefinitionError;
    const fromPolicy = policyError({ rules: [policyRule("bad", { tools })] });
    expect([fromBudgets.ruleId, fromPolicy.ruleId]).toEqual(["bad", "bad"]);
    expect(fromBudgets.message).toMatch(/^Invalid budget rule at 0\.tools(\.0)? \("bad"\): /);
    expect(fromPolicy.message).toMatch(/^Invalid policy at rules\.0\.tools(\.0)?: /);
    expect(fromBudgets.message.endsWith(`: ${message}`)).toBe(true);
    expect(fromPolicy.message.endsWith(`: ${message}`)).toBe(true);
  });

  it('look rules up by tool the same way: "*" rules apply to every tool, in definition order', async () => {
    // Each id once per set, "*" rules before, between and after the rules naming tools.
    const order = [
      { id: "any.1", tools: "*" as const },
      { id: "refund", tools: ["issue_refund"] },
      { id: "any.2", tools: "*" as const },
      { id: "both", tools: ["lookup_order", "issue_refund"] },
    ];
    const guard = defineBudgets(order.map((r) => ({ ...base, ...r, maxCalls: 0 })));
    const policy = definePolicy({ rules: order.map((r) => ({ ...r, effect: "deny" as const })) });
    const budgetIds = async (tool: string) => (await new Thread(guard, "t1").check(tool))?.budgetIds;
    const policyIds = (tool: string) => (policy.decide({ identity: identity(), tool: { name: tool, args: {} }, context: { items: [], sensitivity: [] } }) as PolicyDecision).policyIds;
    for (const [tool, ids] of [
      ["issue_refund", ["any.1", "refund", "any.2", "both"]],
      ["lookup_order", ["any.1", "any.2", "both"]],
      ["anything_else", ["any.1", "any.2"]],
    ] as const) {
      expect(await budgetIds(tool)).toEqual(ids);
      expect(policyIds(tool)).toEqual(ids);
    }
  });

  it("version the rules by content: a changed limit, tool or id is a new version, the same rules the same one", () => {
    const budgetVersion = (rule: Partial<BudgetRuleInput>) => defineBudgets([{ ...base, ...rule }]).version;
    const policyVersion = (rule: Record<string, unknown>) =>
      definePolicy({ rules: [{ id: "r", tools: ["t"], effect: "require_approval", approverRoles: ["supervisor"], ...rule }] }).version;
    for (const version of [budgetVersion, policyVersion]) expect(version({})).toBe(version({}));
    const budgets = [{}, { maxCalls: 2 }, { maxSum: { arg: "amount", max: 10 } }, { maxSum: { arg: "amount", max: 11 } }, { tools: ["u"] }, { tools: "*" as const }, { id: "s" }].map(budgetVersion);
    const policies = [{}, { quorum: 2 }, { expiresIn: 60_000 }, { expiresIn: 60_001 }, { tools: ["u"] }, { tools: "*" }, { id: "s" }].map(policyVersion);
    for (const versions of [budgets, policies]) {
      for (const v of versions) expect(v).toMatch(HEX64);
      expect(new Set(versions).size).toBe(versions.length);
    }
  });
});

describe("BudgetGuard.describe", () => {
  it("lists each budget's tools, its onExceed as effect and its approver roles, frozen, in a policy's description shape", () => {
    const guard = defineBudgets(
      [
        refundsPerAgentPerDay,
        { id: "lookups.burst", tools: ["lookup_order"], scope: "thread", window: 60_000, maxCalls: 10, onExceed: "require_approval", approverRoles: ["supervisor", "lead"] },
        { id: "everything", tools: "*", scope: "thread", window: "hour", maxCalls: 100, onExceed: "deny" },
      ],
      { store: new MemoryBudgetStore() },
    );
    const description = guard.describe?.();
    expect(description).toEqual({
      name: "budgets",
      rules: [
        { id: "refunds.daily", tools: ["issue_refund"], effect: "deny" },
        { id: "lookups.burst", tools: ["lookup_order"], effect: "require_approval", approverRoles: ["supervisor", "lead"] },
        { id: "everything", tools: "*", effect: "deny" },
      ],
    });
    expect(PolicyDescriptionSchema.safeParse(description).success).toBe(true);
    // Read-only: a construction check cannot change what the guard counts.
    expect(Object.isFrozen(description)).toBe(true);
    expect(Object.isFrozen(description!.rules[0]!.tools)).toBe(true);
    expect(() => (description!.rules[1]!.approverRoles as string[]).push("anyone")).toThrow(TypeError);
    expect(guard.describe?.()).toBe(description);
  });
});

describe("BudgetGuard semantics", () => {
  it("thread scope: counts in the returned update (new totals, not deltas), per thread", async () => {
    const clock = testClock("2025-03-10T10:00:00Z");
    const guard = defineBudgets([{ id: "lookups", tools: ["lookup_order"], scope: "thread", window: "day", maxCalls: 2, onExceed: "deny" }], {
      clock: clock.fn,
    });
    const t1 = new Thread(guard, "t1");
    expect(await t1.check("lookup_order")).toBeUndefined();
    expect(await t1.charge("lookup_order")).toEqual({ "lookups|t1|2025-03-10|calls": 1 });
    expect(await t1.check("lookup_order")).toBeUndefined();
    expect(await t1.charge("lookup_order")).toEqual({ "lookups|t1|2025-03-10|calls": 2 });
    expect(t1.budget).toEqual({ "lookups|t1|2025-03-10|calls": 2 });
    const verdict = await t1.check("lookup_order");
    expect(verdict).toEqual({
      effect: "deny",
      budgetIds: ["lookups"],
      reasons: ['budget "lookups": this would be call 3, over the limit of 2 per thread per UTC day'],
    });
    expect(BudgetVerdictSchema.safeParse(verdict).success).toBe(true);

    // Another thread of the same agent and user starts from its own (empty) counters.
    const t2 = new Thread(guard, "t2");
    expect(await t2.check("lookup_order")).toBeUndefined();
    expect(await t2.charge("lookup_order")).toEqual({ "lookups|t2|2025-03-10|calls": 1 });
    // A tool no rule counts is neither limited nor charged.
    expect(await t1.check("issue_refund")).toBeUndefined();
    expect(await t1.charge("issue_refund")).toEqual({});
  });

  it("agent scope: at most $2,000 refunded per agent per day, across threads, via the store", async () => {
    const clock = testClock("2025-03-10T09:00:00Z");
    const store = new MemoryBudgetStore();
    const guard = defineBudgets([refundsPerAgentPerDay], { store, clock: clock.fn });
    const t1 = new Thread(guard, "t1");
    const t2 = new Thread(guard, "t2", identity("support-agent", "dan"));
    expect(await t1.call("issue_refund", { amount: 1500 })).toBeUndefined();
    // Cross-thread counters are not in the thread's update.
    expect(t1.budget).toEqual({});
    expect(await store.get(["refunds.daily|agent|support-agent|2025-03-10|sum"])).toEqual({ "refunds.daily|agent|support-agent|2025-03-10|sum": 1500 });

    // Another thread of the same agent (for another user): 600 more would exceed.
    expect(await t2.check("issue_refund", { amount: 600 })).toEqual({
      effect: "deny",
      budgetIds: ["refunds.daily"],
      reasons: ["At most $2,000 refunded per agent per day"],
    });
    // Exactly up to the limit is within it.
    expect(await t2.call("issue_refund", { amount: 500 })).toBeUndefined();
    expect((await t1.check("issue_refund", { amount: 0.01 }))?.effect).toBe("deny");

    // Another agent is unaffected.
    const other = new Thread(guard, "t3", identity("billing-agent", "cara"));
    expect(await other.call("issue_refund", { amount: 1900 })).toBeUndefined();

    // The next UTC day starts from zero.
    clock.now = new Date("2025-03-11T00:00:00Z");
    expect(await t2.check("issue_refund", { amount: 2000 })).toBeUndefined();
    expect(await store.get(["refunds.daily|agent|support-agent|2025-03-10|sum", "refunds.daily|agent|billing-agent|2025-03-10|sum"])).toEqual({
      "refunds.daily|agent|support-agent|2025-03-10|sum": 2000,
      "refunds.daily|agent|billing-agent|2025-03-10|sum": 1900,
    });
  });

  it("generated reasons state the amount, the total and the limit", async () => {
    const store = new MemoryBudgetStore();
    const guard = defineBudgets([{ ...refundsPerAgentPerDay, reason: undefined }], { store, clock: () => new Date("2025-03-10T09:00:00Z") });
    const t = new Thread(guard, "t1");
    await t.call("issue_refund", { amount: 1500 });
    expect((await t.check("issue_refund", { amount: 600 }))?.reasons).toEqual([
      'budget "refunds.daily": amount 600 would bring the total to 2100, over the limit of 2000 per agent per UTC day',
    ]);
  });

  it("user and agent+user scopes key on the human, and on the pair", async () => {
    const store = new MemoryBudgetStore();
    const clock = () => new Date("2025-03-10T09:00:00Z");
    const rule: Omit<BudgetRuleInput, "id" | "scope"> = { tools: ["issue_refund"], window: "day", maxCalls: 1, onExceed: "deny" };
    const guard = defineBudgets(
      [
        { ...rule, id: "per-user", scope: "user", maxCalls: 2 },
        { ...rule, id: "per-pair", scope: "agent+user" },
      ],
      { store, clock },
    );
    const agentA = new Thread(guard, "t1", identity("agent-a", "cara"));
    const agentB = new Thread(guard, "t2", identity("agent-b", "cara"));
    const agentAForDan = new Thread(guard, "t3", identity("agent-a", "dan"));

    expect(await agentA.call("issue_refund")).toBeUndefined();
    // Same pair again, in another thread: the pair budget (1) is spent.
    expect(await new Thread(guard, "t4", identity("agent-a", "cara")).check("issue_refund")).toMatchObject({
      effect: "deny",
      budgetIds: ["per-pair"],
    });
    // Another agent for the same user: a new pair, and the user's second call.
    expect(await agentB.call("issue_refund")).toBeUndefined();
    // A third call for cara, by any agent, exceeds the per-user budget (and agent-b's pair).
    expect(await agentB.check("issue_refund")).toMatchObject({ effect: "deny", budgetIds: ["per-user", "per-pair"] });
    // The same agent for another user is unaffected.
    expect(await agentAForDan.check("issue_refund")).toBeUndefined();
    expect(
      await store.get([
        "per-user|user|cara|2025-03-10|calls",
        "per-pair|agent+user|agent-a:cara|2025-03-10|calls",
        "per-pair|agent+user|agent-b:cara|2025-03-10|calls",
        "per-user|user|dan|2025-03-10|calls",
      ]),
    ).toEqual({
      "per-user|user|cara|2025-03-10|calls": 2,
      "per-pair|agent+user|agent-a:cara|2025-03-10|calls": 1,
      "per-pair|agent+user|agent-b:cara|2025-03-10|calls": 1,
      "per-user|user|dan|2025-03-10|calls": 0,
    });
  });

  it("separators inside ids are escaped, so different agent/user pairs never share a counter", async () => {
    const store = new MemoryBudgetStore();
    const guard = defineBudgets([{ id: "p", tools: "*", scope: "agent+user", window: "day", maxCalls: 1, onExceed: "deny" }], {
      store,
      clock: () => new Date("2025-03-10T09:00:00Z"),
    });
    // Unescaped, both would be "a:b:c".
    expect(await new Thread(guard, "t1", identity("a:b", "c")).call("x")).toBeUndefined();
    expect(await new Thread(guard, "t2", identity("a", "b:c")).call("x")).toBeUndefined();
    expect(await store.get(["p|agent+user|a%3Ab:c|2025-03-10|calls", "p|agent+user|a:b%3Ac|2025-03-10|calls"])).toEqual({
      "p|agent+user|a%3Ab:c|2025-03-10|calls": 1,
      "p|agent+user|a:b%3Ac|2025-03-10|calls": 1,
    });
  });

  describe("windows roll over on the injected clock", () => {
    const rule = (window: "day" | "hour" | number): BudgetRuleInput => ({ id: "w", tools: "*", scope: "thread", window, maxCalls: 1, onExceed: "deny" });

    it("UTC day", async () => {
      const clock = testClock("2025-03-10T23:59:59.999Z");
      const t = new Thread(defineBudgets([rule("day")], { clock: clock.fn }), "t1");
      expect(await t.call("x")).toBeUndefined();
      expect((await t.check("x"))?.effect).toBe("deny");
      clock.now = new Date("2025-03-11T00:00:00.000Z");
      expect(await t.check("x")).toBeUndefined();
      expect(await t.charge("x")).toEqual({ "w|t1|2025-03-11|calls": 1 });
      // The day is UTC, whatever offset the time was written with and whatever the process's zone.
      clock.now = new Date("2025-03-11T20:30:00-05:00");
      const tz = process.env.TZ;
      try {
        process.env.TZ = "America/New_York";
        expect(clock.now.getDate()).toBe(11); // the local day differs from the UTC day
        expect(await t.charge("x")).toEqual({ "w|t1|2025-03-12|calls": 1 });
      } finally {
        if (tz === undefined) delete process.env.TZ;
        else process.env.TZ = tz;
      }
    });

    it("UTC hour", async () => {
      const clock = testClock("2025-03-10T10:59:59.999Z");
      const t = new Thread(defineBudgets([rule("hour")], { clock: clock.fn }), "t1");
      expect(await t.call("x")).toBeUndefined();
      expect(t.budget).toEqual({ "w|t1|2025-03-10T10|calls": 1 });
      expect((await t.check("x"))?.effect).toBe("deny");
      clock.now = new Date("2025-03-10T11:00:00.000Z");
      expect(await t.call("x")).toBeUndefined();
      expect(t.budget).toEqual({ "w|t1|2025-03-10T10|calls": 1, "w|t1|2025-03-10T11|calls": 1 });
      expect((await t.check("x"))?.effect).toBe("deny");
    });

    it("N ms buckets (floor(now / N))", async () => {
      const clock = testClock("2025-03-10T10:00:00.000Z");
      const start = clock.now.getTime(); // a multiple of 60 000
      clock.now = new Date(start + 59_999);
      const t = new Thread(defineBudgets([rule(60_000)], { clock: clock.fn }), "t1");
      expect(await t.call("x")).toBeUndefined();
      expect(t.budget).toEqual({ [`w|t1|${start / 60_000}|calls`]: 1 });
      expect((await t.check("x"))?.effect).toBe("deny");
      clock.now = new Date(start + 60_000);
      expect(await t.call("x")).toBeUndefined();
      expect(t.budget[`w|t1|${start / 60_000 + 1}|calls`]).toBe(1);
    });
  });

  it("require_approval names the approver roles; several approval budgets merge their roles", async () => {
    const guard = defineBudgets(
      [
        { id: "a", tools: ["pay"], scope: "thread", window: "day", maxCalls: 1, onExceed: "require_approval", approverRoles: ["supervisor"] },
        { id: "b", tools: "*", scope: "thread", window: "day", maxCalls: 1, onExceed: "require_approval", approverRoles: ["finance", "supervisor"], reason: "B" },
      ],
      { clock: () => new Date("2025-03-10T09:00:00Z") },
    );
    const t = new Thread(guard, "t1");
    expect(await t.call("pay")).toBeUndefined();
    const verdict = await t.check("pay");
    expect(verdict).toEqual({
      effect: "require_approval",
      budgetIds: ["a", "b"],
      reasons: ['budget "a": this would be call 2, over the limit of 1 per thread per UTC day', "B"],
      approverRoles: ["supervisor", "finance"],
    });
    // After an approval the call runs and is charged, over the limit.
    expect(await t.charge("pay")).toEqual({ "a|t1|2025-03-10|calls": 2, "b|t1|2025-03-10|calls": 2 });
  });

  it("deny beats require_approval, naming only the denying budgets", async () => {
    const guard = defineBudgets(
      [
        { id: "soft", tools: ["pay"], scope: "thread", window: "day", maxCalls: 1, onExceed: "require_approval", approverRoles: ["supervisor"] },
        { id: "hard", tools: ["pay"], scope: "thread", window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "deny", reason: "cap" },
      ],
      { clock: () => new Date("2025-03-10T09:00:00Z") },
    );
    const t = new Thread(guard, "t1");
    expect(await t.call("pay", { amount: 60 })).toBeUndefined();
    // Only the soft budget is exceeded: approval.
    expect(await t.check("pay", { amount: 40 })).toMatchObject({ effect: "require_approval", budgetIds: ["soft"] });
    // Both are exceeded: deny.
    expect(await t.check("pay", { amount: 41 })).toEqual({ effect: "deny", budgetIds: ["hard"], reasons: ["cap"] });
  });

  it("counts calls and sums in the same rule, and either one exceeds it", async () => {
    const guard = defineBudgets(
      [{ id: "both", tools: ["pay"], scope: "thread", window: "day", maxCalls: 2, maxSum: { arg: "amount", max: 100 }, onExceed: "deny" }],
      { clock: () => new Date("2025-03-10T09:00:00Z") },
    );
    const t = new Thread(guard, "t1");
    expect(await t.call("pay", { amount: 10 })).toBeUndefined();
    expect(t.budget).toEqual({ "both|t1|2025-03-10|calls": 1, "both|t1|2025-03-10|sum": 10 });
    expect((await t.check("pay", { amount: 91 }))?.effect).toBe("deny");
    expect(await t.call("pay", { amount: 90 })).toBeUndefined();
    expect(t.budget).toEqual({ "both|t1|2025-03-10|calls": 2, "both|t1|2025-03-10|sum": 100 });
    const verdict = await t.check("pay", { amount: 0 });
    expect(verdict?.reasons).toEqual(['budget "both": this would be call 3, over the limit of 2 per thread per UTC day']);
  });

  describe("fails closed on an amount it cannot measure", () => {
    const rule: BudgetRuleInput = {
      id: "sum",
      tools: ["issue_refund"],
      scope: "thread",
      window: "day",
      maxSum: { arg: "amount", max: 2000 },
      onExceed: "require_approval",
      approverRoles: ["supervisor"],
      reason: "custom",
    };
    const guard = defineBudgets([rule], { clock: () => new Date("2025-03-10T09:00:00Z") });

    it.each([
      ["missing", {}],
      ["a numeric string", { amount: "1500" }],
      ["null", { amount: null }],
      ["negative", { amount: -100 }],
      ["an object", { amount: { value: 1 } }],
    ])("denies when the argument is %s, even for a require_approval budget", async (_name, args) => {
      const verdict = await new Thread(guard, "t1").check("issue_refund", args);
      expect(verdict).toEqual({
        effect: "deny",
        budgetIds: ["sum"],
        reasons: [
          'budget "sum": argument "amount" of issue_refund is missing, not a finite number or negative, so the call cannot be counted against its limit of 2000 (denied)',
        ],
      });
    });

    it("a tool the budget does not count needs no such argument", async () => {
      expect(await new Thread(guard, "t1").check("lookup_order", {})).toBeUndefined();
    });

    it("a call that ran anyway spends the whole budget for the window", async () => {
      const t = new Thread(guard, "t1");
      expect(await t.charge("issue_refund", { amount: "lots" })).toEqual({ "sum|t1|2025-03-10|sum": 2000 });
      expect((await t.check("issue_refund", { amount: 1 }))?.effect).toBe("require_approval");
    });
  });

  it("check never writes: not to the store, not to the thread counters", async () => {
    const inner = new MemoryBudgetStore();
    let adds = 0;
    const store: BudgetStore = {
      get: (keys) => inner.get(keys),
      add: (inc) => (adds++, inner.add(inc)),
      addWithin: (inc, limits) => (adds++, inner.addWithin(inc, limits)),
    };
    const guard = defineBudgets(
      [
        { ...refundsPerAgentPerDay, maxCalls: 1 },
        { id: "thread", tools: "*", scope: "thread", window: "hour", maxCalls: 1, onExceed: "deny" },
      ],
      { store, clock: () => new Date("2025-03-10T09:00:00Z") },
    );
    const threadCounters = Object.freeze({ "other|key": 7 });
    const req: BudgetRequest = { identity: identity(), threadId: "t1", tool: { name: "issue_refund", args: { amount: 10 } }, threadCounters };
    for (let i = 0; i < 5; i++) expect(await guard.check(req)).toBeUndefined();
    expect(adds).toBe(0);
    expect(await inner.get(["refunds.daily|agent|support-agent|2025-03-10|calls"])).toEqual({ "refunds.daily|agent|support-agent|2025-03-10|calls": 0 });
    expect(threadCounters).toEqual({ "other|key": 7 });
    // charge does write (the same spy sees it), so the zero above is meaningful; with a store,
    // the per-thread counter is written there too, not returned for state.
    expect(await guard.charge(req)).toEqual({});
    expect(adds).toBe(1);
    expect(await inner.get(["thread|thread|t1|2025-03-10T09|calls"])).toEqual({ "thread|thread|t1|2025-03-10T09|calls": 1 });
    expect(await guard.check(req)).toMatchObject({ effect: "deny" });
  });

  it("with a store, per-thread counters live in it: counters in state, forged or reset, change nothing", async () => {
    const store = new MemoryBudgetStore();
    const guard = defineBudgets([{ id: "per-thread", tools: ["issue_refund"], scope: "thread", window: "day", maxSum: { arg: "amount", max: 150 }, onExceed: "deny" }], {
      store,
      clock: () => new Date("2025-03-10T09:00:00Z"),
    });
    const call = (threadCounters: Record<string, number>, amount: number): BudgetRequest => ({
      identity: identity(),
      threadId: "t1",
      tool: { name: "issue_refund", args: { amount } },
      threadCounters,
    });
    expect(await guard.reserve(call({}, 100))).toEqual({ reserved: true });
    // A caller who reset the thread's counters in state (or forked the thread) gains nothing.
    expect((await guard.reserve(call({}, 100))).verdict).toMatchObject({ effect: "deny", budgetIds: ["per-thread"] });
    // Counters planted in state do not deny a call either: the store is the only source.
    expect(await guard.check(call({ "per-thread|t1|2025-03-10|sum": 1_000 }, 50))).toBeUndefined();
    // Another thread has its own counter.
    expect(await guard.check({ ...call({}, 150), threadId: "t2" })).toBeUndefined();
  });

  it("a failing store or clock makes check deny (fail closed) and charge throw", async () => {
    const broken: BudgetStore = {
      get: async () => {
        throw new Error("connection refused");
      },
      add: async () => {
        throw new Error("connection refused");
      },
      addWithin: async () => {
        throw new Error("connection refused");
      },
    };
    const guard = defineBudgets([refundsPerAgentPerDay], { store: broken });
    const req: BudgetRequest = { identity: identity(), threadId: "t1", tool: { name: "issue_refund", args: { amount: 1 } }, threadCounters: {} };
    expect(await guard.check(req)).toEqual({
      effect: "deny",
      budgetIds: ["refunds.daily"],
      reasons: ["budgets could not be evaluated: connection refused"],
      evaluationError: true,
    });
    await expect(guard.charge(req)).rejects.toThrow("connection refused");

    const badClock = defineBudgets([base], { clock: () => new Date(Number.NaN) });
    const t = new Thread(badClock, "t1");
    expect(await t.check("t")).toMatchObject({ effect: "deny", evaluationError: true, budgetIds: ["r"] });
    await expect(t.charge("t")).rejects.toMatchObject({ code: "config_invalid", field: "clock" });

    // A store returning garbage for a counter is a failure too, not a zero.
    const lying: BudgetStore = { get: async (keys) => Object.fromEntries(keys.map((k) => [k, Number.NaN])), add: async () => {}, addWithin: async () => true };
    const fromLiar = defineBudgets([refundsPerAgentPerDay], { store: lying });
    expect(await fromLiar.check(req)).toMatchObject({ effect: "deny", evaluationError: true });
  });

  it("refuses a malformed request with a typed error, writing nothing", async () => {
    const store = new MemoryBudgetStore();
    const guard = defineBudgets([refundsPerAgentPerDay], { store, clock: () => new Date("2025-03-10T09:00:00Z") });
    const bad = { identity: identity(), threadId: "", tool: { name: "issue_refund", args: { amount: 1 } }, threadCounters: {} };
    await expect(guard.check(bad)).rejects.toMatchObject({ code: "config_invalid", field: "request" });
    await expect(guard.charge(bad)).rejects.toMatchObject({ code: "config_invalid", field: "request" });
    const noIdentity = { ...bad, threadId: "t1", identity: { id: "x" } } as unknown as BudgetRequest;
    await expect(guard.charge(noIdentity)).rejects.toBeInstanceOf(EartConfigError);
    expect(await store.get(["refunds.daily|agent|support-agent|2025-03-10|sum"])).toEqual({ "refunds.daily|agent|support-agent|2025-03-10|sum": 0 });
  });
});

describe("BudgetGuard.reserve", () => {
  const clock = () => new Date("2025-03-10T09:00:00Z");
  const sumKey = "refunds.daily|agent|support-agent|2025-03-10|sum";
  const askFirst: BudgetRuleInput = { ...refundsPerAgentPerDay, id: "refunds.ask", maxSum: { arg: "amount", max: 100 }, onExceed: "require_approval", approverRoles: ["supervisor"] };

  it("reserves a call that fits in the store, and refuses one that would not, adding nothing", async () => {
    const store = new MemoryBudgetStore();
    const guard = defineBudgets([refundsPerAgentPerDay], { store, clock });
    const t = new Thread(guard, "t1");
    expect(await guard.reserve(t.req("issue_refund", { amount: 1500 }))).toEqual({ reserved: true });
    expect(await store.get([sumKey])).toEqual({ [sumKey]: 1500 });
    expect(await guard.reserve(t.req("issue_refund", { amount: 600 }))).toMatchObject({ reserved: false, verdict: { effect: "deny", budgetIds: ["refunds.daily"] } });
    expect(await store.get([sumKey])).toEqual({ [sumKey]: 1500 });
    // charge after a reservation counts only the thread's own counters.
    expect(await guard.charge(t.req("issue_refund", { amount: 1500 }), { crossThread: false })).toEqual({});
    expect(await store.get([sumKey])).toEqual({ [sumKey]: 1500 });
  });

  it("only: deny enforces the budgets that deny; one that asks for approval was answered by the approver", async () => {
    const store = new MemoryBudgetStore();
    const guard = defineBudgets([askFirst], { store, clock });
    const req = new Thread(guard, "t1").req("issue_refund", { amount: 150 });
    expect(await guard.reserve(req)).toMatchObject({ reserved: false, verdict: { effect: "require_approval", approverRoles: ["supervisor"] } });
    expect(await guard.reserve(req, { only: "deny" })).toEqual({ reserved: true });
    expect(await store.get(["refunds.ask|agent|support-agent|2025-03-10|sum"])).toEqual({ "refunds.ask|agent|support-agent|2025-03-10|sum": 150 });
  });

  it("concurrent reservations never both fit one budget", async () => {
    const store = new MemoryBudgetStore();
    const guard = defineBudgets([{ ...refundsPerAgentPerDay, maxSum: { arg: "amount", max: 150 } }], { store, clock });
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => guard.reserve(new Thread(guard, `t${i}`).req("issue_refund", { amount: 90 }))));
    expect(results.filter((r) => r.reserved)).toHaveLength(1);
    expect(results.filter((r) => r.verdict?.effect === "deny")).toHaveLength(7);
  });

  it("a store that fails makes reserve throw (the gate then denies: fail closed)", async () => {
    const broken: BudgetStore = { get: async () => ({}), add: async () => {}, addWithin: async () => { throw new Error("connection refused"); } };
    const guard = defineBudgets([refundsPerAgentPerDay], { store: broken, clock });
    await expect(guard.reserve(new Thread(guard, "t1").req("issue_refund", { amount: 1 }))).rejects.toThrow("connection refused");
  });
});

interface StoreBackend {
  name: string;
  /** A store, and a second handle on the same counters (another connection where there is one). */
  open(): Promise<{ store: BudgetStore; other: BudgetStore }>;
}

const backends: StoreBackend[] = [
  {
    name: "MemoryBudgetStore",
    open: async () => {
      const store = new MemoryBudgetStore();
      return { store, other: store };
    },
  },
  {
    name: "SqliteBudgetStore",
    open: async () => {
      const path = tempDb();
      const store = new SqliteBudgetStore({ path });
      const db = new Database(path);
      const other = new SqliteBudgetStore({ database: db });
      closers.push(
        () => store.close(),
        () => other.close(),
        () => db.close(),
      );
      return { store, other };
    },
  },
  {
    name: "PostgresBudgetStore",
    open: async () => {
      const store = new PostgresBudgetStore({ connectionString: PG_URL });
      const other = new PostgresBudgetStore({ pool: newPool() });
      closers.push(
        () => store.close(),
        () => other.close(),
      );
      return { store, other };
    },
  },
];

describe.each(backends)("BudgetStore conformance: $name", (backend) => {
  let store: BudgetStore;
  let other: BudgetStore;
  // Unique per test: the PostgreSQL table outlives the run.
  let k: (name: string) => string;
  beforeAll(async () => {
    ({ store, other } = await backend.open());
  });
  const prefix = () => {
    const run = randomUUID();
    k = (name) => `test-${run}|${name}`;
  };

  it("reads 0 for counters never added, and {} for no keys", async () => {
    prefix();
    expect(await store.get([k("a"), k("b")])).toEqual({ [k("a")]: 0, [k("b")]: 0 });
    expect(await store.get([])).toEqual({});
  });

  it("adds a batch and accumulates across batches, fractions included", async () => {
    prefix();
    await store.add({ [k("a")]: 1, [k("b")]: 0.5 });
    await store.add({ [k("a")]: 2, [k("b")]: 0.25 });
    await store.add({});
    expect(await store.get([k("a"), k("b"), k("c")])).toEqual({ [k("a")]: 3, [k("b")]: 0.75, [k("c")]: 0 });
  });

  it("is shared by a second handle on the same counters", async () => {
    prefix();
    await store.add({ [k("a")]: 5 });
    await other.add({ [k("a")]: 7 });
    expect(await other.get([k("a")])).toEqual({ [k("a")]: 12 });
    expect(await store.get([k("a")])).toEqual({ [k("a")]: 12 });
  });

  it("sums concurrent adds exactly, from several handles at once", async () => {
    prefix();
    const keys = [k("x"), k("y"), k("z")];
    await Promise.all(
      Array.from({ length: 60 }, (_, i) => {
        // Overlapping batches in different key orders: no lost update, no deadlock.
        const batch = Object.fromEntries((i % 2 === 0 ? keys : [...keys].reverse()).map((key) => [key, 1]));
        return (i % 3 === 0 ? other : store).add(batch);
      }),
    );
    expect(await store.get(keys)).toEqual({ [k("x")]: 60, [k("y")]: 60, [k("z")]: 60 });
  });

  it("rejects a batch with a non-finite increment and stores none of it", async () => {
    prefix();
    await expect(store.add({ [k("a")]: 1, [k("b")]: Number.NaN })).rejects.toBeInstanceOf(EartConfigError);
    await expect(store.add({ [k("a")]: 1, [k("b")]: Number.POSITIVE_INFINITY })).rejects.toBeInstanceOf(EartConfigError);
    await expect(store.add({ [k("a")]: "1" } as unknown as Record<string, number>)).rejects.toBeInstanceOf(EartConfigError);
    expect(await store.get([k("a"), k("b")])).toEqual({ [k("a")]: 0, [k("b")]: 0 });
  });

  it("reads many keys in one call", async () => {
    prefix();
    const keys = Array.from({ length: 1500 }, (_, i) => k(`n${i}`));
    await store.add(Object.fromEntries(keys.map((key, i) => [key, i])));
    const values = await store.get(keys);
    expect(Object.keys(values)).toHaveLength(1500);
    expect(values[k("n0")]).toBe(0);
    expect(values[k("n1499")]).toBe(1499);
    expect(Object.values(values).reduce((a, b) => a + b, 0)).toBe((1499 * 1500) / 2);
  });

  it("addWithin adds a batch only when every limited counter stays within its limit, atomically", async () => {
    prefix();
    expect(await store.addWithin({ [k("sum")]: 90, [k("calls")]: 1, [k("free")]: 5 }, { [k("sum")]: 150 })).toBe(true);
    // 90 + 90 > 150: nothing of the batch is added, not even the unlimited counter.
    expect(await other.addWithin({ [k("sum")]: 90, [k("calls")]: 1, [k("free")]: 5 }, { [k("sum")]: 150 })).toBe(false);
    expect(await store.get([k("sum"), k("calls"), k("free")])).toEqual({ [k("sum")]: 90, [k("calls")]: 1, [k("free")]: 5 });
    // Exactly at the limit fits.
    expect(await other.addWithin({ [k("sum")]: 60 }, { [k("sum")]: 150 })).toBe(true);
    expect(await store.addWithin({ [k("sum")]: 0.5 }, { [k("sum")]: 150 })).toBe(false);
    await expect(store.addWithin({ [k("sum")]: 1 }, { [k("sum")]: Number.NaN })).rejects.toBeInstanceOf(EartConfigError);
    expect(await store.get([k("sum")])).toEqual({ [k("sum")]: 150 });
  });

  it("addWithin from many handles at once lets exactly as many through as fit", async () => {
    prefix();
    const results = await Promise.all(
      Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? store : other).addWithin({ [k("sum")]: 90, [k("calls")]: 1 }, { [k("sum")]: 450, [k("calls")]: 100 })),
    );
    expect(results.filter(Boolean)).toHaveLength(5);
    expect(await store.get([k("sum"), k("calls")])).toEqual({ [k("sum")]: 450, [k("calls")]: 5 });
  });

  it("backs the agent budget across threads and handles", async () => {
    prefix();
    const agentId = k("agent");
    const clock = () => new Date("2025-03-10T09:00:00Z");
    const g1 = defineBudgets([refundsPerAgentPerDay], { store, clock });
    const g2 = defineBudgets([refundsPerAgentPerDay], { store: other, clock });
    expect(await new Thread(g1, "t1", identity(agentId)).call("issue_refund", { amount: 1500 })).toBeUndefined();
    expect(await new Thread(g2, "t2", identity(agentId)).check("issue_refund", { amount: 600 })).toMatchObject({ effect: "deny" });
    expect(await new Thread(g2, "t2", identity(k("other-agent"))).check("issue_refund", { amount: 600 })).toBeUndefined();
    const key = `refunds.daily|agent|${agentId.replace(/[%|:]/g, encodeURIComponent)}|2025-03-10|sum`;
    expect(await other.get([key])).toEqual({ [key]: 1500 });
  });
});

describe("PostgresBudgetStore options", () => {
  it("takes the connection string from EART_DATABASE_URL, or refuses to guess", async () => {
    const saved = process.env.EART_DATABASE_URL;
    try {
      delete process.env.EART_DATABASE_URL;
      expect(() => new PostgresBudgetStore()).toThrow(EartConfigError);
      expect(() => new PostgresBudgetStore({ connectionString: PG_URL, pool: newPool() })).toThrow(/either connectionString or pool/);
      expect(() => new PostgresBudgetStore({ conn: PG_URL } as never)).toThrow(EartConfigError);
      process.env.EART_DATABASE_URL = PG_URL;
      const store = new PostgresBudgetStore();
      closers.push(() => store.close());
      const key = `test-${randomUUID()}|env`;
      await store.add({ [key]: 3 });
      expect(await store.get([key])).toEqual({ [key]: 3 });
    } finally {
      if (saved === undefined) delete process.env.EART_DATABASE_URL;
      else process.env.EART_DATABASE_URL = saved;
    }
  });

  it("migrates idempotently when several stores start at once", async () => {
    const stores = Array.from({ length: 4 }, () => new PostgresBudgetStore({ pool: newPool() }));
    const key = `test-${randomUUID()}|migrate`;
    await Promise.all(stores.map((s) => s.add({ [key]: 1 })));
    expect(await stores[0]!.get([key])).toEqual({ [key]: 4 });
  });

  it("does not end a pool it was given", async () => {
    const pool = newPool();
    const store = new PostgresBudgetStore({ pool });
    await store.get([`test-${randomUUID()}|x`]);
    await store.close();
    expect(pool.ended).toBe(false);
    expect((await pool.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
  });
});
