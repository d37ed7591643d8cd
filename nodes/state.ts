import { Annotation, MessagesAnnotation } from "@langchain/langgraph";
import {
  bindIdentityOnce,
  emptyThreadContext,
  mergeDecisions,
  mergeThreadContext,
  type AgentIdentity,
  type Budget,
  type DecisionRecord,
  type Escalation,
  type ThreadContext,
} from "../src/index.js";

/**
 * The channels eart adds to a graph, without `messages`. Spread them beside your own channels.
 * @example
 * ```ts
 * const State = Annotation.Root({ ...MessagesAnnotation.spec, ...GovernedChannels, ticket: Annotation<string>() });
 * ```
 */
export const GovernedChannels = {
  /** Bound once per thread from trusted run configuration; any later change throws. */
  identity: Annotation<AgentIdentity | undefined>({ reducer: bindIdentityOnce, default: () => undefined }),
  // Every channel has a default: reading a channel that has no value costs a thrown error in
  // LangGraph, on every step.
  /** Retrieved items with provenance and sensitivity labels. */
  context: Annotation<ThreadContext, Partial<ThreadContext>>({ reducer: mergeThreadContext, default: emptyThreadContext }),
  /** One record per tool call, merged by tool call id. */
  decisions: Annotation<DecisionRecord[]>({ reducer: mergeDecisions, default: () => [] }),
  /** The case handed to a human, if any. */
  escalation: Annotation<Escalation | null>({ reducer: (_current, update) => update, default: () => null }),
  /** Per-thread counters for budget rules. */
  budget: Annotation<Budget>({ reducer: (current, update) => ({ ...current, ...update }), default: () => ({}) }),
};

/**
 * `MessagesAnnotation` plus every eart channel: the state of the prebuilt governed agent, and a
 * ready base for your own graphs.
 * @example
 * ```ts
 * const graph = new StateGraph(GovernedAnnotation).addNode("bindIdentity", createIdentityBinding({ registry, auditLog }));
 * ```
 */
export const GovernedAnnotation = Annotation.Root({
  ...MessagesAnnotation.spec,
  ...GovernedChannels,
});

export type GovernedState = typeof GovernedAnnotation.State;
export type GovernedUpdate = typeof GovernedAnnotation.Update;
