import { Annotation, MessagesAnnotation } from "@langchain/langgraph";
import {
  bindIdentityOnce,
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
  // Channels without a default stay out of every checkpoint until a node writes them.
  /** Retrieved items with provenance and sensitivity labels; undefined until something is retrieved. */
  context: Annotation<ThreadContext | undefined, Partial<ThreadContext>>({ reducer: mergeThreadContext }),
  /** One record per tool call, merged by tool call id. */
  decisions: Annotation<DecisionRecord[]>({ reducer: mergeDecisions, default: () => [] }),
  /** The case handed to a human, if any. */
  escalation: Annotation<Escalation | null | undefined>({ reducer: (_current, update) => update }),
  /** Per-thread counters for budget rules. */
  budget: Annotation<Budget | undefined>({ reducer: (current, update) => ({ ...current, ...update }) }),
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
