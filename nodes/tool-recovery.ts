import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { digestOf, refusalData } from "../src/human-tasks/refusal.js";
import { z } from "zod";
import { AuditLogOption, type AuditEvent } from "../src/audit/log.js";
import { type DecisionRecord } from "../src/decisions/records.js";
import { lazySealer } from "../src/decisions/seal.js";
import { ApprovalError, IdentityResolutionError } from "../src/errors.js";
import { buildRecoveryRequest, validateRecoveryResponse } from "../src/human-tasks/recovery.js";
import { IdentityRegistryOption, principalFromConfig } from "../src/identity/registry.js";
import { parseOptions } from "../src/internal/options.js";
import { acceptAnswer, acceptedAnswerFields, answersToRequest, requestRound } from "../langgraph/interrupts.js";
import { assertSealed, EffectLedgerOption, sealDecisions } from "../langgraph/records.js";
import { lastAIMessage, requireThreadId } from "../langgraph/run.js";
import type { GovernedState } from "../langgraph/channels.js";

/** Who may resolve a call the tools could not finish, unless the agent names other roles. */
export const DEFAULT_RECOVERY_ROLES: readonly string[] = Object.freeze(["operator"]);

const ToolRecoveryOptionsSchema = z
  .object({
    registry: IdentityRegistryOption,
    auditLog: AuditLogOption,
    /** Roles whose holders may retry, mark done or abandon a failed call. */
    roles: z.array(z.string().min(1)).min(1).default([...DEFAULT_RECOVERY_ROLES]),
    clock: z.custom<() => Date>((v) => typeof v === "function", "must be a function returning a Date").optional(),
    /** The effect ledger the tool node uses: its store keeps the key that seals eart's records in state. */
    ledger: EffectLedgerOption.optional(),
  })
  .strict();
export type ToolRecoveryOptions = z.input<typeof ToolRecoveryOptionsSchema>;

/**
 * Node that hands the calls the governed tool node could not finish (`recovery_pending`: outcome
 * unknown after a crash or timeout, retries and fallback exhausted, breaker open, permission
 * refused) to a human. It pauses with ONE `interrupt()` carrying a {@link RecoveryRequest}; the
 * resume (`{ resolver, decisions: [{ toolCallId, type: "retry" | "mark_done" | "abandon" }] }`) is
 * checked by the approval rules (known resolver, one of `roles`, not the requester) and recorded
 * on each call; the tool node then applies it to the ledger. Nothing is written before the
 * interrupt. A refused resume throws a typed `ApprovalError` and the thread stays paused.
 * @example
 * ```ts
 * graph
 *   .addNode("recovery", createToolRecovery({ registry, auditLog, roles: ["supervisor"] }))
 *   .addConditionalEdges("tools", routeAfterTools, { recovery: "recovery", agent: "agent", end: "review" })
 *   .addEdge("recovery", "tools");
 * ```
 */
export function createToolRecovery(options: ToolRecoveryOptions) {
  const { registry, auditLog, roles, clock = () => new Date(), ledger } = parseOptions(ToolRecoveryOptionsSchema, options);
  const sealer = lazySealer(ledger);

  return async function toolRecovery(state: Pick<GovernedState, "messages" | "decisions" | "identity">, config: LangGraphRunnableConfig): Promise<{ decisions?: DecisionRecord[] }> {
    const threadId = requireThreadId(config);
    const message = lastAIMessage(state.messages);
    const pending = state.decisions.filter((d) => d.status === "recovery_pending" && d.messageId === message?.id && d.recovery);
    if (pending.length === 0) return {};
    const identity = state.identity;
    if (!identity) throw new IdentityResolutionError("identity_missing", "The thread has no bound identity: recovery needs to know who the call was made for");
    // Before the interrupt: a forged request must not reach a human, and this writes only on tamper.
    const seal = await sealer();
    await assertSealed(seal, auditLog, threadId, "recovery", identity, pending);
    // The roles each call was handed over to answer it (the inbox lists it for them): a change of
    // roles since applies to later requests. Calls handed over with none recorded: the node's.
    const recorded = pending.every((r) => r.recovery!.roles) ? [...new Set(pending.flatMap((r) => r.recovery!.roles!))] : undefined;
    const request = buildRecoveryRequest(threadId, pending, recorded ?? roles);
    // As for approvals: an answer eart accepted before for this request (the step that acts on it
    // stopped before it was saved) stands, from whom it came then, and is not recorded twice; the
    // answers after it, when the retried tool asked its own question since, are the tool's.
    // The thread's events, read once for both questions below (none to read before an answer).
    let events: AuditEvent[] | undefined;
    const log = { read: async () => (events ??= await auditLog.read(threadId)) };
    // Each call as this request asks it (its attempt): the answer is sealed for that asking.
    const round = (r: DecisionRecord) => requestRound({ attempt: r.recovery!.attempt });
    const query = { requested: "tool.recovery_requested", decided: "tool.recovery_decided", calls: pending.map((r) => ({ toolCallId: r.toolCallId, digest: r.digest, round: round(r) })) };
    const { answers, accepted, standing } = await answersToRequest(request, log, threadId, query, seal, message?.tool_calls?.length === 1);
    const replayed = accepted !== undefined && standing !== undefined;
    const answer = replayed ? standing : answers.at(-1);
    const principal = replayed ? accepted!.principal : principalFromConfig(config.configurable);
    // An answer accepted for an earlier request of these calls (a call retried and failed again is
    // asked about again, under the same digest), sent again: not an answer to this request.
    const resent = replayed ? undefined : answeredBefore(await log.read(), pending, digestOf(answer));
    const response = await acceptAnswer(
      answer,
      (a) => {
        const checked = validateRecoveryResponse(a, request, { registry, identity, principal });
        const stale = resent && checked.decisions.find((d) => d.toolCallId === resent.toolCallId && d.attempt === undefined);
        if (stale) {
          throw new ApprovalError(
            "approval_already_answered",
            `This answer was accepted for attempt ${resent!.attempt} of "${stale.toolCallId}" already; the call now waits about attempt ${pending.find((r) => r.toolCallId === stale.toolCallId)!.recovery!.attempt}: answer it with that attempt`,
            { toolCallId: stale.toolCallId },
          );
        }
        return checked;
      },
      // Bounded, with the digest of the whole answer: a refused payload can be any size or depth.
      (error, refusedAnswer) => auditLog.append({ threadId, type: "tool.recovery_refused", data: refusalData(error, refusedAnswer) }).then(() => {}),
      request,
    );
    const { resolverId, decisions } = response;
    const at = clock().toISOString();
    const answerDigest = digestOf(answer);
    const authenticatedBy = principal?.source ?? null;
    const byId = new Map(decisions.map((d) => [d.toolCallId, d]));
    const records = pending.map((r): DecisionRecord => {
      const d = byId.get(r.toolCallId)!;
      return {
        ...r,
        status: r.recovery!.resumeStatus,
        recovery: {
          ...r.recovery!,
          resolution: { type: d.type, by: resolverId, at, ...(d.message !== undefined ? { message: d.message } : {}), ...(d.type === "mark_done" ? { result: d.result } : {}) },
        },
      };
    });
    if (!replayed) await auditLog.append(
      records.map((r) => ({
        threadId,
        type: "tool.recovery_decided" as const,
        data: {
          toolCallId: r.toolCallId,
          name: r.name,
          digest: r.digest,
          decision: r.recovery!.resolution!.type,
          resolverId,
          reason: r.recovery!.reason,
          attempt: r.recovery!.attempt,
          message: r.recovery!.resolution!.message ?? null,
          authenticatedBy,
          answerDigest,
          // The asking this answer is for (the attempt), and what a run that stopped after this step
          // reads back as the answer accepted, and from whom, for that asking only.
          round: round(r),
          answerSeal: seal.event(threadId, "tool.recovery_decided", acceptedAnswerFields({ toolCallId: r.toolCallId, digest: r.digest, round: round(r), answerDigest, by: resolverId, authenticatedBy })),
        },
      })),
    );
    return { decisions: sealDecisions(seal, threadId, state.decisions, records) };
  };
}

/**
 * A call of `pending` whose earlier recovery request (another attempt) accepted an answer with this
 * digest, and that attempt; undefined when none did.
 */
function answeredBefore(events: readonly AuditEvent[], pending: readonly DecisionRecord[], answerDigest: string): { toolCallId: string; attempt: number } | undefined {
  const asked = new Map(pending.map((r) => [r.toolCallId, r]));
  for (const event of events) {
    if (event.type !== "tool.recovery_decided" || event.data.answerDigest !== answerDigest) continue;
    const record = asked.get(String(event.data.toolCallId));
    if (record && event.data.digest === record.digest && event.data.attempt !== record.recovery!.attempt) {
      return { toolCallId: record.toolCallId, attempt: Number(event.data.attempt) };
    }
  }
  return undefined;
}
