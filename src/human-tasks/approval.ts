import { z } from "zod";
import { ApprovalError } from "../errors.js";
import type { Principal } from "../identity/registry.js";
import { verifyApprovalToken } from "./approval-token.js";
import {
  checkHumanAnswer,
  envelopeOf,
  HumanTaskEnvelopeSchema,
  HumanTaskItemSchema,
  interruptValueOf,
  NamedHumanSchema,
  parseHumanAnswer,
  type HumanAnswerDeps,
} from "./protocol.js";
import type { KeyObject } from "node:crypto";
import type { DecisionRecord } from "../decisions/records.js";

/** One call waiting for a human, as shown to the approver. */
export const ApprovalRequestItemSchema = HumanTaskItemSchema.extend({
  reasons: z.array(z.string()),
  policyIds: z.array(z.string()),
  policyVersion: z.string(),
  /** Any one of these roles may decide. */
  approverRoles: z.array(z.string()),
  /** Distinct approvers needed; present when more than one. */
  quorum: z.number().int().min(2).optional(),
  /** Who has approved so far, when a quorum is being gathered. */
  approvedBy: z.array(z.string()).optional(),
  /** When the request lapses (ISO); an answer after it is refused. */
  expiresAt: z.string().optional(),
});
export type ApprovalRequestItem = z.output<typeof ApprovalRequestItemSchema>;

/**
 * The value of the approval `interrupt()`: every call of the step that needs a human, in one
 * request.
 * @example
 * ```ts
 * const state = await graph.getState(config);
 * const request = state.tasks.flatMap((t) => t.interrupts).map((i) => i.value).find(isApprovalRequest);
 * ```
 */
export const ApprovalRequestSchema = HumanTaskEnvelopeSchema.extend({
  type: z.literal("eart.approval"),
  requests: z.array(ApprovalRequestItemSchema).min(1),
});
export type ApprovalRequest = z.output<typeof ApprovalRequestSchema>;

/** True when an interrupt value is an eart approval request. */
export function isApprovalRequest(value: unknown): value is ApprovalRequest {
  return ApprovalRequestSchema.safeParse(value).success;
}

/** The answer for one call, keyed by `toolCallId`. */
export const ApprovalDecisionSchema = z
  .object({
    toolCallId: z.string().min(1),
    type: z.enum(["approve", "reject", "edit", "respond"]),
    /** For `edit`: the arguments to run instead. They are checked by policy again. */
    args: z.record(z.string(), z.unknown()).optional(),
    /**
     * For `reject`: what the model is told; for `respond`: the answer the model gets in place of
     * the tool's result (required); for the others, a note kept in the audit log.
     */
    message: z.string().optional(),
    /** The digest of the request item: proves the approver saw this exact call on this thread. */
    digest: z.string().min(1),
    /**
     * A signed approval token (`signApprovalToken`) for this decision, when the human answers out
     * of band: it authenticates them instead of the resuming run's principal.
     */
    token: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((d, ctx) => {
    if (d.type === "edit" && d.args === undefined) ctx.addIssue({ code: "custom", path: ["args"], message: "an edit must carry args" });
    if (d.type === "respond" && d.message === undefined) ctx.addIssue({ code: "custom", path: ["message"], message: "a respond must carry the message that answers the call" });
    if (d.type !== "edit" && d.args !== undefined) ctx.addIssue({ code: "custom", path: ["args"], message: `args are only allowed on an edit, not on ${d.type}` });
  });
export type ApprovalDecision = z.output<typeof ApprovalDecisionSchema>;

/**
 * The resume value for an approval interrupt (`new Command({ resume })`). The approver is the
 * authenticated principal of the resuming run (`langgraph_auth_user`, or `user_id` set by a trusted
 * in-process app); `approver`, if given, must name the same human.
 * @example
 * ```ts
 * await graph.invoke(new Command({ resume: {
 *   decisions: [{ toolCallId: "call_1", type: "approve", digest: request.requests[0].digest }],
 * } }), { configurable: { thread_id: "t1", user_id: "sam" } });
 * ```
 */
export const ApprovalResponseSchema = z
  .object({
    approver: NamedHumanSchema.optional(),
    decisions: z.array(ApprovalDecisionSchema).min(1),
  })
  .strict();
export type ApprovalResponse = z.output<typeof ApprovalResponseSchema>;

/**
 * Distinct approvers who approved the call as it stands (an edit resets the list to its editor).
 * @example
 * ```ts
 * approversOf(record).length >= (record.verdict.quorum ?? 1)
 * ```
 */
export function approversOf(record: DecisionRecord): string[] {
  return [...new Set(record.approvals.filter((a) => a.type === "approve" || a.type === "edit").map((a) => a.approverId))];
}

/** Builds the interrupt value from the records waiting for approval. */
export function buildApprovalRequest(threadId: string, pending: readonly DecisionRecord[]): ApprovalRequest {
  return {
    ...envelopeOf(
      "eart.approval",
      threadId,
      pending.map((r) => ({ requestedBy: r.requestedBy, since: r.decidedAt })),
      pending.flatMap((r) => r.verdict.approverRoles ?? []),
    ),
    type: "eart.approval",
    requests: pending.map((r) => ({
      toolCallId: r.toolCallId,
      name: r.name,
      args: r.args,
      digest: r.digest,
      reasons: r.verdict.reasons,
      policyIds: r.verdict.policyIds,
      policyVersion: r.verdict.version,
      approverRoles: r.verdict.approverRoles ?? [],
      ...((r.verdict.quorum ?? 1) > 1 ? { quorum: r.verdict.quorum, approvedBy: approversOf(r) } : {}),
      ...(r.expiresAt ? { expiresAt: r.expiresAt } : {}),
      requestedBy: r.requestedBy,
    })),
  };
}

/** What signed approval tokens are checked against (see `signApprovalToken`). */
export interface ApprovalTokenContext {
  threadId: string;
  keys: ReadonlyMap<string, { approver: string; publicKey: KeyObject }>;
  now: Date;
  /** Nonces already used on this thread's calls. */
  used: ReadonlySet<string>;
}

/**
 * The human behind decisions that carry signed tokens: every decision carries one, each verified
 * and unused, all signed by the same approver. Undefined when no decision carries a token.
 */
function tokenPrincipal(decisions: readonly ApprovalDecision[], items: ReadonlyMap<string, ApprovalRequestItem>, context: ApprovalTokenContext | undefined): { principal: Principal; nonces: Map<string, string> } | undefined {
  const signed = decisions.filter((d) => d.token !== undefined);
  if (signed.length === 0) return undefined;
  if (signed.length !== decisions.length) {
    throw new ApprovalError("approval_token_invalid", "Either every decision of an answer carries a signed token or none does", { toolCallId: decisions.find((d) => !d.token)?.toolCallId });
  }
  if (!context || context.keys.size === 0) throw new ApprovalError("approval_token_invalid", "This graph accepts no approval tokens (no approvalKeys configured)", { toolCallId: signed[0]!.toolCallId });
  const nonces = new Map<string, string>();
  let approver: string | undefined;
  for (const d of signed) {
    const item = items.get(d.toolCallId)!;
    const claims = verifyApprovalToken(d.token!, { threadId: context.threadId, toolCallId: d.toolCallId, digest: item.digest, decision: d.type }, context.keys, context.now);
    if (context.used.has(claims.nonce) || [...nonces.values()].includes(claims.nonce)) {
      throw new ApprovalError("approval_token_replayed", `The approval token for "${d.toolCallId}" was already used`, { toolCallId: d.toolCallId });
    }
    if (approver !== undefined && claims.approver !== approver) {
      throw new ApprovalError("approval_token_invalid", "The tokens of one answer are signed by different approvers", { toolCallId: d.toolCallId });
    }
    approver = claims.approver;
    nonces.set(d.toolCallId, claims.nonce);
  }
  return { principal: { id: approver!, source: "approval_token" }, nonces };
}

/**
 * Checks a resume value against the pending request: shape, one decision per pending call (no
 * more, no fewer), an authenticated approver (the resuming run's principal) whom the registry
 * knows, holding one of each call's approver roles, who is not the requester, and digests that
 * match. Throws {@link ApprovalError}; returns the parsed response, per decision its request
 * item, and the approver's id.
 * @example
 * ```ts
 * const { approverId } = validateApprovalResponse(raw, request, { registry, identity, principal: principalFromConfig(config.configurable) });
 * ```
 */
export function validateApprovalResponse(
  raw: unknown,
  request: ApprovalRequest,
  deps: HumanAnswerDeps & { tokens?: ApprovalTokenContext },
): { response: ApprovalResponse; items: Map<string, ApprovalRequestItem>; approverId: string; tokenNonces: Map<string, string> } {
  const response = parseHumanAnswer(ApprovalResponseSchema, raw, "approval response");
  const items = new Map(request.requests.map((r) => [r.toolCallId, r]));
  const token: { signed?: ReturnType<typeof tokenPrincipal> } = {};
  const approverId = checkHumanAnswer(
    {
      named: response.approver,
      decisions: response.decisions,
      items,
      itemRoles: (item) => item.approverRoles,
      // A signed token authenticates its signer; the resuming run only relays it.
      principal: () => {
        for (const d of response.decisions) {
          if (d.token !== undefined && d.type !== "approve" && d.type !== "reject") {
            throw new ApprovalError("approval_token_invalid", `A signed token can approve or reject a call, not ${d.type} it`, { toolCallId: d.toolCallId });
          }
        }
        token.signed = tokenPrincipal(response.decisions, items, deps.tokens);
        return token.signed?.principal;
      },
    },
    deps,
    { verb: "approve", object: "approver", task: "approval" },
  );
  return { response, items, approverId, tokenNonces: token.signed?.nonces ?? new Map() };
}

/**
 * The pending approval request of a paused run: from `invoke`'s result (`__interrupt__`) or from
 * `graph.getState(config)` (`tasks[].interrupts`). Undefined when none waits.
 * @example
 * ```ts
 * const request = pendingApproval(await agent.invoke(input, config));
 * ```
 */
export function pendingApproval(source: unknown): ApprovalRequest | undefined {
  return interruptValueOf(source, ApprovalRequestSchema);
}
