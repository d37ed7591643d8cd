import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import type { StructuredToolInterface } from "@langchain/core/tools";
import { BaseCheckpointSaver, Command, getConfig, isCommand, ReducedValue, StateSchema, type LangGraphRunnableConfig } from "@langchain/langgraph";
import { createMiddleware } from "langchain";
import { z } from "zod";
import { createPolicyGateParts, type GateUpdate } from "../guards/policy-gate.js";
import { answeredAfter, compiledGraphOf, madeWith, requireThreadId } from "../langgraph/run.js";
import { isGraphControlFlow } from "../langgraph/tools.js";
import { type GovernedState } from "../langgraph/channels.js";
import { answersGiven, holdsAnswers, storedAnswers } from "../langgraph/interrupts.js";
import { answerOf, EffectLedgerOption, recoveryRequestFields } from "../langgraph/records.js";
import { ANSWER_SEALER, assertCallerInput, guardResumes, THREAD_LOCK } from "../graphs/resume-guard.js";
import { redactIncoming, type IncomingGraph } from "../graphs/governed-agent.js";
import { createGovernedToolNode } from "../nodes/governed-tool-node.js";
import { identityStep } from "../nodes/identity-binding.js";
import { contextMessage, modelAnswer } from "../nodes/model-node.js";
import { createContextRetrieval, type ContextRetrievalOptions } from "../nodes/context-retrieval.js";
import { createToolRecovery, DEFAULT_RECOVERY_ROLES } from "../nodes/tool-recovery.js";
import { redactError, redactingAuditLog, redactMessage } from "../nodes/redaction.js";
import { AuditLogOption, MemoryAuditLog, type AuditLog } from "../src/audit/log.js";
import { type Redaction } from "../src/context/redaction.js";
import { emptyThreadContext, mergeBudget, mergeDecisions, mergeThreadContext, type DecisionRecord, type RecoveryReason, type ThreadContext } from "../src/decisions/records.js";
import { bindIdentityOnce, forgedContextEvent, lazySealer, sealedContext, type Sealer } from "../src/decisions/seal.js";
import type { EffectLedger } from "../src/ledger/ledger.js";
import { ledgerFor } from "../src/stores/for-checkpointer.js";
import { guardCheckpointer } from "../src/stores/postgres/connection.js";
import { EartConfigError } from "../src/errors.js";
import { standardRedaction } from "../src/export/segments.js";
import { IdentityRegistry, type AgentIdentity } from "../src/identity/registry.js";
import { parseOptions } from "../src/internal/options.js";
import { PolicyEngineOption } from "../src/policy/engine.js";
import { assertAgentConfig } from "../src/policy/validate.js";
import { ToolExecutionOptionsSchema } from "../src/tools/resilience.js";
import { ANSWERED_STATUSES, RUNNABLE_STATUSES } from "../src/decisions/lifecycle.js";
import type { ThreadLock } from "../src/threads/lock.js";

const GovernanceMiddlewareOptionsSchema = z
  .object({
    /** An {@link IdentityRegistry}, or its definition object. */
    identities: z.unknown(),
    policy: PolicyEngineOption,
    /** Defaults to a {@link MemoryAuditLog}. */
    auditLog: AuditLogOption.optional(),
    /**
     * The effect ledger that makes each tool call run at most once across resumes, crashes and
     * processes (`SqliteEffectLedger`, `PostgresEffectLedger`); its store keeps the key that seals
     * eart's records in state. Defaults to the one that fits the agent's checkpointer
     * (`ledgerFor`: SQLite or PostgreSQL beside a `SqliteSaver` / `PostgresSaver`), which
     * `guardAgent` finds; without `guardAgent`, one in memory (this process only).
     */
    ledger: EffectLedgerOption.optional(),
    /** Per tool name (or `"*"`): idempotency, timeout, retry, circuit breaker, fallback. */
    execution: z.record(z.string(), ToolExecutionOptionsSchema).optional(),
    /** The clock approvals expire by; injectable for tests. */
    clock: z.custom<() => Date>((v) => typeof v === "function", "must be a function returning a Date").optional(),
    /** Roles that may retry, mark done or abandon a call the tools could not finish (default `["operator"]`). */
    recoveryRoles: z.array(z.string().min(1)).min(1).optional(),
    /**
     * Context the agent may see (`createContextRetrieval` options without `auditLog`): retrieved at
     * the start of every run for the thread's identity, filtered by scope, redacted, and given to
     * the model before the conversation. Required facts that are missing stop the run (no reviewer
     * to escalate to here): the model does not guess.
     */
    context: z.custom<Omit<ContextRetrievalOptions, "auditLog">>((v) => typeof v === "object" && v !== null && Array.isArray((v as { providers?: unknown }).providers), "must be context retrieval options ({ providers, … })").optional(),
    /** Public keys that verify signed approval tokens, by key id (see `createPolicyGate`). */
    approvalKeys: z.custom<Record<string, unknown>>((v) => typeof v === "object" && v !== null, "must map key ids to { approver, publicKey }").optional(),
    /**
     * What is redacted before the thread, the model, the audit log and the exporters hold it: the
     * model's answers, tool results, and every audit event. Defaults to the standard redactions;
     * `false` turns redaction off.
     */
    redaction: z
      .union([z.literal(false), z.custom<Redaction>((v) => typeof (v as Redaction)?.apply === "function", "must be a Redaction (defineRedaction) or false")])
      .optional(),
  })
  .strict();
export type GovernanceMiddlewareOptions = z.input<typeof GovernanceMiddlewareOptionsSchema>;

/** eart's records in a `createAgent` agent's state, in its one channel. */
export interface GovernanceRecords {
  identity?: AgentIdentity;
  decisions?: DecisionRecord[];
  context?: ThreadContext;
  budget?: Record<string, number>;
}

/**
 * Reducer of eart's channel: each record kind by its own reducer (the identity binds once, decision
 * records merge by call, context and budgets accumulate); kinds the update does not carry stay.
 */
function mergeGovernanceRecords(current: GovernanceRecords | undefined, update: Partial<GovernanceRecords> | undefined): GovernanceRecords {
  const base = current ?? {};
  if (!update || typeof update !== "object") return base;
  const out: GovernanceRecords = { ...base };
  if (update.identity !== undefined) out.identity = bindIdentityOnce(base.identity, update.identity);
  if (update.decisions !== undefined) out.decisions = mergeDecisions(base.decisions, update.decisions);
  if (update.context !== undefined) out.context = mergeThreadContext(base.context, update.context);
  if (update.budget !== undefined) out.budget = mergeBudget(base.budget, update.budget);
  return out;
}

/**
 * The state eart adds to a `createAgent` agent: one private channel (its name starts with `_`, so
 * `createAgent` keeps it out of the agent's input and output schemas: no client sends it), with
 * eart's reducers. Authority never comes from it: records count only when eart sealed them.
 */
const GovernanceState = new StateSchema({
  // One channel with an unchecked schema: createAgent builds and parses each middleware's state
  // schema on every model call, and every channel costs on every step (a read of an empty one
  // throws inside LangGraph); eart checks its records itself (their seals).
  _eart: new ReducedValue(z.custom<GovernanceRecords | undefined>(() => true), {
    inputSchema: z.custom<Partial<GovernanceRecords> | undefined>(() => true),
    reducer: mergeGovernanceRecords,
  }),
});

/** The names of eart's channels in a `createAgent` agent: only eart's steps write them. */
export const GOVERNANCE_CHANNEL_NAMES: readonly string[] = Object.freeze(Object.keys(GovernanceState.fields));

/** The agent's state as the middleware reads it. */
type AgentState = {
  messages: BaseMessage[];
  _eart?: GovernanceRecords;
};

/** eart's own view of the agent's state: the channels its steps read, by their names. */
function governedView(state: AgentState): GovernedState {
  return {
    messages: state.messages,
    identity: state._eart?.identity,
    decisions: state._eart?.decisions ?? [],
    context: state._eart?.context ?? emptyThreadContext(),
    budget: state._eart?.budget ?? {},
    escalation: null,
    reviewed: null,
  };
}

/** A step's update, written to the agent's channels. */
function agentUpdate(update: GateUpdate & { identity?: AgentIdentity; budget?: Record<string, number>; context?: Partial<ThreadContext> }): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (update.messages?.length) out.messages = update.messages;
  const records: Partial<GovernanceRecords> = {};
  if (update.decisions?.length) records.decisions = update.decisions;
  if (update.identity) records.identity = update.identity;
  if (update.budget && Object.keys(update.budget).length > 0) records.budget = update.budget;
  if (update.context) records.context = update.context as ThreadContext;
  if (Object.keys(records).length > 0) out._eart = records;
  return out;
}

/** The run's LangGraph configuration (thread id, signal, the authenticated user). */
function runConfig(): LangGraphRunnableConfig {
  const config = getConfig() as LangGraphRunnableConfig | undefined;
  if (!config) throw new EartConfigError("config", "governanceMiddleware runs inside a createAgent run (it found no run configuration)");
  return config;
}

/** The last AI message, when it is the newest message with tool calls that nothing answered yet. */
function proposing(messages: readonly BaseMessage[]): AIMessage | undefined {
  const last = [...messages].reverse().find((m) => AIMessage.isInstance(m));
  return last && (last.tool_calls?.length ?? 0) > 0 ? last : undefined;
}

/**
 * eart for `createAgent` (LangChain v1): a middleware built on the same steps as eart's nodes,
 * that replaces `humanInTheLoopMiddleware` and governs every tool call.
 * - `wrapModelCall` (or `beforeAgent`, with `context`): binds the thread's identity from trusted
 *   run configuration (the agent `configurable.agent_id`, the human `langgraph_auth_user` or
 *   `user_id`), once, before the model is called; later input from anyone else is refused.
 * - `wrapModelCall`: records what the model proposed (`model.output`), redacted, and decides every
 *   proposed call by policy in the same step (no hook step of its own per turn); while calls wait
 *   for a human it does not call the model (it pauses, as the tool step does).
 * - `wrapToolCall`: answers a denied call to the model; for calls that need a human, the step of
 *   the first waiting call pauses once for all of them with one `interrupt()` carrying eart's
 *   approval request and LangChain's HITL request fields, checks the answer (eart's keyed form or
 *   the HITL `{ decisions }` in order) as eart's gate does, and runs what it lets run; a call runs
 *   only as eart decided it (sealed record, same digest), at most once through the effect ledger,
 *   with timeouts, retries, breaker and fallbacks, and is recorded. A call the tools could not
 *   finish goes to a human (recovery): in its own tool step when it is the message's only call,
 *   otherwise in the next model step.
 * Tool calls are decided from the agent's own tools (the ones `createAgent` gives the model).
 * @example
 * ```ts
 * const agent = createAgent({ model, tools, checkpointer, middleware: [governanceMiddleware({ identities, policy, auditLog, ledger })] });
 * const paused = await agent.invoke({ messages: [{ role: "user", content: "Refund order 1042, $740" }] }, { configurable: { thread_id: "t1", agent_id: "support-agent", user_id: "cara" } });
 * await agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), { configurable: { thread_id: "t1", user_id: "sam" } });
 * ```
 */
export function governanceMiddleware(options: GovernanceMiddlewareOptions) {
  const opts = parseOptions(GovernanceMiddlewareOptionsSchema, options);
  if (opts.identities === undefined) throw new EartConfigError("identities", "is required: the IdentityRegistry or its definition { roles, agents, users }");
  const registry = opts.identities instanceof IdentityRegistry ? opts.identities : IdentityRegistry.fromObject(opts.identities);
  const redaction = opts.redaction === false ? undefined : (opts.redaction ?? standardRedaction());
  const raw = opts.auditLog ?? new MemoryAuditLog();
  const auditLog: AuditLog = redaction ? redactingAuditLog(raw, redaction) : raw;
  const { policy, execution, clock, context } = opts;
  // The ledger (and the seal key its store keeps) is settled on first use: guardAgent may give the
  // one that fits the agent's checkpointer before that.
  let ledger: EffectLedger | undefined = opts.ledger;
  let settled: { sealer: () => Promise<Sealer>; recovery: ReturnType<typeof createToolRecovery> } | undefined;
  const settle = () =>
    (settled ??= {
      sealer: lazySealer(ledger),
      recovery: createToolRecovery({ registry, auditLog, ledger, clock, ...(opts.recoveryRoles ? { roles: opts.recoveryRoles } : {}) }),
    });
  const sealer = () => settle().sealer();
  // Made on first use, once the ledger (whose key seals the items) is settled.
  let retrieval: ReturnType<typeof createContextRetrieval> | undefined;
  const retrieve = context
    ? (...args: Parameters<ReturnType<typeof createContextRetrieval>>) => {
        settle();
        retrieval ??= createContextRetrieval({ ...context, auditLog, ledger, ...(redaction && !context.redaction ? { redaction } : {}), ...(clock && !context.clock ? { clock } : {}) });
        return retrieval(...args);
      }
    : undefined;
  const bind = identityStep<GovernedState>(registry, sealer, auditLog, {
    recordRequest: (state) => HumanMessage.isInstance(state.messages.at(-1)),
  });

  // A gate per tool set: the tools a model call was given decide its calls (a middleware such as
  // llmToolSelectorMiddleware narrows them per call, and so per thread); a paused call is answered
  // with all the agent's tools (knownTools), never with the set another thread's call was given.
  type Gate = { tools: readonly StructuredToolInterface[]; parts: ReturnType<typeof createPolicyGateParts> };
  const gates = new Map<string, Gate>();
  let lastGate: Gate | undefined;
  // Every tool a model call was given, by name: the agent's tools when guardAgent did not say them.
  const seenTools = new Map<string, StructuredToolInterface>();
  const gateFor = (tools: readonly StructuredToolInterface[]) => {
    settle();
    if (lastGate?.tools === tools) return lastGate.parts;
    const key = tools.map((t) => t.name).join("\u0000");
    let gate = gates.get(key);
    if (!gate || gate.tools.length !== tools.length || gate.tools.some((t, i) => t !== tools[i])) {
      // Checked as createGovernedAgent checks its options, once the agent's tools are known (a
      // middleware that narrows the tools the model sees may leave rules about others: not a mistake here).
      assertAgentConfig({ tools, policy, registry, recoveryRoles: opts.recoveryRoles, skip: ["policy_tool_unknown"] });
      gate = { tools, parts: createPolicyGateParts({ policy, tools: [...tools], registry, auditLog, ledger, clock, approvalKeys: opts.approvalKeys as never }) };
      // Bounded: a selector can give each call its own subset.
      if (gates.size >= MAX_GATES) gates.delete(gates.keys().next().value!);
      gates.set(key, gate);
      for (const t of tools) seenTools.set(t.name, t);
    }
    lastGate = gate;
    return gate.parts;
  };
  const runners = new WeakMap<object, ReturnType<typeof createGovernedToolNode>>();
  const runnerFor = (tool: StructuredToolInterface) => {
    let runner = runners.get(tool);
    if (!runner) {
      settle();
      // Each runner governs one tool: its execution options, and those for every tool ("*").
      const own = execution ? Object.fromEntries(Object.entries(execution).filter(([name]) => name === tool.name || name === "*")) : undefined;
      runner = createGovernedToolNode({ tools: [tool], auditLog, ledger, execution: own, redaction, policy, registry, clock, recoveryRoles: [...(opts.recoveryRoles ?? DEFAULT_RECOVERY_ROLES)] });
      runners.set(tool, runner);
    }
    return runner;
  };

  // The agent's tools as guardAgent found them: a thread resumed in a new process meets its tool
  // step before any model call shows the middleware the tools.
  let agentTools: readonly StructuredToolInterface[] | undefined;
  const knownTools = (): readonly StructuredToolInterface[] => {
    const tools = agentTools ?? (seenTools.size > 0 ? [...seenTools.values()] : undefined);
    if (!tools) throw new EartConfigError("tools", "governanceMiddleware answers a paused thread with the agent's tools, which it has not seen: guard the agent with guardAgent(agent, governance)");
    return tools;
  };

  /**
   * Runs, through the governed tool node, the calls of the proposing message that `decisions` let
   * run and the thread has not answered: each call with its own tool's runner, as createAgent's
   * tool step would. Returns their answers and records.
   */
  const runCalls = async (state: AgentState, decisions: DecisionRecord[], message: AIMessage, config: LangGraphRunnableConfig) => {
    const tools = knownTools();
    const others = state.messages.filter((m) => m.id !== message.id);
    const byId = new Map(decisions.map((d) => [d.toolCallId, d]));
    const calls = (message.tool_calls ?? []).filter((c) => c.id && !answeredAfter(state.messages, message.id, c.id) && byId.get(c.id)?.messageId === message.id && RUNNABLE_STATUSES.has(byId.get(c.id)!.status));
    const runs = await Promise.all(
      calls.map((call) => {
        const tool = tools.find((t) => t.name === call.name);
        if (!tool) return { decisions: [], messages: [notGoverned(call)] };
        const only = new AIMessage({ id: message.id!, content: message.content, tool_calls: [call] });
        return runnerFor(tool)(governedView({ ...state, _eart: { ...state._eart, decisions }, messages: [...others, only] }), config);
      }),
    );
    return {
      decisions: runs.flatMap((r) => r.decisions),
      messages: runs.flatMap((r) => r.messages),
      budget: Object.assign({}, ...runs.map((r) => ("budget" in r ? r.budget : undefined) ?? {})) as Record<string, number>,
    };
  };

  /**
   * The approval pause, in the tool step of the first waiting call (the other calls' steps wait):
   * one `interrupt()` for every waiting call of the message (the gate's pass over pending calls;
   * its first effect is the interrupt), then, in the same step, the calls the answer lets run.
   * Pausing here, not in a model step, keeps other middleware's afterModel hooks to one pass per
   * model answer.
   */
  const answerHere = async (state: AgentState, message: AIMessage, config: LangGraphRunnableConfig) =>
    actOnAnswer(state, message, await gateFor(knownTools()).policyGate(governedView(state), config), config);

  /** What an approval answer lets run runs, and the rest is answered; nothing while a call of the message still waits. */
  const actOnAnswer = async (state: AgentState, message: AIMessage, answered: GateUpdate, config: LangGraphRunnableConfig, goto?: string) => {
    const decisions = mergeDecisions(state._eart?.decisions ?? [], answered.decisions ?? []);
    const edited = (answered.messages ?? []).find((m): m is AIMessage => AIMessage.isInstance(m) && m.id === message.id);
    const waiting = decisions.some((d) => d.messageId === message.id && d.status === "pending_approval");
    const ran = waiting ? undefined : await runCalls(state, decisions, edited ?? message, config);
    // Calls answered without running before the pause (denied, unknown: the gate checked their
    // seals) whose own steps did not answer them yet.
    const said = new Set((answered.messages ?? []).flatMap((m) => (ToolMessage.isInstance(m) ? [m.tool_call_id] : [])));
    const earlier = waiting ? [] : decisions.filter((d) => d.messageId === message.id && d.answer && ANSWERED_STATUSES.has(d.status) && !said.has(d.toolCallId) && !answeredAfter(state.messages, message.id, d.toolCallId));
    return new Command({
      update: agentUpdate({
        decisions: [...(answered.decisions ?? []), ...(ran?.decisions ?? [])],
        messages: [...(answered.messages ?? []), ...earlier.flatMap((d) => answerOf(d) ?? []), ...(ran?.messages ?? [])],
        budget: ran?.budget,
      }),
      ...(goto ? { goto } : {}),
    });
  };

  /**
   * The recovery step (it pauses for a human), and then, in the same step, the calls its answer
   * lets run: createAgent goes from the model's step to its tools only while the model's message
   * is the newest, and calls of the message have answered already. The model is called next.
   */
  const recoverHere = async (state: AgentState, config: LangGraphRunnableConfig) => {
    const answered = await settle().recovery(governedView(state), config);
    const decisions = mergeDecisions(state._eart?.decisions ?? [], answered.decisions ?? []);
    const ran = await runCalls(state, decisions, proposing(state.messages)!, config);
    const update = agentUpdate({ decisions: [...(answered.decisions ?? []), ...ran.decisions], messages: ran.messages, budget: ran.budget });
    return new Command({ update, goto: MODEL_NODE });
  };

  /**
   * A call the tools could not finish, when it is its message's only call: the human is asked in
   * the call's own tool step (a model step can be skipped, by modelCallLimitMiddleware, or its pause
   * caught, by modelRetryMiddleware listed before eart), and what they let run runs there, asked
   * again if it ends unfinished again. Nothing of the step is saved before its answer: on resume
   * LangGraph runs the step again, which reads the request back ({@link askedInStep}).
   */
  const recoverInStep = async (state: AgentState, message: AIMessage, waiting: DecisionRecord, config: LangGraphRunnableConfig) => {
    let decisions = mergeDecisions(state._eart?.decisions ?? [], [waiting]);
    for (;;) {
      const answered = await settle().recovery(governedView({ ...state, _eart: { ...state._eart, decisions } }), config);
      decisions = mergeDecisions(decisions, answered.decisions ?? []);
      const ran = await runCalls(state, decisions, message, config);
      decisions = mergeDecisions(decisions, ran.decisions);
      if (!ran.decisions.some((d) => d.toolCallId === waiting.toolCallId && d.status === "recovery_pending")) {
        return new Command({ update: agentUpdate({ decisions: decisions.filter((d) => d.toolCallId === waiting.toolCallId), messages: ran.messages, budget: ran.budget }) });
      }
    }
  };

  /**
   * The request a call's tool step made before its pause ({@link recoverInStep}), read back from the
   * audit log when LangGraph runs the step again with the human's answer: the call's newest
   * `tool.recovery_requested` (its reason, attempt and error), sealed on the call's record. Not a
   * request made anew: running the call again would find its ledger entry started and ask about an
   * unknown outcome, or run an idempotent tool again without the human.
   */
  const askedInStep = async (threadId: string, record: DecisionRecord): Promise<DecisionRecord | undefined> => {
    if (!RUNNABLE_STATUSES.has(record.status)) return undefined;
    const seal = await sealer();
    // Only a request eart sealed: a link appended by someone who can write the audit store would
    // otherwise say who may answer, and on which attempt.
    // The one about the newest attempt (attempts only rise): a sealed request copied from an
    // earlier attempt to the end of the log is not the one the step made last.
    const sealed = (await auditLog.read(threadId)).filter(
      (e) =>
        e.type === "tool.recovery_requested" &&
        e.data.toolCallId === record.toolCallId &&
        e.data.digest === record.digest &&
        seal.eventIsSealed(threadId, e.type, recoveryRequestFields({ toolCallId: record.toolCallId, digest: record.digest, reason: String(e.data.reason), attempt: Number(e.data.attempt), roles: Array.isArray(e.data.roles) ? (e.data.roles as string[]) : null }), e.data.requestSeal),
    );
    const asked = sealed.reduce<(typeof sealed)[number] | undefined>((best, e) => (best === undefined || Number(e.data.attempt) >= Number(best.data.attempt) ? e : best), undefined);
    if (!asked) return undefined;
    const data = asked.data as { reason: RecoveryReason; attempt: number; error?: string | null; roles?: string[] };
    const recovery = {
      reason: data.reason,
      attempt: data.attempt,
      at: asked.at,
      resumeStatus: record.status as "allowed" | "approved",
      ...(typeof data.error === "string" ? { error: data.error } : {}),
      ...(Array.isArray(data.roles) ? { roles: [...data.roles] } : {}),
    };
    return seal.decision(threadId, { ...record, status: "recovery_pending", recovery });
  };

  const middleware = createMiddleware({
    name: "EartGovernanceMiddleware",
    stateSchema: GovernanceState,
    // With context to retrieve, a step of its own binds the identity and retrieves before the
    // model; without, the model call binds it (one graph step fewer per run).
    ...(retrieve
      ? {
          beforeAgent: async (state: unknown) => {
            const config = runConfig();
            const view = governedView(state as AgentState);
            const result = await bind(view, { config, threadId: requireThreadId(config) });
            if (result.events.length > 0) await auditLog.append(result.events);
            // Context is retrieved for the identity on every run that brings input (this hook runs
            // at the start of such a run only; a resume goes on from where the thread paused),
            // whatever its last message is: input ending with another kind of message does not
            // skip the required facts.
            const retrieved = await retrieve({ ...view, identity: result.update.identity ?? view.identity }, config);
            if (retrieved.escalation) {
              throw new EartConfigError("context", `Required context is missing (${retrieved.escalation.reason}): governanceMiddleware has no reviewer to hand the case to; the run stops rather than let the model guess`);
            }
            // One write of eart's channel: the identity and the context together (two `_eart`
            // updates spread into one object would keep only the context's, and bind no one).
            return agentUpdate({ ...result.update, context: retrieved.context });
          },
        }
      : {}),
    wrapModelCall: async (request, handler) => {
      const config = runConfig();
      const threadId = requireThreadId(config);
      const state = request.state as AgentState;
      const parts = gateFor(request.tools as StructuredToolInterface[]);
      const message = proposing(state.messages);
      const mine = message ? (state._eart?.decisions ?? []).filter((d) => d.messageId === message.id) : [];
      if (mine.some((d) => d.status === "pending_approval")) {
        // Calls wait for a human: pause here (the gate's pass over pending calls; its first effect
        // is the interrupt), not the model. The answer is written to the records (and an edit to
        // the proposing message, in place): the tool step after this one runs or answers each call.
        const update = await gateFor(knownTools()).policyGate(governedView(state), config);
        const decisions = mergeDecisions(state._eart?.decisions ?? [], update.decisions ?? []);
        if (!decisions.some((d) => d.messageId === message!.id && d.status === "pending_approval")) {
          // The answer leaves nothing waiting (a quorum completed, a sibling lapsed): what it lets
          // run runs here and the rest is answered, then the model is called. createAgent would
          // not go to the tools again when a sibling's answer is already the newest message.
          return actOnAnswer(state, message!, update, config, MODEL_NODE) as never;
        }
        return new Command({ update: agentUpdate({ ...update, messages: (update.messages ?? []).filter((m) => AIMessage.isInstance(m)) }) }) as never;
      }
      if (mine.some((d) => d.status === "recovery_pending")) {
        // Calls the tools could not finish wait for a human (retry, mark done, abandon): the
        // recovery step pauses; its answer is acted on here, and the model is called next.
        return recoverHere(state, config) as never;
      }
      // Who the run acts for, checked before the model is called (new input from anyone else is
      // refused); recorded with what the model answers, in one append.
      const binding = retrieve ? undefined : await bind(governedView(state), { config, threadId });
      const identity = binding?.update.identity ?? state._eart?.identity;
      // Only the items eart's retrieval sealed for the thread are shown to the model.
      const held = state._eart?.context?.items.length ? sealedContext(await sealer(), threadId, state._eart.context) : { context: state._eart?.context, forged: [] };
      if (held.forged.length > 0) await auditLog.append(forgedContextEvent(threadId, "model_request", held.forged));
      const known = held.context;
      let response: Awaited<ReturnType<typeof handler>>;
      try {
        // A copy of the list: a middleware inside eart that edits the messages in place for its
        // model call (contextEditingMiddleware does) would otherwise edit the thread's own list.
        // The system message too (a middleware before eart may build it from the thread or from
        // the application's context): redacted for the identity, as everything else the model reads.
        const system = redaction && request.systemMessage ? redactMessage(request.systemMessage, redaction, identity).message : request.systemMessage;
        response = await handler({
          ...request,
          ...(system !== request.systemMessage ? { systemMessage: system as typeof request.systemMessage } : {}),
          messages: known && known.items.length > 0 ? [contextMessage(known), ...request.messages] : [...request.messages],
        });
      } catch (error) {
        // What the model's error says is redacted before a middleware around eart (modelRetry
        // writes it into the thread as an answer) or the caller holds it.
        throw isGraphControlFlow(error) ? error : redactError(error, redaction);
      }
      const structured = structuredAnswer(response);
      if (structured) {
        // A structured answer ends the run: what the model said, the messages createAgent made of
        // it and the structured response itself are redacted before the thread or the caller
        // holds them, the model's output is recorded, and the identity is bound, in one write
        // (createAgent keeps nothing else of a step that returns a structured answer).
        const proposal = structured.messages.find((m): m is AIMessage => AIMessage.isInstance(m));
        // createAgent writes the model's own message beside a Command: without it in hand, it could not be redacted.
        if (!proposal) throw new EartConfigError("responseFormat", "a structured answer came without the model's message: governanceMiddleware cannot redact and record it, so nothing of it was kept");
        const rest = structured.messages.filter((m) => m !== proposal);
        const answer = modelAnswer(proposal, threadId, { redaction, viewer: identity, held: state.messages });
        if (answer.message !== proposal) becomeRedacted(proposal, answer.message as AIMessage);
        const others = redaction ? rest.map((m) => redactMessage(m, redaction, identity).message) : rest;
        const structuredResponse = redaction ? redaction.apply(structured.structuredResponse, identity).value : structured.structuredResponse;
        await auditLog.append([...(binding?.events ?? []), ...answer.events]);
        const records = agentUpdate({ identity: binding?.update.identity });
        return new Command({ update: { messages: [proposal, ...others], structuredResponse, ...records } }) as never;
      }
      if (!AIMessage.isInstance(response)) {
        if (binding && binding.events.length > 0) await auditLog.append(binding.events);
        return response;
      }
      const answer = modelAnswer(response, threadId, { redaction, viewer: identity, held: state.messages });
      // createAgent writes the message its model call returned, whatever this hook returns with a
      // Command: what it writes is made the redacted answer, so the thread never holds the raw one.
      if (answer.message !== response) becomeRedacted(response, answer.message as AIMessage);
      // Every proposed call is decided here, in the model's step: no step of its own per turn.
      const view = { ...governedView(state), identity, messages: [...state.messages, response] };
      const decided = await parts.decideStep(view, { config, threadId });
      await auditLog.append([...(binding?.events ?? []), ...answer.events, ...decided.events]);
      const update = agentUpdate({ identity: binding?.update.identity, decisions: decided.update.decisions });
      return (Object.keys(update).length > 0 ? new Command({ update }) : response) as never;
    },
    wrapToolCall: async (request, _handler) => {
      const config = runConfig();
      const state = request.state as AgentState;
      const tool = request.tool as StructuredToolInterface | undefined;
      const call = request.toolCall;
      const message = proposing(state.messages);
      if (!message || !call.id) return notGoverned(call);
      // A call the thread has answered already is not answered twice.
      if (answeredAfter(state.messages, message.id, call.id)) return new Command({ update: {} }) as never;
      const mine = (state._eart?.decisions ?? []).filter((d) => d.messageId === message.id);
      const record = mine.find((d) => d.toolCallId === call.id);
      if (record?.answer && ANSWERED_STATUSES.has(record.status)) {
        // Answered without running (denied, unknown, rejected…): from eart's sealed record, now,
        // whatever its siblings wait for.
        const sealed = (await settle().sealer()).decisionIsSealed(requireThreadId(config), record);
        return (sealed && answerOf(record)) || notGoverned(call);
      }
      const pending = mine.filter((d) => d.status === "pending_approval");
      if (pending.length > 0) {
        // While a call of the message waits for a human, none of its calls runs. The first
        // waiting call's step pauses for all of them and runs what the answer lets run.
        const first = (message.tool_calls ?? []).find((c) => c.id && pending.some((p) => p.toolCallId === c.id) && !answeredAfter(state.messages, message.id, c.id));
        return (first?.id === call.id ? answerHere(state, message, config) : new Command({ update: {} })) as never;
      }
      // Calls the tools could not finish (of a message with several) wait for a human: the model step pauses for them next.
      if (mine.some((d) => d.status === "recovery_pending")) return new Command({ update: {} }) as never;
      if (!tool) return notGoverned(call);
      // The message's only call, unfinished, is handed to a human in this step (recoverInStep); run
      // again with their answer, the step reads back what it asked.
      const alone = message.tool_calls?.length === 1;
      if (alone && record && holdsAnswers()) {
        const asked = await askedInStep(requireThreadId(config), record);
        if (asked) return recoverInStep(state, message, asked, config) as never;
      }
      // The governed tool node, over this one call of the proposing message.
      const only = new AIMessage({ id: message.id!, content: message.content, tool_calls: [call] });
      const view = governedView({ ...state, messages: [...state.messages.filter((m) => m.id !== message.id), only] });
      const update = await runnerFor(tool)(view, config);
      const unfinished = alone ? update.decisions.find((d) => d.toolCallId === call.id && d.status === "recovery_pending") : undefined;
      if (unfinished) {
        // A request made now: answers the step still holds were given to a question before it (a
        // tool's own, or one dressed as eart's by the tool), not to this one. They are passed over,
        // so the thread shows this request and waits for an answer to it.
        const before = storedAnswers().length;
        if (before > 0) answersGiven(undefined, before);
        return recoverInStep(state, message, unfinished, config) as never;
      }
      const written = agentUpdate(update);
      // The call's answer alone goes back as ToolNode expects it; anything more (eart's records) as a Command.
      const [reply] = update.messages;
      if (Object.keys(written).length === 1 && update.messages.length === 1 && ToolMessage.isInstance(reply) && reply.tool_call_id === call.id) return reply;
      return new Command({ update: written }) as never;
    },
  });
  // What guardAgent needs to record the answers it refuses: the store, not the redacting view.
  Object.defineProperty(middleware, GOVERNANCE, {
    value: {
      auditLog: raw,
      redaction,
      registry,
      /** What LangGraph server needs of it (server/agent.ts `serveAgent`): the policy and recovery roles (who answers), and whether the stores were given. */
      policy,
      recoveryRoles: opts.recoveryRoles ?? DEFAULT_RECOVERY_ROLES,
      stores: { auditLog: opts.auditLog !== undefined, ledger: () => ledger !== undefined },
      /** The ledger whose store keeps the key that seals eart's records and the answers it records (after useCheckpointer). */
      ledger: () => ledger,
      /** eart's channels in the agent's state: a client's input may not write them. */
      channels: GOVERNANCE_CHANNEL_NAMES,
      /** The agent's tools (createAgent's options and its middleware's), for a thread resumed before any model call. */
      useTools(tools: readonly StructuredToolInterface[]) {
        agentTools ??= tools;
      },
      useCheckpointer(checkpointer: unknown) {
        if (ledger !== undefined || settled !== undefined || !(checkpointer instanceof BaseCheckpointSaver)) return;
        ledger = ledgerFor(checkpointer);
      },
    },
  });
  return middleware;
}

const GOVERNANCE = Symbol.for("eart.governanceMiddleware");

/** Gates kept per middleware, one per tool set its model calls were given. */
const MAX_GATES = 32;

/** createAgent's model step (its node name). */
const MODEL_NODE = "model_request";

/** The answer to a call of a tool the agent does not have. */
function notGoverned(call: { id?: string; name: string }): ToolMessage {
  return new ToolMessage({ tool_call_id: call.id ?? "", name: call.name, content: `Not run: ${call.name} is not a tool this agent governs.`, status: "error" });
}

/**
 * Makes the model's own answer object the redacted one, in place: createAgent writes the object
 * its model call returned to the thread when the hook returns a Command. If the two still differ
 * once serialised, nothing is written (fail closed).
 */
function becomeRedacted(target: AIMessage, redacted: AIMessage): void {
  const fields = ["content", "additional_kwargs", "response_metadata", "tool_calls", "invalid_tool_calls", "usage_metadata", "name", "id"] as const;
  const into = target as unknown as Record<string, unknown>;
  const from = redacted as unknown as Record<string, unknown>;
  for (const field of fields) if (field in redacted) into[field] = from[field];
  into.lc_kwargs = { ...(from.lc_kwargs as Record<string, unknown>) };
  if (JSON.stringify(target.toJSON()) !== JSON.stringify(redacted.toJSON())) {
    throw new EartConfigError("redaction", "could not be applied to the model's answer in place (it carries a field governanceMiddleware does not know): nothing of the answer was kept");
  }
}

/** createAgent's structured answer (`{ structuredResponse, messages }`), or undefined for anything else. */
function structuredAnswer(response: unknown): { structuredResponse: unknown; messages: BaseMessage[] } | undefined {
  if (typeof response !== "object" || response === null || isCommand(response) || AIMessage.isInstance(response)) return undefined;
  const r = response as { structuredResponse?: unknown; messages?: unknown };
  if (!("structuredResponse" in r) || !Array.isArray(r.messages)) return undefined;
  return { structuredResponse: r.structuredResponse, messages: r.messages as BaseMessage[] };
}

/** Plain input without eart's channels (createAgent copies them in from the thread's state). */
function withoutGovernanceChannels(input: unknown): unknown {
  if (typeof input !== "object" || input === null || isCommand(input) || Array.isArray(input)) return input;
  if (!GOVERNANCE_CHANNEL_NAMES.some((name) => Object.hasOwn(input, name))) return input;
  return Object.fromEntries(Object.entries(input).filter(([key]) => !GOVERNANCE_CHANNEL_NAMES.includes(key)));
}

/**
 * Guards a `createAgent` agent that uses {@link governanceMiddleware} as `guardResumes` guards
 * eart's own graphs, and redacts what callers send before the thread holds it (the middleware's
 * redaction, in every message form): resumes on unknown or finished threads are refused (LangGraph would ignore
 * them silently); a `Command` with `update` or `goto` and input or `updateState` that writes eart's
 * channels are refused before anything is stored; resume values that LangGraph could not store
 * and read back as given are refused; a continue of a thread that waits for a human is refused;
 * every run holds the thread's lock (the one that fits the agent's checkpointer). Refused answers
 * are recorded in the middleware's audit log. An agent with another middleware that wraps tool
 * calls is refused (`EartConfigError` `middleware`): eart runs each call itself. Returns the same agent.
 * @example
 * ```ts
 * const governance = governanceMiddleware({ identities, policy, auditLog, ledger });
 * const agent = guardAgent(createAgent({ model, tools, checkpointer, middleware: [governance] }), governance);
 * ```
 */
export function guardAgent<A extends { graph: unknown }>(agent: A, governance: object, options: { lock?: ThreadLock | false } = {}): A {
  const own = (governance as { [GOVERNANCE]?: { auditLog: AuditLog; redaction: Redaction | undefined; registry: IdentityRegistry; useCheckpointer(c: unknown): void; useTools(t: readonly StructuredToolInterface[]): void; ledger(): EffectLedger | undefined } })[GOVERNANCE];
  if (!own) throw new EartConfigError("governance", "must be the governanceMiddleware the agent was created with");
  if (options.lock !== undefined && options.lock !== false && typeof (options.lock as ThreadLock)?.acquire !== "function") {
    throw new EartConfigError("lock", "must be a ThreadLock or false");
  }
  // An agent built without this middleware would run its tools ungoverned behind a guard that looks fine.
  if (!madeWith(agent, governance)) {
    throw new EartConfigError("governance", "the agent was not created with this governanceMiddleware (createAgent({ …, middleware: [governance] }))");
  }
  const middleware = (agent as unknown as { options: { middleware: unknown[] } }).options.middleware;
  if ((agent as unknown as Record<symbol, unknown>)[GUARDED_AGENT]) return agent;
  assertNoToolWrappers(middleware, governance);
  // Guard the compiled graph itself (createAgent may bind default config around it).
  const graph = compiledGraphOf<{ checkpointer?: unknown }>(agent);
  // A PostgresSaver gets eart's store faults, as under the prebuilt agent: a connection the server
  // drops fails a statement once more on a new connection, not the run with a raw driver error.
  if (typeof graph.checkpointer === "object" && graph.checkpointer !== null) guardCheckpointer(graph.checkpointer);
  own.useCheckpointer(graph.checkpointer);
  own.useTools([
    ...(((agent as { options?: { tools?: unknown[] } }).options?.tools ?? []) as StructuredToolInterface[]),
    ...middleware.flatMap((m) => ((m as { tools?: unknown[] }).tools ?? []) as StructuredToolInterface[]),
  ].filter((t) => typeof (t as { invoke?: unknown })?.invoke === "function" && typeof t.name === "string"));
  const guard = (target: unknown, lock: ThreadLock | false | undefined) => {
    guardResumes(target as Parameters<typeof guardResumes>[0], {
      auditLog: own.auditLog,
      channels: GOVERNANCE_CHANNEL_NAMES,
      records: { identity: (values) => (values._eart as GovernanceRecords | undefined)?.identity, decisions: (values) => (values._eart as GovernanceRecords | undefined)?.decisions },
      // The seals of the answers it records: the middleware's own key (its ledger's).
      ...(own.ledger() ? { ledger: own.ledger() } : {}),
      ...(lock !== undefined ? { lock } : {}),
    });
    // createAgent's invoke and stream merge the thread's state into the input, eart's channels with
    // it: the graph takes input without them (a caller's own are refused below, before that merge).
    const inner = target as { stream: (input: unknown, options?: unknown) => Promise<unknown>; withConfig?: (config: unknown) => unknown };
    const guardedStream = inner.stream.bind(inner);
    inner.stream = (input, streamOptions) => guardedStream(withoutGovernanceChannels(input), streamOptions);
    // What callers send is redacted before the thread holds it, as for the prebuilt agent.
    if (own.redaction) redactIncoming(target as IncomingGraph, own.redaction, own.registry);
    // Copies made with withConfig are guarded the same way, under the same lock.
    const withConfig = inner.withConfig;
    if (typeof withConfig === "function") {
      const sameLock = ((target as Record<symbol, unknown>)[THREAD_LOCK] as ThreadLock | undefined) ?? false;
      inner.withConfig = (config: unknown) => {
        const copy = withConfig.call(target, config);
        guard(copy, sameLock);
        return copy;
      };
    }
  };
  guard(graph, options.lock);
  // The agent takes its thread's lock itself (in its graph): runThread, resumeThread and the
  // operator's views read it here, and do not take it a second time.
  const held = (graph as Record<symbol, unknown>)[THREAD_LOCK];
  if (held) Object.defineProperty(agent, THREAD_LOCK, { value: held });
  // The seals of its recorded answers, for runThread, resumeThread and the operator's views too.
  Object.defineProperty(agent, ANSWER_SEALER, { value: (graph as Record<symbol, unknown>)[ANSWER_SEALER], configurable: true });
  const outer = agent as unknown as Record<string, unknown>;
  for (const method of ["invoke", "stream", "streamEvents"]) {
    const original = outer[method];
    if (typeof original !== "function") continue;
    const call = (input: unknown, rest: unknown[]) => {
      // A caller's own writes of eart's channels (a Command goes to the graph's guard, which records refused answers).
      if (!isCommand(input)) assertCallerInput(input, GOVERNANCE_CHANNEL_NAMES);
      return (original as (...args: unknown[]) => unknown).call(agent, input, ...rest);
    };
    // invoke and stream return promises (a refusal rejects them); streamEvents returns its stream.
    outer[method] = method === "streamEvents" ? (input: unknown, ...rest: unknown[]) => call(input, rest) : async (input: unknown, ...rest: unknown[]) => call(input, rest);
  }
  // agent.withConfig builds a new agent (and graph): guard it too, under the same lock.
  const agentWithConfig = outer.withConfig;
  if (typeof agentWithConfig === "function") {
    const sameLock = ((graph as Record<symbol, unknown>)[THREAD_LOCK] as ThreadLock | undefined) ?? false;
    outer.withConfig = (config: unknown) => guardAgent((agentWithConfig as (c: unknown) => A).call(agent, config), governance, { lock: sameLock });
  }
  Object.defineProperty(agent, GUARDED_AGENT, { value: true });
  return agent;
}

const GUARDED_AGENT = Symbol.for("eart.guardAgent");

/**
 * Refuses another middleware that wraps tool calls: eart runs each governed call itself (at most
 * once, with its own retries, timeouts, breaker and fallbacks). Listed before eart, a wrapper's
 * `wrapToolCall` surrounds eart's approval pause and refusals and may catch them (LangChain's
 * `toolRetryMiddleware` and `toolErrorMiddleware` do: the pause became a failed answer, and the
 * approved refund then never ran); listed after it, it would never run (a `toolEmulatorMiddleware`
 * meant for tests would leave real refunds running).
 */
function assertNoToolWrappers(middleware: readonly unknown[], governance: object): void {
  const wrappers = middleware.filter((m) => m !== governance && typeof (m as { wrapToolCall?: unknown } | null)?.wrapToolCall === "function");
  if (wrappers.length === 0) return;
  const names = wrappers.map((m) => `"${String((m as { name?: unknown }).name ?? "unnamed")}"`).join(", ");
  throw new EartConfigError(
    "middleware",
    `${names} ${wrappers.length === 1 ? "wraps" : "wrap"} tool calls (wrapToolCall): under governanceMiddleware eart runs each call itself, at most once, so a wrapper listed before it would surround its approval pause and refusals (and may catch them), and one listed after it would never run. Remove it; for retries, timeouts and fallbacks use governanceMiddleware's execution option`,
  );
}
