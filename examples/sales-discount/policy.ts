import { definePolicy, type PolicyRequest } from "eart";

const percent = (r: PolicyRequest) => Number(r.tool.args.percent);

/**
 * The discount rules of the seed policy (`examples/policies/seed-policy.ts`, same ids): up to 10%
 * the agent applies alone, above 10% up to 30% a sales manager approves, above 30% never. A
 * percentage that is not a number matches only the limit rule: denied. Everything else is denied
 * by default.
 */
export const salesDiscountPolicy = definePolicy({
  name: "sales-discounts",
  rules: [
    { id: "discount.small", tools: ["apply_discount"], when: (r) => percent(r) <= 10, effect: "allow", reason: "Discounts up to 10% are allowed" },
    {
      id: "discount.manager",
      tools: ["apply_discount"],
      when: (r) => percent(r) > 10 && percent(r) <= 30,
      effect: "require_approval",
      approverRoles: ["sales-manager"],
      reason: "Discounts over 10% need a sales manager",
    },
    { id: "discount.limit", tools: ["apply_discount"], when: (r) => !(percent(r) <= 30), effect: "deny", reason: "Discounts over 30% are not allowed" },
  ],
});
