import { z } from "zod";
import type { AuditLog, AuditVerifyOptions } from "../audit/log.js";
import { REDACTION_MARK } from "../context/redaction.js";
import { ContextItemSchema } from "../decisions/records.js";
import { AgentIdentitySchema } from "../identity/registry.js";
import { BUILTIN_POLICY_IDS, decideFailClosed, type PolicyDecision, type PolicyEngine, type PolicyRequest } from "./engine.js";

/**
 * A policy request as the audit log keeps it: everything the engine saw, but for the content of
 * retrieved items (ids, sources, scopes and labels stay).
 * @example
 * ```ts
 * recordedRequest(request).context.items[0] // { id, source, scope, labels }
 * ```
 */
export function recordedRequest(request: PolicyRequest): PolicyRequest {
  return {
    ...request,
    context: {
      sensitivity: request.context.sensitivity,
      items: request.context.items.map(({ content: _content, ...item }) => item),
    },
  };
}

/** A verdict as the audit log keeps it: what replay compares a candidate's with. */
const RecordedVerdictSchema = z.object({
  effect: z.enum(["allow", "deny", "require_approval", "escalate"]),
  policyIds: z.array(z.string()),
  approverRoles: z.array(z.string()).nullable().optional(),
  /** Recorded since quorums were compared (null: one approver); absent in older records. */
  quorum: z.number().int().positive().nullable().optional(),
});

const RecordedRequestSchema = z.object({
  identity: AgentIdentitySchema,
  tool: z.object({ name: z.string(), args: z.record(z.string(), z.unknown()) }),
  context: z.object({
    // What the engine saw of each item: all but its content (its provider and seal included).
    items: z.array(ContextItemSchema.omit({ content: true })),
    sensitivity: z.array(z.string()),
  }),
  threadId: z.string().optional(),
});

const RecordedDecisionSchema = RecordedVerdictSchema.extend({
  toolCallId: z.string(),
  name: z.string(),
  policyVersion: z.string(),
  request: RecordedRequestSchema.nullable().optional(),
  /** The engine's own verdict, recorded when budgets changed it (a deny, their approvers). */
  beforeBudgets: RecordedVerdictSchema.optional(),
});

/** One decision the candidate would make differently. */
export interface ReplayFlip {
  threadId: string;
  seq: number;
  toolCallId: string;
  name: string;
  /** `approval.decided` for an approver's edit (the call as edited, decided again), else `policy.decided`. */
  event: "policy.decided" | "approval.decided";
  recorded: { effect: PolicyDecision["effect"]; policyIds: string[]; version: string; approverRoles?: string[]; quorum?: number };
  candidate: { effect: PolicyDecision["effect"]; policyIds: string[]; version: string; reasons: string[]; approverRoles?: string[]; quorum?: number };
}

/** A decision an engine made that replay cannot judge as the engine saw it. */
export interface UnreplayableDecision {
  threadId: string;
  seq: number;
  toolCallId: string;
  name: string;
  /** `no_request`: recorded without what the engine was asked (an older record, or one stripped); `redacted`: redaction replaced some of it. */
  reason: "no_request" | "redacted";
}

/** What {@link replay} found. */
export interface ReplayReport {
  candidateVersion: string;
  threads: number;
  /** Decisions re-evaluated against the candidate. */
  evaluated: number;
  /** Decisions eart made before the engine (permissions, arguments, unknown tools): not replayable. */
  skipped: number;
  flips: ReplayFlip[];
  /** Decisions of an engine that could not be replayed, each named: never counted as unchanged. */
  unreplayable: UnreplayableDecision[];
  /** Threads whose audit chain did not verify (an edited or deleted event): none of their decisions were replayed. */
  unverified: { threadId: string; reason: string }[];
}

/** Options of {@link replay}. */
export interface ReplayOptions {
  /** The threads to replay (default: every thread of the log). */
  threadIds?: string[];
  /** How each thread's chain is verified before it is replayed (a public key, a head kept outside the store). */
  verify?: AuditVerifyOptions;
}

const BUILTIN = new Set<string>(Object.values(BUILTIN_POLICY_IDS));

/**
 * Re-evaluates the decision requests recorded in an audit log against a candidate policy set and
 * reports which decisions would flip: the safe way to roll out a policy change. Reads only.
 *
 * Each thread's chain is verified first: a thread that does not verify is listed in `unverified`
 * and not replayed (its records may be an insider's). The decisions replayed are the model's
 * calls (`policy.decided`) and the calls approvers edited, as edited (`approval.decided`). A
 * candidate is compared with the engine's own verdict (before budgets) on its effect, approver
 * roles and quorum. A decision an engine made that cannot be judged as it saw it (recorded without
 * its request, or with values redaction replaced) is listed in `unreplayable`, never counted as
 * unchanged.
 * @example
 * ```ts
 * const report = await replay(auditLog, candidatePolicy);
 * for (const f of report.flips) console.log(f.threadId, f.name, f.recorded.effect, "→", f.candidate.effect);
 * ```
 */
export async function replay(auditLog: AuditLog, candidate: PolicyEngine, options: ReplayOptions = {}): Promise<ReplayReport> {
  // Every thread the store lists, and every one its global log knows: a thread deleted whole from
  // the store is not "no change", it is a thread replay could not read.
  const logged = options.threadIds === undefined && typeof auditLog.globalLog === "function" ? (await auditLog.globalLog()).entries.flatMap((e) => e.heads.map((h) => h.threadId)) : [];
  const threadIds = options.threadIds ?? [...new Set([...(await auditLog.listThreads()), ...logged])].sort();
  const report: ReplayReport = { candidateVersion: candidate.version, threads: threadIds.length, evaluated: 0, skipped: 0, flips: [], unreplayable: [], unverified: [] };
  for (const threadId of threadIds) {
    const events = await auditLog.read(threadId);
    const verified = await auditLog.verify(threadId, options.verify);
    if (!verified.ok) {
      report.unverified.push({ threadId, reason: `${verified.brokenAt.reason} at event ${verified.brokenAt.seq}` });
      continue;
    }
    for (const event of events) {
      if (event.type !== "policy.decided" && !(event.type === "approval.decided" && event.data.decision === "edit")) continue;
      const parsed = RecordedDecisionSchema.safeParse(event.data);
      const ids = { threadId, seq: event.seq, toolCallId: String(event.data.toolCallId ?? ""), name: String(event.data.name ?? "") };
      if (!parsed.success || !parsed.data.request) {
        const policyIds = Array.isArray(event.data.policyIds) ? (event.data.policyIds as unknown[]) : [];
        // eart's own refusals before the engine (and an edit recorded before edits kept their request) are not the engine's to replay.
        if (event.type === "policy.decided" && (policyIds.length === 0 || policyIds.every((id) => BUILTIN.has(String(id))))) report.skipped += 1;
        else if (event.type === "policy.decided") report.unreplayable.push({ ...ids, reason: "no_request" });
        else report.skipped += 1;
        continue;
      }
      const recorded = parsed.data;
      if (holdsRedaction(recorded.request)) {
        report.unreplayable.push({ ...ids, reason: "redacted" });
        continue;
      }
      const decision = await decideFailClosed(candidate, recorded.request as PolicyRequest);
      report.evaluated += 1;
      const engine = recorded.beforeBudgets ?? recorded;
      if (verdictFlipped(engine, decision)) {
        report.flips.push({
          ...ids,
          toolCallId: recorded.toolCallId,
          name: recorded.name,
          event: event.type,
          recorded: {
            effect: engine.effect,
            policyIds: engine.policyIds,
            version: recorded.policyVersion,
            ...(engine.approverRoles ? { approverRoles: engine.approverRoles } : {}),
            ...(engine.quorum ? { quorum: engine.quorum } : {}),
          },
          candidate: {
            effect: decision.effect,
            policyIds: decision.policyIds,
            version: decision.version,
            reasons: decision.reasons,
            ...(decision.effect === "require_approval" ? { approverRoles: decision.approverRoles } : {}),
            ...(decision.effect === "require_approval" && decision.quorum ? { quorum: decision.quorum } : {}),
          },
        });
      }
    }
  }
  return report;
}

/** Whether any string in `value` (or any key) is a redaction's mark; walked without recursion, as recorded values may nest deep. */
function holdsRedaction(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === "string") {
      if (v.includes(REDACTION_MARK)) return true;
    } else if (typeof v === "object" && v !== null) {
      for (const [key, inner] of Object.entries(v)) {
        if (key.includes(REDACTION_MARK)) return true;
        stack.push(inner);
      }
    }
  }
  return false;
}

/**
 * A verdict as the audit log keeps it for {@link replay} (`beforeBudgets`, an edit's verdict): its
 * effect, policy ids, and an approval's roles and quorum.
 * @example
 * ```ts
 * comparedVerdict(decided); // { effect: "require_approval", policyIds: ["refund.supervisor"], approverRoles: ["supervisor"], quorum: null }
 * ```
 */
export function comparedVerdict(v: PolicyDecision): z.output<typeof RecordedVerdictSchema> {
  return {
    effect: v.effect,
    policyIds: v.policyIds,
    approverRoles: v.effect === "require_approval" ? v.approverRoles : null,
    quorum: v.effect === "require_approval" ? (v.quorum ?? null) : null,
  };
}

/**
 * Whether a candidate decides otherwise than a verdict did, in what it lets happen: the effect,
 * and for an approval its roles and its quorum (an older record without one: not compared). Shadow
 * mode and replay compare alike.
 * @example
 * ```ts
 * verdictFlipped(comparedVerdict(enforced), candidate);
 * ```
 */
export function verdictFlipped(recorded: z.output<typeof RecordedVerdictSchema>, candidate: PolicyDecision): boolean {
  if (recorded.effect !== candidate.effect) return true;
  if (candidate.effect !== "require_approval") return false;
  const roles = (r: readonly string[] | null | undefined) => [...(r ?? [])].sort().join(",");
  if (roles(recorded.approverRoles) !== roles(candidate.approverRoles)) return true;
  return recorded.quorum !== undefined && (recorded.quorum ?? 1) !== (candidate.quorum ?? 1);
}
