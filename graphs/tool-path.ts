import type { BaseMessage } from "@langchain/core/messages";
import { END, START, StateGraph, type CompiledStateGraph } from "@langchain/langgraph";
import { z } from "zod";
import { GovernedAnnotation, type GovernedState, type GovernedUpdate } from "../langgraph/channels.js";
import { lastAIMessage } from "../langgraph/run.js";
import { EffectLedgerOption } from "../langgraph/records.js";
import { ToolsOption } from "../langgraph/tools.js";
import { createPolicyGate } from "../guards/policy-gate.js";
import { routeAfterPolicyGate, routeAfterTools, untraced } from "../guards/routes.js";
import { createGovernedToolNode } from "../nodes/governed-tool-node.js";
import { createToolRecovery } from "../nodes/tool-recovery.js";
import { AuditLogOption } from "../src/audit/log.js";
import type { DecisionRecord } from "../src/decisions/records.js";
import { IdentityRegistryOption } from "../src/identity/registry.js";
import { parseOptions } from "../src/internal/options.js";
import { BudgetGuardOption } from "../src/policy/budget.js";
import { PolicyEngineOption } from "../src/policy/engine.js";
import { assertAgentConfig } from "../src/policy/validate.js";
import { ToolExecutionOptionsSchema } from "../src/tools/resilience.js";

const GovernedToolPathOptionsSchema = z
  .object({
    policy: PolicyEngineOption,
    tools: ToolsOption.min(1),
    registry: IdentityRegistryOption,
    auditLog: AuditLogOption,
    /** The effect ledger (also the key that seals eart's records): give the graph's other eart nodes the same one. */
    ledger: EffectLedgerOption.optional(),
    budgets: BudgetGuardOption.optional(),
    execution: z.record(z.string(), ToolExecutionOptionsSchema).optional(),
    /** Roles that may answer a tool the path could not finish (default `["operator"]`). */
    recoveryRoles: z.array(z.string().min(1)).min(1).optional(),
    onExpired: z.enum(["answer", "rerequest"]).optional(),
    clock: z.custom<() => Date>((v) => typeof v === "function", "must be a function returning a Date").optional(),
    /** Checks to leave out at construction (see `createGovernedAgent`'s `skipChecks`). */
    skipChecks: z.array(z.enum(["policy_tool_unknown", "tool_uncovered"])).optional(),
  })
  .strict();
export type GovernedToolPathOptions = z.input<typeof GovernedToolPathOptionsSchema>;

/**
 * The whole governed tool path as one node, as LangGraph's `ToolNode` is: a compiled subgraph of
 * the policy gate (pausing for approval), the governed tool node, and the recovery step (pausing
 * for a human when a tool could not finish), with their routing inside. Add it as a node after
 * your model and route to it with {@link routeToGovernedTools}, back with
 * {@link routeAfterGovernedTools}; nothing else to wire, and no step of it can be left out (a
 * graph without the recovery step wedges the thread on the first tool error). The subgraph reads
 * and writes the parent's `messages` and eart's channels; add `GovernedChannels` to your state.
 * @example
 * ```ts
 * const graph = new StateGraph(State)
 *   .addNode("bindIdentity", createIdentityBinding({ registry, auditLog, ledger }))
 *   .addNode("agent", createModelNode({ model, tools, auditLog }))
 *   .addNode("tools", createGovernedToolPath({ policy, tools, registry, auditLog, ledger }))
 *   .addEdge(START, "bindIdentity")
 *   .addEdge("bindIdentity", "agent")
 *   .addConditionalEdges("agent", routeToGovernedTools, { tools: "tools", end: END })
 *   .addConditionalEdges("tools", routeAfterGovernedTools, { agent: "agent", end: END });
 * ```
 */
export function createGovernedToolPath(options: GovernedToolPathOptions): CompiledStateGraph<GovernedState, GovernedUpdate, string, typeof GovernedAnnotation.spec, typeof GovernedAnnotation.spec> {
  const opts = parseOptions(GovernedToolPathOptionsSchema, options);
  const { policy, tools, registry, auditLog, ledger, budgets, execution, recoveryRoles, onExpired, clock } = opts;
  // The same checks as the prebuilt agent: typos are found here, not when a call is denied.
  assertAgentConfig({ tools, policy, budgets, registry, recoveryRoles, skip: opts.skipChecks });
  // What every step shares, given once (an option left out stays undefined: each step's default).
  const shared = { registry, auditLog, ledger, clock };
  return new StateGraph(GovernedAnnotation)
    .addNode("policyGate", createPolicyGate({ ...shared, policy, tools, budgets, onExpired }))
    .addNode("tools", createGovernedToolNode({ ...shared, tools, policy, budgets, execution }))
    .addNode("recovery", createToolRecovery({ ...shared, roles: recoveryRoles }))
    .addEdge(START, "policyGate")
    .addConditionalEdges("policyGate", untraced(routeAfterPolicyGate), { approval: "policyGate", tools: "tools", agent: END, end: END })
    .addConditionalEdges("tools", untraced(routeAfterTools), { recovery: "recovery", agent: END, end: END })
    .addEdge("recovery", "tools")
    .compile() as unknown as CompiledStateGraph<GovernedState, GovernedUpdate, string, typeof GovernedAnnotation.spec, typeof GovernedAnnotation.spec>;
}

/**
 * Routing function for the edge after your model: to the governed tool path when the model
 * proposed tool calls, else to the end (as LangGraph's `toolsCondition`).
 * @example
 * ```ts
 * graph.addConditionalEdges("agent", routeToGovernedTools, { tools: "tools", end: END });
 * ```
 */
export function routeToGovernedTools(state: { messages: BaseMessage[] }): "tools" | "end" {
  const message = lastAIMessage(state.messages);
  return message && (message.tool_calls?.length ?? 0) > 0 ? "tools" : "end";
}

/**
 * Routing function for the edge after the governed tool path: back to the model with the calls'
 * answers, or to the end when a call was escalated to a human (the run stops there; the reviewer
 * picks it up).
 * @example
 * ```ts
 * graph.addConditionalEdges("tools", routeAfterGovernedTools, { agent: "agent", end: END });
 * ```
 */
export function routeAfterGovernedTools(state: { messages: BaseMessage[]; decisions: DecisionRecord[] }): "agent" | "end" {
  const message = lastAIMessage(state.messages);
  if (!message) return "agent";
  return state.decisions.some((d) => d.messageId === message.id && d.status === "escalated") ? "end" : "agent";
}
