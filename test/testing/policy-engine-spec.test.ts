import { describe, expect, it } from "vitest";
import { definePolicy } from "eart";
import { policyEngineSpec, SEED_POLICY_CASES } from "eart/testing";
import { seedPolicy } from "../../examples/policies/seed-policy.js";

policyEngineSpec("typed rules (definePolicy)", () => seedPolicy, { describe, it, expect });

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
