/** Guards: decisions on a graph's path (the policy gate) and the routing functions around them. */
export * from "./policy-gate.js";
export * from "./routes.js";
export * from "./escalation-guard.js";
