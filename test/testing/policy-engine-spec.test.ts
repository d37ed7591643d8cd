import { describe, expect, it } from "vitest";
import { definePolicy } from "eart";
import { policyEngineSpec, SEED_POLICY_CASES } from "eart/testing";
import { seedPolicy } from "../../examples/policies/seed-policy.js";

policyEngineSpec("typed rules (definePolicy)", () => seedPolicy, { describe, it, expect });

/** Payments: one finance approver up to a limit (in `config`, so in the version), above it two within an hour, who may only approve or reject. */
const payments = (dualAboveCents: number) =>
  definePolicy({
    name: "payments",
    config: { dualAboveCents },
    rules: [
      { id: "payment.single", tools: ["execute_payment"], when: (r, c) => Number(r.tool.args.amountCents) <= Number(c.dualAboveCents), effect: "require_approval", approverRoles: ["finance"], reason: "A payment needs finance" },
      {
        id: "payment.dual",
        tools: ["execute_payment"],
        when: (r, c) => Number(r.tool.args.amountCents) > Number(c.dualAboveCents),
        effect: "require_approval",
        approverRoles: ["finance"],
        quorum: 2,
        expiresIn: 3_600_000,
        allowedDecisions: ["approve", "reject"],
        reason: "A large payment needs two finance approvers, who may not edit it",
      },
    ],
  });
const finance = { id: "finance-agent", roles: ["finance-agent"] };
const payment = (amountCents: number) => ({ agent: finance, tool: "execute_payment", args: { paymentId: "P-1", amountCents } });

policyEngineSpec("typed rules (definePolicy), approval terms and an edit", () => payments(1_000_000), { describe, it, expect }, {
  cases: [
    { name: "a payment under the limit", ...payment(100_000), expect: { effect: "require_approval", policyIds: ["payment.single"], approverRoles: ["finance"], quorum: 1, expiresInMs: null, allowedDecisions: ["approve", "edit", "reject", "respond"] } },
    { name: "a payment over the limit", ...payment(5_000_000), expect: { effect: "require_approval", policyIds: ["payment.dual"], approverRoles: ["finance"], quorum: 2, expiresInMs: 3_600_000, allowedDecisions: ["approve", "reject"] } },
    { name: "a tool no rule names", agent: finance, tool: "wire_money", args: { amountCents: 1 }, expect: { effect: "deny", policyIds: ["eart.default-deny"] } },
  ],
  // The limit moved: the $50,000 payment needs one approver now.
  changedRules: () => payments(10_000_000),
});

describe("the seed table", () => {
  it("has at least 40 cases covering every scenario", () => {
    expect(SEED_POLICY_CASES.length).toBeGreaterThanOrEqual(40);
    const tools = new Set(SEED_POLICY_CASES.map((c) => c.tool));
    for (const t of ["issue_refund", "apply_discount", "execute_payment", "approve_loan", "recommend_loan", "initiate_renegotiation", "send_external_email"]) {
      expect(tools.has(t)).toBe(true);
    }
    const effects = new Set(SEED_POLICY_CASES.map((c) => c.expect.effect));
    expect([...effects].sort()).toEqual(["allow", "deny", "escalate", "require_approval"]);
  });

  it("catches an engine that decides differently", async () => {
    // A lenient variant of the policy: the spec's table must disagree with it somewhere.
    const lenient = definePolicy({ rules: [{ id: "anything", effect: "allow" }] });
    const failures: string[] = [];
    const recorder = {
      describe: (_: string, body: () => void) => body(),
      it: (name: string, body: () => void | Promise<void>) => {
        pending.push(Promise.resolve().then(body).catch(() => failures.push(name)));
      },
      expect,
    };
    const pending: Promise<unknown>[] = [];
    policyEngineSpec("lenient", () => lenient, recorder);
    await Promise.all(pending);
    expect(failures.length).toBeGreaterThan(20);
  });
});
