import { z } from "zod";
import { checkHumanAnswer, envelopeOf, HumanTaskEnvelopeSchema, HumanTaskItemSchema, interruptValueOf, NamedHumanSchema, parseHumanAnswer, type HumanAnswerDeps } from "./protocol.js";
import { RecoveryReasonSchema, type DecisionRecord } from "../decisions/records.js";
import { ApprovalError } from "../errors.js";

/**
 * The recovery protocol: a call that was allowed or approved but could not be finished by the
 * tool node on its own (its outcome is unknown after a crash or timeout, or its retries, breaker
 * and fallback are exhausted) waits for a human, who retries it, marks it done with a result, or
 * abandons it.
 */

/** One call waiting for recovery, as shown to the human. */
export const RecoveryRequestItemSchema = HumanTaskItemSchema.extend({
  reason: RecoveryReasonSchema,
  /** The effect-ledger attempt this is about (0 when the tool never started). */
  attempt: z.number().int().nonnegative(),
  error: z.string().optional(),
  since: z.string(),
  /** Any one of these roles may decide. */
  resolverRoles: z.array(z.string()),
});
export type RecoveryRequestItem = z.output<typeof RecoveryRequestItemSchema>;

/**
 * The value of the recovery `interrupt()`.
 * @example
 * ```ts
 * const request = pendingRecovery(await agent.getState(config)); // { type: "eart.recovery", requests: [...] }
 * ```
 */
export const RecoveryRequestSchema = HumanTaskEnvelopeSchema.extend({
  type: z.literal("eart.recovery"),
  requests: z.array(RecoveryRequestItemSchema).min(1),
});
export type RecoveryRequest = z.output<typeof RecoveryRequestSchema>;

/** True when an interrupt value is an eart recovery request. */
export function isRecoveryRequest(value: unknown): value is RecoveryRequest {
  return RecoveryRequestSchema.safeParse(value).success;
}

/** The answer for one call, keyed by `toolCallId`. */
export const RecoveryDecisionSchema = z
  .object({
    toolCallId: z.string().min(1),
    /**
     * `retry`: run the tool again (the human checked it had no effect); `mark_done`: it did
     * happen, record `result` as its result; `abandon`: give up, the model is told.
     */
    type: z.enum(["retry", "mark_done", "abandon"]),
    /** The digest of the request item: proves the resolver saw this exact call on this thread. */
    digest: z.string().min(1),
    /**
     * The request item's `attempt`: the answer is for that request of the call, and refused for
     * another (a call retried and failed again is asked about again, under the same digest).
     * Without it, an answer accepted for an earlier request of the call, sent again, is refused.
     */
    attempt: z.number().int().nonnegative().optional(),
    result: z.unknown().optional(),
    message: z.string().optional(),
  })
  .strict()
  .superRefine((d, ctx) => {
    if (d.type === "mark_done" && d.result === undefined) ctx.addIssue({ code: "custom", path: ["result"], message: "mark_done must carry the result to record" });
    if (d.type !== "mark_done" && d.result !== undefined) ctx.addIssue({ code: "custom", path: ["result"], message: `a result is only allowed on mark_done, not on ${d.type}` });
    if (d.result !== undefined) {
      try {
        JSON.stringify(d.result);
      } catch {
        ctx.addIssue({ code: "custom", path: ["result"], message: "must be JSON" });
      }
    }
  });
export type RecoveryDecision = z.output<typeof RecoveryDecisionSchema>;

/**
 * The resume value for a recovery interrupt (`new Command({ resume })`).
 * @example
 * ```ts
 * await agent.invoke(new Command({ resume: {
 *   decisions: [{ toolCallId: "call_1", type: "mark_done", digest, result: { refundId: 77 } }],
 * } }), { configurable: { thread_id: "t1", user_id: "sam" } });
 * ```
 */
export const RecoveryResponseSchema = z
  .object({
    /** A cross-check only: the resolver is the resuming run's principal. */
    resolver: NamedHumanSchema.optional(),
    decisions: z.array(RecoveryDecisionSchema).min(1),
  })
  .strict();
export type RecoveryResponse = z.output<typeof RecoveryResponseSchema>;

/** Builds the interrupt value from the records waiting for recovery. */
export function buildRecoveryRequest(threadId: string, pending: readonly DecisionRecord[], resolverRoles: readonly string[]): RecoveryRequest {
  return {
    ...envelopeOf(
      "eart.recovery",
      threadId,
      pending.map((r) => ({ requestedBy: r.requestedBy, since: r.recovery!.at })),
      resolverRoles,
    ),
    type: "eart.recovery",
    requests: pending.map((r) => ({
      toolCallId: r.toolCallId,
      name: r.name,
      args: r.args,
      digest: r.digest,
      reason: r.recovery!.reason,
      attempt: r.recovery!.attempt,
      ...(r.recovery!.error !== undefined ? { error: r.recovery!.error } : {}),
      since: r.recovery!.at,
      resolverRoles: [...resolverRoles],
      requestedBy: r.requestedBy,
    })),
  };
}

/**
 * Checks a resume value against the pending recovery request, by the same rules as approvals:
 * shape, one decision per pending call, a known resolver holding one of the resolver roles, and
 * not the user or agent the call was made for. Throws {@link ApprovalError}.
 * @example
 * ```ts
 * const { resolverId } = validateRecoveryResponse(raw, request, { registry, identity, principal });
 * ```
 */
export function validateRecoveryResponse(
  raw: unknown,
  request: RecoveryRequest,
  deps: HumanAnswerDeps,
): RecoveryResponse & { resolverId: string } {
  const response = parseHumanAnswer(RecoveryResponseSchema, raw, "recovery response");
  const items = new Map(request.requests.map((r) => [r.toolCallId, r]));
  const resolverId = checkHumanAnswer({ named: response.resolver, decisions: response.decisions, items, roles: request.roles }, deps, {
    verb: "resolve",
    object: "resolver",
    task: "recovery",
  });
  for (const d of response.decisions) {
    const asked = items.get(d.toolCallId)!.attempt;
    if (d.attempt !== undefined && d.attempt !== asked) {
      throw new ApprovalError("approval_already_answered", `The decision for "${d.toolCallId}" answers attempt ${d.attempt}; the call now waits about attempt ${asked}`, {
        toolCallId: d.toolCallId,
        expected: asked,
        found: d.attempt,
      });
    }
  }
  return { ...response, resolverId };
}

/**
 * The pending recovery request of a paused run, from `invoke`'s result or `graph.getState()`.
 * @example
 * ```ts
 * const request = pendingRecovery(await agent.invoke(input, config));
 * ```
 */
export function pendingRecovery(source: unknown): RecoveryRequest | undefined {
  return interruptValueOf(source, RecoveryRequestSchema);
}
