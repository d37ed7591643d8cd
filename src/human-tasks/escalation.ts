import { z } from "zod";
import { checkHumanAnswer, HumanTaskEnvelopeSchema, interruptValueOf, NamedHumanSchema, parseHumanAnswer, type HumanAnswerDeps } from "./protocol.js";
import { EscalationSignalSchema } from "../decisions/records.js";

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
});
export type EscalationRequest = z.output<typeof EscalationRequestSchema>;

/** True when an interrupt value is an eart escalation request. */
export function isEscalationRequest(value: unknown): value is EscalationRequest {
  return EscalationRequestSchema.safeParse(value).success;
}

/**
 * The reviewer's answer (`new Command({ resume })`): `take_over` answers the user in the agent's
 * place, `send_back` returns the case to the agent with guidance, `close` ends it.
 * @example
 * ```ts
 * await agent.invoke(new Command({ resume: { action: "take_over", message: "Approved at 6.1% APR." } }), { configurable: { thread_id: "t1", user_id: "uma" } });
 * ```
 */
export const EscalationResponseSchema = z
  .object({
    /** A cross-check only: the reviewer is the resuming run's principal. */
    reviewer: NamedHumanSchema.optional(),
    action: z.enum(["take_over", "send_back", "close"]),
    message: z.string().min(1, "a reviewer's answer needs a message"),
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
