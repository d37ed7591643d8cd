import { definePolicy } from "eart";

/**
 * The payment rules of the seed policy (`examples/policies/seed-policy.ts`, same ids): a finance
 * agent prepares payments; executing one always needs someone in finance, whatever the amount
 * (there is no allow rule for `execute_payment`, so nothing can release money without a human);
 * external e-mail is allowed until the thread has seen payment data. Everything else is denied.
 */
export const financePolicy = definePolicy({
  name: "finance-payments",
  rules: [
    {
      id: "payment.prepare",
      tools: ["prepare_payment"],
      when: (r) => r.identity.roles.includes("finance-agent"),
      effect: "allow",
      reason: "Finance agents may prepare payments",
    },
    { id: "payment.finance", tools: ["execute_payment"], effect: "require_approval", approverRoles: ["finance"], reason: "Payments always need finance" },
    { id: "email.external", tools: ["send_external_email"], effect: "allow", reason: "External e-mail is allowed" },
    {
      id: "email.after-payment-data",
      tools: ["send_external_email"],
      // `payment_data`: the label of the bank-details items and of the standard card/IBAN redactions.
      when: (r) => r.context.sensitivity.includes("payment_data"),
      effect: "deny",
      reason: "No external e-mail after reading payment data",
    },
  ],
});
