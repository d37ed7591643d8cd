import { definePolicy, type PolicyRequest } from "eart";
import { quoteOf } from "./data.js";

const percent = (r: PolicyRequest) => Number(r.tool.args.percent);

/**
 * The discount rules of the seed policy (`examples/policies/seed-policy.ts`, same ids): up to 10%
 * the agent applies alone, above 10% up to 30% a sales manager approves, above 30% never, below
 * zero never (a surcharge). A percentage that is not a number matches only the limit rule: denied.
 * Whoever asks (a rep, or a manager who also sells) has the agent discount only their own quotes:
 * so the requester is the quote's owner, and eart's refusal of self-approval keeps the owner from
 * approving the discount (a manager's own quote waits for another manager). Everything else is
 * denied by default.
 */
export const salesDiscountPolicy = definePolicy({
  name: "sales-discounts",
  rules: [
    {
      id: "discount.own-quote",
      tools: ["apply_discount"],
      // The quote's owner, from the CRM (data, not policy: a reassigned quote changes no version);
      // the agent acts for the thread's human. An unknown quote has no owner: denied too.
      when: (r) => quoteOf(String(r.tool.args.quoteId))?.owner !== r.identity.onBehalfOf.id,
      effect: "deny",
      reason: "Only a quote's owner may have it discounted: this quote is not yours",
    },
    { id: "discount.small", tools: ["apply_discount"], when: (r) => percent(r) >= 0 && percent(r) <= 10, effect: "allow", reason: "Discounts up to 10% are allowed" },
    {
      id: "discount.manager",
      tools: ["apply_discount"],
      when: (r) => percent(r) > 10 && percent(r) <= 30,
      effect: "require_approval",
      approverRoles: ["sales-manager"],
      reason: "Discounts over 10% need a sales manager",
    },
    { id: "discount.limit", tools: ["apply_discount"], when: (r) => !(percent(r) <= 30), effect: "deny", reason: "Discounts over 30% are not allowed" },
    { id: "discount.non-negative", tools: ["apply_discount"], when: (r) => percent(r) < 0, effect: "deny", reason: "A discount cannot be negative" },
  ],
});
