import type { BaseMessage } from "@langchain/core/messages";
import { Annotation, BinaryOperatorAggregate, MessagesAnnotation, messagesStateReducer, type Messages } from "@langchain/langgraph";
import {
  emptyThreadContext,
  mergeBudget,
  mergeDecisions,
  mergeThreadContext,
  type Budget,
  type DecisionRecord,
  type Escalation,
  type Review,
  type ThreadContext,
} from "../src/decisions/records.js";
import { bindIdentityOnce } from "../src/decisions/seal.js";
import { StateTamperError } from "../src/errors.js";
import { type AgentIdentity } from "../src/identity/registry.js";

/** Whether a channel write is LangGraph's `Overwrite`, as the class or in its wire form. */
function isOverwrite(value: unknown): boolean {
  if (typeof value !== "object" || value === null) return false;
  return "__overwrite__" in value || ((value as { type?: unknown }).type === "__overwrite__" && "value" in value);
}

/**
 * A channel of eart's: every write goes through its reducer, the first one too (LangGraph's own
 * channel stores a first write as it is), and LangGraph's `Overwrite`, which skips the reducer, is
 * refused with a {@link StateTamperError} (`state_write_refused`) so nothing is stored.
 */
class GuardedChannel<V, U = V> extends BinaryOperatorAggregate<V, U> {
  constructor(
    operator: (current: V, update: U) => V,
    initialValueFactory: () => V,
    readonly channelName: string,
  ) {
    super(operator, initialValueFactory);
  }

  override fromCheckpoint(checkpoint?: V): this {
    const restored = super.fromCheckpoint(checkpoint);
    const channel = new GuardedChannel(this.operator, this.initialValueFactory!, this.channelName);
    channel.value = restored.value;
    return channel as this;
  }

  override update(values: U[]): boolean {
    if (values.length === 0) return false;
    for (const value of values) {
      if (isOverwrite(value)) {
        throw new StateTamperError("state_write_refused", `eart's "${this.channelName}" channel refuses Overwrite: only its reducer may change it`, {
          channel: this.channelName,
        });
      }
    }
    for (const value of values) this.value = this.operator(this.value as V, value);
    return true;
  }

  override equals(other: unknown): boolean {
    return other instanceof GuardedChannel && other.operator === this.operator && other.channelName === this.channelName;
  }
}

const guarded = <V, U = V>(name: string, reducer: (current: V, update: U) => V, initial: () => V) =>
  new GuardedChannel<V, U>(reducer, initial, name) as unknown as ReturnType<typeof Annotation<V, U>>;

/**
 * The channels eart adds to a graph, without `messages`. Spread them beside your own channels.
 * They refuse LangGraph's `Overwrite`; callers of the thread API may not write them at all
 * (`guardResumes` refuses it, and nodes trust only what eart sealed).
 * @example
 * ```ts
 * const State = Annotation.Root({ ...MessagesAnnotation.spec, ...GovernedChannels, ticket: Annotation<string>() });
 * ```
 */
export const GovernedChannels = {
  /** Bound once per thread from trusted run configuration; any later change throws. */
  identity: guarded<AgentIdentity | undefined>("identity", bindIdentityOnce, () => undefined),
  // Every channel has a default: reading a channel that has no value costs a thrown error in
  // LangGraph, on every step.
  /** Retrieved items with provenance and sensitivity labels. */
  context: guarded<ThreadContext, Partial<ThreadContext>>("context", mergeThreadContext, emptyThreadContext),
  /** One record per tool call, merged by tool call id. */
  decisions: guarded<DecisionRecord[]>("decisions", mergeDecisions, () => []),
  /** The case handed to a human, if any. */
  escalation: guarded<Escalation | null>("escalation", (_current, update) => update, () => null),
  /** The last reviewer send-back (see `ReviewSchema`), written only by the escalation guard. */
  reviewed: guarded<Review | null>("reviewed", (_current, update) => update, () => null),
  /** Per-thread counters for budget rules. */
  budget: guarded<Budget>("budget", mergeBudget, () => ({})),
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

/** Names of the channels only eart's nodes write. */
export const GOVERNED_CHANNEL_NAMES: readonly string[] = Object.freeze(Object.keys(GovernedChannels));

/**
 * What a caller may send the prebuilt agent: its messages. The graph's input schema, so LangGraph
 * server (and Studio, and the schemas endpoint) offer clients only this, never eart's channels.
 */
export const GovernedInputAnnotation = Annotation.Root({
  // Spelled out with BaseMessage from @langchain/core, so the declarations name it from there.
  messages: Annotation<BaseMessage[], Messages>({ reducer: messagesStateReducer, default: () => [] }),
});
