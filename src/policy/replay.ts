import { z } from "zod";
import type { AuditLog } from "../audit/log.js";
import { AgentIdentitySchema } from "../identity/registry.js";
import { decideFailClosed, type PolicyDecision, type PolicyEngine, type PolicyRequest } from "./engine.js";

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

const RecordedDecisionSchema = z.object({
  toolCallId: z.string(),
  name: z.string(),
  effect: z.enum(["allow", "deny", "require_approval", "escalate"]),
  policyIds: z.array(z.string()),
  policyVersion: z.string(),
  approverRoles: z.array(z.string()).nullable().optional(),
  request: z
    .object({
      identity: AgentIdentitySchema,
      tool: z.object({ name: z.string(), args: z.record(z.string(), z.unknown()) }),
      context: z.object({
        items: z.array(z.object({ id: z.string(), source: z.string(), scope: z.string(), labels: z.array(z.string()).default([]), digest: z.string().optional() })),
        sensitivity: z.array(z.string()),
      }),
      threadId: z.string().optional(),
    })
    .nullable(),
});

/** One decision the candidate would make differently. */
export interface ReplayFlip {
  threadId: string;
  seq: number;
  toolCallId: string;
  name: string;
  recorded: { effect: PolicyDecision["effect"]; policyIds: string[]; version: string; approverRoles?: string[] };
  candidate: { effect: PolicyDecision["effect"]; policyIds: string[]; version: string; reasons: string[]; approverRoles?: string[] };
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
}

/**
 * Re-evaluates the decision requests recorded in an audit log against a candidate policy set and
 * reports which decisions would flip: the safe way to roll out a policy change. Reads only.
 * @example
 * ```ts
 * const report = await replay(auditLog, candidatePolicy);
 * for (const f of report.flips) console.log(f.threadId, f.name, f.recorded.effect, "→", f.candidate.effect);
 * ```
 */
export async function replay(auditLog: AuditLog, candidate: PolicyEngine, options: { threadIds?: string[] } = {}): Promise<ReplayReport> {
  const threadIds = options.threadIds ?? (await auditLog.listThreads());
  const report: ReplayReport = { candidateVersion: candidate.version, threads: threadIds.length, evaluated: 0, skipped: 0, flips: [] };
  for (const threadId of threadIds) {
    for (const event of await auditLog.read(threadId)) {
      if (event.type !== "policy.decided") continue;
      const parsed = RecordedDecisionSchema.safeParse(event.data);
      if (!parsed.success || parsed.data.request === null) {
        report.skipped += 1;
        continue;
      }
      const recorded = parsed.data;
      const decision = await decideFailClosed(candidate, recorded.request as PolicyRequest);
      report.evaluated += 1;
      const roles = (r: readonly string[] | null | undefined) => [...(r ?? [])].sort().join(",");
      const rolesDiffer = decision.effect === "require_approval" && roles(decision.approverRoles) !== roles(recorded.approverRoles);
      if (decision.effect !== recorded.effect || rolesDiffer) {
        report.flips.push({
          threadId,
          seq: event.seq,
          toolCallId: recorded.toolCallId,
          name: recorded.name,
          recorded: {
            effect: recorded.effect,
            policyIds: recorded.policyIds,
            version: recorded.policyVersion,
            ...(recorded.approverRoles ? { approverRoles: recorded.approverRoles } : {}),
          },
          candidate: {
            effect: decision.effect,
            policyIds: decision.policyIds,
            version: decision.version,
            reasons: decision.reasons,
            ...(decision.effect === "require_approval" ? { approverRoles: decision.approverRoles } : {}),
          },
        });
      }
    }
  }
  return report;
}
