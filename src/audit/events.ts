import { z } from "zod";

/**
 * What each kind of audit event records: one schema per event type, keyed by the type. Producers
 * are type-checked against them ({@link AuditEventInput} is a union over the types), consumers read
 * typed fields through {@link isAuditEventOf}, and a SIEM can validate what it receives with
 * {@link AuditEventDataSchemas}. The schemas are open (`z.looseObject`): an event may carry more
 * than they name (a custom node's own fields), and what they name is what eart writes.
 */

const Str = z.string();
const Strs = z.array(z.string());
const Int = z.number().int();
/** Where an event came from when eart wrote it after the fact, from the effect ledger (a crash kept it out of the log). */
const Reconstructed = z.literal("ledger").optional();

/** The identity of a tool call in every tool and approval event. */
const CallFields = { toolCallId: Str, name: Str, digest: Str };

/** A refused answer (approval, recovery, escalation): the refusal, and a bounded copy of what was given with the digest of all of it. */
const Refusal = z.looseObject({
  code: Str,
  message: Str,
  details: z.unknown().optional(),
  answer: z.unknown().optional(),
  answerTruncated: z.boolean().optional(),
  answerDigest: Str.optional(),
  answerUnreadable: Str.optional(),
  claimedBy: Str.optional(),
});

/** The data of each event type. */
export const AuditEventDataSchemas = {
  "run.started": z.looseObject({ agentId: Str.optional(), userId: Str.optional(), text: Str.optional(), request: z.unknown().optional() }),
  "identity.bound": z.looseObject({ agentId: Str, userId: Str, agentRoles: Strs, userRoles: Strs, tools: Strs, dataScopes: Strs, source: Str }),
  "model.output": z.looseObject({ messageId: Str.optional(), text: Str, toolCalls: z.array(z.unknown()).optional() }),
  "model.failed": z.looseObject({ attempt: Int, error: Str, model: Int, modelName: Str, next: Str }),
  "policy.decided": z.looseObject({
    ...CallFields,
    agentId: Str,
    userId: Str,
    effect: Str,
    status: Str,
    policyIds: Strs,
    policyVersion: Str,
    reasons: Strs,
    approverRoles: Strs.nullable(),
    request: z.unknown(),
  }),
  "policy.shadow_flip": z.looseObject({ ...CallFields, enforced: z.unknown(), candidate: z.unknown() }),
  "approval.requested": z.looseObject({ type: Str, threadId: Str, requestedBy: z.unknown(), since: Str, roles: Strs, requests: z.array(z.unknown()) }),
  "approval.decided": z.looseObject({
    ...CallFields,
    approverId: Str,
    authenticatedBy: Str.nullable(),
    relayedBy: Str.optional(),
    decision: Str,
    status: Str,
    effect: Str,
    policyIds: Strs,
    policyVersion: Str,
    requestedUnderVersion: Str.nullable(),
    originalDigest: Str,
    message: Str.nullable(),
  }),
  "approval.refused": Refusal,
  "approval.expired": z.looseObject({ ...CallFields, approverId: Str.nullable(), expiresAt: Str.nullable(), answeredAt: Str, outcome: Str }),
  "tool.started": z.looseObject({ ...CallFields, attempt: Int, try: Int.optional(), breakerTrial: z.boolean().optional(), startedAt: Str.nullable().optional(), reconstructed: Reconstructed }),
  "tool.succeeded": z.looseObject({ ...CallFields, attempt: Int, result: Str.optional(), truncated: z.boolean().optional(), withheld: Str.optional(), markedDoneBy: Str.optional(), reconstructed: Reconstructed }),
  "tool.failed": z.looseObject({ ...CallFields, attempt: Int, try: Int.optional(), kind: Str, error: Str, by: Str.optional(), reconstructed: Reconstructed }),
  "tool.blocked": z.looseObject({ ...CallFields, reason: Str, recordedDigest: Str.nullable().optional(), policyChanged: z.object({ from: Str, to: Str }).optional() }),
  "tool.retrying": z.looseObject({ ...CallFields, attempt: Int, try: Int, delayMs: z.number(), error: Str }),
  "tool.fallback": z.looseObject({ ...CallFields, attempt: Int, fallback: Str, cause: Str, result: Str, truncated: z.boolean() }),
  "tool.replayed": z.looseObject({ ...CallFields, attempt: Int, status: Str }),
  /** `roles`: who may resolve it, when the tool node was told (the inbox lists it for them). */
  "tool.recovery_requested": z.looseObject({ ...CallFields, attempt: Int, reason: Str, error: Str.nullable(), roles: Strs.optional() }),
  "tool.recovery_decided": z.looseObject({ ...CallFields, attempt: Int, reason: Str, decision: Str, resolverId: Str, message: Str.nullable() }),
  "tool.recovery_refused": Refusal,
  "tool.circuit_opened": z.looseObject({ ...CallFields, attempt: Int, error: Str }),
  /**
   * The run was cancelled (its `AbortSignal` aborted) while the call was being run: not a tool
   * failure. `outcome` is what the cancelled ledger attempt may have done: `not_run` (claimed, its
   * tool never called), `failed` (its tool failed before the cancellation, as a try that is retried
   * does), `unknown` (the tool or its fallback was running, or had timed out). The next run runs a
   * `not_run` or `failed` attempt again under the same key; an `unknown` one only when the tool is
   * idempotent, otherwise a human decides.
   */
  "tool.cancelled": z.looseObject({ ...CallFields, attempt: Int, try: Int.optional(), outcome: z.enum(["not_run", "failed", "unknown"]), reason: Str }),
  /**
   * The tool paused the run with LangGraph's `interrupt()` (it asks someone a question): neither a
   * failure nor an outcome. LangGraph runs the tool again from its start once the answer comes; the
   * ledger attempt stays `started`, and the next run claims a new attempt under the same key and
   * calls the tool again, which then reads the answer (what it did before `interrupt()` runs again,
   * as LangGraph's rule for interrupts is).
   */
  "tool.interrupted": z.looseObject({ ...CallFields, attempt: Int, try: Int.optional() }),
  "context.retrieved": z.looseObject({
    items: z.array(z.unknown()),
    dropped: z.array(z.unknown()),
    failed: z.array(z.unknown()),
    redacted: z.array(z.unknown()),
    missing: Strs,
    sensitivity: Strs,
  }),
  /** `roles`: the reviewers' roles, when the node that asked knew them (the inbox lists the case for them). */
  "escalation.requested": z.looseObject({ reason: Str, signals: z.array(z.unknown()), toolCallIds: Strs.optional(), roles: Strs.optional() }),
  /** `digest`: the case answered (the request's digest). */
  "escalation.decided": z.looseObject({ reviewerId: Str, action: Str, reason: Str, message: Str, digest: Str.optional() }),
  "escalation.refused": Refusal,
  "budget.charge_failed": z.looseObject({ toolCallId: Str, name: Str, error: Str }),
  "state.tamper_detected": z.looseObject({ node: Str, forged: z.array(z.object({ channel: Str, toolCallId: Str.optional(), itemId: Str.optional() })), outcome: Str.optional() }),
  "run.completed": z.looseObject({ messageId: Str.optional(), outcome: Str.optional() }),
} as const;

/** Every kind of audit event. */
export type AuditEventType = keyof typeof AuditEventDataSchemas;

/** Every kind of audit event, as a list (in the order the schemas are declared). */
export const AUDIT_EVENT_TYPES = Object.keys(AuditEventDataSchemas) as [AuditEventType, ...AuditEventType[]];

/** The events that record a refused answer to a human task (approval, recovery, escalation). */
export const REFUSAL_EVENT_TYPES: ReadonlySet<AuditEventType> = new Set(["approval.refused", "tool.recovery_refused", "escalation.refused"]);

/** The data an event of type `T` carries, as a producer writes it. */
export type AuditEventData<T extends AuditEventType> = z.input<(typeof AuditEventDataSchemas)[T]>;

/**
 * Whether an event is of type `type`, narrowing its `data` to what that type records.
 * @example
 * ```ts
 * for (const e of await auditLog.read("t1")) if (isAuditEventOf(e, "approval.decided")) console.log(e.data.approverId);
 * ```
 */
export function isAuditEventOf<T extends AuditEventType, E extends { type: string; data: Record<string, unknown> }>(event: E, type: T): event is E & { type: T; data: AuditEventData<T> } {
  return event.type === type;
}

/** What a consumer reads of an event of type `T`: each field the type records, checked, or absent. */
export type AuditEventReading<T extends AuditEventType> = Partial<z.output<(typeof AuditEventDataSchemas)[T]>>;

const readers = new Map<AuditEventType, z.ZodType>();

/**
 * The data of an event of type `type`, read through that type's schema with every field optional:
 * the fields it records, type-checked (an event written before a field existed reads without it),
 * or undefined when the event is of another type or a field holds the wrong kind of value (a store
 * edited behind eart's back). How exporters, the CLI and replay read events, instead of guessing
 * at `data` field by field.
 * @example
 * ```ts
 * const decided = readEventData(event, "approval.decided");
 * if (decided?.approverId) approvers.add(decided.approverId);
 * ```
 */
export function readEventData<T extends AuditEventType>(event: { type: string; data: unknown }, type: T): AuditEventReading<T> | undefined {
  if (event.type !== type) return undefined;
  let reader = readers.get(type);
  if (!reader) readers.set(type, (reader = (AuditEventDataSchemas[type] as z.ZodObject).partial()));
  const parsed = reader.safeParse(event.data);
  return parsed.success ? (parsed.data as AuditEventReading<T>) : undefined;
}
