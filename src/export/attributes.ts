import type { CallFacts, RedactedEvent, Segment } from "./segments.js";

/**
 * eart's own attributes, one vocabulary for every exporter: the OpenTelemetry span attributes and
 * the LangSmith run metadata carry the same keys for the same facts.
 * @example
 * ```ts
 * const approver = span.attributes[EartAttributes.APPROVAL_APPROVER]; // "sam"
 * ```
 */
export const EartAttributes = {
  THREAD_ID: "eart.thread.id",
  AGENT_ID: "eart.agent.id",
  USER_ID: "eart.user.id",
  SEGMENT_KIND: "eart.segment.kind",
  RUN_OUTCOME: "eart.run.outcome",
  WAITING_FOR: "eart.waiting_for",
  POLICY_DECISION: "eart.policy.decision",
  POLICY_IDS: "eart.policy.ids",
  POLICY_VERSION: "eart.policy.version",
  POLICY_REASONS: "eart.policy.reasons",
  APPROVAL_APPROVER: "eart.approval.approver",
  APPROVAL_DECISION: "eart.approval.decision",
  APPROVALS: "eart.approvals",
  TOOL_CALL_ID: "eart.tool.call_id",
  TOOL_DIGEST: "eart.tool.digest",
  TOOL_DIGESTS: "eart.tool.digests",
  TOOL_ATTEMPT: "eart.tool.attempt",
  TOOL_TRY: "eart.tool.try",
  RESUMED_FROM_RUN_ID: "eart.resumed_from.run_id",
  RESUMED_FROM_HASH: "eart.resumed_from.hash",
  LINK_TYPE: "eart.link.type",
  AUDIT_SEQ: "eart.audit.seq",
  AUDIT_FIRST_SEQ: "eart.audit.first_seq",
  AUDIT_LAST_SEQ: "eart.audit.last_seq",
  AUDIT_HASH: "eart.audit.hash",
  AUDIT_HEAD: "eart.audit.head",
  AUDIT_GLOBAL_HEAD: "eart.audit.global_head",
  AUDIT_GLOBAL_HEAD_SIGNED: "eart.audit.global_head_signed",
  MESSAGE_ID: "eart.message.id",
  MESSAGE_TOOL_CALLS: "eart.message.tool_calls",
  EVENT_TYPE: "eart.event.type",
  EVENT_DATA: "eart.event.data",
} as const;

/**
 * The eart attributes of a segment (one run of a thread, from its start or resume to its pause or
 * end), the same in every exporter: who, what kind of segment and how it ended, what policy decided
 * and who approved, the digests of the calls, where in the audit chain it starts and ends, and the
 * global head it reached. Exporters add their own (GenAI conventions, LangSmith's thread id).
 * @example
 * ```ts
 * span.setAttributes(compact(segmentAttributes(segment)));
 * ```
 */
export function segmentAttributes(s: Segment<unknown, unknown>): Record<string, string | number | string[] | undefined> {
  const E = EartAttributes;
  return {
    [E.THREAD_ID]: s.threadLabel,
    [E.AGENT_ID]: s.agentId,
    [E.USER_ID]: s.userId,
    [E.SEGMENT_KIND]: s.kind,
    [E.RUN_OUTCOME]: s.outcome ?? "running",
    [E.WAITING_FOR]: s.waitingFor,
    [E.POLICY_DECISION]: [...s.effects],
    [E.POLICY_IDS]: [...s.policyIds],
    [E.POLICY_VERSION]: s.policyVersions.size > 0 ? [...s.policyVersions].join(",") : undefined,
    [E.APPROVAL_APPROVER]: s.approvers.size > 0 ? [...s.approvers].join(",") : undefined,
    [E.TOOL_DIGESTS]: [...s.digests],
    [E.RESUMED_FROM_HASH]: s.resumedFrom?.lastHash,
    [E.AUDIT_FIRST_SEQ]: s.firstSeq,
    [E.AUDIT_LAST_SEQ]: s.lastSeq,
    [E.AUDIT_HEAD]: s.lastHash,
    [E.AUDIT_GLOBAL_HEAD]: s.globalHead ? `${s.globalHead.gseq}:${s.globalHead.hash}` : undefined,
    [E.AUDIT_GLOBAL_HEAD_SIGNED]: s.globalHead?.signed ? JSON.stringify(s.globalHead.signed) : undefined,
  };
}

/**
 * The eart attributes of one audit event, the same in every exporter: where it sits in the chain,
 * and the global head its append reached (a witness outside the store, signed when the store signs).
 */
export function eventAttributes(e: RedactedEvent): Record<string, string | number | undefined> {
  const E = EartAttributes;
  return {
    [E.AUDIT_SEQ]: e.seq,
    [E.AUDIT_HASH]: e.hash,
    [E.AUDIT_GLOBAL_HEAD]: e.globalHead ? `${e.globalHead.gseq}:${e.globalHead.hash}` : undefined,
    [E.AUDIT_GLOBAL_HEAD_SIGNED]: e.globalHead?.signed ? JSON.stringify(e.globalHead.signed) : undefined,
  };
}

/** The eart attributes of a tool call: what policy decided for it, who approved it, and its digest. */
export function callAttributes(call: CallFacts | undefined): Record<string, string | string[] | undefined> {
  const E = EartAttributes;
  if (!call) return {};
  return {
    [E.TOOL_CALL_ID]: call.toolCallId,
    [E.TOOL_DIGEST]: call.digest,
    [E.POLICY_DECISION]: call.effect,
    [E.POLICY_IDS]: call.policyIds,
    [E.POLICY_VERSION]: call.policyVersion,
    [E.APPROVAL_APPROVER]: call.approverId,
    [E.APPROVAL_DECISION]: call.approval,
  };
}
