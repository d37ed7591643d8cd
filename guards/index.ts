/** Guards: decisions on a graph's path (the policy gate, the escalation guard) and the routing functions around them (`eart/guards`). */
export { BUILTIN_POLICY_IDS, createPolicyGate, MAX_APPROVALS_PER_MESSAGE, type PolicyGateOptions } from "./policy-gate.js";
export { routeAfterEscalation, routeAfterModel, routeAfterPolicyGate, routeAfterTools, type PolicyGateRoute } from "./routes.js";
export { createEscalationGuard, type EscalationGuardOptions } from "./escalation-guard.js";
