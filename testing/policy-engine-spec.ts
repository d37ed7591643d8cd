import { type AgentIdentity } from "../src/identity/registry.js";
import { PolicyDecisionSchema, type PolicyDecision, type PolicyEffect, type PolicyEngine, type PolicyRequest } from "../src/policy/engine.js";

/** The answers an approver may give a call (`allowedDecisions` of a `require_approval` decision). */
type ApprovalDecisionKind = "approve" | "edit" | "reject" | "respond";
const EVERY_DECISION: readonly ApprovalDecisionKind[] = ["approve", "edit", "reject", "respond"];

/**
 * One row of the conformance table: a request and the decision every engine must give. What
 * `expect` leaves out is not checked. The approval terms of a `require_approval` decision are
 * compared as the runtime reads them: `quorum` (distinct approvers) 1 when the decision has none,
 * `expiresInMs` `null` for a request that never expires, `allowedDecisions` every kind when the
 * decision names none.
 */
export interface PolicyEngineCase {
  name: string;
  agent: { id: string; roles: string[] };
  user?: { id: string; roles: string[] };
  tool: string;
  args: Record<string, unknown>;
  sensitivity?: string[];
  expect: {
    effect: PolicyEffect;
    policyIds?: string[];
    approverRoles?: string[];
    quorum?: number;
    expiresInMs?: number | null;
    allowedDecisions?: ApprovalDecisionKind[];
  };
}

/** What a policy engine's test tells the spec about it (or, as before, only its table). */
export interface PolicyEngineSpecOptions {
  /** The table every engine must decide as it says (default {@link SEED_POLICY_CASES}). */
  cases?: readonly PolicyEngineCase[];
  /**
   * The same kind of engine loaded with edited rules (a limit moved, a rule removed): it must
   * decide at least one row of `cases` otherwise. The suite checks that its version differs, since
   * an approval given under one version is applied as it stands only under that same version.
   * Without it that case is not run.
   */
  changedRules?: () => PolicyEngine | Promise<PolicyEngine>;
}

const support = { id: "support-agent", roles: ["support"] };
const sales = { id: "sales-agent", roles: ["sales"] };
const finance = { id: "finance-agent", roles: ["finance-agent"] };
const loans = { id: "loan-agent", roles: ["lending"] };
const procurement = { id: "procurement-agent", roles: ["procurement"] };

const refund = (amountCents: number, ids: string[], effect: PolicyEffect, approverRoles?: string[]): PolicyEngineCase => ({
  name: `refund of ${amountCents} cents`,
  agent: support,
  tool: "issue_refund",
  args: { orderId: "1042", amountCents },
  expect: { effect, policyIds: ids, ...(approverRoles ? { approverRoles } : {}) },
});
const discount = (percent: number, ids: string[], effect: PolicyEffect, approverRoles?: string[]): PolicyEngineCase => ({
  name: `discount of ${percent}%`,
  agent: sales,
  tool: "apply_discount",
  args: { quoteId: "Q-7", percent },
  expect: { effect, policyIds: ids, ...(approverRoles ? { approverRoles } : {}) },
});

/**
 * The seed scenarios as a table: refund tiers, discount over threshold needs a manager, payments
 * always need finance, loan approval never by the agent, procurement renegotiation
 * recommend-only, external e-mail after payment data. Money is in integer cents.
 */
export const SEED_POLICY_CASES: readonly PolicyEngineCase[] = [
  { name: "order lookup", agent: support, tool: "lookup_order", args: { orderId: "1042" }, expect: { effect: "allow", policyIds: ["orders.lookup"] } },
  refund(1, ["refund.small"], "allow"),
  refund(6_000, ["refund.small"], "allow"),
  refund(9_999, ["refund.small"], "allow"),
  refund(10_000, ["refund.small"], "allow"),
  refund(10_001, ["refund.supervisor"], "require_approval", ["supervisor"]),
  refund(74_000, ["refund.supervisor"], "require_approval", ["supervisor"]),
  refund(499_999, ["refund.supervisor"], "require_approval", ["supervisor"]),
  refund(500_000, ["refund.supervisor"], "require_approval", ["supervisor"]),
  refund(500_001, ["refund.limit"], "deny"),
  refund(920_000, ["refund.limit"], "deny"),
  refund(100_000_000, ["refund.limit"], "deny"),
  discount(0, ["discount.small"], "allow"),
  discount(5, ["discount.small"], "allow"),
  discount(10, ["discount.small"], "allow"),
  discount(11, ["discount.manager"], "require_approval", ["sales-manager"]),
  discount(25, ["discount.manager"], "require_approval", ["sales-manager"]),
  discount(30, ["discount.manager"], "require_approval", ["sales-manager"]),
  discount(31, ["discount.limit"], "deny"),
  discount(90, ["discount.limit"], "deny"),
  { name: "a finance agent prepares a payment", agent: finance, tool: "prepare_payment", args: { payee: "ACME", amountCents: 120_000 }, expect: { effect: "allow", policyIds: ["payment.prepare"] } },
  { name: "a support agent may not prepare a payment", agent: support, tool: "prepare_payment", args: { payee: "ACME", amountCents: 120_000 }, expect: { effect: "deny", policyIds: ["eart.default-deny"] } },
  ...[1, 100_000, 5_000_000, 900_000_000].map((amountCents) => ({
    name: `executing a payment of ${amountCents} cents`,
    agent: finance,
    tool: "execute_payment",
    args: { paymentId: "P-1", amountCents },
    expect: { effect: "require_approval" as const, policyIds: ["payment.finance"], approverRoles: ["finance"] },
  })),
  ...[100_000, 5_000_000].map((amountCents) => ({
    name: `recommending a loan of ${amountCents} cents`,
    agent: loans,
    tool: "recommend_loan",
    args: { applicationId: "L-9", amountCents },
    expect: { effect: "allow" as const, policyIds: ["loan.recommend"] },
  })),
  ...[5_000_001, 25_000_000].map((amountCents) => ({
    name: `recommending a loan of ${amountCents} cents`,
    agent: loans,
    tool: "recommend_loan",
    args: { applicationId: "L-9", amountCents },
    expect: { effect: "escalate" as const, policyIds: ["loan.underwriter"] },
  })),
  ...[1, 100_000, 25_000_000].map((amountCents) => ({
    name: `approving a loan of ${amountCents} cents`,
    agent: loans,
    tool: "approve_loan",
    args: { applicationId: "L-9", amountCents },
    expect: { effect: "deny" as const, policyIds: ["loan.approve.never"] },
  })),
  { name: "recommend a renegotiation", agent: procurement, tool: "recommend_renegotiation", args: { supplierId: "S-3", savingCents: 1_200_000 }, expect: { effect: "allow", policyIds: ["procurement.recommend"] } },
  { name: "initiate a renegotiation", agent: procurement, tool: "initiate_renegotiation", args: { supplierId: "S-3" }, expect: { effect: "require_approval", policyIds: ["procurement.initiate"], approverRoles: ["procurement-manager"] } },
  { name: "external e-mail on a clean thread", agent: support, tool: "send_external_email", args: { to: "a@example.com", body: "hi" }, expect: { effect: "allow", policyIds: ["email.external"] } },
  { name: "external e-mail on a thread labelled internal", agent: support, tool: "send_external_email", args: { to: "a@example.com", body: "hi" }, sensitivity: ["internal"], expect: { effect: "allow", policyIds: ["email.external"] } },
  { name: "external e-mail after payment data", agent: support, tool: "send_external_email", args: { to: "a@example.com", body: "hi" }, sensitivity: ["payment_data"], expect: { effect: "deny", policyIds: ["email.after-payment-data"] } },
  { name: "external e-mail after payment and personal data", agent: support, tool: "send_external_email", args: { to: "a@example.com", body: "hi" }, sensitivity: ["personal", "payment_data"], expect: { effect: "deny", policyIds: ["email.after-payment-data"] } },
  { name: "a tool no policy names", agent: support, tool: "delete_customer", args: { customerId: "C-1" }, expect: { effect: "deny", policyIds: ["eart.default-deny"] } },
  { name: "another unnamed tool", agent: finance, tool: "wire_money", args: { amountCents: 1 }, expect: { effect: "deny", policyIds: ["eart.default-deny"] } },
  { name: "a loan agent issuing a refund follows the refund rules", agent: loans, tool: "issue_refund", args: { orderId: "1", amountCents: 500 }, expect: { effect: "allow", policyIds: ["refund.small"] } },
];

/** Builds the request of a table row. */
export function requestOf(c: PolicyEngineCase): PolicyRequest {
  const user = c.user ?? { id: "cara", roles: ["customer"] };
  const identity: AgentIdentity = {
    schemaVersion: 1,
    id: c.agent.id,
    roles: c.agent.roles,
    tools: [c.tool],
    dataScopes: [],
    onBehalfOf: user,
    source: "configurable.user_id",
  };
  return { identity, tool: { name: c.tool, args: c.args }, context: { items: [], sensitivity: c.sensitivity ?? [] }, threadId: "spec" };
}

/** The test functions the spec needs; pass vitest's (or jest's). */
export interface SpecRunner {
  describe: (name: string, body: () => void) => void;
  it: (name: string, body: () => void | Promise<void>) => void;
  expect: (value: unknown) => {
    toBe(expected: unknown): void;
    toEqual(expected: unknown): void;
    toMatch(expected: RegExp): void;
    toBeGreaterThan(expected: number): void;
  };
}

/** A decision as the table and the runtime read it: effect, policy ids, and the approval terms in force. */
function summaryOf(d: PolicyDecision) {
  return {
    effect: d.effect,
    policyIds: [...d.policyIds].sort(),
    ...(d.effect === "require_approval"
      ? {
          approverRoles: [...d.approverRoles].sort(),
          quorum: d.quorum ?? 1,
          expiresInMs: d.expiresInMs ?? null,
          allowedDecisions: [...(d.allowedDecisions ?? EVERY_DECISION)].sort(),
        }
      : {}),
  };
}

/**
 * The conformance suite every {@link PolicyEngine} runs: the contract (well-formed decisions,
 * version, determinism, default deny) and the seed table (or the table given), so two engines
 * loaded with the same policy decide the same, approval terms (quorum, expiry, allowed answers)
 * included where the table states them; given `changedRules`, that edited rules change the version.
 * The fourth argument is the table, or {@link PolicyEngineSpecOptions}.
 * @example
 * ```ts
 * import { describe, it, expect } from "vitest";
 * policyEngineSpec("typed rules", () => seedPolicy, { describe, it, expect });
 * policyEngineSpec("my rules", () => definePolicy(mine), { describe, it, expect }, { cases: MY_CASES, changedRules: () => definePolicy(edited) });
 * ```
 */
export function policyEngineSpec(
  name: string,
  makeEngine: () => PolicyEngine | Promise<PolicyEngine>,
  { describe, it, expect }: SpecRunner,
  casesOrOptions: readonly PolicyEngineCase[] | PolicyEngineSpecOptions = SEED_POLICY_CASES,
): void {
  const options: PolicyEngineSpecOptions = Array.isArray(casesOrOptions) ? { cases: casesOrOptions } : (casesOrOptions as PolicyEngineSpecOptions);
  const { cases = SEED_POLICY_CASES, changedRules } = options;
  describe(`policyEngineSpec: ${name}`, () => {
    it("has a content version", async () => {
      const engine = await makeEngine();
      expect(engine.version).toMatch(/^[0-9a-f]{64}$/);
      // The same rules, the same version: in another process, or made again after a restart.
      expect((await makeEngine()).version).toBe(engine.version);
    });

    if (changedRules) {
      // guards/policy-gate.ts applies an approval as it stands only when the call's recorded
      // version is the engine's; the tool node decides a call again before it runs when they
      // differ. A version that stays the same across edited rules lets a call asked under the old
      // rules run under the new ones without being decided again.
      it("an engine with edited rules (changedRules) that decides a row otherwise has another version, and its decisions carry it", async () => {
        const [engine, edited] = [await makeEngine(), await changedRules()];
        const changed: string[] = [];
        for (const c of cases) {
          const [before, after] = [await engine.decide(requestOf(c)), await edited.decide(requestOf(c))];
          expect(after.version).toBe(edited.version);
          if (JSON.stringify(summaryOf(before)) !== JSON.stringify(summaryOf(after))) changed.push(c.name);
        }
        // Else changedRules is not an edit this table can see: give one that decides a row otherwise.
        expect(changed.length).toBeGreaterThan(0);
        expect(edited.version).toMatch(/^[0-9a-f]{64}$/);
        expect(`${changed[0]}: ${edited.version === engine.version ? "the same version" : "another version"}`).toBe(`${changed[0]}: another version`);
      });
    }

    it("gives well-formed decisions that carry the engine's version, the same each time", async () => {
      const engine = await makeEngine();
      for (const c of cases.slice(0, 5)) {
        const first = await engine.decide(requestOf(c));
        expect(PolicyDecisionSchema.safeParse(first).success).toBe(true);
        expect(first.version).toBe(engine.version);
        expect(first.reasons.length).toBeGreaterThan(0);
        expect(await engine.decide(requestOf(c))).toEqual(first);
      }
    });

    it("one engine decides the whole table, forwards and backwards, as a fresh engine does each case (no state carried from call to call)", async () => {
      // The gate keeps one engine for every call of the process: a cache keyed on less than the
      // whole request (the tool, the user, not the arguments) would hand one call another's decision.
      const engine = await makeEngine();
      const effects = async (order: readonly PolicyEngineCase[]) => {
        const out = new Map<PolicyEngineCase, string>();
        for (const c of order) out.set(c, (await engine.decide(requestOf(c))).effect);
        return out;
      };
      const forwards = await effects(cases);
      const backwards = await effects([...cases].reverse());
      for (const c of cases) {
        expect(`${c.name}: ${forwards.get(c)}`).toBe(`${c.name}: ${c.expect.effect}`);
        expect(`${c.name}: ${backwards.get(c)}`).toBe(`${c.name}: ${c.expect.effect}`);
      }
    });

    for (const c of cases) {
      it(`${c.tool}: ${c.name} → ${c.expect.effect}`, async () => {
        const engine = await makeEngine();
        const decision: PolicyDecision = await engine.decide(requestOf(c));
        expect(decision.effect).toBe(c.expect.effect);
        if (c.expect.policyIds) expect([...decision.policyIds].sort()).toEqual([...c.expect.policyIds].sort());
        if (c.expect.approverRoles) {
          expect(decision.effect === "require_approval" ? [...decision.approverRoles].sort() : []).toEqual([...c.expect.approverRoles].sort());
        }
        // The terms the gate enforces: distinct approvers counted, the request's expiry, the answers the approver may give.
        const terms = summaryOf(decision);
        if (c.expect.quorum !== undefined) expect(`quorum ${terms.quorum}`).toBe(`quorum ${c.expect.quorum}`);
        if (c.expect.expiresInMs !== undefined) expect(`expiresInMs ${terms.expiresInMs}`).toBe(`expiresInMs ${c.expect.expiresInMs}`);
        if (c.expect.allowedDecisions) expect(terms.allowedDecisions).toEqual([...c.expect.allowedDecisions].sort());
      });
    }
  });
}
