import { definePolicy } from "eart";

/**
 * The procurement rules of the seed policy: recommending a renegotiation is allowed; initiating
 * one (the supplier is notified) needs a procurement manager. Everything else is denied.
 */
export const procurementPolicy = definePolicy({
  name: "procurement",
  rules: [
    { id: "procurement.recommend", tools: ["recommend_renegotiation"], effect: "allow", reason: "Recommending a renegotiation is allowed" },
    {
      id: "procurement.initiate",
      tools: ["initiate_renegotiation"],
      effect: "require_approval",
      approverRoles: ["procurement-manager"],
      reason: "Initiating a renegotiation needs a procurement manager",
    },
  ],
});
