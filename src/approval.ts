import { z } from "zod";
import { ApprovalError } from "./errors.js";
import type { AgentIdentity, IdentityRegistry, Principal } from "./identity.js";
import { verifyApprovalToken } from "./approval-token.js";
import type { KeyObject } from "node:crypto";
import type { DecisionRecord } from "./state.js";

/** One call waiting for a human, as shown to the approver. */
export const ApprovalRequestItemSchema = z.object({
  toolCallId: z.string(),
  name: z.string(),
  args: z.record(z.string(), z.unknown()),
  /** SHA-256 of the canonical JSON of `{ name, args }`: what an approval is bound to. */
  digest: z.string(),
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
  requestedBy: z.object({ agentId: z.string(), userId: z.string() }),
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
export const ApprovalRequestSchema = z.object({
  type: z.literal("eart.approval"),
  threadId: z.string(),
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
 * A human named in an answer. Never who answers: that is the resuming run's authenticated
 * principal. When present it must name that principal (a cross-check).
 */
export const NamedHumanSchema = z.object({ id: z.string().min(1) }).strict();

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
    type: "eart.approval",
    threadId,
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

/** What a human answer is checked against: the registry, the thread's identity, and who answers. */
export interface HumanAnswerDeps {
  registry: IdentityRegistry;
  identity: AgentIdentity;
  /** The authenticated principal of the resuming run (`principalFromConfig`). */
  principal: Principal | undefined;
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
 * Checks that an answer has exactly one decision per pending item, keyed by `toolCallId`.
 * Throws `approval_decisions_mismatch`. Shared by every human task with pending items.
 */
export function assertOneDecisionPerItem(decisions: readonly { toolCallId: string }[], pending: readonly string[], what: string): void {
  const items = new Set(pending);
  const seen = new Set<string>();
  for (const d of decisions) {
    if (!items.has(d.toolCallId)) {
      throw new ApprovalError("approval_decisions_mismatch", `No pending ${what} for tool call "${d.toolCallId}"`, { toolCallId: d.toolCallId, pending: [...items] });
    }
    if (seen.has(d.toolCallId)) {
      throw new ApprovalError("approval_decisions_mismatch", `More than one decision for tool call "${d.toolCallId}"`, { toolCallId: d.toolCallId });
    }
    seen.add(d.toolCallId);
  }
  const missing = pending.filter((id) => !seen.has(id));
  if (missing.length > 0) {
    throw new ApprovalError("approval_decisions_mismatch", `Every pending call needs a decision; missing: ${missing.join(", ")}`, {
      toolCallId: missing[0],
      missing,
    });
  }
}

/**
 * Checks each decision's digest against its pending item's: the human saw this exact call on
 * this thread. Throws `approval_digest_mismatch`.
 */
export function assertDigests(decisions: readonly { toolCallId: string; digest: string }[], items: ReadonlyMap<string, { digest: string }>): void {
  for (const d of decisions) {
    const expected = items.get(d.toolCallId)!.digest;
    if (d.digest !== expected) {
      throw new ApprovalError("approval_digest_mismatch", `The decision for "${d.toolCallId}" was made for a different call`, {
        toolCallId: d.toolCallId,
        expected,
        found: d.digest,
      });
    }
  }
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
  assertOneDecisionPerItem(response.decisions, [...items.keys()], "approval");
  for (const d of response.decisions) {
    if (d.token !== undefined && d.type !== "approve" && d.type !== "reject") {
      throw new ApprovalError("approval_token_invalid", `A signed token can approve or reject a call, not ${d.type} it`, { toolCallId: d.toolCallId });
    }
  }
  // A signed token authenticates its signer; the resuming run only relays it.
  const signed = tokenPrincipal(response.decisions, items, deps.tokens);
  const approverId = authenticateHuman(response.approver, undefined, signed ? { ...deps, principal: signed.principal } : deps, { verb: "approve", object: "approver" });
  for (const d of response.decisions) {
    const item = items.get(d.toolCallId)!;
    if (!deps.registry.userHasAnyRole(approverId, item.approverRoles)) {
      throw new ApprovalError(
        "approval_unauthorized",
        `"${approverId}" holds none of the roles that may decide ${item.name} (${item.approverRoles.join(", ")})`,
        { toolCallId: d.toolCallId, approverId, approverRoles: item.approverRoles },
      );
    }
  }
  assertDigests(response.decisions, items);
  return { response, items, approverId, tokenNonces: signed?.nonces ?? new Map() };
}

/**
 * The first interrupt value of a paused run that matches `schema`: from `invoke`'s result
 * (`__interrupt__`) or from `graph.getState(config)` (`tasks[].interrupts`).
 * @example
 * ```ts
 * const request = interruptValueOf(await graph.getState(config), ApprovalRequestSchema);
 * ```
 */
export function interruptValueOf<S extends z.ZodType>(source: unknown, schema: S): z.output<S> | undefined {
  const s = source as { __interrupt__?: { value?: unknown }[]; tasks?: { interrupts?: { value?: unknown }[] }[] } | undefined;
  const interrupts = [...(s?.__interrupt__ ?? []), ...(s?.tasks ?? []).flatMap((t) => t.interrupts ?? [])];
  for (const i of interrupts) {
    const parsed = schema.safeParse(i?.value);
    if (parsed.success) return parsed.data;
  }
  return undefined;
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

/**
 * Parses a human's resume value with its schema, or throws `approval_resume_invalid` naming the
 * first bad path. Shared by approvals, recoveries and reviews.
 */
export function parseHumanAnswer<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new ApprovalError("approval_resume_invalid", `Malformed ${what} at ${issue.path.join(".") || "(root)"}: ${issue.message}`, {
    path: issue.path.map(String),
  });
}

/**
 * The one place a human answer is authenticated and authorised: the human is the resuming run's
 * principal (none: `approval_unauthenticated`); a name in the payload is only a cross-check and
 * must be that principal (`approval_principal_mismatch`); not the user the agent acts for, nor the
 * agent (`approval_self_approval`); a user the registry knows, holding one of `roles` when given
 * (`approval_unauthorized`). Returns the human's id. Throws {@link ApprovalError}.
 * @example
 * ```ts
 * const approverId = authenticateHuman(response.approver, ["supervisor"], { registry, identity, principal }, { verb: "approve", object: "approver" });
 * ```
 */
export function authenticateHuman(
  named: { id: string } | undefined,
  roles: readonly string[] | undefined,
  deps: HumanAnswerDeps,
  what: { verb: string; object: string },
): string {
  const { principal } = deps;
  if (!principal) {
    throw new ApprovalError(
      "approval_unauthenticated",
      `Nobody is authenticated on this resume: the ${what.object} is the run's principal (configurable.langgraph_auth_user, or user_id set by a trusted app), never a name in the payload`,
      { ...(named ? { named: named.id } : {}) },
    );
  }
  const humanId = principal.id;
  if (named && named.id !== humanId) {
    throw new ApprovalError("approval_principal_mismatch", `The answer names ${what.object} "${named.id}" but was sent by "${humanId}"`, {
      approverId: humanId,
      named: named.id,
    });
  }
  if (humanId === deps.identity.onBehalfOf.id || humanId === deps.identity.id) {
    throw new ApprovalError("approval_self_approval", `"${humanId}" cannot ${what.verb} an action requested on their own behalf`, { approverId: humanId });
  }
  if (!deps.registry.getUser(humanId)) throw new ApprovalError("approval_unauthorized", `Unknown ${what.object} "${humanId}"`, { approverId: humanId });
  if (roles !== undefined && !deps.registry.userHasAnyRole(humanId, roles)) {
    throw new ApprovalError("approval_unauthorized", `"${humanId}" holds none of the roles that may ${what.verb} this (${roles.join(", ")})`, {
      approverId: humanId,
      roles,
    });
  }
  return humanId;
}
