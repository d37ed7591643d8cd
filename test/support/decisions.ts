/** Helpers for the graph tests: decisions that carry the digest their request shows, and the records a thread holds. */
import type { BaseMessage } from "@langchain/core/messages";
import type { DecisionRecord } from "eart";

type Shown = { requests: readonly { toolCallId: string; digest: string }[] };

/** The digest a pending request (approval or recovery) shows for one call. */
export function digestOf(request: Shown, toolCallId: string): string {
  const item = request.requests.find((r) => r.toolCallId === toolCallId);
  if (!item) throw new Error(`no pending item for tool call "${toolCallId}"`);
  return item.digest;
}

/** A decision for one call of a pending request, bound to the digest the request shows for it. */
export function decide<T extends string>(request: Shown, toolCallId: string, type: T, extra: Record<string, unknown> = {}) {
  return { toolCallId, type, digest: digestOf(request, toolCallId), ...extra };
}

/**
 * What a governed thread holds: its values, eart's decision records wherever the agent keeps them
 * (the prebuilt agent's `decisions`, the middleware's `_eart`) and each call's status by id.
 */
export async function held(agent: { getState(c: object): Promise<{ values: unknown }> }, threadId: string) {
  const values = (await agent.getState({ configurable: { thread_id: threadId } })).values as {
    messages: BaseMessage[];
    decisions?: DecisionRecord[];
    _eart?: { decisions?: DecisionRecord[] };
    escalation?: unknown;
    budget?: Record<string, number>;
  };
  const records = values._eart?.decisions ?? values.decisions ?? [];
  return { ...values, records, statuses: Object.fromEntries(records.map((d) => [d.toolCallId, d.status])) };
}
