/** eart's records in graph state: sealed by the nodes that write them, checked by the nodes that act on them. */
import { ToolMessage } from "@langchain/core/messages";
import { z } from "zod";
import { StateTamperError } from "../src/errors.js";
import type { AuditLog } from "../src/audit/log.js";
import { assertTransition } from "../src/decisions/lifecycle.js";
import type { DecisionRecord } from "../src/decisions/records.js";
import type { Sealer } from "../src/decisions/seal.js";
import type { AgentIdentity } from "../src/identity/registry.js";
import type { EffectLedger } from "../src/ledger/ledger.js";

/**
 * Option schema: an {@link EffectLedger}. Its store also keeps the key that seals eart's records
 * in graph state: give the nodes of one graph the same ledger.
 */
export const EffectLedgerOption = z.custom<EffectLedger>(
  (v) => ["begin", "retry", "finish", "get", "list", "sealKey"].every((m) => typeof (v as Record<string, unknown>)?.[m] === "function"),
  "must be an EffectLedger (begin, retry, finish, get, list, sealKey)",
);

/**
 * The fields of a `tool.recovery_requested` event that eart reads back to act on (governanceMiddleware
 * asks about a call in its own tool step, and on resume reads the request it made from the audit
 * log), as the event's `requestSeal` seals them ({@link Sealer.event}): the call and its digest, why
 * and on which attempt it was handed over, and the roles that may answer.
 */
export function recoveryRequestFields(data: { toolCallId: string; digest: string; reason: string; attempt: number; roles: readonly string[] | null }): Record<string, unknown> {
  return { toolCallId: data.toolCallId, digest: data.digest, reason: data.reason, attempt: data.attempt, roles: data.roles ? [...data.roles] : null };
}

/**
 * The fields of a `tool.interrupted` or `tool.cancelled` event that the governed tool node reads
 * back to decide whether a call's open ledger attempt is run again without a human (the tool paused
 * itself; a cancelled run had not run it, or it had failed), as the event's `eventSeal` seals them.
 */
export function attemptEventFields(data: { toolCallId: string; digest: string; attempt: unknown; try?: unknown; outcome?: unknown }): Record<string, unknown> {
  return { toolCallId: data.toolCallId, digest: data.digest, attempt: data.attempt ?? null, try: data.try ?? null, outcome: data.outcome ?? null };
}

/** Whether a `tool.interrupted` / `tool.cancelled` event read back from the audit log carries eart's `eventSeal` ({@link attemptEventFields}): one appended by anyone else says nothing. */
export function attemptEventIsSealed(sealer: Sealer, threadId: string, event: { type: string; data: Record<string, unknown> }): boolean {
  const d = event.data;
  return sealer.eventIsSealed(threadId, event.type, attemptEventFields({ toolCallId: String(d.toolCallId), digest: String(d.digest), attempt: d.attempt, try: d.try, outcome: d.outcome }), d.eventSeal);
}

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

/**
 * The start of the ids of the messages eart writes and knows by id (a reviewer's guidance, eart's
 * answer to a call it did not run): a caller's message never carries one (the resume guard refuses
 * it), so none can stand in for eart's, before it is written or after a removal.
 */
export const EART_MESSAGE_ID_PREFIX = "eart-";

/**
 * What the model is told in a call's place when eart answered it without running (the record's
 * `answer`), if it did. Its id is the call's (and its proposing message's): two steps that give
 * the same answer (a createAgent tool step and the step that acts on its sibling's approval, in
 * one superstep) write one message, not two answers to one call.
 */
export function answerOf(record: DecisionRecord): ToolMessage | undefined {
  const { answer } = record;
  return answer
    ? new ToolMessage({ id: `${EART_MESSAGE_ID_PREFIX}answer:${record.messageId}:${record.toolCallId}`, tool_call_id: record.toolCallId, name: record.name, content: answer.content, status: answer.status })
    : undefined;
}
