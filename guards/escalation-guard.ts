import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import { interruptForAnswer, lastAIMessage, messageText, requireThreadId } from "../nodes/runtime.js";
import type { GovernedState } from "../nodes/state.js";
import {
  AuditLogOption,
  IdentityRegistryOption,
  IdentityResolutionError,
  parseOptions,
  principalFromConfig,
  validateEscalationResponse,
  type Escalation,
  type EscalationRequest,
  type EscalationSignal,
} from "../src/index.js";

/** Reads a confidence in [0, 1] from the model's answer: `{"confidence": 0.4, …}` as JSON content by default. */
export function confidenceFromJson(message: AIMessage): number | undefined {
  if (typeof message.content !== "string") return undefined;
  try {
    const parsed = JSON.parse(message.content) as { confidence?: unknown };
    return typeof parsed?.confidence === "number" ? parsed.confidence : undefined;
  } catch {
    return undefined;
  }
}

const EscalationGuardOptionsSchema = z
  .object({
    registry: IdentityRegistryOption,
    auditLog: AuditLogOption,
    /** Roles whose holders may review a case. */
    reviewerRoles: z.array(z.string().min(1)).min(1),
    /** Escalate when the model's answer reports a confidence below `threshold`. */
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
  })
  .strict();
export type EscalationGuardOptions = z.input<typeof EscalationGuardOptionsSchema>;

/** The update the guard returns. */
export type EscalationUpdate = { escalation?: Escalation | null; messages?: BaseMessage[] };

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
  const { registry, auditLog, reviewerRoles, confidence, checks, clock = () => new Date() } = parseOptions(EscalationGuardOptionsSchema, options);

  /** What, in the current state, calls for a human. */
  function signalsOf(state: GovernedState): EscalationSignal[] {
    const signals: EscalationSignal[] = [];
    // A case a reviewer sent back with guidance is not raised again for the same signals.
    const guidance = [...state.messages].reverse().find((m) => HumanMessage.isInstance(m));
    const sentBack = new Set(((guidance?.additional_kwargs as { eart_sent_back?: string[] } | undefined)?.eart_sent_back) ?? []);
    const last = state.messages[state.messages.length - 1];
    if (confidence && last && AIMessage.isInstance(last) && (last.tool_calls?.length ?? 0) === 0) {
      const value = confidence.read(last);
      if (value !== undefined && value < confidence.threshold) {
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
      await auditLog.append({ threadId, type: "escalation.requested", data: { reason, signals } });
      return { escalation: { reason, toolCallIds: [], policyIds: [], at: clock().toISOString(), signals } };
    }

    const proposing = lastAIMessage(state.messages);
    const request: EscalationRequest = {
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
    };
    const response = await interruptForAnswer(
      request,
      (answer) => validateEscalationResponse(answer, request, { registry, identity, principal: principalFromConfig(config.configurable) }),
      (error) => auditLog.append({ threadId, type: "escalation.refused", data: { code: error.code, message: error.message, details: error.details } }).then(() => {}),
    );
    const { reviewerId, action, message } = response;
    await auditLog.append({ threadId, type: "escalation.decided", data: { reviewerId, action, message, reason: open.reason } });
    const reply =
      action === "take_over"
        ? new AIMessage({ content: message, name: reviewerId })
        : action === "send_back"
          ? new HumanMessage({
              content: `Guidance from reviewer ${reviewerId}: ${message}`,
              name: reviewerId,
              additional_kwargs: { eart_sent_back: request.signals.map((sg) => `${sg.kind}:${sg.detail}`) },
            })
          : new AIMessage({ content: `Case closed by ${reviewerId}: ${message}`, name: reviewerId });
    return { escalation: null, messages: [reply] };
  };
}
