import { definePolicy, type PolicyRequest } from "eart";

/** Whether the call states a salary figure. */
const statesSalary = (r: PolicyRequest) => r.tool.args.baseSalary !== undefined && r.tool.args.baseSalary !== null;
const forHrManager = (r: PolicyRequest) => r.identity.onBehalfOf.roles.includes("hr-manager");

/**
 * Offer letters: candidate lookups and drafts are allowed, but a draft that states a salary only
 * for an HR manager (the redaction keeps figures from everyone else's model, and this rule stops
 * one that was guessed). Sending an offer needs an HR director.
 */
export const offerPolicy = definePolicy({
  name: "offers",
  rules: [
    { id: "candidate.lookup", tools: ["get_candidate"], effect: "allow", reason: "Candidate lookups are allowed" },
    { id: "offer.draft", tools: ["draft_offer"], effect: "allow", reason: "Drafting offer letters is allowed" },
    {
      id: "offer.draft.salary",
      tools: ["draft_offer"],
      when: (r) => statesSalary(r) && !forHrManager(r),
      effect: "deny",
      reason: "Only an HR manager's draft may state a salary",
    },
    { id: "offer.send", tools: ["send_offer"], effect: "require_approval", approverRoles: ["hr-director"], reason: "Sending an offer needs an HR director" },
  ],
});
