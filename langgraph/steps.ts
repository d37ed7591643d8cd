import type { BaseMessage } from "@langchain/core/messages";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import type { AuditEventInput, AuditLog } from "../src/audit/log.js";
import { requireThreadId } from "./run.js";

/**
 * The one way eart's nodes are built: a step does one part of the work (bind the identity, call
 * the model, decide the proposed calls) and says what it changes and what to record, without
 * writing either; a node hosts steps. A public node hosts one step; the prebuilt agent hosts
 * several in one node (one checkpoint and one audit append per model turn).
 */

/** Where a step runs. */
export interface StepContext {
  config: LangGraphRunnableConfig;
  threadId: string;
}

/** What a step changes (a channel update) and the audit events it wants recorded. */
export interface StepResult<U> {
  update: U;
  events: AuditEventInput[];
}

/** A step: `(state, ctx) → { update, events }`. */
export type Step<S, U> = (state: S, ctx: StepContext) => Promise<StepResult<U>>;

/** The channel updates steps make: `messages` are added; every other channel is set. */
type Update = { messages?: BaseMessage[] } & Record<string, unknown>;

/**
 * A node hosting `steps` in order. Each step sees the state with the updates of the steps before
 * it applied (messages added, other channels set); the node returns all of them as one update and
 * appends every step's events in one call, after the last step. A step that throws stops the node:
 * nothing is returned and nothing of it is recorded. `before` runs first (a check that refuses).
 * @example
 * ```ts
 * const node = hostSteps(auditLog, [bindStep, modelStep, decideStep], { before: (state, ctx) => assertNoPendingApproval(state, ctx.threadId) });
 * ```
 */
export function hostSteps<S extends { messages: BaseMessage[] }, U extends Update = Update>(
  auditLog: Pick<AuditLog, "append">,
  steps: readonly Step<S, U>[],
  options: { before?: (state: S, ctx: StepContext) => void } = {},
): (state: S, config: LangGraphRunnableConfig) => Promise<U> {
  return async (state, config) => {
    const ctx: StepContext = { config, threadId: requireThreadId(config) };
    options.before?.(state, ctx);
    let view = state;
    const update: Update = {};
    const events: AuditEventInput[] = [];
    for (const step of steps) {
      const result = await step(view, ctx);
      events.push(...result.events);
      for (const [channel, value] of Object.entries(result.update)) {
        if (value === undefined) continue;
        if (channel === "messages") {
          update.messages = [...(update.messages ?? []), ...(value as BaseMessage[])];
          view = { ...view, messages: [...view.messages, ...(value as BaseMessage[])] };
        } else {
          update[channel] = value;
          view = { ...view, [channel]: value };
        }
      }
    }
    if (events.length > 0) await auditLog.append(events);
    return update as U;
  };
}
