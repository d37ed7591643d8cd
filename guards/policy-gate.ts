import { AIMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { KeyObject, randomUUID } from "node:crypto";
import { z } from "zod";
import { argumentsProblem, bounded, digestOf, MAX_ARGUMENT_DEPTH, nestedTooDeep, proposedCallDigest, refusalData } from "../src/human-tasks/refusal.js";
import { AuditLogOption, type AuditEventInput } from "../src/audit/log.js";
import { STATUS_OF_EFFECT } from "../src/decisions/lifecycle.js";
import {
  emptyThreadContext,
  type ApprovalRecord,
  type Budget,
  type DecisionRecord,
  type DecisionStatus,
  type Escalation,
  type ThreadContext,
} from "../src/decisions/records.js";
import { lazySealer, sealedContext } from "../src/decisions/seal.js";
import { ApprovalError, EartConfigError, IdentityResolutionError } from "../src/errors.js";
import { parseApprovalKeys } from "../src/human-tasks/approval-token.js";
import { approversOf, buildApprovalRequest, validateApprovalResponse, withHitlRequest, type ApprovalRequest } from "../src/human-tasks/approval.js";
import { IdentityRegistryOption, principalFromConfig, type AgentIdentity, type Principal } from "../src/identity/registry.js";
import { toolCallDigest } from "../src/internal/canonical.js";
import { parseOptions } from "../src/internal/options.js";
import { BudgetGuardOption, type BudgetVerdict } from "../src/policy/budget.js";
import { BUILTIN_POLICY_IDS, decideFailClosed, PolicyEngineOption, type PolicyDecision, type PolicyRequest } from "../src/policy/engine.js";
import { comparedVerdict, recordedRequest, verdictFlipped } from "../src/policy/replay.js";
import { acceptAnswer, acceptedAnswerFields, answersToRequest, requestRound } from "../langgraph/interrupts.js";
import { answerOf, assertSealed, sealDecisions, EffectLedgerOption } from "../langgraph/records.js";
import { answeredAfter, lastAIMessage, requireThreadId } from "../langgraph/run.js";
import type { Step } from "../langgraph/steps.js";
import { checkToolArgs, indexTools, parsedArgsField, ToolsOption } from "../langgraph/tools.js";
import { approvalsThatCount, decideRecordedCall } from "../langgraph/redecide.js";
import type { GovernedState } from "../langgraph/channels.js";

const PolicyGateOptionsSchema = z
  .object({
    policy: PolicyEngineOption,
    tools: ToolsOption,
    registry: IdentityRegistryOption,
    auditLog: AuditLogOption,
    /** The clock approvals expire by; injectable for tests. */
    clock: z.custom<() => Date>((v) => typeof v === "function", "must be a function returning a Date").default(() => () => new Date()),
    /** An approval answered after its expiry: `"answer"` tells the model it expired; `"rerequest"` asks again. */
    onExpired: z.enum(["answer", "rerequest"]).default("answer"),
    /**
     * A candidate policy set run beside the enforced one (shadow mode). It never changes a
     * decision; each call it would decide differently is recorded as `policy.shadow_flip`.
     */
    shadowPolicy: PolicyEngineOption.optional(),
    /**
     * Budgets checked after policy, for calls policy allows or sends for approval: an exceeded
     * budget denies or requires approval, as its rule says. Charge the same guard in the tool node.
     */
    budgets: BudgetGuardOption.optional(),
    /**
     * The effect ledger the tool node uses: its store keeps the key that seals the gate's records,
     * which is how the tool node knows a decision is the gate's. Defaults to the process's key.
     */
    ledger: EffectLedgerOption.optional(),
    /**
     * Public keys that verify signed approval tokens (`signApprovalToken`), by key id, each with
     * the approver it speaks for: out-of-band answers (a chat button, an e-mail link, the CLI).
     */
    approvalKeys: z.record(z.string(), z.object({ approver: z.string().min(1), publicKey: z.union([z.string(), z.custom<KeyObject>((v) => v instanceof KeyObject, "must be a KeyObject")]) })).optional(),
    /**
     * The roles of the reviewers a call the policy escalates goes to (the escalation guard's
     * `reviewerRoles`), recorded with `escalation.requested` so the audit log's inbox lists the
     * case for them.
     */
    reviewerRoles: z.array(z.string().min(1)).min(1).optional(),
  })
  .strict();
export type PolicyGateOptions = z.input<typeof PolicyGateOptionsSchema>;

export { BUILTIN_POLICY_IDS } from "../src/policy/engine.js";

type ToolCall = { id?: string; name: string; args: Record<string, unknown>; reserved?: boolean };

/** How deep tool arguments and answers may nest ({@link MAX_ARGUMENT_DEPTH}). */
const MAX_DEPTH = MAX_ARGUMENT_DEPTH;

/**
 * The arguments a decision record keeps and the digest that binds them. Arguments that cannot be
 * recorded as they are (nested too deep to walk, or holding a number JSON cannot: NaN, Infinity)
 * are refused: the record keeps a bounded, JSON-safe copy, with the digest of the whole call
 * computed the same way ({@link digestOf}), and `refused` says what is wrong, where.
 */
function recordedCall(name: string, args: Record<string, unknown>, threadId: string): { call: { args: Record<string, unknown>; digest: string }; refused?: string } {
  const problem = argumentsProblem(args, MAX_DEPTH);
  if (!problem) return { call: { args, digest: toolCallDigest(name, args, threadId) } };
  return { call: { args: bounded(args).value as Record<string, unknown>, digest: digestOf({ threadId, name, args }) }, refused: `${problem.path.join(".") || "the arguments"} ${problem.why}` };
}

/**
 * The calls of the message, other than those waiting for this answer, that will run and have not
 * yet (let through, or approved by an earlier answer, and not answered in the thread).
 */
function unrunSiblings(state: Pick<GovernedState, "decisions" | "messages">, message: AIMessage, pending: readonly DecisionRecord[]): DecisionRecord[] {
  const waiting = new Set(pending.map((r) => r.toolCallId));
  return state.decisions.filter(
    (d) =>
      d.messageId === message.id &&
      (d.status === "allowed" || d.status === "approved") &&
      !waiting.has(d.toolCallId) &&
      !answeredAfter(state.messages, message.id, d.toolCallId),
  );
}

/**
 * Refuses an answer nested deeper than the resume guard allows, as the guard does, before anything
 * walks it (a gate used without `guardResumes` sees it after LangGraph stored it).
 */
function assertAnswerDepth(answer: unknown): void {
  const at = nestedTooDeep(answer, MAX_DEPTH);
  if (!at) return;
  const path = at.map(String);
  throw new ApprovalError("approval_resume_invalid", `Refused resume value at ${path.join(".") || "(root)"}: it is nested deeper than ${MAX_DEPTH}`, { path });
}

export type GateUpdate = { decisions?: DecisionRecord[]; messages?: BaseMessage[]; escalation?: Escalation };

const verdictSummary = (v: DecisionRecord["verdict"]) => ({
  effect: v.effect,
  policyIds: v.policyIds,
  version: v.version,
  reasons: v.reasons,
  ...(v.approverRoles ? { approverRoles: v.approverRoles } : {}),
});


/**
 * The gate's parts: the node, and the first-pass decision step the prebuilt agent runs in the
 * same step as the model. `decideNew` writes nothing; it returns the update and the events.
 */
/**
 * A record answered by a human's decision, with the answer the model gets in the tool's place:
 * denied or escalated when policy decided an edit again, the approver's response, or the
 * rejection. Records that go on (approved, edited, still waiting) are returned as they are.
 */
function withAnswer(r: DecisionRecord, approverId: string): DecisionRecord {
  const why = r.verdict.reasons.join("; ");
  const note = r.approvals.at(-1)?.message;
  const answer: DecisionRecord["answer"] =
    r.status === "denied"
      ? { content: `Denied by policy: ${why}`, status: "error" }
      : r.status === "escalated"
        ? { content: `Escalated to a human: ${why}`, status: "error" }
        : r.status === "responded"
          ? { content: r.approvals.at(-1)!.message!, status: "success" }
          : r.status === "rejected"
            ? { content: note ? `Rejected by ${approverId}: ${note}` : `Rejected by ${approverId}.`, status: "error" }
            : undefined;
  return answer ? { ...r, answer } : r;
}

/** The answers of records that carry one, as the model reads them. */
function answersOf(records: readonly DecisionRecord[]): ToolMessage[] {
  return records.flatMap((r) => answerOf(r) ?? []);
}

/**
 * The most calls of one model message that wait for a human at once: the rest are refused, answered
 * to the model ({@link BUILTIN_POLICY_IDS} `approvalBatch`). An answer deciding this many, keyed or
 * in order, fits the 64 KB answer limit.
 */
export const MAX_APPROVALS_PER_MESSAGE = 100;

export function createPolicyGateParts(options: PolicyGateOptions) {
  const opts = parseOptions(PolicyGateOptionsSchema, options);
  const { policy, registry, auditLog, clock, onExpired, shadowPolicy, budgets } = opts;
  const tools = indexTools(opts.tools);
  const sealer = lazySealer(opts.ledger);
  const approvalKeys = parseApprovalKeys(opts.approvalKeys);
  /** What tokens on this thread are checked against; nonces used on any of its calls are spent. */
  const tokenContext = (threadId: string, decisions: readonly DecisionRecord[]) => ({
    threadId,
    keys: approvalKeys,
    now: clock(),
    used: new Set(decisions.flatMap((d) => d.usedTokens ?? [])),
  });

  /** What policy judges of the thread's context: the items eart's retrieval sealed for it, nothing written past the guard. */
  const judgedContext = async (threadId: string, context: ThreadContext | undefined): Promise<ThreadContext> =>
    sealedContext(await sealer(), threadId, context).context ?? emptyThreadContext();

  const now = () => clock().toISOString();
  /** The expiry of a request made now under this verdict, if it has one. */
  const expiryOf = (verdict: DecisionRecord["verdict"]) =>
    verdict.effect === "require_approval" && verdict.expiresInMs !== undefined
      ? { expiresAt: new Date(clock().getTime() + verdict.expiresInMs).toISOString() }
      : {};

  /**
   * The case handed to a human for the escalated calls, and the record that it was opened (the
   * inbox lists it for `reviewerRoles`); none when no call was escalated.
   */
  const openCase = (threadId: string, escalated: readonly DecisionRecord[]): { escalation: Escalation; event: AuditEventInput } | undefined => {
    if (escalated.length === 0) return undefined;
    const escalation: Escalation = {
      id: randomUUID(),
      reason: escalated.flatMap((r) => r.verdict.reasons).join("; "),
      toolCallIds: escalated.map((r) => r.toolCallId),
      policyIds: [...new Set(escalated.flatMap((r) => r.verdict.policyIds))],
      at: now(),
    };
    const data = {
      reason: escalation.reason,
      signals: [{ kind: "policy", detail: escalation.reason }],
      toolCallIds: escalation.toolCallIds,
      ...(opts.reviewerRoles ? { roles: [...opts.reviewerRoles] } : {}),
      // Whom the case is about, as an approval request says (an inbox shows it, and routes by it).
      ...(escalated[0]!.requestedBy ? { requestedBy: escalated[0]!.requestedBy } : {}),
    };
    return { escalation, event: { threadId, type: "escalation.requested", data } };
  };

  async function evaluate(
    call: ToolCall & { id: string },
    messageId: string,
    identity: AgentIdentity,
    context: ThreadContext,
    threadId: string,
    budget: Budget,
    earlier: readonly ToolCall[],
  ): Promise<{ record: DecisionRecord; answer?: string; request?: PolicyRequest; flip?: Record<string, unknown>; engine?: PolicyDecision }> {
    const { call: recorded, refused } = recordedCall(call.name, call.args, threadId);
    const base: Omit<DecisionRecord, "status" | "verdict"> = {
      schemaVersion: 1 as const,
      toolCallId: call.id,
      messageId,
      name: call.name,
      ...recorded,
      approvals: [],
      requestedBy: { agentId: identity.id, userId: identity.onBehalfOf.id },
      decidedAt: now(),
    };
    const builtin = (status: DecisionStatus, policyId: string, reason: string) => ({
      record: { ...base, status, verdict: { effect: "deny" as const, reasons: [reason], policyIds: [policyId], version: policy.version } },
      answer: reason,
    });
    // Bad model arguments go back to the model, as a schema failure does.
    if (refused) return builtin("invalid", BUILTIN_POLICY_IDS.arguments, `Invalid arguments for ${call.name}: ${refused}`);
    const tool = tools.get(call.name);
    if (!tool) return builtin("invalid", BUILTIN_POLICY_IDS.unknownTool, `Unknown tool "${call.name}".`);
    if (!identity.tools.includes(call.name)) {
      return builtin(
        "denied",
        BUILTIN_POLICY_IDS.permissions,
        `Agent "${identity.id}" acting for "${identity.onBehalfOf.id}" is not permitted to call ${call.name}.`,
      );
    }
    const checked = await checkToolArgs(tool, call.args);
    if (!checked.ok) return builtin("invalid", BUILTIN_POLICY_IDS.arguments, `Invalid arguments for ${call.name}: ${checked.message}`);
    const request: PolicyRequest = { identity, tool: { name: call.name, args: checked.args }, context, threadId };
    // What policy judges is what the tool will read: recorded when it differs from what the model sent.
    Object.assign(base, parsedArgsField(call.args, checked.args));
    const decided = await decideFailClosed(policy, request);
    // The candidate judges a copy of its own: one that changes the request in place (a conversion
    // to cents) changes nothing the enforced policy decided, the budgets count or the record keeps.
    const shadow = shadowPolicy && (await decideFailClosed(shadowPolicy, structuredClone(request)));
    // Shadow mode compares policy sets: the enforced policy's own decision, before budgets.
    const flip = shadow && verdictFlipped(comparedVerdict(decided), shadow) ? { enforced: verdictSummary(decided), candidate: verdictSummary(shadow) } : undefined;
    const { verdict, reserved } = await withinBudget(decided, request, budget, earlier);
    const record: DecisionRecord = { ...base, status: STATUS_OF_EFFECT[verdict.effect], verdict, ...expiryOf(verdict), ...(reserved ? { budgetReserved: true } : {}) };
    // The engine's own verdict, when budgets changed it: what a replay of a policy compares with.
    const engine = verdict === decided ? undefined : decided;
    if (verdict.effect === "deny") return { record, request, flip, engine, answer: `Denied by policy: ${verdict.reasons.join("; ")}` };
    if (verdict.effect === "escalate") return { record, request, flip, engine, answer: `Escalated to a human: ${verdict.reasons.join("; ")}` };
    return { record, request, flip, engine };
  }

  /**
   * Applies the budgets to what policy decided. Exceeded: deny, or require approval (by the
   * budget's roles too). A budget that cannot be checked denies (fail closed). A call policy allows
   * and the budgets fit is reserved in the budget store there and then, atomically, so that
   * concurrent threads cannot each fit the same budget.
   */
  async function withinBudget(
    decided: PolicyDecision,
    request: PolicyRequest,
    budget: Budget,
    earlier: readonly ToolCall[],
  ): Promise<{ verdict: PolicyDecision; reserved: boolean }> {
    if (!budgets || (decided.effect !== "allow" && decided.effect !== "require_approval")) return { verdict: decided, reserved: false };
    const req = {
      identity: request.identity,
      threadId: request.threadId ?? "",
      tool: request.tool,
      threadCounters: budget,
      pending: earlier.map((c) => ({ name: c.name, args: c.args, ...(c.reserved ? { reserved: true } : {}) })),
    };
    let over: Awaited<ReturnType<typeof budgets.check>>;
    let reserved = false;
    try {
      if (decided.effect === "allow") ({ verdict: over, reserved } = await budgets.reserve(req));
      else over = await budgets.check(req);
    } catch (error) {
      return { verdict: budgetFailure(error, decided.version), reserved: false };
    }
    if (!over) return { verdict: decided, reserved };
    if (over.effect === "deny") return { verdict: budgetDenial(over, decided.version), reserved: false };
    return { verdict: budgetApproval(decided, over), reserved: false };
  }

  /**
   * A call policy allows or sends to approvers, past a budget that asks for approval: it waits
   * for the budget's approvers as well. Beside policy's own approvers, both are needed (each a
   * group of `approverGroups`): a supervisor approving a call policy gives her does not approve
   * past a budget that names finance.
   */
  const budgetApproval = (decided: PolicyDecision & { effect: "allow" | "require_approval" }, over: BudgetVerdict): PolicyDecision => {
    const roles = over.approverRoles ?? [];
    if (decided.effect !== "require_approval") return { effect: "require_approval", reasons: over.reasons, policyIds: over.budgetIds, version: decided.version, approverRoles: roles };
    const groups = roles.length > 0 ? [...(decided.approverGroups ?? [decided.approverRoles]), roles] : decided.approverGroups;
    return {
      ...decided,
      // Policy's approvers make up its quorum; the budget's meet their own group.
      ...(roles.length > 0 ? { quorumRoles: decided.quorumRoles ?? decided.approverRoles } : {}),
      reasons: [...decided.reasons, ...over.reasons],
      policyIds: [...decided.policyIds, ...over.budgetIds],
      approverRoles: [...new Set([...decided.approverRoles, ...roles])],
      ...(groups ? { approverGroups: groups } : {}),
    };
  };

  /**
   * A call decided again when a human answers (an edit, a redeploy since it was asked): policy's
   * new verdict with the approvers the budgets ask for ({@link budgetApproval}). Budgets that deny
   * are applied when the approval completes (reserveApproved); one that cannot be checked denies.
   */
  async function withBudgetApprovers(verdict: PolicyDecision, request: PolicyRequest, budget: Budget, siblings: readonly DecisionRecord[]): Promise<PolicyDecision> {
    if (!budgets || (verdict.effect !== "allow" && verdict.effect !== "require_approval")) return verdict;
    const pending = siblings.map((r) => ({ name: r.name, args: r.parsedArgs ?? r.args, reserved: r.budgetReserved === true }));
    let over: Awaited<ReturnType<typeof budgets.check>>;
    try {
      over = await budgets.check({ identity: request.identity, threadId: request.threadId ?? "", tool: request.tool, threadCounters: budget, pending });
    } catch (error) {
      return budgetFailure(error, verdict.version);
    }
    return over?.effect === "require_approval" ? budgetApproval(verdict, over) : verdict;
  }

  /**
   * The verdict of a call a budget denies; one that could not be evaluated (its store or clock
   * failed) says so, as a policy that throws does: an outage is not customers reaching their caps.
   */
  const budgetDenial = (over: BudgetVerdict, version: string): PolicyDecision => ({
    effect: "deny",
    reasons: over.reasons,
    policyIds: over.budgetIds,
    version,
    ...(over.evaluationError ? { evaluationError: true } : {}),
  });

  const budgetFailure = (error: unknown, version: string): PolicyDecision => ({
    effect: "deny",
    reasons: [`budget check failed: ${(error as Error)?.message ?? String(error)}`],
    policyIds: [],
    version,
    evaluationError: true,
  });

  /**
   * Approved calls reserve their cross-thread budgets when the approval completes: a budget that
   * denies and no longer fits, or one that cannot be checked, denies the call. A budget that asks
   * for approval and no longer fits (other threads' calls ran since the call was asked) holds too,
   * unless its approvers are among those who approved: the call waits for them, with the
   * approvals it has. Only a call its approvers approved is let past such a budget.
   */
  async function reserveApproved(records: DecisionRecord[], identity: AgentIdentity, threadId: string, budget: Budget, siblings: readonly DecisionRecord[]): Promise<DecisionRecord[]> {
    if (!budgets) return records;
    const out: DecisionRecord[] = [];
    // The message's calls that will run and are not charged yet count as if charged (as they do
    // when the message is first decided): the thread's counters hold only what ran.
    const through = siblings.map((r) => ({ name: r.name, args: r.parsedArgs ?? r.args, reserved: r.budgetReserved === true }));
    for (const r of records) {
      if (r.status !== "approved" || r.budgetReserved) {
        out.push(r);
        if (r.status === "approved") through.push({ name: r.name, args: r.parsedArgs ?? r.args, reserved: true });
        continue;
      }
      const req = { identity, threadId, tool: { name: r.name, args: r.parsedArgs ?? r.args }, threadCounters: budget, pending: [...through] };
      let result: Awaited<ReturnType<typeof budgets.reserve>>;
      try {
        result = await budgets.reserve(req);
        const over = result.verdict;
        if (over?.effect === "require_approval") {
          // Asked of the budget's approvers too, unless the request asked them already.
          const roles = over.approverRoles ?? [];
          const asked = roles.length === 0 || (r.verdict.approverGroups ?? []).some((group) => group.length === roles.length && roles.every((role) => group.includes(role)));
          const next = withApproval(r, asked ? r.verdict : budgetApproval(r.verdict as PolicyDecision & { effect: "allow" | "require_approval" }, over), r.approvals);
          if (next.status !== "approved") {
            out.push(next);
            continue;
          }
          result = await budgets.reserve(req, { only: "deny" });
        }
      } catch (error) {
        out.push({ ...r, status: "denied", verdict: budgetFailure(error, r.verdict.version) });
        continue;
      }
      if (result.verdict) {
        out.push({ ...r, status: "denied", verdict: budgetDenial(result.verdict, r.verdict.version) });
      } else {
        out.push(result.reserved ? { ...r, budgetReserved: true } : r);
        through.push({ name: r.name, args: r.parsedArgs ?? r.args, reserved: result.reserved });
      }
    }
    return out;
  }

  /** First pass: decide every new call and record it. No interrupt here. */
  async function decideNew(
    state: Pick<GovernedState, "decisions" | "context"> & Partial<Pick<GovernedState, "budget">>,
    message: AIMessage,
    calls: ToolCall[],
    identity: AgentIdentity,
    threadId: string,
  ): Promise<{ update: GateUpdate; events: AuditEventInput[] }> {
    const known = new Map(state.decisions.map((d) => [d.toolCallId, d]));
    const records: DecisionRecord[] = [];
    const answers: ToolMessage[] = [];
    const requests = new Map<string, PolicyRequest>();
    const engines = new Map<string, PolicyDecision>();
    const flips: AuditEventInput[] = [];
    // Calls of this message already let through: each later one is checked against budgets with them.
    const through: ToolCall[] = [];
    // An id two calls of this message share names neither for sure (records, answers and the
    // ledger are keyed by it): every call under it is refused, answered once.
    const seen = new Set<string>();
    const shared = new Set(calls.flatMap((c) => (c.id && seen.has(c.id) ? [c.id] : (seen.add(c.id ?? ""), []))));
    const refusedShared = new Set<string>();
    let waiting = 0;
    const context = await judgedContext(threadId, state.context);
    for (const call of calls) {
      if (!call.id) throw new EartConfigError("messages", `the model proposed a call to ${call.name} without a tool call id`);
      const id = call.id;
      const previous = known.get(id);
      if (previous && previous.messageId === message.id) continue; // already decided
      if (shared.has(id)) {
        if (refusedShared.has(id)) continue;
        refusedShared.add(id);
      }
      const reuse = previous ? "was already used by an earlier call" : shared.has(id) ? "names two calls of this message" : undefined;
      const { record, answer, request, flip, engine } = reuse
        ? {
            record: {
              ...(previous ?? { schemaVersion: 1 as const, toolCallId: id, requestedBy: { agentId: identity.id, userId: identity.onBehalfOf.id }, approvals: [] }),
              messageId: message.id!,
              ...recordedCall(call.name, call.args, threadId).call,
              name: call.name,
              status: "denied" as const,
              approvals: [],
              decidedAt: now(),
              verdict: {
                effect: "deny" as const,
                reasons: [`tool call id "${id}" ${reuse}`],
                policyIds: [BUILTIN_POLICY_IDS.duplicateCall],
                version: policy.version,
              },
            },
            answer: `Refused: tool call id "${id}" ${reuse}.`,
          }
        : await evaluate({ ...call, id }, message.id!, identity, context, threadId, state.budget ?? {}, through);
      if (record.status === "pending_approval" && ++waiting > MAX_APPROVALS_PER_MESSAGE) {
        // One request holds every waiting call of a message, and its answer must fit the answer
        // limit: past this many, a call is refused now (the model may propose it again later),
        // so what waits can always be answered.
        const reason = `${call.name} was not decided: the message proposes more than ${MAX_APPROVALS_PER_MESSAGE} calls that need a human's approval, and at most ${MAX_APPROVALS_PER_MESSAGE} wait at once. Propose it again once those are decided.`;
        const verdict = { effect: "deny" as const, reasons: [reason], policyIds: [BUILTIN_POLICY_IDS.approvalBatch], version: record.verdict.version };
        records.push({ ...record, status: "denied", verdict, answer: { content: reason, status: "error" } });
        answers.push(new ToolMessage({ tool_call_id: id, name: call.name, content: reason, status: "error" }));
        continue;
      }
      // The answer goes in the record too (sealed with it): a tool step that runs after this one
      // (createAgent's, under governanceMiddleware) answers the call from it.
      records.push(answer !== undefined ? { ...record, answer: { content: answer, status: "error" } } : record);
      if (record.status === "allowed" || record.status === "pending_approval") through.push({ id, name: record.name, args: record.parsedArgs ?? record.args, reserved: record.budgetReserved === true });
      if (request) requests.set(id, request);
      if (engine) engines.set(id, engine);
      if (flip) flips.push({ threadId, type: "policy.shadow_flip", data: { toolCallId: id, name: call.name, digest: record.digest, enforced: flip.enforced, candidate: flip.candidate } });
      if (answer !== undefined) answers.push(new ToolMessage({ tool_call_id: id, name: call.name, content: answer, status: "error" }));
    }
    if (records.length === 0) return { update: {}, events: [] };
    const seal = await sealer();
    const pending = records.filter((r) => r.status === "pending_approval");
    const escalated = records.filter((r) => r.status === "escalated");
    const events: AuditEventInput[] = records.map((r) => ({
      threadId,
      type: "policy.decided",
      data: {
        toolCallId: r.toolCallId,
        name: r.name,
        digest: r.digest,
        effect: r.verdict.effect,
        status: r.status,
        reasons: r.verdict.reasons,
        policyIds: r.verdict.policyIds,
        policyVersion: r.verdict.version,
        approverRoles: r.verdict.approverRoles ?? null,
        quorum: r.verdict.quorum ?? null,
        agentId: identity.id,
        userId: identity.onBehalfOf.id,
        // What the engine was asked, so a candidate policy set can be replayed on it.
        request: requests.has(r.toolCallId) ? recordedRequest(requests.get(r.toolCallId)!) : null,
        ...(engines.has(r.toolCallId) ? { beforeBudgets: comparedVerdict(engines.get(r.toolCallId)!) } : {}),
      },
    }));
    events.push(...flips);
    // Recorded here, before any pause: the reviewer's node may not write before its interrupt.
    const opened = openCase(threadId, escalated);
    if (opened) events.push(opened.event);
    if (pending.length > 0) {
      events.push({ threadId, type: "approval.requested", data: buildApprovalRequest(threadId, pending) });
    }
    const update: GateUpdate = { decisions: sealDecisions(seal, threadId, state.decisions, records), messages: answers };
    if (opened) update.escalation = opened.escalation;
    return { update, events };
  }

  /**
   * Checks one resume value and returns the records it leads to, or throws the
   * {@link ApprovalError} that refuses it. Pure apart from policy evaluation: nothing is written.
   */
  async function resolve(
    raw: unknown,
    request: ApprovalRequest,
    pending: DecisionRecord[],
    identity: AgentIdentity,
    context: ThreadContext,
    threadId: string,
    principal: Principal | undefined,
    decisions: readonly DecisionRecord[],
    budget: Budget,
    siblings: readonly DecisionRecord[],
  ): Promise<{ records: DecisionRecord[]; approverId: string; types: Map<string, ApprovalRecord["type"]>; viaToken: boolean; edits: Map<string, { request: PolicyRequest; engine: PolicyDecision }> }> {
    const { response, approverId, tokenNonces } = validateApprovalResponse(raw, request, { registry, identity, principal, tokens: tokenContext(threadId, decisions) });
    const byId = new Map(pending.map((r) => [r.toolCallId, r]));
    const at = now();
    const records: DecisionRecord[] = [];
    // What policy was asked about each edited call, and what it said before budgets: recorded for replay.
    const edits = new Map<string, { request: PolicyRequest; engine: PolicyDecision }>();
    for (const d of response.decisions) {
      const nonce = tokenNonces.get(d.toolCallId);
      const found = byId.get(d.toolCallId)!;
      const record = nonce === undefined ? found : { ...found, usedTokens: [...(found.usedTokens ?? []), nonce] };
      const approval: ApprovalRecord = { approverId, type: d.type, at, ...(d.message !== undefined ? { message: d.message } : {}) };
      // Asked under another policy version (a redeploy since): the kinds of answer the policy in
      // force allows for the call decide, not those of the request as it was asked (an approve is
      // decided again below, with the approvers the policy in force asks for).
      if (d.type !== "approve" && record.verdict.version !== policy.version) {
        const now = await decideRecordedCall(policy, tools.get(record.name)!, record, { identity, context, threadId });
        if (now.effect === "require_approval" && now.allowedDecisions && !now.allowedDecisions.includes(d.type)) {
          throw new ApprovalError(
            d.type === "edit" ? "approval_edit_not_permitted" : "approval_resume_invalid",
            `The policy in force (version ${policy.version}) does not let an approver ${d.type} the call to ${record.name}: it allows ${now.allowedDecisions.join(", ")}`,
            { toolCallId: record.toolCallId },
          );
        }
      }
      if (d.type === "approve") {
        records.push(
          record.verdict.version === policy.version
            ? withApproval(record, record.verdict, [...record.approvals, approval])
            : await reevaluateApproved(record, approval, identity, context, threadId, budget, siblings),
        );
      } else if (d.type === "reject") {
        records.push({ ...record, status: "rejected", approvals: [...record.approvals, approval] });
      } else if (d.type === "respond") {
        records.push({ ...record, status: "responded", approvals: [...record.approvals, approval] });
      } else {
        const args = d.args!;
        const checked = await checkToolArgs(tools.get(record.name)!, args);
        if (!checked.ok) {
          throw new ApprovalError("approval_edit_not_permitted", `The edited arguments for ${record.name} are invalid: ${checked.message}`, {
            toolCallId: record.toolCallId,
          });
        }
        const asked = { identity, tool: { name: record.name, args: checked.args }, context, threadId };
        const engine = await decideFailClosed(policy, asked);
        const verdict = await withBudgetApprovers(engine, asked, budget, siblings);
        edits.set(record.toolCallId, { request: asked, engine });
        const approverMayDecide =
          verdict.effect === "allow" || (verdict.effect === "require_approval" && registry.userHasAnyRole(approverId, verdict.approverRoles));
        if (!approverMayDecide) {
          throw new ApprovalError(
            "approval_edit_not_permitted",
            `Policy does not let "${approverId}" approve the edited call to ${record.name}: ${verdict.effect} (${verdict.reasons.join("; ")})`,
            { toolCallId: record.toolCallId, effect: verdict.effect, policyIds: verdict.policyIds },
          );
        }
        // Earlier approvals were for the call as it was: the edited call starts its own list.
        const { parsedArgs: _asBefore, ...unedited } = record;
        records.push(withApproval({ ...unedited, args, ...parsedArgsField(args, checked.args), digest: proposedCallDigest(record.name, args, threadId) }, verdict, [{ ...approval, originalDigest: record.digest }]));
      }
    }
    return {
      records: await reserveApproved(records, identity, threadId, budget, siblings),
      approverId,
      types: new Map(response.decisions.map((d) => [d.toolCallId, d.type])),
      viaToken: tokenNonces.size > 0,
      edits,
    };
  }

  /**
   * The policy set changed between the request and the approval (another version: edited rules,
   * another declared `config` or `version`): the call is decided again before it can run.
   * Allowed, or still needing an approval this approver may give: approved, counting only earlier
   * approvals by holders of the roles now asked for. Needing roles the approver lacks: asked again
   * of those roles (fail closed: nothing runs until they answer), with the same earlier approvals
   * kept. Denied or escalated: not run, and the model is told why.
   */
  async function reevaluateApproved(
    record: DecisionRecord,
    approval: ApprovalRecord,
    identity: AgentIdentity,
    context: ThreadContext,
    threadId: string,
    budget: Budget,
    siblings: readonly DecisionRecord[],
  ): Promise<DecisionRecord> {
    const decided = await decideRecordedCall(policy, tools.get(record.name)!, record, { identity, context, threadId });
    const request = { identity, tool: { name: record.name, args: (record.parsedArgs ?? record.args) as Record<string, unknown> }, context, threadId };
    const verdict = await withBudgetApprovers(decided, request, budget, siblings);
    // Only approvals from holders of the roles the new policy asks for still count, here and
    // when the call is asked again: approvals under the old roles never make up a new quorum.
    const still = approvalsThatCount(record.approvals, verdict, registry);
    if (verdict.effect === "allow" || (verdict.effect === "require_approval" && registry.userHasAnyRole(approval.approverId, verdict.approverRoles))) {
      return withApproval(record, verdict, [...still, approval]);
    }
    return { ...record, verdict, ...(verdict.effect === "require_approval" ? { approvals: still } : {}), status: STATUS_OF_EFFECT[verdict.effect], ...expiryOf(verdict) };
  }

  /**
   * The record with these approvals under this verdict: approved once the verdict allows, or
   * once enough distinct approvers (the quorum) approved; otherwise still waiting.
   */
  function withApproval(record: DecisionRecord, verdict: DecisionRecord["verdict"], approvals: ApprovalRecord[]): DecisionRecord {
    const next = { ...record, verdict, approvals };
    if (verdict.effect !== "require_approval") return { ...next, status: "approved" };
    // Read against the registry in force: an approver demoted or removed since they approved no
    // longer counts. The quorum is made up by holders of its roles (policy's own where a budget's
    // approvers are needed too: a budget's approver meets the budget's group, not a place in
    // policy's quorum); every group of roles is met by an approver holding one of its roles.
    const approvers = approversOf(next);
    const holders = approvers.filter((id) => registry.userHasAnyRole(id, verdict.quorumRoles ?? verdict.approverRoles ?? []));
    const met = (verdict.approverGroups ?? []).every((group) => approvers.some((id) => registry.userHasAnyRole(id, group)));
    return { ...next, status: met && holders.length >= (verdict.quorum ?? 1) ? "approved" : "pending_approval" };
  }

  /**
   * An answer arrived after the request lapsed: it decides nothing. The lapsed calls are answered
   * to the model as expired, or asked again with a new expiry (`onExpired: "rerequest"`); other
   * pending calls wait for a new answer. The caller gets `approval_expired` from the resume guard.
   */
  async function expire(
    lapsed: DecisionRecord[],
    answer: unknown,
    threadId: string,
    principal: Principal | undefined,
    inState: readonly DecisionRecord[],
  ): Promise<GateUpdate> {
    const at = now();
    const approverId = principal?.id;
    const records = lapsed.map((r): DecisionRecord =>
      onExpired === "rerequest"
        ? { ...r, approvals: [], expiredAt: at, ...expiryOf(r.verdict) }
        : { ...r, status: "expired", expiredAt: at, answer: { content: `The approval request expired at ${r.expiresAt}; the call was not run.`, status: "error" } },
    );
    const events: AuditEventInput[] = lapsed.map((r) => ({
      threadId,
      type: "approval.expired",
      data: {
        toolCallId: r.toolCallId,
        name: r.name,
        digest: r.digest,
        expiresAt: r.expiresAt ?? null,
        answeredAt: at,
        approverId: typeof approverId === "string" ? approverId : null,
        outcome: onExpired === "rerequest" ? "rerequested" : "expired",
      },
    }));
    if (onExpired === "rerequest") events.push({ threadId, type: "approval.requested", data: buildApprovalRequest(threadId, records) });
    await auditLog.append(events);
    return { decisions: sealDecisions(await sealer(), threadId, inState, records), messages: answersOf(records) };
  }

  /** Second pass: pause for the pending calls; on resume apply the decisions. */
  async function decidePending(
    state: GovernedState,
    message: AIMessage,
    pending: DecisionRecord[],
    identity: AgentIdentity,
    threadId: string,
    config: LangGraphRunnableConfig,
  ): Promise<GateUpdate> {
    // eart's request with LangChain's HITL request fields beside it (the audit log keeps eart's).
    const request = withHitlRequest(buildApprovalRequest(threadId, pending));
    // An answer eart accepted before for this request (the step that runs the approved calls
    // stopped before it was saved) stands as it was then, from whom it came then: not checked
    // against whoever continues the thread, not expired since, not recorded twice. Otherwise the
    // newest answer counts. Read before the answers are: when a tool of the step asked its own
    // question after that answer, the answers after it are the tool's, left for its interrupt().
    const seal = await sealer();
    // Each call as this request asks it (the approvals it has, its expiry): the answer is sealed for that asking.
    const rounds = new Map(request.requests.map((q) => [q.toolCallId, requestRound(q)]));
    const query = { requested: "approval.requested", decided: "approval.decided", calls: pending.map((r) => ({ toolCallId: r.toolCallId, digest: r.digest, round: rounds.get(r.toolCallId)! })) };
    // This node re-runs from here on resume.
    const { answers, accepted, standing } = await answersToRequest(request, auditLog, threadId, query, seal, message.tool_calls?.length === 1);
    const replayed = accepted !== undefined && standing !== undefined;
    const answer = replayed ? standing : answers.at(-1);
    const answerDigest = replayed ? accepted!.answerDigest : digestOf(answer);
    const principal = replayed ? accepted!.principal : principalFromConfig(config.configurable);
    // A refused answer leaves the thread paused on the same request.
    // Audited bounded, with the digest of the whole answer: a refused payload can be any size or depth.
    const refused = (error: ApprovalError) => auditLog.append({ threadId, type: "approval.refused", data: refusalData(error, answer) }).then(() => {});
    const newest = answers.at(-1);
    if (replayed && newest !== standing && digestOf(newest) !== answerDigest) {
      // A later answer to a request answered already changes nothing: recorded as refused.
      const error = new ApprovalError("approval_already_answered", `The request was answered already by "${accepted!.principal.id}"; that answer stands`);
      await auditLog.append({ threadId, type: "approval.refused", data: refusalData(error, newest) });
    }
    const lapsed = pending.filter((r) => r.expiresAt !== undefined && Date.parse(r.expiresAt) <= clock().getTime());
    if (lapsed.length > 0 && !replayed) {
      // Only an answer an authorised approver could have given moves a lapsed request on.
      await acceptAnswer(
        answer,
        (a) => {
          assertAnswerDepth(a);
          return validateApprovalResponse(a, request, { registry, identity, principal, tokens: tokenContext(threadId, state.decisions) });
        },
        refused,
        request,
      );
      return expire(lapsed, answer, threadId, principal, state.decisions);
    }
    const result = await acceptAnswer(
      answer,
      async (a) => {
        assertAnswerDepth(a);
        return resolve(a, request, pending, identity, await judgedContext(threadId, state.context), threadId, principal, state.decisions, state.budget ?? {}, unrunSiblings(state, message, pending));
      },
      refused,
      request,
    );
    const { records, approverId, types, viaToken, edits } = result;
    const events: AuditEventInput[] = records.map((r) => {
      const approval = r.approvals.at(-1);
      const edit = edits.get(r.toolCallId);
      // Who authenticated the answer: the resuming run, or a signed token it relayed.
      const authenticatedBy = viaToken ? "approval_token" : (principal?.source ?? null);
      const originalDigest = approval?.originalDigest ?? r.digest;
      return {
        threadId,
        type: "approval.decided",
        data: {
          toolCallId: r.toolCallId,
          name: r.name,
          decision: types.get(r.toolCallId)!,
          approverId,
          authenticatedBy,
          ...(viaToken && principal ? { relayedBy: principal.id } : {}),
          digest: r.digest,
          originalDigest,
          message: approval?.approverId === approverId ? (approval.message ?? null) : null,
          status: r.status,
          effect: r.verdict.effect,
          policyIds: r.verdict.policyIds,
          policyVersion: r.verdict.version,
          requestedUnderVersion: request.requests.find((q) => q.toolCallId === r.toolCallId)?.policyVersion ?? null,
          answerDigest,
          // The asking this answer is for, and what a run that stopped after this step reads back
          // as the answer accepted, and from whom, for that asking only.
          round: rounds.get(r.toolCallId) ?? null,
          answerSeal: seal.event(threadId, "approval.decided", acceptedAnswerFields({ toolCallId: r.toolCallId, digest: originalDigest, round: rounds.get(r.toolCallId) ?? null, answerDigest, by: String(approverId), authenticatedBy })),
          // An edited call, as policy was asked about it and answered before budgets: replayed as edited.
          ...(edit ? { request: recordedRequest(edit.request), beforeBudgets: comparedVerdict(edit.engine) } : {}),
        },
      };
    });
    const answered = records.map((r) => withAnswer(r, approverId));
    const askedAgain = records.filter((r) => r.status === "pending_approval");
    if (askedAgain.length > 0) events.push({ threadId, type: "approval.requested", data: buildApprovalRequest(threadId, askedAgain) });
    // A call the policy in force now escalates (a redeploy since it was asked): a reviewer is asked,
    // and the inbox lists the case for them, as when the call was first decided.
    const opened = openCase(threadId, answered.filter((r) => r.status === "escalated"));
    if (opened) events.push(opened.event);
    if (!replayed) await auditLog.append(events);
    const messages: BaseMessage[] = [];
    const edited = new Map(records.filter((r) => r.approvals.at(-1)?.type === "edit").map((r) => [r.toolCallId, r]));
    if (edited.size > 0) {
      // Replace the proposing message (same id) so the history shows the call that will run.
      messages.push(
        new AIMessage({
          id: message.id!,
          content: message.content,
          name: message.name,
          response_metadata: message.response_metadata,
          tool_calls: (message.tool_calls ?? []).map((c) => (c.id && edited.has(c.id) ? { ...c, args: edited.get(c.id)!.args } : c)),
        }),
      );
    }
    messages.push(...answersOf(answered));
    const update: GateUpdate = { decisions: sealDecisions(await sealer(), threadId, state.decisions, answered), messages };
    if (opened) update.escalation = opened.escalation;
    return update;
  }

  async function policyGate(state: GovernedState, config: LangGraphRunnableConfig): Promise<GateUpdate> {
    const threadId = requireThreadId(config);
    const message = lastAIMessage(state.messages);
    const calls = (message?.tool_calls ?? []) as ToolCall[];
    if (!message || calls.length === 0) return {};
    const identity = state.identity;
    if (!identity) {
      throw new IdentityResolutionError("identity_missing", "The thread has no bound identity: add the identity binding node before the policy gate");
    }
    // Only what eart sealed for this thread counts: a forged record (a pending request with other
    // approver roles, an "approved" status) stops here, before any human sees it.
    const mine = state.decisions.filter((d) => d.messageId === message.id);
    await assertSealed(await sealer(), auditLog, threadId, "policyGate", identity, mine);
    const pending = mine.filter((d) => d.status === "pending_approval");
    if (pending.length > 0) return decidePending(state, message, pending, identity, threadId, config);
    const { update, events } = await decideNew(state, message, calls, identity, threadId);
    if (events.length > 0) await auditLog.append(events);
    return update;
  }

  /**
   * The gate's first pass as a {@link Step}: decides every call of the model's message that ends
   * the state it is given (the model step before it added it), writing nothing; the approval
   * pause is the `policyGate` node's. A message without tool calls changes nothing.
   */
  const decideStep: Step<GovernedState, GateUpdate> = async (state, { threadId }) => {
    const message = state.messages.at(-1);
    if (!message || !AIMessage.isInstance(message) || (message.tool_calls?.length ?? 0) === 0) return { update: {}, events: [] };
    if (!state.identity) throw new IdentityResolutionError("identity_missing", "The thread has no bound identity: bind it in a step before the policy decision");
    return decideNew(state, message, message.tool_calls as ToolCall[], state.identity, threadId);
  };

  return { policyGate, decideStep };
}

/**
 * Guard node that puts every tool call of the last AI message through identity permissions,
 * argument validation and the policy engine, before anything runs.
 *
 * Allowed calls pass to the governed tool node. Denied, invalid and escalated calls are answered
 * to the model with a `ToolMessage` and never run. Calls that need approval are recorded, then
 * the gate runs again (route `"approval"` back to it) and pauses with ONE `interrupt()` carrying
 * an {@link ApprovalRequest} for all of them, with LangChain's HITL request fields beside eart's.
 * Nothing is written before that interrupt, so the re-run on resume duplicates nothing. The
 * resume value, keyed or a positional HITL answer, is checked by
 * {@link validateApprovalResponse}; edits are evaluated by policy again, and so is an approved
 * call requested under another policy version. A refused resume throws a typed
 * {@link ApprovalError}, runs nothing, leaves the thread paused on the same request, and is
 * audited (`approval.refused`, with a bounded copy of the answer and the digest of all of it).
 * Tool arguments nested deeper than 64 levels are answered to the model as invalid
 * (`eart.arguments`); an answer nested deeper is refused as `approval_resume_invalid`.
 * @example
 * ```ts
 * graph
 *   .addNode("policyGate", createPolicyGate({ policy, tools, registry, auditLog }))
 *   .addConditionalEdges("policyGate", routeAfterPolicyGate, { approval: "policyGate", tools: "tools", agent: "agent", end: END });
 * ```
 */
export function createPolicyGate(options: PolicyGateOptions) {
  return createPolicyGateParts(options).policyGate;
}
