import { HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { Runnable } from "@langchain/core/runnables";
import { lastAIMessage } from "../langgraph/run.js";
import { RUNNABLE_STATUSES } from "../src/decisions/lifecycle.js";
import { type DecisionRecord, type Escalation } from "../src/decisions/records.js";

/** Where a graph goes after the policy gate. Map each to a node in `addConditionalEdges`. */
export type PolicyGateRoute = "approval" | "tools" | "agent" | "end";

/**
 * Routing function for the edge after the policy gate:
 * - `"approval"`: calls wait for a human; route back to the gate, which pauses.
 * - `"tools"`: allowed or approved calls are ready to run.
 * - `"end"`: a call was escalated to a human; the run stops here.
 * - `"agent"`: every call was answered (denied, invalid, rejected); the model goes on.
 * - `"end"` too when the governed message proposes no tool calls (the model answered).
 * @example
 * ```ts
 * graph.addConditionalEdges("policyGate", routeAfterPolicyGate,
 *   { approval: "policyGate", tools: "tools", agent: "agent", end: END });
 * ```
 */
export function routeAfterPolicyGate(state: { messages: BaseMessage[]; decisions: DecisionRecord[]; escalation?: Escalation | null }): PolicyGateRoute {
  const message = lastAIMessage(state.messages);
  if (!message) return "agent";
  if ((message.tool_calls?.length ?? 0) === 0) return "end";
  const mine = state.decisions.filter((d) => d.messageId === message.id);
  if (mine.some((d) => d.status === "pending_approval")) return "approval";
  if (mine.some((d) => RUNNABLE_STATUSES.has(d.status))) return "tools";
  if (mine.some((d) => d.status === "escalated")) return "end";
  return "agent";
}

/**
 * Routing function for the edge after the model: to the policy gate when it proposed tool
 * calls, else to the end.
 * @example
 * ```ts
 * graph.addConditionalEdges("agent", routeAfterModel, { policyGate: "policyGate", end: END });
 * ```
 */
export function routeAfterModel(state: { messages: BaseMessage[] }): "policyGate" | "end" {
  const message = lastAIMessage(state.messages);
  return message && (message.tool_calls?.length ?? 0) > 0 ? "policyGate" : "end";
}

/**
 * Routing function for the edge after the governed tool node: to the recovery node when a call
 * waits for a human (`recovery_pending`); to the end (the escalation guard, where the graph has
 * one) when a call of the message was escalated: the calls beside it ran, but the model does not
 * go on (nor propose more) before a reviewer answers the case; else back to the model.
 * @example
 * ```ts
 * graph.addConditionalEdges("tools", routeAfterTools, { recovery: "recovery", agent: "agent", end: "review" });
 * ```
 */
export function routeAfterTools(state: { messages: BaseMessage[]; decisions: DecisionRecord[] }): "recovery" | "agent" | "end" {
  const message = lastAIMessage(state.messages);
  if (!message) return "agent";
  const mine = state.decisions.filter((d) => d.messageId === message.id);
  if (mine.some((d) => d.status === "recovery_pending")) return "recovery";
  return mine.some((d) => d.status === "escalated") ? "end" : "agent";
}

/**
 * Routing function for the edge after the escalation guard (and after context retrieval): back to
 * the guard while a case is open (it pauses for the reviewer), to the agent when the reviewer sent
 * the case back with guidance (or, after retrieval, when nothing is missing), else to the end.
 * @example
 * ```ts
 * graph.addConditionalEdges("review", routeAfterEscalation, { review: "review", agent: "agent", end: END });
 * ```
 */
export function routeAfterEscalation(state: { messages: BaseMessage[]; escalation?: Escalation | null }): "review" | "agent" | "end" {
  if (state.escalation) return "review";
  const last = state.messages[state.messages.length - 1];
  return last !== undefined && HumanMessage.isInstance(last) ? "agent" : "end";
}

/**
 * A route as a Runnable that LangGraph runs without tracing it, as it runs its own routing: a
 * conditional edge's function is otherwise a traced run of its own after every step (a run tree,
 * callbacks), which costs more than the route itself. The edge still reads the state after the
 * step, so a state written as a node (`updateState(…, asNode)`) is routed as before.
 */
class UntracedRoute<S, R> extends Runnable<S, R> {
  lc_namespace = ["eart", "graphs"];

  constructor(private readonly route: (state: S) => R) {
    super();
  }

  override async invoke(state: S): Promise<R> {
    return this.route(state);
  }
}

/** `route` as an untraced conditional edge of eart's graphs ({@link UntracedRoute}). */
export const untraced = <S, R>(route: (state: S) => R): Runnable<S, R> => new UntracedRoute(route);
