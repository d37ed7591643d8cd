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
import { HITL_DECISION_TYPES, hitlRequestFields, HitlRequestFieldsSchema, keyedFromPositional, type HitlDecisionType, type HitlRequestFields } from "./hitl.js";

/** One call waiting for a human, as shown to the approver. */
export const ApprovalRequestItemSchema = HumanTaskItemSchema.extend({
  reasons: z.array(z.string()),
  policyIds: z.array(z.string()),
  policyVersion: z.string(),
  /** Any one of these roles may decide. */
  approverRoles: z.array(z.string()),
  /** Distinct approvers needed; present when more than one. */
  quorum: z.number().int().min(2).optional(),
  /**
   * Groups of roles that must each approve (a budget's approvers beside policy's): every group by
   * a holder of one of its roles; present when the call has them.
   */
  approverGroups: z.array(z.array(z.string())).optional(),
  /** Who has approved so far, when a quorum or several groups are being gathered. */
  approvedBy: z.array(z.string()).optional(),
  /** When the request lapses (ISO); an answer after it is refused. */
  expiresAt: z.string().optional(),
  /**
   * When an approver edited the call since it was first asked about (while a quorum is gathered):
   * the digest of the call before that edit. A positional (HITL) answer carries no digest, so it
   * cannot show it saw the edit: it may edit or reject such a call, not approve it.
   */
  originalDigest: z.string().optional(),
  /** The answers policy lets an approver give this call; any when absent (approve, edit, reject, respond). */
  allowedDecisions: z.array(z.enum(["approve", "edit", "reject", "respond"])).optional(),
  /**
   * The arguments as the tool reads them, when that differs from `args` (a default its schema
   * fills in, a coerced value): what policy judged and what the call runs with. An edit gives
   * arguments as `args` are given.
   */
  parsedArgs: z.record(z.string(), z.unknown()).optional(),
});
export type ApprovalRequestItem = z.output<typeof ApprovalRequestItemSchema>;

/**
 * The value of the approval `interrupt()`: every call of the step that needs a human, in one
 * request. Beside eart's fields the interrupt carries LangChain's HITL request fields in both
 * spellings ({@link withHitlRequest}), so HITL UIs render it and answer it positionally; the
 * audit log records eart's fields only (`toHitlRequest` gives the HITL view of such a request).
 * @example
 * ```ts
 * const state = await graph.getState(config);
 * const request = state.tasks.flatMap((t) => t.interrupts).map((i) => i.value).find(isApprovalRequest);
 * ```
 */
export const ApprovalRequestSchema = HumanTaskEnvelopeSchema.extend({
  type: z.literal("eart.approval"),
  requests: z.array(ApprovalRequestItemSchema).min(1),
  ...HitlRequestFieldsSchema.partial().shape,
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
     * of band: it authenticates them instead of the resuming run's principal. A `message` beside
     * it must be the one the token signs (its `messageDigest`), or it is refused.
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

/** The digest of a pending call before its latest edit, when an approver edited it. */
function originalDigestOf(record: DecisionRecord): { originalDigest?: string } {
  const edit = record.approvals.findLast((a) => a.type === "edit" && a.originalDigest !== undefined);
  return edit ? { originalDigest: edit.originalDigest! } : {};
}

/**
 * Builds eart's approval request (the audited `approval.requested` data) from the records waiting
 * for approval; the interrupt carries it {@link withHitlRequest}.
 */
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
      ...(r.parsedArgs ? { parsedArgs: r.parsedArgs } : {}),
      digest: r.digest,
      reasons: r.verdict.reasons,
      policyIds: r.verdict.policyIds,
      policyVersion: r.verdict.version,
      approverRoles: r.verdict.approverRoles ?? [],
      ...((r.verdict.quorum ?? 1) > 1 ? { quorum: r.verdict.quorum } : {}),
      ...(r.verdict.approverGroups ? { approverGroups: r.verdict.approverGroups.map((g) => [...g]) } : {}),
      ...((r.verdict.quorum ?? 1) > 1 || r.verdict.approverGroups ? { approvedBy: approversOf(r) } : {}),
      ...(r.expiresAt ? { expiresAt: r.expiresAt } : {}),
      ...originalDigestOf(r),
      ...(r.verdict.allowedDecisions ? { allowedDecisions: [...r.verdict.allowedDecisions] } : {}),
      requestedBy: r.requestedBy,
    })),
  };
}

/**
 * The decisions a pending call takes from a HITL answer, for its review config and for the
 * positional answer alike: the kinds its policy rule allows (`allowedDecisions`; all when the rule
 * does not say, and `respond` only in the keyed form, which HITL lacks), an edit evaluated by
 * policy again when it is given. And: a call an approver edited
 * since it was asked about (`originalDigest`) is not approved positionally, since a positional
 * approve carries no digest to show it saw the edit; an edit (which names the arguments it runs)
 * or a reject still can, and a keyed approve with the new digest.
 */
function allowedDecisionsOf(item: ApprovalRequestItem): HitlDecisionType[] {
  return HITL_DECISION_TYPES.filter((t) => !(t === "approve" && item.originalDigest !== undefined) && (item.allowedDecisions?.includes(t) ?? true));
}

/**
 * Refuses a decision of a kind policy does not let an approver give the call (`allowedDecisions`
 * of its rule): an edit with `approval_edit_not_permitted`, another kind with `approval_resume_invalid`.
 */
function assertDecisionsAllowed(decisions: readonly { toolCallId: string; type: string }[], items: ReadonlyMap<string, ApprovalRequestItem>): void {
  for (const d of decisions) {
    const allowed = items.get(d.toolCallId)?.allowedDecisions;
    if (!allowed || (allowed as readonly string[]).includes(d.type)) continue;
    throw new ApprovalError(
      d.type === "edit" ? "approval_edit_not_permitted" : "approval_resume_invalid",
      `Policy lets an approver ${allowed.join(", ")} the call to ${items.get(d.toolCallId)!.name}, not ${d.type} it`,
      { toolCallId: d.toolCallId, allowed: [...allowed], path: ["decisions", d.toolCallId, "type"] },
    );
  }
}

/** What an approver reads about a call in a HITL UI: why it needs approval, who may give it, how many, until when. */
function descriptionOf(item: ApprovalRequestItem): string {
  // A reason is policy's text, and may quote the model's arguments: its control, bidi and
  // zero-width characters are written visibly, and a line of it that starts like one of eart's own
  // ("Approver roles: …") is marked as the reason's, so it cannot pass for eart's.
  const lines = [item.reasons.length > 0 ? item.reasons.map(reasonText).join("; ") : `${item.name} needs approval`];
  if (item.parsedArgs !== undefined) lines.push(`${OWN.parsedArgs} ${visible(JSON.stringify(item.parsedArgs))}`);
  if (item.approverRoles.length > 0) lines.push(`${OWN.roles} ${item.approverRoles.join(", ")}`);
  const sofar = `(so far: ${item.approvedBy?.length ? item.approvedBy.join(", ") : "none"})`;
  if (item.approverGroups !== undefined) lines.push(`${OWN.groups} ${item.approverGroups.map((g) => g.join(" or ")).join("; and ")} ${sofar}`);
  if (item.quorum !== undefined) lines.push(`${OWN.quorum} ${item.quorum} ${sofar}`);
  if (item.expiresAt !== undefined) lines.push(`${OWN.expires} ${item.expiresAt}`);
  if (item.originalDigest !== undefined) lines.push(`${OWN.edited} since it was requested: approve it with its digest (keyed answer), or edit or reject it`);
  return lines.join("\n");
}

/** How the lines eart writes in a description after the reasons begin (and the mark of a reason's line that begins like one). */
const OWN = {
  parsedArgs: "The tool reads these arguments as:",
  roles: "Approver roles:",
  quorum: "Approvals needed:",
  groups: "Needs an approval from each of:",
  expires: "Expires at:",
  edited: "Edited by an approver",
  reason: "Reason:",
} as const;
/** Whether a line begins like one of eart's own (blanks before it ignored). */
const readsAsOwn = (line: string) => Object.values(OWN).some((label) => line.trimStart().startsWith(label));

/** Control (C0 but line feed and tab, DEL, C1), bidi and zero-width characters written as `\uXXXX`. */
function visible(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A rule's reason as a description shows it: visible characters, no line that reads as eart's own. */
function reasonText(reason: string): string {
  return visible(reason)
    .split("\n")
    .map((line) => (readsAsOwn(line) ? `${OWN.reason} ${line}` : line))
    .join("\n");
}

/**
 * LangChain's HITL request fields for an approval request, in both spellings: one action request
 * and one review config per pending call, in the order of `requests` (what the interrupt carries
 * beside eart's fields). For a request read with `pendingApproval` or from the audit log.
 * @example
 * ```ts
 * const { actionRequests, reviewConfigs } = toHitlRequest(pendingApproval(await agent.getState(config))!);
 * ```
 */
export function toHitlRequest(request: Pick<ApprovalRequest, "requests">): HitlRequestFields {
  return hitlRequestFields(request.requests.map((r) => ({ name: r.name, args: r.args, description: descriptionOf(r), allowedDecisions: allowedDecisionsOf(r) })));
}

/**
 * The approval interrupt's value: eart's request (as {@link buildApprovalRequest} builds and the
 * audit log records it) with LangChain's HITL request fields beside its own, in both spellings
 * (`actionRequests` / `reviewConfigs` for LangChain JS, `action_requests` / `review_configs` for
 * Agent Chat UI), one entry per item of `requests`, in the same order: the order a positional
 * answer follows.
 * @example
 * ```ts
 * const answer = interrupt(withHitlRequest(buildApprovalRequest(threadId, pending)));
 * ```
 */
export function withHitlRequest(request: ApprovalRequest): ApprovalRequest & HitlRequestFields {
  // Derived from eart's items every time: HITL fields a caller passed in are never kept.
  return { ...request, ...toHitlRequest(request) };
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
 * and unused, all signed by the same approver, each message beside one signed with it (else the
 * relayer's words would be recorded and shown as the signer's). Undefined when no decision
 * carries a token.
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
    const expected = { threadId: context.threadId, toolCallId: d.toolCallId, digest: item.digest, decision: d.type, ...(d.message !== undefined ? { message: d.message } : {}) };
    const claims = verifyApprovalToken(d.token!, expected, context.keys, context.now);
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
 * A resume value in eart's keyed form: a positional (LangChain HITL) answer translated by
 * position against `request` (each decision gets its call's `toolCallId` and `digest`); any
 * other value as given. Throws {@link ApprovalError} for what no translation can fix (both forms
 * in one answer, a malformed HITL decision, not one per pending call, an edit naming another
 * tool, an approve of a call edited since it was requested). The keyed result still has to pass
 * {@link validateApprovalResponse}, which calls this first.
 * @example
 * ```ts
 * keyedApprovalAnswer({ decisions: [{ type: "approve" }] }, request); // { decisions: [{ toolCallId, type: "approve", digest }] }
 * ```
 */
export function keyedApprovalAnswer(raw: unknown, request: Pick<ApprovalRequest, "requests">): unknown {
  return keyedFromPositional(
    raw,
    request.requests.map((r) => ({
      toolCallId: r.toolCallId,
      name: r.name,
      digest: r.digest,
      allowedDecisions: allowedDecisionsOf(r),
      ...(r.originalDigest !== undefined ? { originalDigest: r.originalDigest } : {}),
    })),
  );
}

/**
 * Checks a resume value against the pending request: shape, one decision per pending call (no
 * more, no fewer), an authenticated approver (the resuming run's principal) whom the registry
 * knows, holding one of each call's approver roles, who is not the requester, and digests that
 * match. A LangChain HITL answer (`{ decisions: [{ type: "approve" }, …] }`, one per action
 * request, in order) is first translated into the keyed form by position
 * ({@link keyedApprovalAnswer}) and then checked the same way. Throws {@link ApprovalError};
 * returns the parsed (keyed) response, per decision its request item, and the approver's id.
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
  const response = parseHumanAnswer(ApprovalResponseSchema, keyedApprovalAnswer(raw, request), "approval response");
  const items = new Map(request.requests.map((r) => [r.toolCallId, r]));
  assertDecisionsAllowed(response.decisions, items);
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
