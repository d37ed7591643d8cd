import { definePolicy, type PolicyRequest } from "eart";

/**
 * The seed scenarios' policy as typed rules. Money is in integer minor units (`amountCents`), the
 * same representation the Cedar version of this policy uses. Every range has a lower bound, and
 * what lies below it is denied: refunds and loans start above zero (`refund.positive`,
 * `loan.positive`), discounts at 0% (`discount.non-negative`; 0% is no discount). Without one, a
 * refund of -$500 (a charge), a -20% discount (a surcharge) or a -1 cent loan would be the "small"
 * tier, allowed by the policy alone. A value that is not a number matches no range and is denied
 * by the limit rules (or by default).
 */
const cents = (r: PolicyRequest) => Number(r.tool.args.amountCents);
const percent = (r: PolicyRequest) => Number(r.tool.args.percent);

export const seedPolicy = definePolicy({
  name: "seed",
  rules: [
    { id: "orders.lookup", tools: ["lookup_order"], effect: "allow", reason: "Order lookups are allowed" },
    // Refunds: up to $100 allowed, up to $5,000 with a supervisor, above that denied; none of zero or less.
    { id: "refund.small", tools: ["issue_refund"], when: (r) => cents(r) > 0 && cents(r) <= 10_000, effect: "allow", reason: "Refunds up to $100 are allowed" },
    {
      id: "refund.supervisor",
      tools: ["issue_refund"],
      when: (r) => cents(r) > 10_000 && cents(r) <= 500_000,
      effect: "require_approval",
      approverRoles: ["supervisor"],
      reason: "Refunds over $100 up to $5,000 need a supervisor",
    },
    { id: "refund.limit", tools: ["issue_refund"], when: (r) => !(cents(r) <= 500_000), effect: "deny", reason: "Refunds over $5,000 are not allowed" },
    { id: "refund.positive", tools: ["issue_refund"], when: (r) => cents(r) <= 0, effect: "deny", reason: "A refund must be positive" },
    // Discounts: up to 10% allowed (0% is no discount, and allowed), above that a sales manager, above 30% never; none below zero.
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
    // Payments: the agent prepares; executing always needs finance.
    {
      id: "payment.prepare",
      tools: ["prepare_payment"],
      when: (r) => r.identity.roles.includes("finance-agent"),
      effect: "allow",
      reason: "Finance agents may prepare payments",
    },
    { id: "payment.finance", tools: ["execute_payment"], effect: "require_approval", approverRoles: ["finance"], reason: "Payments always need finance" },
    // Loans: the agent may recommend within the threshold, escalates above it, never approves; no amount of zero or less.
    { id: "loan.recommend", tools: ["recommend_loan"], when: (r) => cents(r) > 0 && cents(r) <= 5_000_000, effect: "allow", reason: "Recommendations within $50,000 are allowed" },
    { id: "loan.underwriter", tools: ["recommend_loan"], when: (r) => !(cents(r) <= 5_000_000), effect: "escalate", reason: "Loans over $50,000 go to an underwriter" },
    { id: "loan.positive", tools: ["recommend_loan"], when: (r) => cents(r) <= 0, effect: "deny", reason: "A loan amount must be positive" },
    { id: "loan.approve.never", tools: ["approve_loan"], effect: "deny", reason: "Final loan approval is never made by the agent" },
    // Procurement: recommend-only; initiating a renegotiation needs a procurement manager.
    { id: "procurement.recommend", tools: ["recommend_renegotiation"], effect: "allow", reason: "Recommending a renegotiation is allowed" },
    {
      id: "procurement.initiate",
      tools: ["initiate_renegotiation"],
      effect: "require_approval",
      approverRoles: ["procurement-manager"],
      reason: "Initiating a renegotiation needs a procurement manager",
    },
    // E-mail: allowed, unless the thread has seen payment data.
    { id: "email.external", tools: ["send_external_email"], effect: "allow", reason: "External e-mail is allowed" },
    {
      id: "email.after-payment-data",
      tools: ["send_external_email"],
      when: (r) => r.context.sensitivity.includes("payment_data"),
      effect: "deny",
      reason: "No external e-mail after reading payment data",
    },
  ],
});
