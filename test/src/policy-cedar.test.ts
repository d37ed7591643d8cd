import { describe, expect, it } from "vitest";
import {
  definePolicy,
  DEFAULT_DENY_POLICY_ID,
  EartConfigError,
  EartError,
  PolicyDefinitionError,
  type AgentIdentity,
  type PolicyDecision,
  type PolicyEngine,
  type PolicyRequest,
} from "eart";
import { decideFailClosed, PolicyDecisionSchema } from "../../src/policy/engine.js";
import { createCedarPolicyEngine, type CedarPolicyEngineOptions } from "eart/cedar";
import { policyEngineSpec } from "eart/testing";
import { refundPolicy } from "../../examples/refund/policy.js";

const identity: AgentIdentity = {
  schemaVersion: 1,
  id: "support-agent",
  roles: ["support"],
  tools: ["issue_refund", "lookup_order", "send_external_email"],
  dataScopes: ["orders"],
  onBehalfOf: { id: "cara", roles: ["customer"] },
  source: "configurable.user_id",
};

const request = (
  name: string,
  args: Record<string, unknown> = {},
  options: { sensitivity?: string[]; identity?: Partial<AgentIdentity> } = {},
): PolicyRequest => ({
  identity: { ...identity, ...options.identity },
  tool: { name, args },
  context: { items: [], sensitivity: options.sensitivity ?? [] },
  threadId: "t-1",
});

const HEX64 = /^[0-9a-f]{64}$/;
const decide = (engine: PolicyEngine, r: PolicyRequest) => engine.decide(r) as PolicyDecision;

function definitionError(options: CedarPolicyEngineOptions): PolicyDefinitionError {
  let error: unknown;
  try {
    createCedarPolicyEngine(options);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(PolicyDefinitionError);
  expect(error).toBeInstanceOf(EartError);
  expect((error as PolicyDefinitionError).code).toBe("policy_invalid");
  return error as PolicyDefinitionError;
}

function configError(options: unknown): EartConfigError {
  let error: unknown;
  try {
    createCedarPolicyEngine(options as CedarPolicyEngineOptions);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(EartConfigError);
  expect((error as EartConfigError).code).toBe("config_invalid");
  return error as EartConfigError;
}

/** A schema for the small policies below: refunds in cents, lookups, external e-mail. */
const SCHEMA = `
entity Role in [Role];
entity Agent in [Role];
entity Tool;
entity Order;
type Human = { id: String, roles: Set<String> };
action issue_refund appliesTo {
  principal: Agent, resource: [Tool, Order],
  context: { args: { orderId: String, amountCents: Long }, sensitivity: Set<String>, onBehalfOf: Human }
};
action lookup_order appliesTo {
  principal: Agent, resource: Tool,
  context: { args: { orderId: String }, sensitivity: Set<String>, onBehalfOf: Human }
};
action send_external_email appliesTo {
  principal: Agent, resource: Tool,
  context: { args: { to: String, body: String }, sensitivity: Set<String>, onBehalfOf: Human }
};
`;

describe("createCedarPolicyEngine construction", () => {
  it("names the policy whose syntax is wrong, with the library's message and position", () => {
    const e = definitionError({
      policies: `
        @id("first.ok") permit(principal, action == Action::"lookup_order", resource) when { "a;b" == "a;b" };
        @id("second.broken")
        permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents <= };
        @id("third.ok") permit(principal, action, resource);`,
    });
    expect(e.ruleId).toBe("second.broken");
    expect(e.details).toEqual({ ruleId: "second.broken" });
    expect(e.message).toContain('Cedar policy "second.broken" does not parse at line 4');
    expect(e.message).toContain("unexpected token `}`");
  });

  it("names the first policy when it is the broken one, and the text index among several texts", () => {
    const e = definitionError({
      policies: [`@id("a") permit(principal, action, resource);`, `@id("b") permit(principal, actin, resource);`],
    });
    expect(e.ruleId).toBe("b");
    expect(e.message).toContain("in policy text 1");
    expect(e.message).toContain("actin");
  });

  it("refuses a policy that does not validate against the schema, naming it, with the library's message", () => {
    const e = definitionError({
      schema: SCHEMA,
      policies: `
        @id("refund.ok") permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents <= 10000 };
        @id("refund.typo") permit(principal, action == Action::"issue_refund", resource) when { context.args.amount <= 100 };`,
    });
    expect(e.ruleId).toBe("refund.typo");
    expect(e.message).toContain('Cedar policy "refund.typo" does not validate against the schema');
    expect(e.message).toContain("attribute `args.amount` in context");
    expect(e.message).toContain("did you mean `amountCents`?");
  });

  it("refuses an unknown action and a type error under the schema", () => {
    const unknown = definitionError({ schema: SCHEMA, policies: `@id("x") permit(principal, action == Action::"issue_refnd", resource);` });
    expect(unknown.ruleId).toBe("x");
    expect(unknown.message).toContain('unrecognized action `Action::"issue_refnd"`');
    const typed = definitionError({
      schema: SCHEMA,
      policies: `@id("y") permit(principal, action == Action::"issue_refund", resource) when { context.args.orderId > 3 };`,
    });
    expect(typed.ruleId).toBe("y");
  });

  it("treats a validation warning (a policy that can never apply) as an error", () => {
    const e = definitionError({
      schema: SCHEMA,
      policies: `@id("never") permit(principal is Tool, action == Action::"lookup_order", resource);`,
    });
    expect(e.ruleId).toBe("never");
    expect(e.message).toContain("policy is impossible");
  });

  it("refuses a schema that does not parse", () => {
    const e = definitionError({ schema: "entity Agent in [Nope];", policies: `@id("a") permit(principal, action, resource);` });
    expect(e.ruleId).toBeUndefined();
    expect(e.message).toContain("Nope");
  });

  it("refuses policies without an @id, with a duplicate or reserved id", () => {
    expect(definitionError({ policies: `permit(principal, action, resource);` }).message).toContain('@id("...")');
    expect(definitionError({ policies: `@id("") permit(principal, action, resource);` }).message).toContain('@id("...")');
    const dup = definitionError({ policies: [`@id("a") permit(principal, action, resource);`, `@id("a") forbid(principal, action, resource);`] });
    expect(dup.ruleId).toBe("a");
    expect(dup.message).toContain('Duplicate Cedar policy id "a"');
    expect(definitionError({ policies: `@id("eart.default-deny") permit(principal, action, resource);` }).ruleId).toBe("eart.default-deny");
  });

  it("refuses misplaced or malformed approval annotations", () => {
    expect(definitionError({ policies: `@id("f") @requires_approval("boss") forbid(principal, action, resource);` }).ruleId).toBe("f");
    expect(definitionError({ policies: `@id("g") @escalate("why") forbid(principal, action, resource);` }).ruleId).toBe("g");
    expect(definitionError({ policies: `@id("h") @requires_approval(" , ") permit(principal, action, resource);` }).message).toContain(
      "at least one role",
    );
    expect(definitionError({ policies: `@id("i") @requires_approval permit(principal, action, resource);` }).ruleId).toBe("i");
    expect(definitionError({ policies: `@id("j") @requires_approval("a") @escalate permit(principal, action, resource);` }).ruleId).toBe("j");
    expect(definitionError({ policies: `@id("q") @quorum("2") permit(principal, action, resource);` }).ruleId).toBe("q");
    expect(definitionError({ policies: `@id("x") @expires_in("15m") forbid(principal, action, resource);` }).ruleId).toBe("x");
  });

  it("refuses templates", () => {
    expect(definitionError({ policies: `@id("t") permit(principal == ?principal, action, resource);` }).ruleId).toBe("t");
  });

  it("refuses bad options with a config error naming the field", () => {
    expect(configError({}).field).toBe("policies");
    expect(configError({ policies: 42 }).field).toBe("policies");
    expect(configError({ policies: "", resource: {} }).field).toBe("options");
    expect(configError({ policies: "", resources: { issue_refund: "Order" } }).field).toBe("resources");
    expect(configError({ policies: "", contextArgs: { issue_refund: 1 } }).field).toBe("contextArgs");
    expect(configError({ policies: "", entities: [{ uid: { type: "Role" } }] }).field).toBe("entities");
  });

  it("refuses entities Cedar or the schema rejects", () => {
    const cycle = configError({
      policies: "",
      entities: [
        { uid: { type: "Role", id: "a" }, parents: [{ type: "Role", id: "b" }] },
        { uid: { type: "Role", id: "b" }, parents: [{ type: "Role", id: "a" }] },
      ],
    });
    expect(cycle.field).toBe("entities");
    expect(cycle.message).toContain("cycle");
    const undeclared = configError({ schema: SCHEMA, policies: "", entities: [{ uid: { type: "Team", id: "x" } }] });
    expect(undeclared.field).toBe("entities");
  });

  it("accepts an empty policy set, which denies everything", () => {
    const engine = createCedarPolicyEngine({ policies: "" });
    expect(decide(engine, request("lookup_order"))).toEqual({
      effect: "deny",
      reasons: ["no Cedar policy permits lookup_order (default deny)"],
      policyIds: [DEFAULT_DENY_POLICY_ID],
      version: engine.version,
    });
  });
});

describe("createCedarPolicyEngine decisions", () => {
  const engine = createCedarPolicyEngine({
    policies: `
      @id("lookup") @reason("Lookups are allowed")
      permit(principal in Role::"support", action == Action::"lookup_order", resource);

      @id("refund.small")
      permit(principal in Role::"support", action == Action::"issue_refund", resource)
      when { context.args.amountCents <= 10000 };

      @id("refund.supervisor") @requires_approval("supervisor") @reason("Refunds over $100 need a supervisor")
      permit(principal, action == Action::"issue_refund", resource)
      when { context.args.amountCents > 10000 && context.args.amountCents <= 500000 };

      @id("refund.large") @requires_approval("finance, supervisor , director")
      permit(principal, action == Action::"issue_refund", resource)
      when { context.args.amountCents > 200000 && context.args.amountCents <= 500000 };

      @id("refund.fraud") @escalate("Refunds flagged as fraud go to the fraud team")
      permit(principal, action == Action::"issue_refund", resource)
      when { context.args has fraud && context.args.fraud };

      @id("refund.limit") @reason("Refunds over $5,000 are not allowed")
      forbid(principal, action == Action::"issue_refund", resource)
      unless { context.args.amountCents <= 500000 };

      @id("refund.frozen")
      forbid(principal, action == Action::"issue_refund", resource)
      when { context.args has frozen && context.args.frozen };

      @id("email.external") permit(principal, action == Action::"send_external_email", resource);

      @id("email.after-payment-data") @reason("No external e-mail after reading payment data")
      forbid(principal, action == Action::"send_external_email", resource)
      when { context.sensitivity.contains("payment_data") };`,
  });

  it("has a content version and well-formed decisions that carry it", () => {
    expect(engine.version).toMatch(HEX64);
    for (const r of [request("lookup_order"), request("issue_refund", { amountCents: 5 }), request("nope")]) {
      const d = decide(engine, r);
      expect(PolicyDecisionSchema.safeParse(d).success).toBe(true);
      expect(d.version).toBe(engine.version);
    }
  });

  it("a matching permit without obligations allows, with the @reason", () => {
    expect(decide(engine, request("lookup_order", { orderId: "1042" }))).toEqual({
      effect: "allow",
      reasons: ["Lookups are allowed"],
      policyIds: ["lookup"],
      version: engine.version,
    });
  });

  it("generates a reason when a policy has no @reason", () => {
    expect(decide(engine, request("issue_refund", { orderId: "1", amountCents: 500 }))).toEqual({
      effect: "allow",
      reasons: ["policy refund.small permits issue_refund"],
      policyIds: ["refund.small"],
      version: engine.version,
    });
  });

  it("only @requires_approval permits → require_approval with the roles of all of them", () => {
    expect(decide(engine, request("issue_refund", { amountCents: 74_000 }))).toEqual({
      effect: "require_approval",
      reasons: ["Refunds over $100 need a supervisor"],
      policyIds: ["refund.supervisor"],
      version: engine.version,
      approverRoles: ["supervisor"],
    });
    expect(decide(engine, request("issue_refund", { amountCents: 300_000 }))).toEqual({
      effect: "require_approval",
      reasons: ["Refunds over $100 need a supervisor", "policy refund.large permits issue_refund with approval by finance or supervisor or director"],
      policyIds: ["refund.supervisor", "refund.large"],
      version: engine.version,
      approverRoles: ["supervisor", "finance", "director"],
    });
  });

  it("a matching forbid denies, naming only the forbids that matched", () => {
    expect(decide(engine, request("issue_refund", { amountCents: 920_000 }))).toEqual({
      effect: "deny",
      reasons: ["Refunds over $5,000 are not allowed"],
      policyIds: ["refund.limit"],
      version: engine.version,
    });
    const both = decide(engine, request("issue_refund", { amountCents: 920_000, frozen: true }));
    expect(both.effect).toBe("deny");
    expect(both.policyIds).toEqual(["refund.limit", "refund.frozen"]);
    expect(both.reasons).toEqual(["Refunds over $5,000 are not allowed", "policy refund.frozen forbids issue_refund"]);
  });

  it("precedence: deny > escalate > allow > require_approval", () => {
    // escalate beats allow
    const escalated = decide(engine, request("issue_refund", { amountCents: 500, fraud: true }));
    expect(escalated).toEqual({
      effect: "escalate",
      reasons: ["Refunds flagged as fraud go to the fraud team"],
      policyIds: ["refund.fraud"],
      version: engine.version,
    });
    // escalate beats require_approval
    expect(decide(engine, request("issue_refund", { amountCents: 74_000, fraud: true })).effect).toBe("escalate");
    // deny beats escalate
    const denied = decide(engine, request("issue_refund", { amountCents: 500, fraud: true, frozen: true }));
    expect(denied.effect).toBe("deny");
    expect(denied.policyIds).toEqual(["refund.frozen"]);
    // allow beats require_approval
    const mixed = createCedarPolicyEngine({
      policies: `
        @id("needs.approval") @requires_approval("supervisor") permit(principal, action, resource);
        @id("plain") permit(principal, action == Action::"lookup_order", resource);`,
    });
    expect(decide(mixed, request("lookup_order"))).toMatchObject({ effect: "allow", policyIds: ["plain"] });
    expect(decide(mixed, request("issue_refund"))).toMatchObject({ effect: "require_approval", policyIds: ["needs.approval"] });
  });

  it("an @escalate without a why gets a generated reason", () => {
    const e = createCedarPolicyEngine({ policies: `@id("up") @escalate permit(principal, action, resource);` });
    expect(decide(e, request("anything")).reasons).toEqual(["policy up escalates anything to a human"]);
  });

  it("nothing matches → default deny", () => {
    expect(decide(engine, request("delete_customer", { customerId: "C-1" }))).toEqual({
      effect: "deny",
      reasons: ["no Cedar policy permits delete_customer (default deny)"],
      policyIds: [DEFAULT_DENY_POLICY_ID],
      version: engine.version,
    });
    // A principal outside the role the permit names matches nothing either.
    const outsider = decide(engine, request("lookup_order", {}, { identity: { roles: ["sales"] } }));
    expect(outsider.effect).toBe("deny");
    expect(outsider.policyIds).toEqual([DEFAULT_DENY_POLICY_ID]);
  });

  it("takes policy ids from the engine's diagnostics, in policy order, never Cedar's positional ids", () => {
    const many = createCedarPolicyEngine({
      policies: [
        `@id("z.last") permit(principal, action == Action::"lookup_order", resource);`,
        `@id("a.first") permit(principal in Role::"support", action, resource);
         @id("m.unrelated") permit(principal, action == Action::"issue_refund", resource);`,
      ],
    });
    const d = decide(many, request("lookup_order"));
    expect(d.effect).toBe("allow");
    expect(d.policyIds).toEqual(["z.last", "a.first"]);
    expect(d.policyIds.some((id) => /^policy\d+$/.test(id))).toBe(false);
  });

  it("sensitivity labels of the thread are in context: no external e-mail after payment data", () => {
    expect(decide(engine, request("send_external_email", { to: "a@example.com" }))).toMatchObject({ effect: "allow", policyIds: ["email.external"] });
    expect(decide(engine, request("send_external_email", { to: "a@example.com" }, { sensitivity: ["internal"] })).effect).toBe("allow");
    expect(decide(engine, request("send_external_email", { to: "a@example.com" }, { sensitivity: ["personal", "payment_data"] }))).toEqual({
      effect: "deny",
      reasons: ["No external e-mail after reading payment data"],
      policyIds: ["email.after-payment-data"],
      version: engine.version,
    });
  });

  it("the human the agent acts for, and their roles, are usable in a policy", () => {
    const vip = createCedarPolicyEngine({
      policies: `
        @id("refund.vip") permit(principal, action == Action::"issue_refund", resource)
        when { context.onBehalfOf.roles.contains("vip") && context.args.amountCents <= 100000 };
        @id("refund.self") forbid(principal, action == Action::"issue_refund", resource)
        when { context.args has customerId && context.args.customerId == context.onBehalfOf.id };`,
    });
    const forVip = { identity: { onBehalfOf: { id: "vera", roles: ["customer", "vip"] } } };
    expect(decide(vip, request("issue_refund", { amountCents: 50_000 }, forVip))).toMatchObject({ effect: "allow", policyIds: ["refund.vip"] });
    expect(decide(vip, request("issue_refund", { amountCents: 50_000 })).policyIds).toEqual([DEFAULT_DENY_POLICY_ID]);
    expect(decide(vip, request("issue_refund", { amountCents: 50_000, customerId: "vera" }, forVip))).toMatchObject({
      effect: "deny",
      policyIds: ["refund.self"],
    });
  });

  it("role hierarchies come from entities; the principal may not be redefined by them", () => {
    const policies = `@id("staff.lookup") permit(principal in Role::"staff", action == Action::"lookup_order", resource);`;
    const flat = createCedarPolicyEngine({ policies });
    expect(decide(flat, request("lookup_order")).effect).toBe("deny");
    const hierarchy = createCedarPolicyEngine({ policies, entities: [{ uid: { type: "Role", id: "support" }, parents: [{ type: "Role", id: "staff" }] }] });
    expect(decide(hierarchy, request("lookup_order"))).toMatchObject({ effect: "allow", policyIds: ["staff.lookup"] });
    expect(hierarchy.version).not.toBe(flat.version);

    const perDecision = createCedarPolicyEngine({
      policies,
      entities: (r) => (r.identity.id === "support-agent" ? [{ uid: { type: "Role", id: "support" }, parents: [{ type: "Role", id: "staff" }] }] : []),
    });
    expect(decide(perDecision, request("lookup_order")).effect).toBe("allow");
    expect(decide(perDecision, request("lookup_order", {}, { identity: { id: "other-agent" } })).effect).toBe("deny");

    // Cedar would let a later entity replace the principal silently: refused, fail closed.
    const forged = createCedarPolicyEngine({
      policies,
      entities: [{ uid: { type: "Agent", id: "support-agent" }, parents: [{ type: "Role", id: "staff" }] }],
    });
    const d = decide(forged, request("lookup_order"));
    expect(d).toMatchObject({ effect: "deny", evaluationError: true, policyIds: [] });
    expect(d.reasons[0]).toContain('entities may not define the principal Agent::"support-agent"');
  });
});

describe("createCedarPolicyEngine resources", () => {
  const policies = `
    @id("refund.order") permit(principal, action == Action::"issue_refund", resource == Order::"1042");
    @id("refund.blocked") forbid(principal, action == Action::"issue_refund", resource == Order::"666");
    @id("lookup.tool") permit(principal, action == Action::"lookup_order", resource == Tool::"lookup_order");`;

  it("defaults to Tool::\"<tool name>\" and maps per tool", () => {
    const engine = createCedarPolicyEngine({
      policies,
      resources: { issue_refund: (args) => ({ type: "Order", id: String(args.orderId) }) },
    });
    expect(decide(engine, request("lookup_order", { orderId: "1042" }))).toMatchObject({ effect: "allow", policyIds: ["lookup.tool"] });
    expect(decide(engine, request("issue_refund", { orderId: "1042" }))).toMatchObject({ effect: "allow", policyIds: ["refund.order"] });
    expect(decide(engine, request("issue_refund", { orderId: "1043" }))).toMatchObject({ effect: "deny", policyIds: [DEFAULT_DENY_POLICY_ID] });
    expect(decide(engine, request("issue_refund", { orderId: "666" }))).toMatchObject({ effect: "deny", policyIds: ["refund.blocked"] });
    // Without the mapping, the refund acts on Tool::"issue_refund" and no policy permits that.
    const unmapped = createCedarPolicyEngine({ policies });
    expect(decide(unmapped, request("issue_refund", { orderId: "1042" })).policyIds).toEqual([DEFAULT_DENY_POLICY_ID]);
  });

  it("a resource mapper that throws or returns something malformed fails closed", () => {
    const throwing = createCedarPolicyEngine({
      policies,
      resources: {
        issue_refund: () => {
          throw new Error("no order id");
        },
      },
    });
    const d = decide(throwing, request("issue_refund", { orderId: "1042" }));
    expect(d).toMatchObject({ effect: "deny", evaluationError: true });
    expect(d.reasons[0]).toContain("no order id");
    const malformed = createCedarPolicyEngine({
      policies,
      resources: { issue_refund: () => ({ type: "Order" }) as unknown as { type: string; id: string } },
    });
    expect(decide(malformed, request("issue_refund", { orderId: "1042" }))).toMatchObject({ effect: "deny", evaluationError: true });
  });

  it("with a schema, a resource of a type the action does not take fails closed", () => {
    const engine = createCedarPolicyEngine({
      schema: SCHEMA,
      policies: `@id("lookup") permit(principal, action == Action::"lookup_order", resource);`,
      resources: { lookup_order: (args) => ({ type: "Order", id: String(args.orderId) }) },
    });
    const d = decide(engine, request("lookup_order", { orderId: "1042" }));
    expect(d).toMatchObject({ effect: "deny", evaluationError: true });
    expect(d.reasons[0]).toContain("Cedar refused the lookup_order request");
  });
});

describe("createCedarPolicyEngine fail closed", () => {
  const engine = createCedarPolicyEngine({
    policies: `
      @id("refund.small") permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents <= 10000 };
      @id("email.ok") permit(principal, action == Action::"send_external_email", resource);
      @id("email.domain") forbid(principal, action == Action::"send_external_email", resource) when { context.args.to like "*@rival.com" };`,
  });

  it("a non-integer amount is never rounded: deny with evaluationError naming the argument", () => {
    for (const amountCents of [7.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60]) {
      const d = decide(engine, request("issue_refund", { orderId: "1", amountCents }));
      expect(d.effect).toBe("deny");
      expect(d.policyIds).toEqual([]);
      expect(d).toMatchObject({ evaluationError: true, version: engine.version });
      expect(d.reasons[0]).toContain(`args.amountCents is ${amountCents}, not an integer`);
      expect(d.reasons[0]).toContain("integer minor units (cents)");
    }
    // Nested too.
    expect(decide(engine, request("issue_refund", { amountCents: 5, lines: [{ price: 1.25 }] })).reasons[0]).toContain("args.lines[0].price is 1.25");
    // Integers pass.
    expect(decide(engine, request("issue_refund", { amountCents: 10_000 })).effect).toBe("allow");
  });

  it("a missing attribute is an evaluation error, not a non-match", () => {
    expect(decide(engine, request("issue_refund", { orderId: "1" }))).toEqual({
      effect: "deny",
      reasons: ["policy refund.small failed to evaluate: record does not have the attribute `amountCents` (available attributes: [\"orderId\"])"],
      policyIds: ["refund.small"],
      version: engine.version,
      evaluationError: true,
    });
  });

  it("denies when a forbid errors, even though Cedar alone would allow through the permit", () => {
    const d = decide(engine, request("send_external_email", { to: 42 }));
    expect(d).toMatchObject({ effect: "deny", policyIds: ["email.domain"], evaluationError: true });
    expect(d.reasons[0]).toContain("type error");
    expect(decide(engine, request("send_external_email", { to: "a@example.com" })).effect).toBe("allow");
    expect(decide(engine, request("send_external_email", { to: "ceo@rival.com" })).policyIds).toEqual(["email.domain"]);
  });

  it("refuses arguments that would forge Cedar entity or extension values", () => {
    const d = decide(engine, request("issue_refund", { amountCents: 5, approver: { __entity: { type: "Role", id: "supervisor" } } }));
    expect(d).toMatchObject({ effect: "deny", evaluationError: true });
    expect(d.reasons[0]).toContain('the key "__entity" is reserved');
    expect(decide(engine, request("issue_refund", { amountCents: 5, when: new Date() })).reasons[0]).toContain("not a plain object");
  });

  it("leaves null and undefined record fields out (has is false)", () => {
    const e = createCedarPolicyEngine({
      policies: `@id("no.code") permit(principal, action == Action::"apply_discount", resource) unless { context.args has code };`,
    });
    expect(decide(e, request("apply_discount", { code: null, note: undefined })).effect).toBe("allow");
    expect(decide(e, request("apply_discount", { code: "X" })).effect).toBe("deny");
    expect(decide(e, request("apply_discount", { codes: [null] }))).toMatchObject({ effect: "deny", evaluationError: true });
  });

  it("a request the schema rejects is denied with the library's reason", () => {
    const typed = createCedarPolicyEngine({
      schema: SCHEMA,
      policies: `@id("refund.small") permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents <= 10000 };`,
    });
    expect(decide(typed, request("issue_refund", { orderId: "1", amountCents: 500 })).effect).toBe("allow");
    const wrongType = decide(typed, request("issue_refund", { orderId: "1", amountCents: "500" }));
    expect(wrongType).toMatchObject({ effect: "deny", evaluationError: true, policyIds: [] });
    expect(wrongType.reasons[0]).toContain('is not valid for `Action::"issue_refund"`');
    const extra = decide(typed, request("issue_refund", { orderId: "1", amountCents: 500, note: "x" }));
    expect(extra.reasons[0]).toContain("record attribute `note` should not exist");
    expect(decide(typed, request("issue_refund", { orderId: "1" }))).toMatchObject({ effect: "deny", evaluationError: true });
  });

  it("a tool the schema declares no action for is a default deny", () => {
    const typed = createCedarPolicyEngine({ schema: SCHEMA, policies: `@id("all") permit(principal, action, resource);` });
    expect(decide(typed, request("wire_money", { amountCents: 1 }))).toEqual({
      effect: "deny",
      reasons: ["the Cedar schema declares no action wire_money (default deny)"],
      policyIds: [DEFAULT_DENY_POLICY_ID],
      version: typed.version,
    });
  });

  it("a contextArgs mapper that throws, a malformed request or an entity cycle fails closed", () => {
    const throwing = createCedarPolicyEngine({
      policies: `@id("all") permit(principal, action, resource);`,
      contextArgs: {
        issue_refund: () => {
          throw new Error("amount missing");
        },
      },
    });
    expect(decide(throwing, request("issue_refund"))).toMatchObject({ effect: "deny", evaluationError: true });
    expect(decide(throwing, request("issue_refund")).reasons[0]).toContain("amount missing");
    const malformed = { identity: { id: "x" }, tool: { name: "lookup_order", args: {} }, context: {} } as unknown as PolicyRequest;
    expect(decide(throwing, malformed)).toMatchObject({ effect: "deny", evaluationError: true });
    const cyclic = createCedarPolicyEngine({
      policies: `@id("all") permit(principal, action, resource);`,
      entities: () => [
        { uid: { type: "Role", id: "a" }, parents: [{ type: "Role", id: "b" }] },
        { uid: { type: "Role", id: "b" }, parents: [{ type: "Role", id: "a" }] },
      ],
    });
    const d = decide(cyclic, request("lookup_order"));
    expect(d).toMatchObject({ effect: "deny", evaluationError: true });
    expect(d.reasons[0]).toContain("cycle");
  });

  it("a mapper or entities provider that returns a Promise denies, and its rejection is not left unhandled", async () => {
    const policies = `@id("all") permit(principal, action, resource);`;
    const later = <T>(value: T) => (() => Promise.resolve(value)) as never;
    const failing = (() => Promise.reject(new Error("rates service down"))) as never;
    const engines: [string, CedarPolicyEngineOptions][] = [
      ["the contextArgs mapper of issue_refund", { policies, contextArgs: { issue_refund: later({ amountCents: 5 }) } }],
      ["the contextArgs mapper of issue_refund", { policies, contextArgs: { issue_refund: failing } }],
      ["the resources mapper of issue_refund", { policies, resources: { issue_refund: later({ type: "Order", id: "1" }) } }],
      ["the entities provider", { policies, entities: later([]) }],
      ["the entities provider", { policies, entities: failing }],
    ];
    for (const [what, options] of engines) {
      const d = decide(createCedarPolicyEngine(options), request("issue_refund", { amountCents: 5 }));
      expect(d).toMatchObject({ effect: "deny", evaluationError: true });
      expect(d.reasons[0]).toContain(`${what} returned a Promise`);
    }
    // An unhandled rejection would fail this file (and end a process running with the default settings).
    await new Promise((resolve) => setImmediate(resolve));
  });

  it("refuses an async mapper or entities provider at construction, naming the option", () => {
    const policies = `@id("all") permit(principal, action, resource);`;
    const asyncFn = (async () => ({})) as never;
    expect(configError({ policies, contextArgs: { issue_refund: asyncFn } })).toMatchObject({ field: "contextArgs" });
    expect(configError({ policies, resources: { issue_refund: asyncFn } })).toMatchObject({ field: "resources" });
    expect(configError({ policies, entities: asyncFn }).field).toBe("entities");
    expect(configError({ policies, contextArgs: { issue_refund: asyncFn } }).message).toContain("synchronous");
  });

  it("an argument named __proto__ reaches the policies instead of vanishing", () => {
    const e = createCedarPolicyEngine({
      policies: `
        @id("all") permit(principal, action == Action::"apply_discount", resource);
        @id("no.proto") forbid(principal, action == Action::"apply_discount", resource) when { context.args has "__proto__" };`,
    });
    expect(decide(e, request("apply_discount", JSON.parse('{"__proto__": "x"}') as Record<string, unknown>))).toMatchObject({ effect: "deny", policyIds: ["no.proto"] });
    expect(decide(e, request("apply_discount", { code: "x" })).effect).toBe("allow");
  });

  it("decideFailClosed passes Cedar decisions through unchanged", async () => {
    const r = request("issue_refund", { amountCents: 7.5 });
    expect(await decideFailClosed(engine, r)).toEqual(decide(engine, r));
  });
});

describe("createCedarPolicyEngine version", () => {
  const policies = `@id("lookup") permit(principal, action == Action::"lookup_order", resource);`;

  it("is stable for the same content and changes with the policy text or the schema", () => {
    const a = createCedarPolicyEngine({ policies });
    const b = createCedarPolicyEngine({ policies });
    expect(a.version).toMatch(HEX64);
    expect(b.version).toBe(a.version);
    expect(decide(b, request("lookup_order"))).toEqual(decide(a, request("lookup_order")));
    expect(createCedarPolicyEngine({ policies: `${policies}\n` }).version).not.toBe(a.version);
    expect(createCedarPolicyEngine({ policies: policies.replace("lookup_order", "issue_refund") }).version).not.toBe(a.version);
    const withSchema = createCedarPolicyEngine({ policies, schema: SCHEMA });
    expect(withSchema.version).not.toBe(a.version);
    expect(createCedarPolicyEngine({ policies, schema: `${SCHEMA}\nentity Extra;` }).version).not.toBe(withSchema.version);
  });

  it("changes with a mapping function", () => {
    const a = createCedarPolicyEngine({ policies, resources: { lookup_order: () => ({ type: "Tool", id: "lookup_order" }) } });
    const b = createCedarPolicyEngine({ policies, resources: { lookup_order: () => ({ type: "Tool", id: "other" }) } });
    expect(a.version).not.toBe(b.version);
  });

  it("covers the declared config, which the mappers receive, and a declared version", () => {
    const refundPolicies = `@id("refund.small") permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents <= 10000 };`;
    const inCents = (args: Record<string, unknown>, _r: PolicyRequest, c: { centsPerUnit?: unknown }) => ({ amountCents: Number(args.amount) * Number(c.centsPerUnit) });
    const dollars = createCedarPolicyEngine({ policies: refundPolicies, config: { centsPerUnit: 100 }, contextArgs: { issue_refund: inCents } });
    const yen = createCedarPolicyEngine({ policies: refundPolicies, config: { centsPerUnit: 1 }, contextArgs: { issue_refund: inCents } });
    expect(dollars.version).not.toBe(yen.version);
    expect(decide(dollars, request("issue_refund", { amount: 500 })).effect).toBe("deny");
    expect(decide(yen, request("issue_refund", { amount: 500 })).effect).toBe("allow");
    expect(createCedarPolicyEngine({ policies: refundPolicies, config: { centsPerUnit: 100 }, contextArgs: { issue_refund: inCents } }).version).toBe(dollars.version);
    const a = createCedarPolicyEngine({ policies, version: "deploy-41" });
    expect(a.version).not.toBe(createCedarPolicyEngine({ policies, version: "deploy-42" }).version);
    expect(a.version).not.toBe(createCedarPolicyEngine({ policies }).version);
    expect(configError({ policies, config: { at: new Date(0) } }).message).toContain("config.at");
  });

  it("an engine that declares neither keeps the version it had before they existed", () => {
    // Pinned: upgrading eart must not change the version of a deployed policy set.
    expect(createCedarPolicyEngine({ policies }).version).toBe("32cf5dee452fafb7c1e35acca741c8333f2d6d46777ce9b9b6d08a99eb087289");
  });

  it("two engines with different policies decide independently", () => {
    const allow = createCedarPolicyEngine({ policies });
    const deny = createCedarPolicyEngine({ policies: `@id("no") forbid(principal, action, resource);` });
    expect(decide(allow, request("lookup_order")).effect).toBe("allow");
    expect(decide(deny, request("lookup_order")).effect).toBe("deny");
    expect(decide(allow, request("lookup_order")).effect).toBe("allow");
  });
});

/**
 * examples/refund/policy.ts in Cedar. The refund tool takes dollars (`amount`, possibly with
 * cents), so a contextArgs mapper converts them to integer cents; an amount that is not a dollar
 * figure with at most two decimals throws in the mapper, which denies (fail closed).
 */
const REFUND_CEDAR = `
@id("orders.lookup") @reason("Order lookups are allowed")
permit(principal, action == Action::"lookup_order", resource);

@id("refund.small") @reason("Refunds up to $100 are allowed")
permit(principal, action == Action::"issue_refund", resource)
when { context.args.amountCents <= 10000 };

@id("refund.supervisor") @requires_approval("supervisor") @reason("Refunds over $100 up to $5,000 need a supervisor")
permit(principal, action == Action::"issue_refund", resource)
when { context.args.amountCents > 10000 && context.args.amountCents <= 500000 };

@id("refund.limit") @reason("Refunds over $5,000 are not allowed")
forbid(principal, action == Action::"issue_refund", resource)
unless { context.args.amountCents <= 500000 };
`;

const REFUND_SCHEMA = `
entity Role in [Role];
entity Agent in [Role];
entity Tool;
type Human = { id: String, roles: Set<String> };
action lookup_order appliesTo { principal: Agent, resource: Tool, context: { args: { orderId: String }, sensitivity: Set<String>, onBehalfOf: Human } };
action issue_refund appliesTo {
  principal: Agent, resource: Tool,
  context: { args: { orderId: String, amountCents: Long, reason?: String }, sensitivity: Set<String>, onBehalfOf: Human }
};
`;

function dollarsToCents(amount: unknown): number {
  const dollars = Number(amount);
  const cents = Math.round(dollars * 100);
  if (!Number.isSafeInteger(cents) || Math.abs(dollars * 100 - cents) > 1e-6) {
    throw new Error(`amount ${String(amount)} is not a dollar amount with at most two decimals`);
  }
  return cents;
}

describe("the refund policy in Cedar decides like refundPolicy", () => {
  const issueRefundArgs = ({ amount, ...rest }: Record<string, unknown>) => ({ ...rest, amountCents: dollarsToCents(amount) });
  const engines = {
    "no schema": createCedarPolicyEngine({ policies: REFUND_CEDAR, contextArgs: { issue_refund: issueRefundArgs } }),
    schema: createCedarPolicyEngine({ policies: REFUND_CEDAR, schema: REFUND_SCHEMA, contextArgs: { issue_refund: issueRefundArgs } }),
  };
  const table: Array<{ tool: string; args: Record<string, unknown>; invalid?: boolean }> = [
    { tool: "lookup_order", args: { orderId: "1042" } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 0 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 1 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 60, reason: "damaged" } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 99.99 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 100 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 100.01 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 100.5 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 740 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 4999.99 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 5000 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 5000.01 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 9200 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: 1_000_000_000 } },
    { tool: "issue_refund", args: { orderId: "1042", amount: "abc" }, invalid: true },
    { tool: "issue_refund", args: { orderId: "1042" }, invalid: true },
    { tool: "delete_order", args: { orderId: "1042" } },
  ];

  for (const [name, cedarEngine] of Object.entries(engines)) {
    for (const row of table) {
      it(`${name}: ${row.tool} ${JSON.stringify(row.args)}`, () => {
        const r = request(row.tool, row.args);
        const expected = refundPolicy.decide(r) as PolicyDecision;
        const actual = decide(cedarEngine, r);
        expect(actual.effect).toBe(expected.effect);
        expect(actual.effect === "require_approval" ? actual.approverRoles : null).toEqual(
          expected.effect === "require_approval" ? expected.approverRoles : null,
        );
        if (row.invalid) {
          // refundPolicy denies through refund.limit (NaN is not <= 5000); Cedar never sees the amount.
          expect(actual).toMatchObject({ evaluationError: true });
        } else {
          expect(actual.policyIds).toEqual(expected.policyIds);
          // Default-deny reasons are worded by each engine; every other reason is the policy's own.
          if (expected.policyIds[0] !== DEFAULT_DENY_POLICY_ID) expect(actual.reasons).toEqual(expected.reasons);
        }
      });
    }
  }

  it("covers every effect of refundPolicy", () => {
    const effects = new Set(table.map((row) => decide(engines.schema, request(row.tool, row.args)).effect));
    expect([...effects].sort()).toEqual(["allow", "deny", "require_approval"]);
  });
});

/** The seed scenarios (examples/policies/seed-policy.ts) in Cedar, run through the shared conformance suite. */
const SEED_CEDAR = `
@id("orders.lookup") @reason("Order lookups are allowed")
permit(principal, action == Action::"lookup_order", resource);

@id("refund.small") @reason("Refunds up to $100 are allowed")
permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents <= 10000 };
@id("refund.supervisor") @requires_approval("supervisor") @reason("Refunds over $100 up to $5,000 need a supervisor")
permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents > 10000 && context.args.amountCents <= 500000 };
@id("refund.limit") @reason("Refunds over $5,000 are not allowed")
forbid(principal, action == Action::"issue_refund", resource) unless { context.args.amountCents <= 500000 };

@id("discount.small") @reason("Discounts up to 10% are allowed")
permit(principal, action == Action::"apply_discount", resource) when { context.args.percent <= 10 };
@id("discount.manager") @requires_approval("sales-manager") @reason("Discounts over 10% need a sales manager")
permit(principal, action == Action::"apply_discount", resource) when { context.args.percent > 10 && context.args.percent <= 30 };
@id("discount.limit") @reason("Discounts over 30% are not allowed")
forbid(principal, action == Action::"apply_discount", resource) unless { context.args.percent <= 30 };

@id("payment.prepare") @reason("Finance agents may prepare payments")
permit(principal in Role::"finance-agent", action == Action::"prepare_payment", resource);
@id("payment.finance") @requires_approval("finance") @reason("Payments always need finance")
permit(principal, action == Action::"execute_payment", resource);

@id("loan.recommend") @reason("Recommendations within $50,000 are allowed")
permit(principal, action == Action::"recommend_loan", resource) when { context.args.amountCents <= 5000000 };
@id("loan.underwriter") @escalate("Loans over $50,000 go to an underwriter")
permit(principal, action == Action::"recommend_loan", resource) unless { context.args.amountCents <= 5000000 };
@id("loan.approve.never") @reason("Final loan approval is never made by the agent")
forbid(principal, action == Action::"approve_loan", resource);

@id("procurement.recommend") @reason("Recommending a renegotiation is allowed")
permit(principal, action == Action::"recommend_renegotiation", resource);
@id("procurement.initiate") @requires_approval("procurement-manager") @reason("Initiating a renegotiation needs a procurement manager")
permit(principal, action == Action::"initiate_renegotiation", resource);

@id("email.external") @reason("External e-mail is allowed")
permit(principal, action == Action::"send_external_email", resource);
@id("email.after-payment-data") @reason("No external e-mail after reading payment data")
forbid(principal, action == Action::"send_external_email", resource) when { context.sensitivity.contains("payment_data") };
`;

const seedAction = (name: string, args: string) =>
  `action ${name} appliesTo { principal: Agent, resource: Tool, context: { args: { ${args} }, sensitivity: Set<String>, onBehalfOf: Human } };`;
const SEED_SCHEMA = [
  "entity Role in [Role]; entity Agent in [Role]; entity Tool;",
  "type Human = { id: String, roles: Set<String> };",
  seedAction("lookup_order", "orderId: String"),
  seedAction("issue_refund", "orderId: String, amountCents: Long"),
  seedAction("apply_discount", "quoteId: String, percent: Long"),
  seedAction("prepare_payment", "payee: String, amountCents: Long"),
  seedAction("execute_payment", "paymentId: String, amountCents: Long"),
  seedAction("recommend_loan", "applicationId: String, amountCents: Long"),
  seedAction("approve_loan", "applicationId: String, amountCents: Long"),
  seedAction("recommend_renegotiation", "supplierId: String, savingCents: Long"),
  seedAction("initiate_renegotiation", "supplierId: String"),
  seedAction("send_external_email", "to: String, body: String"),
].join("\n");

const seedCedar = createCedarPolicyEngine({ policies: SEED_CEDAR });
const seedCedarWithSchema = createCedarPolicyEngine({ policies: SEED_CEDAR, schema: SEED_SCHEMA });
policyEngineSpec("Cedar (seed policy, no schema)", () => seedCedar, { describe, it, expect });
policyEngineSpec("Cedar (seed policy, with schema)", () => seedCedarWithSchema, { describe, it, expect });

describe("createCedarPolicyEngine @quorum and @expires_in", () => {
  const approval = (annotations: string, id = "p") =>
    `@id("${id}") @requires_approval("finance") ${annotations} permit(principal, action == Action::"issue_refund", resource);`;
  const decideOne = (annotations: string) => decide(createCedarPolicyEngine({ policies: approval(annotations) }), request("issue_refund"));

  it("reads @quorum as the number of distinct approvers, set on the decision only when above 1", () => {
    expect(decideOne(`@quorum("2")`)).toMatchObject({ effect: "require_approval", approverRoles: ["finance"], quorum: 2 });
    expect(decideOne(`@quorum("12")`)).toMatchObject({ quorum: 12 });
    const one = decideOne(`@quorum("1")`);
    expect(one.effect).toBe("require_approval");
    expect(one).not.toHaveProperty("quorum");
    const none = decideOne("");
    expect(none).not.toHaveProperty("quorum");
    expect(none).not.toHaveProperty("expiresInMs");
  });

  it("reads @expires_in as an integer with ms, s, m, h or d, or plain milliseconds", () => {
    const cases: Array<[string, number]> = [
      ["250ms", 250],
      ["90s", 90_000],
      ["15m", 900_000],
      ["2h", 7_200_000],
      ["1d", 86_400_000],
      ["900000", 900_000],
      ["1", 1],
    ];
    for (const [value, ms] of cases) {
      const d = decideOne(`@expires_in("${value}")`);
      expect(d, value).toMatchObject({ effect: "require_approval", expiresInMs: ms });
      expect(PolicyDecisionSchema.safeParse(d).success).toBe(true);
    }
    expect(decideOne(`@quorum("3") @expires_in("1h")`)).toMatchObject({ quorum: 3, expiresInMs: 3_600_000 });
  });

  it("refuses malformed values, naming the policy", () => {
    for (const value of ["0", "-1", "1.5", "two", "", " 2", "2 ", "+2", "1e3", "9007199254740993"]) {
      const e = definitionError({ policies: approval(`@quorum("${value}")`, "refund.q") });
      expect(e.ruleId, value).toBe("refund.q");
      expect(e.message).toContain('Policy "refund.q": @quorum must be a positive integer');
    }
    expect(definitionError({ policies: approval("@quorum", "refund.q") }).message).toContain("@quorum must be a positive integer");
    for (const value of ["0", "0s", "0ms", "15M", "15min", "1.5h", "-5m", "15 m", " 15m", "m", "", "1w", "P1D", "9007199254740993", "999999999999999d"]) {
      const e = definitionError({ policies: approval(`@expires_in("${value}")`, "refund.e") });
      expect(e.ruleId, value).toBe("refund.e");
      expect(e.message).toContain('Policy "refund.e": @expires_in must be a positive duration');
    }
    expect(definitionError({ policies: approval("@expires_in", "refund.e") }).ruleId).toBe("refund.e");
  });

  it("refuses the annotations anywhere but a @requires_approval permit, naming the policy", () => {
    const placements = [
      `@id("f") @quorum("2") forbid(principal, action, resource);`,
      `@id("f") @expires_in("15m") forbid(principal, action, resource);`,
      `@id("f") @quorum("2") permit(principal, action, resource);`,
      `@id("f") @expires_in("15m") permit(principal, action, resource);`,
      `@id("f") @escalate("why") @quorum("2") permit(principal, action, resource);`,
      `@id("f") @escalate("why") @expires_in("15m") permit(principal, action, resource);`,
    ];
    for (const policies of placements) {
      const e = definitionError({ policies: [`@id("ok") permit(principal, action == Action::"lookup_order", resource);`, policies] });
      expect(e.ruleId, policies).toBe("f");
      expect(e.message).toMatch(/Policy "f": @(quorum|expires_in) applies only to a permit with @requires_approval/);
    }
    // A forbid carrying @requires_approval as well is refused for that first.
    expect(definitionError({ policies: `@id("g") @requires_approval("x") @quorum("2") forbid(principal, action, resource);` }).ruleId).toBe("g");
  });

  it("several deciding approval permits: the largest quorum and the shortest expiry", () => {
    const engine = createCedarPolicyEngine({
      policies: `
        @id("a") @requires_approval("supervisor") @quorum("2") @expires_in("1h")
        permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents > 10000 };
        @id("b") @requires_approval("finance") @quorum("3")
        permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents > 200000 };
        @id("c") @requires_approval("director") @expires_in("15m")
        permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents > 400000 };
        @id("d") @requires_approval("cfo")
        permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents > 450000 };`,
    });
    const at = (amountCents: number) => decide(engine, request("issue_refund", { amountCents }));
    expect(at(50_000)).toEqual({
      effect: "require_approval",
      reasons: ["policy a permits issue_refund with approval by supervisor"],
      policyIds: ["a"],
      version: engine.version,
      approverRoles: ["supervisor"],
      quorum: 2,
      expiresInMs: 3_600_000,
    });
    expect(at(300_000)).toMatchObject({ policyIds: ["a", "b"], approverRoles: ["supervisor", "finance"], quorum: 3, expiresInMs: 3_600_000 });
    expect(at(420_000)).toMatchObject({ policyIds: ["a", "b", "c"], quorum: 3, expiresInMs: 900_000 });
    const all = at(480_000);
    expect(all).toMatchObject({ policyIds: ["a", "b", "c", "d"], approverRoles: ["supervisor", "finance", "director", "cfo"], quorum: 3, expiresInMs: 900_000 });
    expect(PolicyDecisionSchema.safeParse(all).success).toBe(true);
    // A permit without the annotations alongside: quorum stays at the largest, and no expiry when none has one.
    const plain = createCedarPolicyEngine({
      policies: `
        @id("x") @requires_approval("supervisor") permit(principal, action, resource);
        @id("y") @requires_approval("finance") @quorum("1") permit(principal, action, resource);`,
    });
    const d = decide(plain, request("issue_refund"));
    expect(d).toEqual({
      effect: "require_approval",
      reasons: ["policy x permits issue_refund with approval by supervisor", "policy y permits issue_refund with approval by finance"],
      policyIds: ["x", "y"],
      version: plain.version,
      approverRoles: ["supervisor", "finance"],
    });
  });

  it("a decision other than require_approval carries neither", () => {
    const engine = createCedarPolicyEngine({
      policies: `
        @id("a") @requires_approval("supervisor") @quorum("2") @expires_in("1h") permit(principal, action, resource);
        @id("allow") permit(principal, action == Action::"lookup_order", resource);
        @id("esc") @escalate("why") permit(principal, action == Action::"send_external_email", resource);
        @id("no") forbid(principal, action == Action::"delete_order", resource);`,
    });
    expect(decide(engine, request("lookup_order"))).toEqual({ effect: "allow", reasons: ["policy allow permits lookup_order"], policyIds: ["allow"], version: engine.version });
    expect(decide(engine, request("send_external_email"))).toEqual({ effect: "escalate", reasons: ["why"], policyIds: ["esc"], version: engine.version });
    expect(decide(engine, request("delete_order"))).toEqual({ effect: "deny", reasons: ["policy no forbids delete_order"], policyIds: ["no"], version: engine.version });
  });

  it("the annotations are part of the version", () => {
    const version = (annotations: string) => createCedarPolicyEngine({ policies: approval(annotations) }).version;
    const versions = [version(""), version(`@quorum("2")`), version(`@quorum("3")`), version(`@expires_in("15m")`), version(`@expires_in("16m")`)];
    expect(new Set(versions).size).toBe(versions.length);
    expect(version(`@quorum("2")`)).toBe(versions[1]);
  });

  describe("decides like definePolicy with quorum and expiresIn", () => {
    const cedar = createCedarPolicyEngine({
      schema: SCHEMA,
      policies: `
        @id("refund.small") permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents <= 10000 };
        @id("refund.supervisor") @requires_approval("supervisor") @expires_in("1d") @reason("Over $100 needs a supervisor")
        permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents > 10000 && context.args.amountCents <= 500000 };
        @id("refund.finance") @requires_approval("finance, supervisor") @quorum("2") @expires_in("4h") @reason("Over $2,000 needs two approvers")
        permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents > 200000 && context.args.amountCents <= 500000 };
        @id("refund.board") @requires_approval("director") @quorum("3") @expires_in("90m") @reason("Over $4,000 needs three directors")
        permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents > 400000 && context.args.amountCents <= 500000 };
        @id("refund.limit") @reason("Over $5,000 is not allowed")
        forbid(principal, action == Action::"issue_refund", resource) unless { context.args.amountCents <= 500000 };
        @id("lookup") @requires_approval("supervisor") @quorum("1") @expires_in("30s") @reason("Lookups need a supervisor")
        permit(principal, action == Action::"lookup_order", resource);`,
    });
    const cents = (r: PolicyRequest) => Number(r.tool.args.amountCents);
    const typed = definePolicy({
      name: "parity",
      rules: [
        { id: "refund.small", tools: ["issue_refund"], when: (r) => cents(r) <= 10000, effect: "allow", reason: "policy refund.small permits issue_refund" },
        {
          id: "refund.supervisor",
          tools: ["issue_refund"],
          when: (r) => cents(r) > 10000 && cents(r) <= 500000,
          effect: "require_approval",
          approverRoles: ["supervisor"],
          expiresIn: 86_400_000,
          reason: "Over $100 needs a supervisor",
        },
        {
          id: "refund.finance",
          tools: ["issue_refund"],
          when: (r) => cents(r) > 200000 && cents(r) <= 500000,
          effect: "require_approval",
          approverRoles: ["finance", "supervisor"],
          quorum: 2,
          expiresIn: 4 * 3_600_000,
          reason: "Over $2,000 needs two approvers",
        },
        {
          id: "refund.board",
          tools: ["issue_refund"],
          when: (r) => cents(r) > 400000 && cents(r) <= 500000,
          effect: "require_approval",
          approverRoles: ["director"],
          quorum: 3,
          expiresIn: 90 * 60_000,
          reason: "Over $4,000 needs three directors",
        },
        { id: "refund.limit", tools: ["issue_refund"], when: (r) => !(cents(r) <= 500000), effect: "deny", reason: "Over $5,000 is not allowed" },
        {
          id: "lookup",
          tools: ["lookup_order"],
          effect: "require_approval",
          approverRoles: ["supervisor"],
          quorum: 1,
          expiresIn: 30_000,
          reason: "Lookups need a supervisor",
        },
      ],
    });
    const rows: Array<[string, Record<string, unknown>]> = [
      ["lookup_order", { orderId: "1" }],
      ...[0, 10000, 10001, 74000, 200000, 200001, 300000, 400001, 500000, 500001, 920000].map(
        (amountCents): [string, Record<string, unknown>] => ["issue_refund", { orderId: "1", amountCents }],
      ),
    ];
    const comparable = (d: PolicyDecision) => ({
      effect: d.effect,
      policyIds: d.policyIds,
      reasons: d.reasons,
      approverRoles: d.effect === "require_approval" ? d.approverRoles : undefined,
      quorum: d.effect === "require_approval" ? d.quorum : undefined,
      expiresInMs: d.effect === "require_approval" ? d.expiresInMs : undefined,
    });
    for (const [tool, args] of rows) {
      it(`${tool} ${JSON.stringify(args)}`, () => {
        const r = request(tool, args);
        const expected = typed.decide(r) as PolicyDecision;
        const actual = decide(cedar, r);
        expect(comparable(actual)).toEqual(comparable(expected));
        expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
      });
    }

    it("covers allow, deny, and require_approval with and without quorum", () => {
      const decisions = rows.map(([tool, args]) => decide(cedar, request(tool, args)));
      expect(new Set(decisions.map((d) => d.effect))).toEqual(new Set(["allow", "deny", "require_approval"]));
      const approvals = decisions.filter((d) => d.effect === "require_approval");
      expect(new Set(approvals.map((d) => d.quorum))).toEqual(new Set([undefined, 2, 3]));
      expect(new Set(approvals.map((d) => d.expiresInMs))).toEqual(new Set([30_000, 86_400_000, 4 * 3_600_000, 90 * 60_000]));
    });
  });
});
