import { z } from "zod";
import { checkHumanAnswer, HumanTaskEnvelopeSchema, interruptValueOf, NamedHumanSchema, parseHumanAnswer, type HumanAnswerDeps } from "./protocol.js";
import { EscalationSignalSchema } from "../decisions/records.js";
import { ApprovalError } from "../errors.js";
import { canonicalJson, sha256Hex } from "../internal/canonical.js";

/**
 * The escalation protocol: a case the agent must not decide alone (low confidence, checks that
 * disagree, missing context, a policy `escalate`) pauses for a human reviewer, who takes it over,
 * sends it back with guidance, or closes it.
 */

/**
 * The value of the escalation `interrupt()`: the case summary a reviewer needs.
 * @example
 * ```ts
 * const request = pendingEscalation(await agent.getState(config)); // { type: "eart.escalation", reason, signals, … }
 * ```
 */
export const EscalationRequestSchema = HumanTaskEnvelopeSchema.extend({
  type: z.literal("eart.escalation"),
  reason: z.string(),
  signals: z.array(EscalationSignalSchema).min(1),
  /** What the agent proposed: its last answer and any tool calls. */
  proposed: z.object({
    text: z.string(),
    toolCalls: z.array(z.object({ id: z.string().optional(), name: z.string(), args: z.record(z.string(), z.unknown()) })),
  }),
  /** Ids of the context items the agent had (never their content). */
  contextIds: z.array(z.string()),
  /** Any one of these roles may review (the same as `roles`). */
  reviewerRoles: z.array(z.string()),
  /** The case's own id, where it has one (cases opened at one clock reading differ by it). */
  caseId: z.string().optional(),
  /**
   * The case's digest (its thread, reason, signals, what the agent proposed, context ids, since
   * and id): an answer carries it, so a stale or retried answer decides no later case, nor another
   * thread's. See {@link caseDigest}.
   */
  digest: z.string(),
});
export type EscalationRequest = z.output<typeof EscalationRequestSchema>;

/**
 * The digest of a case as a reviewer is shown it: what an answer must carry (`digest`).
 * @example
 * ```ts
 * const request = { ...rest, digest: caseDigest(rest) };
 * ```
 */
export function caseDigest(request: Pick<EscalationRequest, "threadId" | "reason" | "signals" | "proposed" | "contextIds" | "since" | "caseId">): string {
  const { threadId, reason, signals, proposed, contextIds, since, caseId } = request;
  return sha256Hex(canonicalJson({ threadId, reason, signals, proposed, contextIds, since, ...(caseId !== undefined ? { caseId } : {}) }));
}

/** True when an interrupt value is an eart escalation request. */
export function isEscalationRequest(value: unknown): value is EscalationRequest {
  return EscalationRequestSchema.safeParse(value).success;
}

/**
 * The reviewer's answer (`new Command({ resume })`): `take_over` answers the user in the agent's
 * place, `send_back` returns the case to the agent with guidance, `close` ends it.
 * @example
 * ```ts
 * const request = pendingEscalation(await agent.getState(config))!;
 * await agent.invoke(new Command({ resume: { action: "take_over", message: "Approved at 6.1% APR.", digest: request.digest } }), { configurable: { thread_id: "t1", user_id: "uma" } });
 * ```
 */
export const EscalationResponseSchema = z
  .object({
    /** A cross-check only: the reviewer is the resuming run's principal. */
    reviewer: NamedHumanSchema.optional(),
    action: z.enum(["take_over", "send_back", "close"]),
    message: z.string().min(1, "a reviewer's answer needs a message"),
    /** The digest of the case answered (the request's `digest`): the reviewer saw this case. */
    digest: z.string().min(1, "a reviewer's answer names the case it answers (the request's digest)"),
  })
  .strict();
export type EscalationResponse = z.output<typeof EscalationResponseSchema>;

/**
 * Checks a reviewer's answer by the approval rules: shape, a known reviewer holding one of the
 * reviewer roles, and not the user or agent the case is about. Throws {@link ApprovalError}.
 * @example
 * ```ts
 * const { reviewerId } = validateEscalationResponse(raw, request, { registry, identity, principal });
 * ```
 */
export function validateEscalationResponse(
  raw: unknown,
  request: EscalationRequest,
  deps: HumanAnswerDeps,
): EscalationResponse & { reviewerId: string } {
  const response = parseHumanAnswer(EscalationResponseSchema, raw, "escalation answer");
  const reviewerId = checkHumanAnswer({ named: response.reviewer, roles: request.roles }, deps, { verb: "review", object: "reviewer", task: "escalation" });
  if (response.digest !== request.digest) {
    throw new ApprovalError("approval_digest_mismatch", "The answer was given for another case than the one that waits (a stale or retried answer, or another thread's): read the case again and answer it", {
      expected: request.digest,
      found: response.digest,
    });
  }
  return { ...response, reviewerId };
}

/**
 * The pending escalation of a paused run, from `invoke`'s result or `graph.getState()`.
 * @example
 * ```ts
 * const request = pendingEscalation(await agent.invoke(input, config));
 * ```
 */
export function pendingEscalation(source: unknown): EscalationRequest | undefined {
  return interruptValueOf(source, EscalationRequestSchema);
}
