import { z } from "zod";
import { ApprovalError } from "../errors.js";
import { parseHumanAnswer } from "./protocol.js";

/**
 * LangChain's human-in-the-loop (HITL) wire format, as eart's approval interrupt also speaks it:
 * the request fields of LangChain JS's `HITLRequest` (`actionRequests`, `reviewConfigs`) and of
 * the snake_case spelling Agent Chat UI reads (`action_requests`, `review_configs`), and the
 * positional answer (`{ decisions: [{ type: "approve" }, …] }`, one per action request, in order).
 * A positional answer is only ever translated into eart's keyed answer here and then checked by
 * the one approval validator; nothing in this file decides whether an answer is accepted.
 */

/** The decision types LangChain's HITL protocol knows (eart's `respond` is not one of them). */
export const HITL_DECISION_TYPES = ["approve", "edit", "reject"] as const;
export type HitlDecisionType = (typeof HITL_DECISION_TYPES)[number];
const HitlDecisionTypeSchema = z.enum(HITL_DECISION_TYPES);

/** One action for review: LangChain's `ActionRequest` (the same fields in both spellings). */
export const HitlActionRequestSchema = z.object({
  name: z.string(),
  args: z.record(z.string(), z.unknown()),
  description: z.string().optional(),
});

/** LangChain JS's `ReviewConfig`. */
export const HitlReviewConfigSchema = z.object({
  actionName: z.string(),
  allowedDecisions: z.array(HitlDecisionTypeSchema),
  /** JSON schema of the arguments, when edits are allowed. */
  argsSchema: z.record(z.string(), z.unknown()).optional(),
});

/** The snake_case `ReviewConfig` Agent Chat UI reads. */
export const HitlReviewConfigSnakeSchema = z.object({
  action_name: z.string(),
  allowed_decisions: z.array(HitlDecisionTypeSchema),
  args_schema: z.record(z.string(), z.unknown()).optional(),
});

/**
 * LangChain JS's `HITLRequest` (`langchain`'s `humanInTheLoopMiddleware`), field for field.
 * @example
 * ```ts
 * const hitl: HITLRequest = { actionRequests: [{ name: "issue_refund", args: { amount: 740 } }], reviewConfigs: [{ actionName: "issue_refund", allowedDecisions: ["approve", "reject"] }] };
 * ```
 */
export const HITLRequestSchema = z.object({
  actionRequests: z.array(HitlActionRequestSchema),
  reviewConfigs: z.array(HitlReviewConfigSchema),
});
export type HITLRequest = z.output<typeof HITLRequestSchema>;

/** The HITL request fields in both spellings, as eart's approval interrupt carries them. */
export const HitlRequestFieldsSchema = HITLRequestSchema.extend({
  action_requests: z.array(HitlActionRequestSchema),
  review_configs: z.array(HitlReviewConfigSnakeSchema),
});
export type HitlRequestFields = z.output<typeof HitlRequestFieldsSchema>;

/** One pending call as a HITL request shows it. */
export interface HitlAction {
  name: string;
  args: Record<string, unknown>;
  description: string;
  allowedDecisions: readonly HitlDecisionType[];
}

/**
 * The HITL request fields, in both spellings, for the pending calls in the order given (the
 * order of the positional answer).
 * @example
 * ```ts
 * hitlRequestFields([{ name: "issue_refund", args: { amount: 740 }, description: "needs a supervisor", allowedDecisions: ["approve", "reject"] }]);
 * // { actionRequests: [{ name, args, description }], reviewConfigs: [{ actionName, allowedDecisions }], action_requests: […], review_configs: [{ action_name, allowed_decisions }] }
 * ```
 */
export function hitlRequestFields(actions: readonly HitlAction[]): HitlRequestFields {
  return {
    actionRequests: actions.map((a) => ({ name: a.name, args: a.args, description: a.description })),
    reviewConfigs: actions.map((a) => ({ actionName: a.name, allowedDecisions: [...a.allowedDecisions] })),
    action_requests: actions.map((a) => ({ name: a.name, args: a.args, description: a.description })),
    review_configs: actions.map((a) => ({ action_name: a.name, allowed_decisions: [...a.allowedDecisions] })),
  };
}

/** LangChain's `Action`: the call to run instead, for an edit. */
const HitlActionSchema = z.object({ name: z.string().min(1), args: z.record(z.string(), z.unknown()) }).strict();

/**
 * One positional decision: LangChain's `Decision` (`editedAction`) or Agent Chat UI's
 * (`edited_action`). Nothing else: no `toolCallId`, `digest`, `args` or `token` (those make a
 * keyed decision), and no unknown key.
 */
export const HitlDecisionSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("approve") }).strict(),
  z
    .object({ type: z.literal("edit"), editedAction: HitlActionSchema.optional(), edited_action: HitlActionSchema.optional() })
    .strict()
    .superRefine((d, ctx) => {
      if ((d.editedAction === undefined) === (d.edited_action === undefined)) {
        ctx.addIssue({ code: "custom", path: ["editedAction"], message: "an edit carries the edited action once, as editedAction or as edited_action" });
      }
    }),
  z.object({ type: z.literal("reject"), message: z.string().optional() }).strict(),
]);
export type HitlDecision = z.output<typeof HitlDecisionSchema>;

/**
 * LangChain's `HITLResponse`: one decision per action request of the interrupt, in order. eart
 * takes it as the resume value of its approval interrupt, beside its own keyed answer.
 * @example
 * ```ts
 * const resume: HITLResponse = { decisions: [{ type: "approve" }, { type: "reject", message: "duplicate" }] };
 * await agent.invoke(new Command({ resume }), { configurable: { thread_id: "t1", user_id: "sam" } });
 * ```
 */
export const HITLResponseSchema = z.looseObject({ decisions: z.array(HitlDecisionSchema).min(1) });
export type HITLResponse = Pick<z.input<typeof HITLResponseSchema>, "decisions">;

/** A pending call a positional decision is matched to: what the keyed decision needs. */
export interface PositionalTarget {
  toolCallId: string;
  name: string;
  digest: string;
  allowedDecisions: readonly HitlDecisionType[];
  /** Set when an approver edited the call since it was asked about: the digest before the edit. */
  originalDigest?: string;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
/** A decision that names its call (eart's keyed form). */
const isKeyed = (d: unknown) => isRecord(d) && (Object.hasOwn(d, "toolCallId") || Object.hasOwn(d, "digest"));

/**
 * Translates a positional (HITL) answer into eart's keyed answer: the i-th decision answers the
 * i-th pending call, and gets its `toolCallId` and `digest`; an edit's `editedAction.args` become
 * `args`. Any other value (a keyed answer, or something that is neither) is returned as given, for
 * the keyed schema to take or refuse. Refuses with {@link ApprovalError}: decisions of both
 * forms in one answer, or a malformed HITL decision (`approval_resume_invalid`); not one decision
 * per pending call (`approval_decisions_mismatch`); an approve of a call edited since it was
 * requested (`approval_digest_mismatch`: nothing shows it saw the edit); an edit naming another
 * tool than the call's, or a decision type the call does not offer (`approval_edit_not_permitted`
 * for an edit, `approval_resume_invalid` for another type).
 * @example
 * ```ts
 * keyedFromPositional({ decisions: [{ type: "approve" }] }, [{ toolCallId: "c1", name: "issue_refund", digest, allowedDecisions: ["approve", "edit", "reject"] }]);
 * // { decisions: [{ toolCallId: "c1", type: "approve", digest }] }
 * ```
 */
export function keyedFromPositional(raw: unknown, targets: readonly PositionalTarget[]): unknown {
  if (!isRecord(raw) || !Array.isArray(raw.decisions) || raw.decisions.length === 0) return raw;
  const positional = raw.decisions.map((d) => isRecord(d) && !isKeyed(d));
  if (!positional.some(Boolean)) return raw;
  if (raw.decisions.some(isKeyed)) {
    throw new ApprovalError(
      "approval_resume_invalid",
      "Malformed approval response at decisions: it mixes keyed decisions (toolCallId, digest) with positional HITL decisions; answer every call one way",
      { path: ["decisions"], keyed: positional.flatMap((p, i) => (p ? [] : [i])), positional: positional.flatMap((p, i) => (p ? [i] : [])) },
    );
  }
  const { decisions } = parseHumanAnswer(HITLResponseSchema, raw, "HITL approval response");
  // The other members as given (an own "__proto__" stays a member): the keyed schema judges them.
  const { decisions: _positional, ...rest } = raw;
  if (decisions.length !== targets.length) {
    throw new ApprovalError(
      "approval_decisions_mismatch",
      `The HITL answer has ${decisions.length} decision(s) for ${targets.length} pending call(s): it needs one per action request, in order`,
      { expected: targets.length, found: decisions.length, pending: targets.map((t) => t.toolCallId) },
    );
  }
  const keyed = decisions.map((d, index) => {
    const target = targets[index]!;
    if (d.type === "approve" && target.originalDigest !== undefined) {
      // Nothing in a positional approve shows it was given for the call as edited, not as it was.
      throw new ApprovalError(
        "approval_digest_mismatch",
        `The call to ${target.name} (action request ${index}) was edited since it was requested: approve it with its digest (a keyed decision), or edit or reject it`,
        { toolCallId: target.toolCallId, index, expected: target.digest, found: null, originalDigest: target.originalDigest },
      );
    }
    if (!target.allowedDecisions.includes(d.type)) {
      throw new ApprovalError(
        d.type === "edit" ? "approval_edit_not_permitted" : "approval_resume_invalid",
        `The call to ${target.name} (action request ${index}) takes ${target.allowedDecisions.join(", ")}, not ${d.type}`,
        { toolCallId: target.toolCallId, index, path: ["decisions", String(index), "type"], allowed: [...target.allowedDecisions] },
      );
    }
    const base = { toolCallId: target.toolCallId, type: d.type, digest: target.digest };
    if (d.type === "approve") return base;
    if (d.type === "reject") return d.message === undefined ? base : { ...base, message: d.message };
    const action = (d.editedAction ?? d.edited_action)!;
    // An edit changes the arguments of the call that was asked about, never which tool runs.
    if (action.name !== target.name) {
      throw new ApprovalError(
        "approval_edit_not_permitted",
        `Action request ${index} is a call to ${target.name}; an edit may change its arguments, not make it a call to ${action.name}`,
        { toolCallId: target.toolCallId, index, expected: target.name, found: action.name },
      );
    }
    return { ...base, args: action.args };
  });
  return { ...rest, decisions: keyed };
}
