import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { MemorySaver } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { describe, expect, it, vi } from "vitest";
import {
  defineBudgets,
  definePolicy,
  EartConfigError,
  IdentityRegistry,
  IdentityRegistryError,
  MemoryAuditLog,
  PolicyDefinitionError,
  type PolicyEngine,
  type PolicyRule,
} from "eart";
import { createGovernedAgent, type GovernedAgentOptions } from "eart/graphs";
import { scriptedModel } from "eart/testing";
import identities from "../../examples/refund/identities.json" with { type: "json" };
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";

/** The refund example's configuration, as a user writes it; each test changes one thing. */
function refundOptions() {
  const db = new Database(":memory:");
  const tools = createRefundTools(db);
  const auditLog = new MemoryAuditLog();
  const checkpointer = new MemorySaver();
  const options = {
    model: scriptedModel((messages: BaseMessage[]) =>
      messages.some((m) => AIMessage.isInstance(m))
        ? new AIMessage("Refunded.")
        : new AIMessage({ content: "", tool_calls: [{ id: "c1", name: "issue_refund", args: { orderId: "1043", amount: 60 } }] }),
    ),
    tools: tools.all,
    identities: IdentityRegistry.fromObject(identities),
    policy: refundPolicy,
    checkpointer,
    auditLog,
  } satisfies GovernedAgentOptions;
  const refunds = () => db.prepare("SELECT order_id AS orderId, amount FROM refunds").all();
  return { options, auditLog, checkpointer, refunds };
}

/** The refund rules with one rule replaced or added. */
const refundRules = (extra: PolicyRule[]): PolicyRule[] => [
  { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
  { id: "refund.small", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) <= 100, effect: "allow" },
  ...extra,
];

function refused(build: () => unknown): Error {
  try {
    build();
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected the configuration to be refused");
}

/** The error of a refused agent, checked to be an EartConfigError naming `field`. */
function configError(build: () => unknown, field: string): EartConfigError {
  const error = refused(build);
  expect(error).toBeInstanceOf(EartConfigError);
  const e = error as EartConfigError;
  expect(e.field).toBe(field);
  expect(e.code).toBe("config_invalid");
  expect(e.message.startsWith(`Invalid option "${field}": `)).toBe(true);
  return e;
}

describe("a valid configuration", () => {
  it("builds and runs as before: the refund example's own configuration", async () => {
    const { options, auditLog, refunds } = refundOptions();
    const agent = createGovernedAgent(options);
    const result = await agent.invoke(
      { messages: [new HumanMessage("Refund order 1043, $60.")] },
      { configurable: { thread_id: "t-valid", agent_id: "support-agent", user_id: "cara" } },
    );
    expect(refunds()).toEqual([{ orderId: "1043", amount: 60 }]);
    expect(result.decisions).toMatchObject([{ status: "executed", verdict: { effect: "allow", policyIds: ["refund.small"] } }]);
    expect((await auditLog.read("t-valid")).length).toBeGreaterThan(0);
  });

  it("describes a typed policy: the tools and approver roles of each rule, read-only", () => {
    const description = refundPolicy.describe?.();
    expect(description).toEqual({
      name: "refunds",
      rules: [
        { id: "orders.own", tools: ["lookup_order", "issue_refund"], effect: "deny" },
        { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
        { id: "refund.small", tools: ["issue_refund"], effect: "allow" },
        { id: "refund.supervisor", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"] },
        { id: "refund.limit", tools: ["issue_refund"], effect: "deny" },
      ],
    });
    expect(Object.isFrozen(description)).toBe(true);
    expect(Object.isFrozen(description!.rules[3]!.approverRoles)).toBe(true);
  });
});

describe("1. a policy rule naming a tool the agent does not have", () => {
  const typo = definePolicy({
    name: "refunds",
    rules: refundRules([{ id: "refund.supervisor", tools: ["issue_refunds"], effect: "require_approval", approverRoles: ["supervisor"] }]),
  });

  it("is refused, naming the rule, the tool, the agent's tools and the tool it likely meant", () => {
    const { options } = refundOptions();
    const e = configError(() => createGovernedAgent({ ...options, policy: typo }), "policy");
    expect(e.message).toBe(
      'Invalid option "policy": rule "refund.supervisor" names tool "issue_refunds", which is not one of the agent\'s tools ' +
        '(lookup_order, view_payment_details, issue_refund): did you mean "issue_refund"? Correct the rule\'s tools, or bind the tool; ' +
        'a policy shared with agents that have it can pass skipChecks: ["policy_tool_unknown"]',
    );
    expect(e.details).toMatchObject({ code: "policy_tool_unknown", ruleId: "refund.supervisor", tool: "issue_refunds", suggestion: "issue_refund" });
  });

  it("is checked in the shadow policy too", () => {
    const { options } = refundOptions();
    const e = configError(() => createGovernedAgent({ ...options, shadowPolicy: typo }), "shadowPolicy");
    expect(e.message).toContain('shadow policy rule "refund.supervisor" names tool "issue_refunds"');
  });

  it("is checked in budgets too: a budget over a tool the agent lacks, or approved by a role nobody holds", () => {
    const { options } = refundOptions();
    const budgets = defineBudgets([
      { id: "refunds.daily", tools: ["issue_refunds"], scope: "thread", window: "day", maxSum: { arg: "amount", max: 2_000 }, onExceed: "require_approval", approverRoles: ["supervisr"] },
    ]);
    const e = configError(() => createGovernedAgent({ ...options, budgets }), "budgets");
    expect(e.message).toContain('budget "refunds.daily" names tool "issue_refunds"');
    expect(e.message).toContain('role "supervisr"');
    expect(e.details).toMatchObject({ code: "policy_tool_unknown", ruleId: "refunds.daily", suggestion: "issue_refund" });
  });

  it("is allowed for a policy shared with other agents, when said so (skipChecks)", () => {
    const shared = definePolicy({ rules: refundRules([{ id: "payments.execute", tools: ["execute_payment"], effect: "deny" }]) });
    const { options } = refundOptions();
    configError(() => createGovernedAgent({ ...options, policy: shared }), "policy");
    expect(() => createGovernedAgent({ ...options, policy: shared, skipChecks: ["policy_tool_unknown"] })).not.toThrow();
  });
});

describe("2. an approver role the identities do not declare", () => {
  it("is refused: nobody could approve", () => {
    const { options } = refundOptions();
    const policy = definePolicy({
      rules: refundRules([{ id: "refund.supervisor", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisors", "finance"] }]),
    });
    const e = configError(() => createGovernedAgent({ ...options, policy }), "policy");
    expect(e.message).toBe(
      'Invalid option "policy": rule "refund.supervisor" asks for approvers with role "supervisors", which the identities do not declare ' +
        '(declared: customer, supervisor, finance): did you mean "supervisor"? No user can hold an undeclared role, so nobody could approve: ' +
        "correct the rule, or declare the role in the identities and give it to the approvers",
    );
    expect(e.details).toMatchObject({ code: "approver_role_undeclared", ruleId: "refund.supervisor", role: "supervisors", suggestion: "supervisor" });
  });

  it("is refused in recoveryRoles and in the escalation's reviewerRoles alike", () => {
    const { options } = refundOptions();
    const recovery = configError(() => createGovernedAgent({ ...options, recoveryRoles: ["supervisor", "operator"] }), "recoveryRoles");
    expect(recovery.message).toContain('role "operator" is not declared in the identities (declared: customer, supervisor, finance).');
    expect(recovery.details).toMatchObject({ code: "role_undeclared", role: "operator" });
    const review = configError(() => createGovernedAgent({ ...options, escalation: { reviewerRoles: ["Supervisor"] } }), "escalation");
    expect(review.details).toMatchObject({ code: "role_undeclared", role: "Supervisor", suggestion: "supervisor" });
  });

  it("is reported with every other mistake of the configuration at once", () => {
    const { options } = refundOptions();
    const policy = definePolicy({
      rules: [
        { id: "lookup", tools: ["lookup_ordr"], effect: "allow" },
        { id: "refund", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["manager"] },
      ],
    });
    const e = configError(() => createGovernedAgent({ ...options, policy, recoveryRoles: ["ops"] }), "policy");
    const problems = e.details.problems as { code: string; field: string }[];
    expect(problems.map((p) => [p.field, p.code])).toEqual([
      ["policy", "policy_tool_unknown"],
      ["policy", "approver_role_undeclared"],
      ["recoveryRoles", "role_undeclared"],
      ["policy", "tool_uncovered"],
    ]);
    expect(e.message).toContain("\n3 more:\n- policy: rule \"refund\" asks for approvers with role \"manager\"");
  });
});

describe("3. a tool the agent has and the identities grant, that no rule covers", () => {
  it("is an error: every call of it would be denied by default", () => {
    const { options } = refundOptions();
    const policy = definePolicy({ rules: [{ id: "refund.any", tools: ["issue_refund"], effect: "allow" }] });
    const e = configError(() => createGovernedAgent({ ...options, policy }), "policy");
    expect(e.message).toBe(
      'Invalid option "policy": no rule covers tool "lookup_order", which the agent has and the identities grant (to "support-agent"), ' +
        "so every call of it would be denied by default. Add a rule for it; to deny it on purpose, say so with a rule " +
        '{ tools: ["lookup_order"], effect: "deny" }, or grant it to no agent in the identities',
    );
    expect(e.details).toMatchObject({ code: "tool_uncovered", tool: "lookup_order", grantedTo: ["support-agent"] });
  });

  it("builds when the denial is deliberate: an explicit deny rule, or a tool the identities grant to no agent", async () => {
    const { options, refunds } = refundOptions();
    const policy = definePolicy({
      rules: [
        { id: "orders.lookup.never", tools: ["lookup_order"], effect: "deny", reason: "Lookups go through the CRM" },
        { id: "refund.any", tools: ["issue_refund"], effect: "allow" },
      ],
    });
    // view_payment_details is bound, covered by no rule, and granted to no agent: denied twice, on purpose.
    const agent = createGovernedAgent({ ...options, policy });
    await agent.invoke({ messages: [new HumanMessage("Refund order 1043, $60.")] }, { configurable: { thread_id: "t-deny", agent_id: "support-agent", user_id: "cara" } });
    expect(refunds()).toEqual([{ orderId: "1043", amount: 60 }]);
  });

  it("a rule over every tool covers them all", () => {
    const { options } = refundOptions();
    const policy = definePolicy({ rules: [{ id: "all.escalate", effect: "escalate" }] });
    expect(() => createGovernedAgent({ ...options, policy })).not.toThrow();
  });
});

describe("4. unknown keys in the identities", () => {
  const approverRole = { ...identities, users: [...identities.users, { id: "sol", name: "Sol", approverRole: "supervisor" }] };

  it("are refused by IdentityRegistry.fromObject, naming the entry, the key and the key meant", () => {
    const error = refused(() => IdentityRegistry.fromObject(approverRole));
    expect(error).toBeInstanceOf(IdentityRegistryError);
    const e = error as IdentityRegistryError;
    expect(e.entry).toBe("users[5]");
    expect(e.message).toBe(
      'Identity registry entry users[5]: unknown key "approverRole": did you mean "roles"? (a user has id, name, roles); unknown keys are refused, not ignored',
    );
    const top = refused(() => IdentityRegistry.fromObject({ roles: identities.roles, agent: identities.agents, users: identities.users })) as IdentityRegistryError;
    expect(top).toBeInstanceOf(IdentityRegistryError);
    expect(top.entry).toBe("(root)");
    expect(top.message).toContain('unknown key "agent": did you mean "agents"? (the registry has roles, agents, users)');
    const scopes = refused(() => IdentityRegistry.fromObject({ ...identities, agents: [{ ...identities.agents[0]!, data_scopes: ["orders"] }] })) as IdentityRegistryError;
    expect(scopes.entry).toBe("agents[0]");
    expect(scopes.message).toContain('unknown key "data_scopes": did you mean "dataScopes"?');
  });

  it("are refused in an identities file and in the definition given to createGovernedAgent", () => {
    const path = join(mkdtempSync(join(tmpdir(), "eart-identities-")), "identities.json");
    writeFileSync(path, JSON.stringify(approverRole));
    expect(() => IdentityRegistry.fromFile(path)).toThrow(/users\[5\]: unknown key "approverRole": did you mean "roles"\?/);
    const { options } = refundOptions();
    const error = refused(() => createGovernedAgent({ ...options, identities: approverRole }));
    expect(error).toBeInstanceOf(IdentityRegistryError);
    expect((error as IdentityRegistryError).entry).toBe("users[5]");
  });
});

describe("5. option names and kinds createGovernedAgent does not take", () => {
  it("registry for identities", () => {
    const { options } = refundOptions();
    const { identities: registry, ...rest } = options;
    const e = configError(() => createGovernedAgent({ ...rest, registry } as unknown as GovernedAgentOptions), "registry");
    expect(e.message).toBe(
      'Invalid option "registry": createGovernedAgent has no option "registry": did you mean "identities"? It takes the IdentityRegistry ' +
        "(IdentityRegistry.fromFile(path) or .fromObject(definition)) or its definition { roles, agents, users }",
    );
    expect(e.details).toMatchObject({ expected: "identities" });
  });

  it("llm for model, and a model name for a model", () => {
    const { options } = refundOptions();
    const { model: llm, ...rest } = options;
    const e = configError(() => createGovernedAgent({ ...rest, llm } as unknown as GovernedAgentOptions), "llm");
    expect(e.message).toContain('has no option "llm": did you mean "model"? It takes a chat model instance');
    const named = configError(() => createGovernedAgent({ ...options, model: "gpt-4o" } as unknown as GovernedAgentOptions), "model");
    expect(named.message).toContain('got the string "gpt-4o", where a chat model instance');
  });

  it("a rules array, or a policy definition, for a policy", () => {
    const { options } = refundOptions();
    const rules = refundRules([]);
    const array = configError(() => createGovernedAgent({ ...options, policy: rules } as unknown as GovernedAgentOptions), "policy");
    expect(array.message).toBe('Invalid option "policy": got an array (policy rules?), where a policy engine goes: pass definePolicy({ name, rules }) instead of the rules');
    const definition = configError(() => createGovernedAgent({ ...options, policy: { name: "refunds", rules } } as unknown as GovernedAgentOptions), "policy");
    expect(definition.message).toContain("pass definePolicy(definition) instead");
  });

  it("a misspelt option, with the one meant; a missing or path-valued identities", () => {
    const { options } = refundOptions();
    const { identities: _, ...rest } = options;
    const e = configError(() => createGovernedAgent({ ...options, auditlog: options.auditLog } as unknown as GovernedAgentOptions), "auditlog");
    expect(e.message).toContain('did you mean "auditLog"?');
    expect(configError(() => createGovernedAgent(rest as unknown as GovernedAgentOptions), "identities").message).toContain("is required");
    const path = configError(() => createGovernedAgent({ ...options, identities: "./identities.json" } as unknown as GovernedAgentOptions), "identities");
    expect(path.message).toContain('IdentityRegistry.fromFile("./identities.json")');
  });
});

describe("checks that belong to definePolicy alone", () => {
  it("approverRoles on a rule that does not ask for approval, and tools: [\"*\"]", () => {
    const ignored = refused(() => definePolicy({ rules: [{ id: "refund.big", tools: ["issue_refund"], effect: "allow", approverRoles: ["supervisor"] }] }));
    expect(ignored).toBeInstanceOf(PolicyDefinitionError);
    expect((ignored as PolicyDefinitionError).ruleId).toBe("refund.big");
    expect(ignored.message).toBe(
      'Invalid policy at rules.0.approverRoles: only a require_approval rule asks approvers; this rule\'s effect is "allow": make it effect "require_approval", or remove approverRoles',
    );
    const star = refused(() => definePolicy({ rules: [{ id: "all", tools: ["*"], effect: "escalate" }] }));
    expect(star).toBeInstanceOf(PolicyDefinitionError);
    expect(star.message).toBe('Invalid policy at rules.0.tools: write tools: "*" (not ["*"]) for a rule over every tool');
  });
});

describe("engines that do not describe themselves", () => {
  it("are not cross-checked (a Cedar engine, a custom one)", () => {
    const { options } = refundOptions();
    const opaque: PolicyEngine = { version: "v1", decide: () => ({ effect: "deny", reasons: ["no"], policyIds: ["p"], version: "v1" }) };
    expect(() => createGovernedAgent({ ...options, policy: opaque, recoveryRoles: ["supervisor"] })).not.toThrow();
  });

  it("a describe() that fails or returns something malformed is refused", () => {
    const { options } = refundOptions();
    const decide = refundPolicy.decide;
    const failing: PolicyEngine = { version: "v1", decide, describe: () => { throw new Error("no metadata"); } };
    expect(configError(() => createGovernedAgent({ ...options, policy: failing }), "policy").message).toContain("describe() failed: no metadata");
    const malformed = { version: "v1", decide, describe: () => ({ rules: "all" }) } as unknown as PolicyEngine;
    expect(configError(() => createGovernedAgent({ ...options, policy: malformed }), "policy").message).toContain("describe() returned an invalid description");
  });
});

describe("a refused configuration has no side effects", () => {
  it("writes nothing to the audit log passed in and stores nothing in the checkpointer", async () => {
    const { options, auditLog, checkpointer } = refundOptions();
    const append = vi.spyOn(auditLog, "append");
    const put = vi.spyOn(checkpointer, "put");
    const policy = definePolicy({ rules: refundRules([{ id: "refund.big", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervsior"] }]) });
    configError(() => createGovernedAgent({ ...options, policy }), "policy");
    configError(() => createGovernedAgent({ ...options, policy: [] } as unknown as GovernedAgentOptions), "policy");
    expect(refused(() => createGovernedAgent({ ...options, identities: { ...identities, agent: [] } }))).toBeInstanceOf(IdentityRegistryError);
    expect(append).not.toHaveBeenCalled();
    expect(put).not.toHaveBeenCalled();
    expect(await auditLog.listThreads()).toEqual([]);
    expect(checkpointer.storage).toEqual({});
  });
});
