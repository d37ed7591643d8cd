import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import type { StructuredToolInterface } from "@langchain/core/tools";
import { BaseCheckpointSaver, Command, getConfig, isCommand, ReducedValue, StateSchema, type LangGraphRunnableConfig } from "@langchain/langgraph";
import { createMiddleware } from "langchain";
import { z } from "zod";
import { createPolicyGateParts, type GateUpdate } from "../guards/policy-gate.js";
import { requireThreadId } from "../langgraph/run.js";
import { type GovernedState } from "../langgraph/channels.js";
import { EffectLedgerOption } from "../langgraph/records.js";
import { assertCallerInput, guardResumes, THREAD_LOCK } from "../graphs/resume-guard.js";
import { redactIncoming, type IncomingGraph } from "../graphs/governed-agent.js";
import { createGovernedToolNode } from "../nodes/governed-tool-node.js";
import { identityStep } from "../nodes/identity-binding.js";
import { contextMessage, modelAnswer } from "../nodes/model-node.js";
import { createContextRetrieval, type ContextRetrievalOptions } from "../nodes/context-retrieval.js";
import { createToolRecovery } from "../nodes/tool-recovery.js";
import { redactingAuditLog } from "../nodes/redaction.js";
import { AuditLogOption, MemoryAuditLog, type AuditLog } from "../src/audit/log.js";
import { type Redaction } from "../src/context/redaction.js";
import { emptyThreadContext, mergeBudget, mergeDecisions, mergeThreadContext, type DecisionRecord, type ThreadContext } from "../src/decisions/records.js";
import { bindIdentityOnce, lazySealer, type Sealer } from "../src/decisions/seal.js";
import type { EffectLedger } from "../src/ledger/ledger.js";
import { ledgerFor } from "../src/stores/for-checkpointer.js";
import { EartConfigError } from "../src/errors.js";
import { standardRedaction } from "../src/export/segments.js";
import { IdentityRegistry, type AgentIdentity } from "../src/identity/registry.js";
import { parseOptions } from "../src/internal/options.js";
import { PolicyEngineOption } from "../src/policy/engine.js";
import { assertAgentConfig } from "../src/policy/validate.js";
import { ToolExecutionOptionsSchema } from "../src/tools/resilience.js";
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

/**
 * The state eart adds to a `createAgent` agent: private channels (their names start with `_`, so
 * `createAgent` keeps them out of the agent's input and output schemas: no client sends them),
 * with eart's reducers. Authority never comes from them: records count only when eart sealed them.
 */
const GovernanceState = new StateSchema({
  // One unchecked schema per channel: createAgent parses each middleware's state on every model
  // call, and eart checks its records itself (their seals), so a per-record schema would only cost.
  _eart_identity: new ReducedValue(z.custom<AgentIdentity | undefined>(() => true), { reducer: bindIdentityOnce }),
  _eart_decisions: new ReducedValue(z.custom<DecisionRecord[] | undefined>(() => true), { reducer: mergeDecisions }),
  _eart_context: new ReducedValue(z.custom<ThreadContext | undefined>(() => true), {
    inputSchema: z.custom<Partial<ThreadContext> | undefined>(() => true),
    reducer: mergeThreadContext,
  }),
  _eart_budget: new ReducedValue(z.custom<Record<string, number> | undefined>(() => true), { reducer: mergeBudget }),
});

/** The names of eart's channels in a `createAgent` agent: only eart's steps write them. */
export const GOVERNANCE_CHANNEL_NAMES: readonly string[] = Object.freeze(Object.keys(GovernanceState.fields));

/** The agent's state as the middleware reads it. */
type AgentState = {
  messages: BaseMessage[];
  _eart_identity?: AgentIdentity;
  _eart_decisions?: DecisionRecord[];
  _eart_context?: ThreadContext;
  _eart_budget?: Record<string, number>;
};

/** eart's own view of the agent's state: the channels its steps read, by their names. */
function governedView(state: AgentState): GovernedState {
  return {
    messages: state.messages,
    identity: state._eart_identity,
    decisions: state._eart_decisions ?? [],
    context: state._eart_context ?? emptyThreadContext(),
    budget: state._eart_budget ?? {},
    escalation: null,
    reviewed: null,
  };
}

/** A step's update, written to the agent's channels. */
function agentUpdate(update: GateUpdate & { identity?: AgentIdentity; budget?: Record<string, number>; context?: Partial<ThreadContext> }): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (update.messages?.length) out.messages = update.messages;
  if (update.decisions?.length) out._eart_decisions = update.decisions;
  if (update.identity) out._eart_identity = update.identity;
  if (update.budget && Object.keys(update.budget).length > 0) out._eart_budget = update.budget;
  if (update.context) out._eart_context = update.context;
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
 * - `wrapModelCall`: records what the model proposed (`model.output`), redacted; while calls wait
 *   for a human it does not call the model: it pauses with one `interrupt()` carrying eart's
 *   approval request and LangChain's HITL request fields, and checks the answer (eart's keyed
 *   form or the HITL `{ decisions }` in order) as eart's gate does.
 * - `afterModel`: decides every proposed call by policy: denied calls are answered to the model,
 *   calls that need a human send the turn back to the pause above, allowed ones go to the tools.
 * - `wrapToolCall`: runs a call only as eart decided it (sealed record, same digest), at most once
 *   through the effect ledger, with timeouts, retries, breaker and fallbacks, and records it.
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
  const retrieve = context
    ? createContextRetrieval({ ...context, auditLog, ...(redaction && !context.redaction ? { redaction } : {}), ...(clock && !context.clock ? { clock } : {}) })
    : undefined;
  const bind = identityStep<GovernedState>(registry, sealer, auditLog, {
    recordRequest: (state) => HumanMessage.isInstance(state.messages.at(-1)),
  });

  // The gate and the tool runners are made for the tools createAgent gives the model, which the
  // middleware first sees in the model call.
  let gate: { tools: readonly StructuredToolInterface[]; parts: ReturnType<typeof createPolicyGateParts> } | undefined;
  const gateFor = (tools: readonly StructuredToolInterface[]) => {
    settle();
    if (!gate || gate.tools !== tools) {
      // Checked as createGovernedAgent checks its options, once the agent's tools are known (a
      // middleware that narrows the tools the model sees may leave rules about others: not a mistake here).
      assertAgentConfig({ tools, policy, registry, recoveryRoles: opts.recoveryRoles, skip: ["policy_tool_unknown"] });
      gate = {
        tools,
        parts: createPolicyGateParts({ policy, tools: [...tools], registry, auditLog, ledger, clock, approvalKeys: opts.approvalKeys as never }),
      };
    }
    return gate.parts;
  };
  const runners = new WeakMap<object, ReturnType<typeof createGovernedToolNode>>();
  const runnerFor = (tool: StructuredToolInterface) => {
    let runner = runners.get(tool);
    if (!runner) {
      settle();
      // Each runner governs one tool: its execution options, and those for every tool ("*").
      const own = execution ? Object.fromEntries(Object.entries(execution).filter(([name]) => name === tool.name || name === "*")) : undefined;
      runner = createGovernedToolNode({ tools: [tool], auditLog, ledger, execution: own, redaction, policy, registry, clock });
      runners.set(tool, runner);
    }
    return runner;
  };
  const currentGate = () => {
    if (!gate) throw new EartConfigError("tools", "governanceMiddleware decides tool calls with the agent's tools, which it had not seen: the model was not called through createAgent");
    return gate.parts;
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
            const bound = agentUpdate(result.update);
            if (!HumanMessage.isInstance(view.messages.at(-1))) return bound;
            // Context is retrieved for the identity, once per run of new input.
            const retrieved = await retrieve({ ...view, identity: result.update.identity ?? view.identity }, config);
            if (retrieved.escalation) {
              throw new EartConfigError("context", `Required context is missing (${retrieved.escalation.reason}): governanceMiddleware has no reviewer to hand the case to; the run stops rather than let the model guess`);
            }
            return { ...bound, ...agentUpdate({ context: retrieved.context }) };
          },
        }
      : {}),
    wrapModelCall: async (request, handler) => {
      const config = runConfig();
      const threadId = requireThreadId(config);
      const state = request.state as AgentState;
      const parts = gateFor(request.tools as StructuredToolInterface[]);
      const message = proposing(state.messages);
      const mine = message ? (state._eart_decisions ?? []).filter((d) => d.messageId === message.id) : [];
      if (mine.some((d) => d.status === "pending_approval")) {
        // Calls wait for a human: pause here (the gate's pass over pending calls; its first effect is the interrupt), not the model.
        const update = await parts.policyGate(governedView(state), config);
        return new Command({ update: agentUpdate(update) }) as never;
      }
      if (mine.some((d) => d.status === "recovery_pending")) {
        // Calls the tools could not finish wait for a human (retry, mark done, abandon): the recovery step pauses.
        const update = await settle().recovery(governedView(state), config);
        return new Command({ update: agentUpdate(update) }) as never;
      }
      // Who the run acts for, checked before the model is called (new input from anyone else is
      // refused); recorded with what the model answers, in one append. afterModel writes it to state.
      const binding = retrieve ? undefined : await bind(governedView(state), { config, threadId });
      const identity = binding?.update.identity ?? state._eart_identity;
      const known = state._eart_context;
      const response = await handler(known && known.items.length > 0 ? { ...request, messages: [contextMessage(known), ...request.messages] } : request);
      if (!AIMessage.isInstance(response)) {
        if (binding && binding.events.length > 0) await auditLog.append(binding.events);
        return response;
      }
      const answer = modelAnswer(response, threadId, { redaction, viewer: identity });
      await auditLog.append([...(binding?.events ?? []), ...answer.events]);
      return answer.message as AIMessage;
    },
    afterModel: {
      canJumpTo: ["model"],
      hook: async (state) => {
        const config = runConfig();
        let view = governedView(state as AgentState);
        // The identity the model call bound (the same seal again: binding is deterministic), into state.
        const unbound = view.identity === undefined ? (await bind(view, { config, threadId: requireThreadId(config) })).update.identity : undefined;
        if (unbound) view = { ...view, identity: unbound };
        const bound = unbound ? agentUpdate({ identity: unbound }) : {};
        if (!proposing(view.messages)) return Object.keys(bound).length > 0 ? bound : undefined;
        const update = await currentGate().policyGate(view, config);
        const written = { ...bound, ...agentUpdate(update) };
        const message = proposing(view.messages)!;
        const decisions = mergeDecisions(view.decisions, update.decisions ?? []);
        const waiting = decisions.some((d) => d.messageId === message.id && d.status === "pending_approval");
        // A call that waits for a human goes back to the model call, which pauses for it.
        if (waiting) return { ...written, jumpTo: "model" as const };
        // Every call answered without running (rejected, answered by a human, denied): the model
        // reads the answers and takes another turn, as after the tools.
        const answered = new Set([...view.messages, ...(update.messages ?? [])].flatMap((m) => (ToolMessage.isInstance(m) ? [m.tool_call_id] : [])));
        const unanswered = (message.tool_calls ?? []).some((c) => !answered.has(c.id ?? ""));
        return unanswered ? written : { ...written, jumpTo: "model" as const };
      },
    },
    wrapToolCall: async (request, _handler) => {
      const config = runConfig();
      const state = request.state as AgentState;
      const tool = request.tool as StructuredToolInterface | undefined;
      const call = request.toolCall;
      const message = proposing(state.messages);
      if (!tool || !message || !call.id) {
        return new ToolMessage({ tool_call_id: call.id ?? "", name: call.name, content: `Not run: ${call.name} is not a tool this agent governs.`, status: "error" });
      }
      // The governed tool node, over this one call of the proposing message.
      const only = new AIMessage({ id: message.id!, content: message.content, tool_calls: [call] });
      const view = governedView({ ...state, messages: [...state.messages.filter((m) => m.id !== message.id), only] });
      const update = await runnerFor(tool)(view, config);
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
      /** The ledger that fits the agent's checkpointer, unless one was given (before the first run). */
      useCheckpointer(checkpointer: unknown) {
        if (ledger !== undefined || settled !== undefined || !(checkpointer instanceof BaseCheckpointSaver)) return;
        ledger = ledgerFor(checkpointer);
      },
    },
  });
  return middleware;
}

const GOVERNANCE = Symbol.for("eart.governanceMiddleware");

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
 * are recorded in the middleware's audit log. Returns the same agent.
 * @example
 * ```ts
 * const governance = governanceMiddleware({ identities, policy, auditLog, ledger });
 * const agent = guardAgent(createAgent({ model, tools, checkpointer, middleware: [governance] }), governance);
 * ```
 */
export function guardAgent<A extends { graph: unknown }>(agent: A, governance: object, options: { lock?: ThreadLock | false } = {}): A {
  const own = (governance as { [GOVERNANCE]?: { auditLog: AuditLog; redaction: Redaction | undefined; registry: IdentityRegistry; useCheckpointer(c: unknown): void } })[GOVERNANCE];
  if (!own) throw new EartConfigError("governance", "must be the governanceMiddleware the agent was created with");
  if (options.lock !== undefined && options.lock !== false && typeof (options.lock as ThreadLock)?.acquire !== "function") {
    throw new EartConfigError("lock", "must be a ThreadLock or false");
  }
  // An agent built without this middleware would run its tools ungoverned behind a guard that looks fine.
  const middleware = (agent as { options?: { middleware?: unknown } }).options?.middleware;
  if (!Array.isArray(middleware) || !middleware.includes(governance)) {
    throw new EartConfigError("governance", "the agent was not created with this governanceMiddleware (createAgent({ …, middleware: [governance] }))");
  }
  if ((agent as unknown as Record<symbol, unknown>)[GUARDED_AGENT]) return agent;
  // createAgent may bind default config around its compiled graph: guard the graph itself.
  let graph = agent.graph as { bound?: unknown; checkpointer?: unknown };
  while (graph && typeof graph === "object" && "bound" in graph && graph.bound) graph = graph.bound as { bound?: unknown };
  own.useCheckpointer(graph.checkpointer);
  const guard = (target: unknown, lock: ThreadLock | false | undefined) => {
    guardResumes(target as Parameters<typeof guardResumes>[0], {
      auditLog: own.auditLog,
      channels: GOVERNANCE_CHANNEL_NAMES,
      names: { identity: "_eart_identity", decisions: "_eart_decisions" },
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
