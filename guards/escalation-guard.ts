import { randomUUID } from "node:crypto";
import { refusalData } from "../src/human-tasks/refusal.js";
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import { interruptForAnswer, reviewAnswerFields } from "../langgraph/interrupts.js";
import { EART_MESSAGE_ID_PREFIX, EffectLedgerOption } from "../langgraph/records.js";
import { lazySealer } from "../src/decisions/seal.js";
import { lastAIMessage, messageText, requireThreadId } from "../langgraph/run.js";
import type { GovernedState } from "../langgraph/channels.js";
import { AuditLogOption } from "../src/audit/log.js";
import { type Escalation, type Review, type EscalationSignal } from "../src/decisions/records.js";
import { IdentityResolutionError } from "../src/errors.js";
import { caseDigest, validateEscalationResponse, type EscalationRequest } from "../src/human-tasks/escalation.js";
import { IdentityRegistryOption, principalFromConfig } from "../src/identity/registry.js";
import { canonicalJson, sha256Hex } from "../src/internal/canonical.js";
import { parseOptions } from "../src/internal/options.js";

/**
 * Reads the confidence the model declared in its answer: the answer is a JSON object (as text, in
 * text content blocks, or fenced as ```json) with a numeric `confidence` in [0, 1]. Anything else
 * (no JSON, prose around it, a numeric string, a value out of range) is undefined, which the guard
 * treats as low confidence: an answer that does not say how sure it is gets a reviewer.
 */
export function confidenceFromJson(message: AIMessage): number | undefined {
  const text =
    typeof message.content === "string"
      ? message.content
      : message.content.map((b) => (typeof b === "string" ? b : b.type === "text" && typeof (b as { text?: unknown }).text === "string" ? (b as { text: string }).text : "")).join("");
  const fenced = /^\s*```(?:json)?\s*\n([\s\S]*?)\n\s*```\s*$/.exec(text);
  try {
    const parsed = JSON.parse(fenced ? fenced[1]! : text) as { confidence?: unknown };
    const value = parsed?.confidence;
    return typeof value === "number" && Number.isFinite(value) && value >= 0 && value <= 1 ? value : undefined;
  } catch {
    return undefined;
  }
}

/** SHA-256 of the canonical JSON of an answer's text and tool calls: what a review is bound to. */
export function answerDigest(message: BaseMessage | undefined): string {
  const calls = message && AIMessage.isInstance(message) ? (message.tool_calls ?? []).map((c) => ({ name: c.name, args: c.args })) : [];
  return sha256Hex(canonicalJson({ text: message ? messageText(message) : "", toolCalls: calls }));
}

const EscalationGuardOptionsSchema = z
  .object({
    registry: IdentityRegistryOption,
    auditLog: AuditLogOption,
    /** Roles whose holders may review a case. */
    reviewerRoles: z.array(z.string().min(1)).min(1),
    /**
     * Escalate when the model's answer reports a confidence below `threshold`, or none that `read`
     * (default {@link confidenceFromJson}) can read in [0, 1].
     */
    confidence: z
      .object({
        threshold: z.number().min(0).max(1),
        read: z.custom<(message: AIMessage) => number | undefined>((v) => typeof v === "function", "must be a function").default(() => confidenceFromJson),
      })
      .strict()
      .optional(),
    /**
     * Named checks over the state (a credit score band, an income check…); escalate when they do
     * not all give the same answer. A check that returns `undefined` abstains.
     */
    checks: z.record(z.string(), z.custom<(state: GovernedState) => unknown>((v) => typeof v === "function", "must be a function")).default({}),
    clock: z.custom<() => Date>((v) => typeof v === "function", "must be a function returning a Date").optional(),
    /** The effect ledger whose store keeps the key that seals the reviewer's recorded answer (give the graph's nodes the same one); the process key without one. */
    ledger: EffectLedgerOption.optional(),
  })
  .strict();
export type EscalationGuardOptions = z.input<typeof EscalationGuardOptionsSchema>;

/** The update the guard returns. */
export type EscalationUpdate = { escalation?: Escalation | null; reviewed?: Review | null; messages?: BaseMessage[] };

/**
 * Guard that hands a case to a human reviewer instead of letting the agent finish it, when the
 * model's answer reports a confidence below the threshold, when declared checks disagree, or when
 * a case is already open (required context missing, a policy `escalate` verdict).
 *
 * First pass: finds the signals, records the case (`escalation` channel, `escalation.requested`)
 * and routes back to itself. Second pass: pauses with ONE `interrupt()` carrying an
 * {@link EscalationRequest} (reason, signals, what the agent proposed, context ids, never context
 * content). The reviewer, checked by the approval rules (known, one of `reviewerRoles`, not the
 * requester), may `take_over` (their message answers the user and the run ends), `send_back`
 * (their guidance goes to the agent, which runs again) or `close` the case. A refused answer
 * throws a typed `ApprovalError` and the thread stays paused.
 * @example
 * ```ts
 * graph
 *   .addNode("review", createEscalationGuard({ registry, auditLog, reviewerRoles: ["underwriter"], confidence: { threshold: 0.7 } }))
 *   .addConditionalEdges("review", routeAfterEscalation, { review: "review", agent: "agent", end: END });
 * ```
 */
export function createEscalationGuard(options: EscalationGuardOptions) {
  const { registry, auditLog, reviewerRoles, confidence, checks, clock = () => new Date(), ledger } = parseOptions(EscalationGuardOptionsSchema, options);
  const sealer = lazySealer(ledger);

  /** What, in the current state, calls for a human. */
  function signalsOf(state: GovernedState): EscalationSignal[] {
    const signals: EscalationSignal[] = [];
    const last = state.messages[state.messages.length - 1];
    // A reviewer's send-back, as eart recorded it, clears what the reviewer saw: a low confidence
    // for the reviewed answer only (a different answer is judged afresh), and signals of the
    // state (checks that disagree) until the human writes again.
    const review = state.reviewed;
    const lastHuman = [...state.messages].reverse().find((m) => HumanMessage.isInstance(m));
    const sameTurn = review !== null && review !== undefined && lastHuman?.id === review.guidanceMessageId;
    const sameAnswer = sameTurn && review!.answerDigest === answerDigest(last);
    const sentBack = new Set(sameTurn ? review!.signals.filter((key) => sameAnswer || !key.startsWith("low_confidence:")) : []);
    if (confidence && last && AIMessage.isInstance(last) && (last.tool_calls?.length ?? 0) === 0) {
      let value: number | undefined;
      try {
        value = confidence.read(last);
      } catch {
        value = undefined;
      }
      if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > 1) {
        signals.push({ kind: "low_confidence", detail: `the model reported no readable confidence in [0, 1] (treated as below ${confidence.threshold})` });
      } else if (value < confidence.threshold) {
        signals.push({ kind: "low_confidence", detail: `the model reported confidence ${value}, below ${confidence.threshold}` });
      }
    }
    const answers = Object.entries(checks)
      .map(([name, check]) => [name, check(state)] as const)
      .filter(([, value]) => value !== undefined);
    if (new Set(answers.map(([, value]) => JSON.stringify(value))).size > 1) {
      signals.push({ kind: "checks_disagree", detail: answers.map(([name, value]) => `${name}: ${JSON.stringify(value)}`).join("; ") });
    }
    return signals.filter((sg) => !sentBack.has(`${sg.kind}:${sg.detail}`));
  }

  return async function escalationGuard(state: GovernedState, config: LangGraphRunnableConfig): Promise<EscalationUpdate> {
    const threadId = requireThreadId(config);
    const identity = state.identity;
    if (!identity) throw new IdentityResolutionError("identity_missing", "The thread has no bound identity: a case needs to know who it is about");
    const open = state.escalation;
    if (!open) {
      const signals = signalsOf(state);
      if (signals.length === 0) return {};
      const reason = signals.map((s) => s.detail).join("; ");
      await auditLog.append({ threadId, type: "escalation.requested", data: { reason, signals, roles: [...reviewerRoles], requestedBy: { agentId: identity.id, userId: identity.onBehalfOf.id } } });
      return { escalation: { id: randomUUID(), reason, toolCallIds: [], policyIds: [], at: clock().toISOString(), signals } };
    }

    const proposing = lastAIMessage(state.messages);
    const shown: Omit<EscalationRequest, "digest"> = {
      type: "eart.escalation",
      threadId,
      reason: open.reason,
      signals: open.signals?.length ? open.signals : [{ kind: "policy", detail: open.reason }],
      proposed: {
        text: proposing ? messageText(proposing) : "",
        toolCalls: (proposing?.tool_calls ?? []).map((c) => ({ ...(c.id ? { id: c.id } : {}), name: c.name, args: c.args })),
      },
      contextIds: (state.context?.items ?? []).map((i) => i.id),
      reviewerRoles,
      roles: [...reviewerRoles],
      requestedBy: { agentId: identity.id, userId: identity.onBehalfOf.id },
      since: open.at,
      ...(open.id !== undefined ? { caseId: open.id } : {}),
    };
    const request: EscalationRequest = { ...shown, digest: caseDigest(shown) };
    const response = await interruptForAnswer(
      request,
      (answer) => validateEscalationResponse(answer, request, { registry, identity, principal: principalFromConfig(config.configurable) }),
      // Bounded, with the digest of the whole answer: a refused payload can be any size or depth.
      (error, answer) => auditLog.append({ threadId, type: "escalation.refused", data: refusalData(error, answer) }).then(() => {}),
    );
    const { reviewerId, action, message } = response;
    // Sealed: a run that stopped after this step is continued with this answer, as the reviewer's.
    // Sealed for this case (its digest): a copy of it answers no later case.
    const answerSeal = (await sealer()).event(threadId, "escalation.decided", reviewAnswerFields({ by: reviewerId, action, message, digest: request.digest }));
    await auditLog.append({ threadId, type: "escalation.decided", data: { reviewerId, action, message, reason: open.reason, digest: request.digest, answerSeal } });
    if (action === "send_back") {
      // The guidance is recorded in eart's own channel, by id and bound to the reviewed answer:
      // nothing a customer writes into a message can pass for it.
      const guidance = new HumanMessage({ id: `${EART_MESSAGE_ID_PREFIX}guidance:${randomUUID()}`, content: `Guidance from reviewer ${reviewerId}: ${message}`, name: reviewerId });
      const review: Review = {
        guidanceMessageId: guidance.id!,
        reviewerId,
        answerDigest: answerDigest(proposing),
        signals: request.signals.map((sg) => `${sg.kind}:${sg.detail}`),
        at: clock().toISOString(),
      };
      return { escalation: null, reviewed: review, messages: [guidance] };
    }
    const reply =
      action === "take_over"
        ? new AIMessage({ content: message, name: reviewerId })
        : new AIMessage({ content: `Case closed by ${reviewerId}: ${message}`, name: reviewerId });
    return { escalation: null, reviewed: null, messages: [reply] };
  };
}
