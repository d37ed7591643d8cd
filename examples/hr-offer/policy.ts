import { definePolicy, type PolicyRequest } from "eart";
import { SALARY_BANDS } from "./data.js";

/** What the rules read besides the call: each level's band limits, declared so the version covers them. */
type OfferPolicyConfig = { bands: Record<string, { minSalary: number; maxSalary: number }> };

/** Whether the call states a salary figure. */
const statesSalary = (r: PolicyRequest) => r.tool.args.baseSalary !== undefined && r.tool.args.baseSalary !== null;
const forHrManager = (r: PolicyRequest) => r.identity.onBehalfOf.roles.includes("hr-manager");
/** Whether the salary the call states lies within the band of the level it states (a level without a band has none). */
const withinBand = (r: PolicyRequest, c: OfferPolicyConfig) => {
  const level = String(r.tool.args.roleLevel);
  const band = Object.hasOwn(c.bands, level) ? c.bands[level] : undefined;
  const salary = Number(r.tool.args.baseSalary);
  return band !== undefined && salary >= band.minSalary && salary <= band.maxSalary;
};

/**
 * Offer letters: candidate lookups and drafts are allowed, but a draft that states a salary only
 * for an HR manager (the redaction keeps figures from everyone else's model, and this rule stops
 * one that was guessed). Sending an offer needs an HR director, who is shown the terms it sends
 * (`send_offer` states candidate, level and base salary; the tool sends only the stored draft's);
 * a salary outside the level's band, or a level without one, is asked of the director as the
 * exception it is. Reasons name no figure: they are kept in the audit log, which holds none.
 */
export const offerPolicy = definePolicy<OfferPolicyConfig>({
  name: "offers",
  config: { bands: Object.fromEntries(Object.entries(SALARY_BANDS).map(([level, b]) => [level, { minSalary: b.minSalary, maxSalary: b.maxSalary }])) },
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
    {
      id: "offer.send.outside-band",
      tools: ["send_offer"],
      when: (r, c) => !withinBand(r, c),
      effect: "require_approval",
      approverRoles: ["hr-director"],
      reason: (r) => `The base salary is outside the salary band of level ${String(r.tool.args.roleLevel)} (or the level has none): an exception only an HR director approves`,
    },
  ],
});
