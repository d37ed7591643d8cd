import { z } from "zod";

/**
 * Schemas of the records eart keeps in graph state, and the pure reducers that merge them. The
 * LangGraph channels that hold them are defined in `eart/nodes` (`GovernedAnnotation`).
 * Records are persisted in checkpoints, so each carries a schema version, and times are ISO
 * strings (dates do not survive a checkpoint round trip).
 */

/** One retrieved item, with provenance and sensitivity labels. */
export const ContextItemSchema = z.object({
  id: z.string(),
  source: z.string(),
  /** The data scope an identity needs to see this item. */
  scope: z.string(),
  labels: z.array(z.string()).default([]),
  digest: z.string().optional(),
  content: z.unknown().optional(),
  /** The provider that gave it (its name in the retrieval): another provider's item of the same id is kept beside it, not in its place. */
  provider: z.string().optional(),
  /** eart's seal (the retrieval's): an item without a valid one is never shown to the model or to policy. */
  seal: z.string().optional(),
});
export type ContextItem = z.output<typeof ContextItemSchema>;

/** What the thread has seen: retrieved items and the sensitivity labels they raised. */
export const ThreadContextSchema = z.object({
  items: z.array(ContextItemSchema).default([]),
  /** Sensitivity labels of the thread; they only rise. */
  sensitivity: z.array(z.string()).default([]),
});
export type ThreadContext = z.output<typeof ThreadContextSchema>;

export const emptyThreadContext = (): ThreadContext => ({ items: [], sensitivity: [] });

/** Merges context: items by id (later wins), sensitivity labels as a growing set. */
export function mergeThreadContext(current: ThreadContext | undefined, update: Partial<ThreadContext> | undefined): ThreadContext {
  const base = current ?? emptyThreadContext();
  if (!update) return base;
  const items = new Map(base.items.map((i) => [i.id, i]));
  for (const item of update.items ?? []) items.set(item.id, ContextItemSchema.parse(item));
  const sensitivity = [...new Set([...base.sensitivity, ...(update.sensitivity ?? [])])].sort();
  return { items: [...items.values()], sensitivity };
}

/** Lifecycle of one governed tool call. */
export const DecisionStatusSchema = z.enum([
  "allowed",
  "denied",
  "invalid",
  "pending_approval",
  "approved",
  "rejected",
  "responded",
  "expired",
  "escalated",
  "executed",
  "failed",
  "blocked",
  "recovery_pending",
]);
export type DecisionStatus = z.output<typeof DecisionStatusSchema>;

/** One approver's answer for one call. */
export const ApprovalRecordSchema = z.object({
  approverId: z.string(),
  type: z.enum(["approve", "edit", "reject", "respond"]),
  at: z.string(),
  message: z.string().optional(),
  /** For an edit: the digest of the call as proposed, before the edit. */
  originalDigest: z.string().optional(),
});
export type ApprovalRecord = z.output<typeof ApprovalRecordSchema>;

/** The verdict a policy engine gave, as persisted. */
export const RecordedVerdictSchema = z.object({
  effect: z.enum(["allow", "deny", "require_approval", "escalate"]),
  reasons: z.array(z.string()),
  policyIds: z.array(z.string()),
  version: z.string(),
  approverRoles: z.array(z.string()).optional(),
  quorum: z.number().int().min(1).optional(),
  /** Role groups that must each approve (policy's `approverGroups`): every group by a holder of one of its roles. */
  approverGroups: z.array(z.array(z.string()).min(1)).optional(),
  /** Whose approvals make up the quorum, when not every approver's do: policy's roles, where a budget's approvers are needed beside them. */
  quorumRoles: z.array(z.string()).optional(),
  expiresInMs: z.number().int().positive().optional(),
  /** The answers an approver may give (policy's `allowedDecisions`); every kind when absent. */
  allowedDecisions: z.array(z.enum(["approve", "edit", "reject", "respond"])).optional(),
  evaluationError: z.boolean().optional(),
});

/** Why a call waits for a human after it was allowed: its outcome is unknown, or everything failed. */
export const RecoveryReasonSchema = z.enum(["outcome_unknown", "timeout", "exhausted", "circuit_open", "permission_denied"]);
export type RecoveryReason = z.output<typeof RecoveryReasonSchema>;

/** A human's answer for a call waiting in recovery. */
export const RecoveryResolutionSchema = z.object({
  type: z.enum(["retry", "mark_done", "abandon"]),
  by: z.string(),
  at: z.string(),
  message: z.string().optional(),
  /** For `mark_done`: the result recorded in the tool's place (JSON). */
  result: z.unknown().optional(),
});
export type RecoveryResolution = z.output<typeof RecoveryResolutionSchema>;

/**
 * Recovery of an allowed or approved call that the tool node could not finish on its own. The
 * human's resolution applies to the ledger attempt it names; it is used once.
 */
export const RecoveryRecordSchema = z.object({
  reason: RecoveryReasonSchema,
  /** The effect-ledger attempt the human decides about; 0 when the tool never started. */
  attempt: z.number().int().nonnegative(),
  error: z.string().optional(),
  at: z.string(),
  /** The status the call goes back to once resolved. */
  resumeStatus: z.enum(["allowed", "approved"]),
  /**
   * The roles that may resolve it, as the tool node was told when it handed the call over: they
   * answer this request (a later change of roles applies to later requests), and the inbox lists
   * it for them.
   */
  roles: z.array(z.string().min(1)).min(1).optional(),
  resolution: RecoveryResolutionSchema.optional(),
});
export type RecoveryRecord = z.output<typeof RecoveryRecordSchema>;

/**
 * One record per tool call: the digest of the normalised call, the verdict, the policy version,
 * the approvals and the execution status.
 */
export const DecisionRecordSchema = z.object({
  schemaVersion: z.literal(1),
  toolCallId: z.string().min(1),
  /** Id of the AI message that proposed the call. */
  messageId: z.string(),
  name: z.string(),
  args: z.record(z.string(), z.unknown()),
  /**
   * The arguments as the tool reads them (its schema's defaults, coercions and transforms), when
   * that differs from `args`: what policy judged, what budgets count, what the approver is shown.
   */
  parsedArgs: z.record(z.string(), z.unknown()).optional(),
  digest: z.string(),
  verdict: RecordedVerdictSchema,
  status: DecisionStatusSchema,
  approvals: z.array(ApprovalRecordSchema).default([]),
  requestedBy: z.object({ agentId: z.string(), userId: z.string() }),
  decidedAt: z.string(),
  /** When the approval request lapses (ISO); set for require_approval verdicts that expire. */
  expiresAt: z.string().optional(),
  /** When an approval request for this call last lapsed (ISO). */
  expiredAt: z.string().optional(),
  executedAt: z.string().optional(),
  /** Set while and after the call waited for a human to recover it. */
  recovery: RecoveryRecordSchema.optional(),
  /** Nonces of the signed approval tokens already used on this call: each token counts once. */
  usedTokens: z.array(z.string()).optional(),
  /** Its cross-thread budgets were reserved in the budget store when it was allowed or approved. */
  budgetReserved: z.boolean().optional(),
  /**
   * What the model was told in the tool's place, for a call answered without running (denied,
   * invalid, rejected, answered by a human, expired): a tool step after the decision answers from it.
   */
  answer: z.object({ content: z.string(), status: z.enum(["success", "error"]) }).optional(),
  /** eart's seal over this record for its thread (see `Sealer`): a record without a valid one grants nothing. */
  seal: z.string().optional(),
});
export type DecisionRecord = z.output<typeof DecisionRecordSchema>;

/**
 * Merges decision records by `toolCallId`, the later write winning. It never throws: a reducer
 * that throws on a stored write would leave the thread unreadable. Nodes validate what they write.
 */
export function mergeDecisions(current: DecisionRecord[] | undefined, update: DecisionRecord[] | undefined): DecisionRecord[] {
  const base = current ?? [];
  if (!update || update.length === 0) return base;
  const out = [...base];
  const index = new Map(out.map((r, i) => [r.toolCallId, i]));
  for (const record of update) {
    const at = index.get(record.toolCallId);
    if (at === undefined) {
      index.set(record.toolCallId, out.length);
      out.push(record);
    } else {
      out[at] = record;
    }
  }
  return out;
}

/** Why a case goes to a human reviewer. */
export const EscalationSignalSchema = z.object({
  kind: z.enum(["policy", "missing_context", "low_confidence", "checks_disagree"]),
  detail: z.string(),
});
export type EscalationSignal = z.output<typeof EscalationSignalSchema>;

/**
 * A case handed to a human. Written by the node that finds the reason (the policy gate, context
 * retrieval, the escalation guard's first pass) and cleared (`null`) once a reviewer answered.
 */
export const EscalationSchema = z.object({
  /** The case's own id (random): two cases a thread opened at one clock reading are two cases. */
  id: z.string().optional(),
  reason: z.string(),
  toolCallIds: z.array(z.string()).default([]),
  policyIds: z.array(z.string()).default([]),
  at: z.string(),
  /** What raised it; absent on cases raised by a policy `escalate` verdict. */
  signals: z.array(EscalationSignalSchema).optional(),
});
export type Escalation = z.output<typeof EscalationSchema>;

/**
 * A reviewer's send-back, as eart records it (never a marker in a message, which the customer
 * could write): which guidance message it was, for which answer, and the signals it cleared for
 * that answer only.
 */
export const ReviewSchema = z.object({
  /** Id of the guidance message the reviewer's answer became. */
  guidanceMessageId: z.string(),
  reviewerId: z.string(),
  /** SHA-256 of the canonical JSON of the reviewed answer (its text and tool calls). */
  answerDigest: z.string(),
  /** The signals (`kind:detail`) the reviewer saw; they are not raised again for that answer. */
  signals: z.array(z.string()),
  at: z.string(),
});
export type Review = z.output<typeof ReviewSchema>;

/** Per-thread counters (calls, summed amounts) kept by budget rules. */
export const BudgetSchema = z.record(z.string(), z.number());
export type Budget = z.output<typeof BudgetSchema>;

/**
 * Merges per-thread budget counters: each counter only rises (its key names its window, so a new
 * window is a new key). A write that would lower one, or is not a finite number, leaves it as it
 * was: whoever can write state cannot give a thread its budget back.
 * @example
 * ```ts
 * mergeBudget({ "refunds|t1|2025-03-10|sum": 740 }, { "refunds|t1|2025-03-10|sum": 0 }) // { …: 740 }
 * ```
 */
export function mergeBudget(current: Budget | undefined, update: Budget | undefined): Budget {
  const out: Budget = { ...(current ?? {}) };
  if (!update || typeof update !== "object") return out;
  for (const [key, value] of Object.entries(update)) {
    if (typeof value === "number" && Number.isFinite(value) && !(value <= (out[key] ?? Number.NEGATIVE_INFINITY))) out[key] = value;
  }
  return out;
}
