import { definePolicy, type PolicyRequest } from "eart";

/** The loan amount of a call, in integer cents (as in `examples/policies/seed-policy.ts`). */
const cents = (r: PolicyRequest) => Number(r.tool.args.amountCents);

/** The most the agent may recommend on its own: $50,000. */
export const RECOMMENDATION_LIMIT_CENTS = 5_000_000;

/**
 * The loan rules of the seed policy: the agent may recommend up to $50,000, anything above goes to
 * an underwriter (`escalate`), a zero or negative amount is denied, and final approval is never
 * the agent's (`deny`, whoever it acts for). The identities keep `approve_loan` out of the agent's
 * tools as well: two independent locks. The amount is the call's; `recommend_loan` refuses one
 * that is not the application's own, so what runs is what was decided.
 */
export const loanPolicy = definePolicy({
  name: "loans",
  rules: [
    {
      id: "loan.recommend",
      tools: ["recommend_loan"],
      when: (r) => cents(r) > 0 && cents(r) <= 5_000_000,
      effect: "allow",
      reason: "Recommendations within $50,000 are allowed",
    },
    {
      id: "loan.underwriter",
      tools: ["recommend_loan"],
      when: (r) => !(cents(r) <= 5_000_000),
      effect: "escalate",
      reason: "Loans over $50,000 go to an underwriter",
    },
    { id: "loan.positive", tools: ["recommend_loan"], when: (r) => cents(r) <= 0, effect: "deny", reason: "A loan amount must be positive" },
    { id: "loan.approve.never", tools: ["approve_loan"], effect: "deny", reason: "Final loan approval is never made by the agent" },
  ],
});
