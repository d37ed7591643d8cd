import { AIMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import type { StructuredToolInterface } from "@langchain/core/tools";
import { z } from "zod";
import { interopSafeParseAsync, isInteropZodSchema } from "@langchain/core/utils/types";
import { interrupt, isGraphInterrupt, type LangGraphRunnableConfig } from "@langchain/langgraph";
import {
  ApprovalError,
  assertTransition,
  EartConfigError,
  StateTamperError,
  WAITING_STATUSES,
  ThreadStateError,
  type AgentIdentity,
  type AuditLog,
  type DecisionRecord,
  type EffectLedger,
  type Sealer,
} from "../src/index.js";

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

/** Result of checking model-proposed arguments against a tool's schema. */
export type ArgsCheck = { ok: true; args: Record<string, unknown> } | { ok: false; message: string };

/**
 * Checks arguments against a tool's zod schema. Tools described by JSON schema are checked by the
 * tool itself when it runs.
 */
export async function checkToolArgs(tool: StructuredToolInterface, args: unknown): Promise<ArgsCheck> {
  if (typeof args !== "object" || args === null || Array.isArray(args)) return { ok: false, message: "arguments must be an object" };
  if (!isInteropZodSchema(tool.schema)) return { ok: true, args: args as Record<string, unknown> };
  const result = await interopSafeParseAsync(tool.schema, args);
  if (result.success) return { ok: true, args: result.data as Record<string, unknown> };
  const issues = (result.error as { issues?: { path?: PropertyKey[]; message: string }[] }).issues ?? [];
  const message = issues.map((i) => `${(i.path ?? []).map(String).join(".") || "(args)"}: ${i.message}`).join("; ");
  return { ok: false, message: message || String(result.error) };
}

/** Indexes tools by name, refusing duplicates. */
export function indexTools(tools: readonly StructuredToolInterface[], field = "tools"): Map<string, StructuredToolInterface> {
  const byName = new Map<string, StructuredToolInterface>();
  for (const tool of tools) {
    if (byName.has(tool.name)) throw new EartConfigError(field, `two tools are named "${tool.name}"`);
    byName.set(tool.name, tool);
  }
  return byName;
}

/** Errors that must pass through every catch: interrupts and other graph control flow. */
export { isGraphBubbleUp as isGraphControlFlow } from "@langchain/langgraph";

/** Option schema: LangChain tools. */
export const ToolsOption = z.array(
  z.custom<StructuredToolInterface>((v) => typeof (v as StructuredToolInterface)?.name === "string", "must be a LangChain tool"),
);

/**
 * Option schema: an {@link EffectLedger}. Its store also keeps the key that seals eart's records
 * in graph state: give the nodes of one graph the same ledger.
 */
export const EffectLedgerOption = z.custom<EffectLedger>(
  (v) => ["begin", "retry", "finish", "get", "list", "sealKey"].every((m) => typeof (v as Record<string, unknown>)?.[m] === "function"),
  "must be an EffectLedger (begin, retry, finish, get, list, sealKey)",
);

/**
 * Seals the decision records a node writes, after checking each one's move against the call's
 * lifecycle from the record in state (`assertTransition`): a node cannot write a status its call
 * may not reach, and what it writes is recognisably eart's.
 */
export function sealDecisions(sealer: Sealer, threadId: string, inState: readonly DecisionRecord[], records: readonly DecisionRecord[]): DecisionRecord[] {
  const before = new Map(inState.map((d) => [d.toolCallId, d]));
  return records.map((r) => {
    assertTransition(before.get(r.toolCallId), r);
    return sealer.decision(threadId, r);
  });
}

/**
 * Fails closed on graph state eart did not write: the thread's identity (when present) and the
 * given decision records must carry eart's seal for this thread. Otherwise a
 * `state.tamper_detected` event is appended and {@link StateTamperError} thrown; nothing runs.
 * A caller of `updateState`, `Command` or the checkpoint store can write state, never a seal.
 */
export async function assertSealed(
  sealer: Sealer,
  auditLog: Pick<AuditLog, "append">,
  threadId: string,
  node: string,
  identity: AgentIdentity | undefined,
  records: readonly DecisionRecord[],
): Promise<void> {
  const forged: { channel: string; toolCallId?: string }[] = [];
  if (identity && !sealer.identityIsSealed(threadId, identity)) forged.push({ channel: "identity" });
  for (const r of records) if (!sealer.decisionIsSealed(threadId, r)) forged.push({ channel: "decisions", toolCallId: r.toolCallId });
  if (forged.length === 0) return;
  await auditLog.append({ threadId, type: "state.tamper_detected", data: { node, forged } });
  throw new StateTamperError(
    "state_tamper_detected",
    `Thread "${threadId}" holds state eart did not write (${forged.map((f) => (f.toolCallId ? `${f.channel}:${f.toolCallId}` : f.channel)).join(", ")}); nothing was run`,
    { threadId, node, forged },
  );
}

/** Option schema: a LangChain chat model. */
export const ChatModelOption = z.custom<BaseChatModel>((v) => typeof (v as BaseChatModel)?.invoke === "function", "must be a chat model");

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
 * Pauses with `interrupt(request)` and returns the newest answer given to it. LangGraph keeps
 * every resume value of a task, refused ones too, and replays them in order when the node re-runs:
 * only the newest counts, so a refused answer is never checked again (the policy, the roles or the
 * clock may have changed since it was refused). Must be the first statement with an effect in the
 * calling node, which re-runs from its start on resume.
 */
export function newestAnswer(request: unknown): unknown {
  let answer = interrupt(request);
  for (;;) {
    try {
      answer = interrupt(request);
    } catch (error) {
      if (!isGraphInterrupt(error)) throw error;
      return answer;
    }
  }
}

/**
 * Checks a human's answer: returns what `check` makes of it, or, when `check` refuses it with an
 * {@link ApprovalError}, records the refusal with `onRefused` and throws the error (nothing ran;
 * the thread stays paused on the same request).
 */
export async function acceptAnswer<T>(answer: unknown, check: (answer: unknown) => T | Promise<T>, onRefused: (error: ApprovalError) => Promise<void>): Promise<T> {
  try {
    return await check(answer);
  } catch (error) {
    if (!(error instanceof ApprovalError)) throw error;
    await onRefused(error);
    throw error;
  }
}

/**
 * The one interrupt helper of eart's human tasks (approval, recovery, review): pauses with
 * `interrupt(request)`, takes the newest answer ({@link newestAnswer}) and checks it
 * ({@link acceptAnswer}). `check` throws an {@link ApprovalError} to refuse.
 */
export async function interruptForAnswer<T>(request: unknown, check: (answer: unknown) => T | Promise<T>, onRefused: (error: ApprovalError) => Promise<void>): Promise<T> {
  return acceptAnswer(newestAnswer(request), check, onRefused);
}
