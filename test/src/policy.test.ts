import { describe, expect, it } from "vitest";
import {
  DEFAULT_DENY_POLICY_ID,
  definePolicy,
  EartError,
  PolicyDefinitionError,
  type AgentIdentity,
  type PolicyDecision,
  type PolicyDefinition,
  type PolicyEngine,
  type PolicyRequest,
} from "eart";
import { z } from "zod";
import { decideFailClosed, PolicyDecisionSchema } from "../../src/policy/engine.js";
import { compileRules, parseRuleSet, RuleIdSchema, RuleToolsSchema, type RuleSetKind } from "../../src/policy/rules.js";

const identity: AgentIdentity = {
  schemaVersion: 1,
  id: "support-agent",
  roles: ["support"],
  tools: ["issue_refund", "lookup_order"],
  dataScopes: ["orders"],
  onBehalfOf: { id: "cara", roles: ["customer"] },
  source: "configurable.user_id",
};

const request = (name: string, args: Record<string, unknown> = {}, sensitivity: string[] = []): PolicyRequest => ({
  identity,
  tool: { name, args },
  context: { items: [], sensitivity },
  threadId: "t-1",
});

const HEX64 = /^[0-9a-f]{64}$/;

function policyError(definition: unknown): PolicyDefinitionError {
  let error: unknown;
  try {
    definePolicy(definition as PolicyDefinition);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(PolicyDefinitionError);
  expect(error).toBeInstanceOf(EartError);
  expect((error as PolicyDefinitionError).code).toBe("policy_invalid");
  return error as PolicyDefinitionError;
}

describe("definePolicy validation", () => {
  it("refuses a require_approval rule without approverRoles, naming the rule", () => {
    const e = policyError({ rules: [{ id: "ok", effect: "allow" }, { id: "needs-roles", effect: "require_approval" }] });
    expect(e.ruleId).toBe("needs-roles");
    expect(e.details).toEqual({ ruleId: "needs-roles" });
    expect(e.message).toContain("rules.1.approverRoles");
  });

  it("refuses empty approverRoles", () => {
    const e = policyError({ rules: [{ id: "empty-roles", effect: "require_approval", approverRoles: [] }] });
    expect(e.ruleId).toBe("empty-roles");
  });

  it("refuses duplicate rule ids, naming the id", () => {
    const e = policyError({
      rules: [
        { id: "a", effect: "allow" },
        { id: "b", effect: "deny" },
        { id: "a", effect: "deny" },
      ],
    });
    expect(e.ruleId).toBe("a");
    expect(e.message).toContain('Duplicate policy rule id "a"');
  });

  it("refuses an unknown key on a rule, naming the rule", () => {
    const e = policyError({ rules: [{ id: "typo", effect: "allow", tool: ["x"] }] });
    expect(e.ruleId).toBe("typo");
    expect(e.message).toContain("rules.0");
  });

  it("refuses an unknown top-level key without a rule id", () => {
    const e = policyError({ rules: [], versions: "1" });
    expect(e.ruleId).toBeUndefined();
  });

  it("refuses an unknown effect", () => {
    expect(policyError({ rules: [{ id: "x", effect: "maybe" }] }).ruleId).toBe("x");
  });

  it("refuses a non-function when and a non-string, non-function reason", () => {
    expect(policyError({ rules: [{ id: "w", effect: "allow", when: true }] }).ruleId).toBe("w");
    expect(policyError({ rules: [{ id: "r", effect: "allow", reason: 42 }] }).ruleId).toBe("r");
  });

  it("refuses an empty tools list and an empty rule id", () => {
    expect(policyError({ rules: [{ id: "t", effect: "allow", tools: [] }] }).ruleId).toBe("t");
    expect(policyError({ rules: [{ id: "", effect: "allow" }] }).message).toContain("rules.0.id");
  });

  it("names a rule only by an id that is one: not an empty string, not a number", () => {
    const empty = policyError({ rules: [{ id: "", effect: "allow" }] });
    expect(empty.message).toBe("Invalid policy at rules.0.id: must be a non-empty string");
    expect(empty.ruleId).toBeUndefined();
    const numeric = policyError({ rules: [{ id: 5, effect: "allow" }] });
    expect(numeric.message).toMatch(/^Invalid policy at rules\.0\.id: /);
    expect(numeric.ruleId).toBeUndefined();
  });

  it("refuses a missing rules list", () => {
    const e = policyError({ name: "p" });
    expect(e.ruleId).toBeUndefined();
    expect(e.message).toContain("rules");
  });

  it("accepts an empty rule list, which denies everything", () => {
    const engine = definePolicy({ rules: [] });
    const d = engine.decide(request("anything")) as PolicyDecision;
    expect(d.effect).toBe("deny");
    expect(d.policyIds).toEqual([DEFAULT_DENY_POLICY_ID]);
  });
});

describe("definePolicy decisions", () => {
  const decide = (engine: PolicyEngine, r: PolicyRequest) => engine.decide(r) as PolicyDecision;

  it("default deny when no rule matches", () => {
    const engine = definePolicy({ rules: [{ id: "lookup", tools: ["lookup_order"], effect: "allow" }] });
    expect(DEFAULT_DENY_POLICY_ID).toBe("eart.default-deny");
    expect(decide(engine, request("issue_refund"))).toEqual({
      effect: "deny",
      reasons: ["no policy rule allows issue_refund (default deny)"],
      policyIds: ["eart.default-deny"],
      version: engine.version,
    });
  });

  it("allow with the rule's reason and id", () => {
    const engine = definePolicy({ rules: [{ id: "lookup", tools: ["lookup_order"], effect: "allow", reason: "lookups ok" }] });
    expect(decide(engine, request("lookup_order"))).toEqual({
      effect: "allow",
      reasons: ["lookups ok"],
      policyIds: ["lookup"],
      version: engine.version,
    });
  });

  it("falls back to the description, then to a generated reason", () => {
    const engine = definePolicy({
      rules: [
        { id: "described", effect: "allow", description: "described rule" },
        { id: "bare", effect: "allow" },
      ],
    });
    expect(decide(engine, request("x")).reasons).toEqual(["described rule", "rule bare: allow"]);
  });

  it("a reason function receives the request", () => {
    const engine = definePolicy({
      rules: [{ id: "r", effect: "escalate", reason: (r) => `escalate ${r.tool.name} for ${r.identity.onBehalfOf.id}` }],
    });
    expect(decide(engine, request("issue_refund")).reasons).toEqual(["escalate issue_refund for cara"]);
  });

  const all = definePolicy({
    rules: [
      { id: "allow.all", effect: "allow" },
      { id: "approve.all", effect: "require_approval", approverRoles: ["supervisor"] },
      { id: "escalate.sensitive", when: (r) => r.context.sensitivity.includes("pii"), effect: "escalate" },
      { id: "deny.big", when: (r) => Number(r.tool.args.amount) > 1000, effect: "deny" },
    ],
  });

  it("deny beats escalate, allow and require_approval", () => {
    const d = decide(all, request("issue_refund", { amount: 5000 }, ["pii"]));
    expect(d.effect).toBe("deny");
    expect(d.policyIds).toEqual(["deny.big"]);
    expect(d).not.toHaveProperty("evaluationError");
  });

  it("escalate beats allow and require_approval", () => {
    const d = decide(all, request("issue_refund", { amount: 10 }, ["pii"]));
    expect(d.effect).toBe("escalate");
    expect(d.policyIds).toEqual(["escalate.sensitive"]);
  });

  it("allow beats require_approval", () => {
    const d = decide(all, request("issue_refund", { amount: 10 }));
    expect(d.effect).toBe("allow");
    expect(d.policyIds).toEqual(["allow.all"]);
  });

  it("require_approval when it is the only match, with the union of approver roles of all matching rules", () => {
    const engine = definePolicy({
      rules: [
        { id: "a", effect: "require_approval", approverRoles: ["supervisor", "finance"], reason: "a" },
        { id: "b", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["finance", "risk"], reason: "b" },
        { id: "c", tools: ["other"], effect: "require_approval", approverRoles: ["ops"] },
        { id: "d", when: () => false, effect: "require_approval", approverRoles: ["never"] },
      ],
    });
    expect(decide(engine, request("issue_refund"))).toEqual({
      effect: "require_approval",
      reasons: ["a", "b"],
      policyIds: ["a", "b"],
      version: engine.version,
      approverRoles: ["supervisor", "finance", "risk"],
    });
  });

  it("every rule of the winning effect is listed, in definition order", () => {
    const engine = definePolicy({
      rules: [
        { id: "d1", effect: "deny", reason: "first" },
        { id: "a1", effect: "allow" },
        { id: "d2", effect: "deny", reason: "second" },
      ],
    });
    const d = decide(engine, request("x"));
    expect(d.effect).toBe("deny");
    expect(d.policyIds).toEqual(["d1", "d2"]);
    expect(d.reasons).toEqual(["first", "second"]);
  });

  it("the tools filter limits a rule to the listed tools", () => {
    const engine = definePolicy({
      rules: [
        { id: "lookup", tools: ["lookup_order", "list_orders"], effect: "allow" },
        { id: "all", tools: "*", effect: "escalate", when: (r) => r.tool.name.startsWith("admin_") },
      ],
    });
    expect(decide(engine, request("lookup_order")).effect).toBe("allow");
    expect(decide(engine, request("list_orders")).effect).toBe("allow");
    expect(decide(engine, request("issue_refund")).policyIds).toEqual([DEFAULT_DENY_POLICY_ID]);
    expect(decide(engine, request("admin_reset")).effect).toBe("escalate");
  });

  // Each of these was skipped as "no match" before, so a deny rule that misbehaved let the call through.
  it("a when that returns anything but a boolean denies, naming the rule and what it returned, for every effect", () => {
    const returned: [unknown, string][] = [
      [1, "1 (number)"],
      [0, "0 (number)"],
      ["yes", '"yes" (string)'],
      ["", '"" (string)'],
      [{}, "an object"],
      [[], "an array"],
      [null, "null"],
      [undefined, "undefined"],
      [Promise.resolve(true), "a Promise"],
      [{ then: () => undefined }, "a Promise"],
    ];
    for (const effect of ["allow", "deny", "escalate", "require_approval"] as const) {
      for (const [value, shown] of returned) {
        const engine = definePolicy({
          rules: [
            { id: "allow.all", effect: "allow" },
            { id: "odd", effect, when: (() => value) as never, ...(effect === "require_approval" ? { approverRoles: ["supervisor"] } : {}) },
          ],
        });
        expect(decide(engine, request("x"))).toEqual({
          effect: "deny",
          reasons: [`policy rule odd did not decide: its when returned ${shown}, not a boolean (fail closed)`],
          policyIds: ["odd"],
          version: engine.version,
          evaluationError: true,
        });
      }
    }
  });

  it("a when that returns a rejecting Promise denies, and the rejection is not left unhandled", async () => {
    const engine = definePolicy({
      rules: [
        { id: "allow.all", effect: "allow" },
        { id: "blocked", effect: "deny", when: (() => Promise.reject(new Error("lookup failed"))) as never },
      ],
    });
    expect(decide(engine, request("x"))).toMatchObject({ effect: "deny", policyIds: ["blocked"], evaluationError: true });
    // An unhandled rejection would fail this file (and end a process running with the default settings).
    await new Promise((resolve) => setImmediate(resolve));
  });

  it("a string that only looks like a boolean is not one", () => {
    const engine = definePolicy({ rules: [{ id: "stringly", effect: "allow", when: (() => "true") as never }] });
    expect(decide(engine, request("x"))).toMatchObject({ effect: "deny", evaluationError: true, reasons: ['policy rule stringly did not decide: its when returned "true" (string), not a boolean (fail closed)'] });
  });

  it("refuses an async function, a generator or an async generator as when, and an async reason, naming the rule", () => {
    const conditions: unknown[] = [async () => true, function* () { yield true; }, async function* () { yield true; }];
    for (const when of conditions) {
      const e = policyError({ rules: [{ id: "ok", effect: "allow" }, { id: "async-when", effect: "deny", when }] });
      expect(e.ruleId).toBe("async-when");
      expect(e.message).toContain("rules.1.when");
      expect(e.message).toContain("synchronous");
    }
    const e = policyError({ rules: [{ id: "async-reason", effect: "deny", reason: async () => "why" }] });
    expect(e.ruleId).toBe("async-reason");
    expect(e.message).toContain("rules.0.reason");
  });

  it("a reason function that returns something other than a string denies", () => {
    for (const [value, shown] of [[Promise.resolve("later"), "a Promise"], [42, "42 (number)"], [undefined, "undefined"]] as const) {
      const engine = definePolicy({ rules: [{ id: "odd-reason", effect: "allow", reason: (() => value) as never }] });
      expect(decide(engine, request("x"))).toEqual({
        effect: "deny",
        reasons: [`policy reason failed to evaluate: the reason of rule odd-reason returned ${shown}, not a string`],
        policyIds: ["odd-reason"],
        version: engine.version,
        evaluationError: true,
      });
    }
  });

  it("a when that throws makes the decision deny with the error", () => {
    const engine = definePolicy({
      rules: [
        { id: "allow.all", effect: "allow" },
        {
          id: "broken",
          tools: ["issue_refund"],
          effect: "allow",
          when: () => {
            throw new Error("amount lookup exploded");
          },
        },
      ],
    });
    expect(decide(engine, request("issue_refund"))).toEqual({
      effect: "deny",
      reasons: ["policy rule broken failed to evaluate: amount lookup exploded"],
      policyIds: ["broken"],
      version: engine.version,
      evaluationError: true,
    });
    // The broken rule does not apply to other tools, so they are unaffected.
    expect(decide(engine, request("lookup_order")).effect).toBe("allow");
  });

  it("a when that throws a non-Error still denies", () => {
    const engine = definePolicy({
      rules: [
        {
          id: "throws-string",
          effect: "allow",
          when: () => {
            throw "plain string";
          },
        },
      ],
    });
    const d = decide(engine, request("x"));
    expect(d).toMatchObject({ effect: "deny", evaluationError: true, policyIds: ["throws-string"] });
    expect(d.reasons).toEqual(["policy rule throws-string failed to evaluate: plain string"]);
  });

  it("a reason function that throws makes the decision deny", () => {
    const engine = definePolicy({
      rules: [
        { id: "ok", effect: "allow", reason: "fine" },
        {
          id: "bad-reason",
          effect: "allow",
          reason: () => {
            throw new Error("template broke");
          },
        },
      ],
    });
    expect(decide(engine, request("x"))).toEqual({
      effect: "deny",
      reasons: ["policy reason failed to evaluate: template broke"],
      policyIds: ["ok", "bad-reason"],
      version: engine.version,
      evaluationError: true,
    });
  });

  it("every decision validates against PolicyDecisionSchema", () => {
    for (const r of [request("issue_refund", { amount: 5000 }), request("issue_refund", { amount: 5 }, ["pii"]), request("x")]) {
      expect(PolicyDecisionSchema.safeParse(decide(all, r)).success).toBe(true);
    }
  });
});

describe("definePolicy version", () => {
  const make = (limit = "<= 100", overrides: Partial<PolicyDefinition> = {}): PolicyDefinition => ({
    name: "refunds",
    rules: [
      { id: "lookup", tools: ["lookup_order"], effect: "allow", reason: "lookups" },
      {
        id: "small",
        tools: ["issue_refund"],
        // eslint-disable-next-line @typescript-eslint/no-implied-eval
        when: new Function("r", `return Number(r.tool.args.amount) ${limit};`) as (r: PolicyRequest) => boolean,
        effect: "allow",
      },
      { id: "big", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"], description: "big refunds" },
    ],
    ...overrides,
  });

  it("is a 64-hex content hash", () => {
    expect(definePolicy(make()).version).toMatch(HEX64);
  });

  it("is stable for the same definition", () => {
    expect(definePolicy(make()).version).toBe(definePolicy(make()).version);
  });

  it("is carried by every decision", () => {
    const engine = definePolicy(make());
    expect((engine.decide(request("lookup_order")) as PolicyDecision).version).toBe(engine.version);
    expect((engine.decide(request("nope")) as PolicyDecision).version).toBe(engine.version);
  });

  it("changes when a when body changes", () => {
    expect(definePolicy(make("<= 101")).version).not.toBe(definePolicy(make()).version);
  });

  it("changes with the name, an effect, tools, approverRoles, a reason or a rule id", () => {
    const base = definePolicy(make()).version;
    const variants: PolicyDefinition[] = [
      make(undefined, { name: "refunds-v2" }),
      { ...make(), rules: make().rules.map((r) => (r.id === "lookup" ? { ...r, effect: "deny" as const } : r)) },
      { ...make(), rules: make().rules.map((r) => (r.id === "lookup" ? { ...r, tools: ["lookup_order", "x"] } : r)) },
      { ...make(), rules: make().rules.map((r) => (r.id === "big" ? { ...r, approverRoles: ["finance"] } : r)) },
      { ...make(), rules: make().rules.map((r) => (r.id === "lookup" ? { ...r, reason: "lookups!" } : r)) },
      { ...make(), rules: make().rules.map((r) => (r.id === "lookup" ? { ...r, reason: () => "lookups" } : r)) },
      { ...make(), rules: make().rules.map((r) => (r.id === "lookup" ? { ...r, id: "lookup2" } : r)) },
      { ...make(), rules: make().rules.slice(1) },
      { ...make(), rules: [...make().rules].reverse() },
    ];
    const versions = variants.map((v) => definePolicy(v).version);
    for (const v of versions) expect(v).not.toBe(base);
    expect(new Set(versions).size).toBe(versions.length);
  });

  // The description is the reason shown for a rule without `reason`, so it changes decisions.
  it("changes when a rule's description changes (it is the reason of rules without one)", () => {
    const edited = { ...make(), rules: make().rules.map((r) => (r.id === "big" ? { ...r, description: "BIG refunds" } : r)) };
    const before = definePolicy(make());
    const after = definePolicy(edited);
    expect((before.decide(request("issue_refund", { amount: 500 })) as PolicyDecision).reasons).toEqual(["big refunds"]);
    expect((after.decide(request("issue_refund", { amount: 500 })) as PolicyDecision).reasons).toEqual(["BIG refunds"]);
    expect(after.version).not.toBe(before.version);
  });
});

describe("definePolicy config and declared version", () => {
  const decide = (engine: PolicyEngine, r: PolicyRequest) => engine.decide(r) as PolicyDecision;
  const rules = () =>
    [
      {
        id: "refund.limit",
        tools: ["issue_refund"],
        when: (r: PolicyRequest, c: { refundLimit: number }) => Number(r.tool.args.amount) > c.refundLimit,
        effect: "deny" as const,
        reason: (_r: PolicyRequest, c: { refundLimit: number }) => `over ${c.refundLimit}`,
      },
      { id: "refund.any", tools: ["issue_refund"], effect: "allow" as const },
    ];

  it("hands the declared config to every when and reason", () => {
    const engine = definePolicy({ config: { refundLimit: 1000 }, rules: rules() });
    expect(decide(engine, request("issue_refund", { amount: 1500 }))).toMatchObject({ effect: "deny", reasons: ["over 1000"] });
    expect(decide(engine, request("issue_refund", { amount: 500 })).effect).toBe("allow");
  });

  it("is part of the version: another limit is another version, the same limit the same one", () => {
    const v1000 = definePolicy({ config: { refundLimit: 1000 }, rules: rules() }).version;
    expect(definePolicy({ config: { refundLimit: 5000 }, rules: rules() }).version).not.toBe(v1000);
    expect(definePolicy({ config: { refundLimit: 1000 }, rules: rules() }).version).toBe(v1000);
    // Key order does not matter: the config is hashed as canonical JSON.
    expect(definePolicy({ config: { b: 1, a: 2 }, rules: [] }).version).toBe(definePolicy({ config: { a: 2, b: 1 }, rules: [] }).version);
  });

  it("is copied and frozen: changing the object later, or from a rule, changes no decision", () => {
    const settings = { refundLimit: 1000, nested: { tiers: [1, 2] } };
    const engine = definePolicy({ config: settings, rules: rules() });
    settings.refundLimit = 999_999;
    expect(decide(engine, request("issue_refund", { amount: 1500 })).effect).toBe("deny");
    const mutating = definePolicy({
      config: { refundLimit: 1000 },
      rules: [{ id: "sneaky", effect: "allow", when: (_r, c) => ((c as { refundLimit: number }).refundLimit = 5, true) }],
    });
    // Assigning to a frozen object throws in a module (strict mode): the rule fails, so deny.
    expect(decide(mutating, request("x"))).toMatchObject({ effect: "deny", evaluationError: true, policyIds: ["sneaky"] });
  });

  it("refuses config that is not plain JSON, naming where", () => {
    const notJson: [unknown, string][] = [
      [{ limit: () => 5 }, "config.limit"],
      [{ since: new Date(0) }, "config.since"],
      [{ limit: Number.NaN }, "config.limit"],
      [{ nested: { deeper: undefined } }, "config.nested.deeper"],
    ];
    for (const [config, at] of notJson) {
      const e = policyError({ config, rules: [] });
      expect(e.message).toContain(`Invalid policy at ${at}:`);
    }
    let deep: unknown = 1;
    for (let i = 0; i < 2000; i++) deep = { a: deep };
    expect(policyError({ config: { deep }, rules: [] }).message).toContain("nested deeper than 32");
  });

  it("a declared version changes the version with it; the hash still covers the rules", () => {
    const v1 = definePolicy({ version: "cfg-1", config: { refundLimit: 1000 }, rules: rules() }).version;
    expect(v1).toMatch(HEX64);
    expect(definePolicy({ version: "cfg-2", config: { refundLimit: 1000 }, rules: rules() }).version).not.toBe(v1);
    const edited = rules().map((r) => (r.id === "refund.any" ? { ...r, effect: "require_approval" as const, approverRoles: ["supervisor"] } : r));
    expect(definePolicy({ version: "cfg-1", config: { refundLimit: 1000 }, rules: edited }).version).not.toBe(v1);
    expect(policyError({ version: "", rules: [] }).message).toContain("version");
  });

  it("a policy that declares neither keeps the version it had before they existed", () => {
    // Pinned: upgrading eart must not change the version of a deployed policy (every approval
    // pending under it would be decided again).
    const engine = definePolicy({
      name: "refunds",
      rules: [
        // eslint-disable-next-line @typescript-eslint/no-implied-eval
        { id: "small", tools: ["issue_refund"], when: new Function("r", "return Number(r.tool.args.amount) <= 100;") as (r: PolicyRequest) => boolean, effect: "allow", reason: "Small refunds" },
        { id: "big", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"], quorum: 2, expiresIn: 60000, description: "big refunds" },
      ],
    });
    expect(engine.version).toBe("26011dda9e59b05154535e60170e5ef24dc7fe17397fffb29b6cc3081a22c237");
  });
});

describe("the rule compiler (shared with budgets)", () => {
  const kind: RuleSetKind = { definition: "widget rule", rule: "widget rule", rulesAt: "root", quoteRuleId: true };
  type Widget = { id: string; tools: "*" | string[]; limit: number };
  const widgets: Widget[] = [
    { id: "a", tools: ["x"], limit: 1 },
    { id: "all.1", tools: "*", limit: 2 },
    { id: "b", tools: ["y", "x"], limit: 3 },
    { id: "all.2", tools: "*", limit: 4 },
  ];
  const compile = (rules: Widget[], declared?: Record<string, unknown>) =>
    compileRules(rules, { kind, fingerprint: (r) => ({ limit: r.limit }), ...(declared ? { declared } : {}) });

  it('looks rules up by tool: those naming it and every "*" rule, in definition order; one frozen list per tool', () => {
    const { rulesFor } = compile(widgets);
    expect(rulesFor("x").map((r) => r.id)).toEqual(["a", "all.1", "b", "all.2"]);
    expect(rulesFor("y").map((r) => r.id)).toEqual(["all.1", "b", "all.2"]);
    expect(rulesFor("z").map((r) => r.id)).toEqual(["all.1", "all.2"]);
    // Not an own property of a plain object: looked up in a Map.
    expect(rulesFor("__proto__").map((r) => r.id)).toEqual(["all.1", "all.2"]);
    expect(rulesFor("x")).toBe(rulesFor("x"));
    expect(Object.isFrozen(rulesFor("x"))).toBe(true);
    expect(compile([]).rulesFor("x")).toEqual([]);
  });

  it("refuses a duplicate id, naming it and the kind of rule", () => {
    let error: unknown;
    try {
      compile([...widgets, { id: "b", tools: "*", limit: 5 }]);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PolicyDefinitionError);
    expect(error).toMatchObject({ code: "policy_invalid", ruleId: "b", message: 'Duplicate widget rule id "b"' });
  });

  it("versions the rules by content: id, tools, fingerprint and order; what is declared, in any key order", () => {
    const version = compile(widgets).version;
    expect(version).toMatch(HEX64);
    expect(compile(widgets.map((w) => ({ ...w }))).version).toBe(version);
    const edits: Widget[][] = [
      widgets.map((w) => (w.id === "b" ? { ...w, limit: 30 } : w)),
      widgets.map((w) => (w.id === "b" ? { ...w, tools: ["y"] } : w)),
      widgets.map((w) => (w.id === "b" ? { ...w, id: "c" } : w)),
      [...widgets].reverse(),
    ];
    const versions = [version, ...edits.map((rules) => compile(rules).version), compile(widgets, { name: "w" }).version];
    expect(new Set(versions).size).toBe(versions.length);
    expect(compile(widgets, { name: "w", size: 2 }).version).toBe(compile(widgets, { size: 2, name: "w" }).version);
  });

  it("turns the first schema issue into a definition error naming the field and the rule", () => {
    const schema = z.array(z.object({ id: RuleIdSchema, tools: RuleToolsSchema, limit: z.number() }).strict());
    const refused = (input: unknown, k: RuleSetKind = kind) => {
      try {
        parseRuleSet(schema, input, k);
      } catch (error) {
        return error as PolicyDefinitionError;
      }
      throw new Error("parseRuleSet did not throw");
    };
    const ok = { id: "ok", tools: "*", limit: 1 };
    expect(parseRuleSet(schema, [ok], kind)).toEqual([ok]);
    expect(refused([ok, { id: "w", tools: ["x"], limit: "1" }])).toMatchObject({
      ruleId: "w",
      message: 'Invalid widget rule at 1.limit ("w"): Invalid input: expected number, received string',
    });
    expect(refused([ok, { id: "w", tools: ["x"], limit: "1" }], { ...kind, quoteRuleId: false }).message).toBe(
      "Invalid widget rule at 1.limit: Invalid input: expected number, received string",
    );
    expect(refused({ rules: [] })).toMatchObject({ ruleId: undefined, message: "Invalid widget rule at (root): Invalid input: expected array, received object" });
    // Rules under `rules` of a definition: the rule is found there.
    const definition = z.object({ rules: schema }).strict();
    let nested: unknown;
    try {
      parseRuleSet(definition, { rules: [ok, { id: "n", tools: [], limit: 1 }] }, { ...kind, rulesAt: "rules" });
    } catch (error) {
      nested = error;
    }
    expect(nested).toMatchObject({ ruleId: "n", message: 'Invalid widget rule at rules.1.tools ("n"): must name at least one tool, or be "*" for every tool' });
  });
});

describe("decideFailClosed", () => {
  const okEngine = definePolicy({ rules: [{ id: "allow.all", effect: "allow" }] });

  it("passes a valid decision through", async () => {
    await expect(decideFailClosed(okEngine, request("x"))).resolves.toEqual({
      effect: "allow",
      reasons: ["rule allow.all: allow"],
      policyIds: ["allow.all"],
      version: okEngine.version,
    });
  });

  it("awaits an async engine", async () => {
    const engine: PolicyEngine = {
      version: "v-async",
      decide: async () => ({ effect: "escalate", reasons: ["r"], policyIds: ["p"], version: "v-async" }),
    };
    await expect(decideFailClosed(engine, request("x"))).resolves.toEqual({ effect: "escalate", reasons: ["r"], policyIds: ["p"], version: "v-async" });
  });

  it("denies when the engine throws", async () => {
    const engine: PolicyEngine = {
      version: "v1",
      decide: () => {
        throw new Error("cedar crashed");
      },
    };
    await expect(decideFailClosed(engine, request("x"))).resolves.toEqual({
      effect: "deny",
      reasons: ["policy engine failed: cedar crashed"],
      policyIds: [],
      version: "v1",
      evaluationError: true,
    });
  });

  it("denies when the engine rejects", async () => {
    const engine: PolicyEngine = { version: "v2", decide: () => Promise.reject(new Error("timeout")) };
    await expect(decideFailClosed(engine, request("x"))).resolves.toEqual({
      effect: "deny",
      reasons: ["policy engine failed: timeout"],
      policyIds: [],
      version: "v2",
      evaluationError: true,
    });
  });

  it.each([
    ["undefined", undefined],
    ["a boolean", true],
    ["an unknown effect", { effect: "maybe", reasons: [], policyIds: [], version: "v" }],
    ["allow without reasons", { effect: "allow", policyIds: [], version: "v" }],
    ["require_approval without approverRoles", { effect: "require_approval", reasons: [], policyIds: ["p"], version: "v" }],
    ["require_approval with empty approverRoles", { effect: "require_approval", reasons: [], policyIds: ["p"], version: "v", approverRoles: [] }],
  ])("denies when the engine returns %s", async (_label, raw) => {
    const engine = { version: "v3", decide: () => raw } as unknown as PolicyEngine;
    const d = await decideFailClosed(engine, request("x"));
    expect(d.effect).toBe("deny");
    expect(d).toMatchObject({ policyIds: [], version: "v3", evaluationError: true });
    expect(d.reasons).toHaveLength(1);
    expect(d.reasons[0]).toMatch(/^policy engine returned an invalid decision: /);
  });

  it("denies with version 'unknown' when the engine's version getter throws", async () => {
    const engine = {
      get version(): string {
        throw new Error("no version");
      },
      decide: () => {
        throw new Error("boom");
      },
    } as PolicyEngine;
    await expect(decideFailClosed(engine, request("x"))).resolves.toMatchObject({ effect: "deny", version: "unknown", evaluationError: true });
  });

  it("denies when the engine has no decide function", async () => {
    const d = await decideFailClosed({ version: "v4" } as PolicyEngine, request("x"));
    expect(d).toMatchObject({ effect: "deny", version: "v4", evaluationError: true, policyIds: [] });
  });
});
