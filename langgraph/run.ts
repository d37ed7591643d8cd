/** The run a node is in: its thread, its messages, and whether the thread may call the model now. */
import { AIMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { EartConfigError, ThreadStateError } from "../src/errors.js";
import { WAITING_STATUSES } from "../src/decisions/lifecycle.js";
import type { DecisionRecord } from "../src/decisions/records.js";

/** The thread id of a run; governed nodes need one (their records are per thread). */
export function requireThreadId(config: LangGraphRunnableConfig | undefined): string {
  const threadId = config?.configurable?.thread_id;
  if (typeof threadId !== "string" && typeof threadId !== "number") {
    throw new EartConfigError("configurable.thread_id", "governed nodes need a thread_id in the run configuration");
  }
  return String(threadId);
}

/**
 * The AI message whose tool calls are being governed: the last message, or the AI message just
 * before the tool messages that answer it. Undefined when the conversation ends otherwise.
 */
export function lastAIMessage(messages: readonly BaseMessage[] | undefined): AIMessage | undefined {
  for (let i = (messages?.length ?? 0) - 1; i >= 0; i--) {
    const message = messages![i]!;
    if (AIMessage.isInstance(message)) return message;
    if (!ToolMessage.isInstance(message)) return undefined;
  }
  return undefined;
}

/** Text of a message's content, for audit records. */
export function messageText(message: BaseMessage): string {
  return typeof message.content === "string" ? message.content : JSON.stringify(message.content);
}

/**
 * Refuses to call the model while the governed message still has calls waiting for approval:
 * new input on a paused thread would leave them unanswered. Nothing runs.
 */
export function assertNoPendingApproval(state: { messages: readonly BaseMessage[]; decisions?: readonly DecisionRecord[] }, threadId: string): void {
  const pending = new Set((state.decisions ?? []).filter((d) => WAITING_STATUSES.has(d.status)).map((d) => d.messageId));
  if (pending.size === 0) return;
  for (let i = state.messages.length - 1; i >= 0; i--) {
    const message = state.messages[i]!;
    if (AIMessage.isInstance(message)) {
      if (message.id && pending.has(message.id)) {
        throw new ThreadStateError("thread_awaiting_approval", threadId, `Thread "${threadId}" waits for an approval or a recovery decision; answer it before sending new input`);
      }
      return;
    }
  }
}

/**
 * Whether a tool message after the proposing message `messageId` answers the call: one before it
 * answered another call under that id (a model may reuse an id in a later message).
 */
export function answeredAfter(messages: readonly BaseMessage[], messageId: string | undefined, toolCallId: string): boolean {
  const at = messages.findLastIndex((m) => m.id === messageId);
  for (let i = at + 1; i < messages.length; i++) {
    const m = messages[i]!;
    if (ToolMessage.isInstance(m) && m.tool_call_id === toolCallId) return true;
  }
  return false;
}

/**
 * The compiled graph of a LangChain `createAgent` agent: `createAgent` may bind default config
 * around it (`.bound`), and LangGraph server runs the graph itself.
 */
export function compiledGraphOf<G = unknown>(agent: { graph: unknown }): G {
  let graph = agent.graph as { bound?: unknown };
  while (graph && typeof graph === "object" && "bound" in graph && graph.bound) graph = graph.bound as { bound?: unknown };
  return graph as G;
}

/** Whether a `createAgent` agent was made with this middleware (in its `middleware` option). */
export function madeWith(agent: object, middleware: object): boolean {
  const list = (agent as { options?: { middleware?: unknown } }).options?.middleware;
  return Array.isArray(list) && list.includes(middleware);
}
