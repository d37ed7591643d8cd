import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { BaseCheckpointSaver, END, isCommand, START, StateGraph, type LangGraphRunnableConfig } from "@langchain/langgraph";
import type { RunnableConfig } from "@langchain/core/runnables";
import { z } from "zod";
import {
  createEscalationGuard,
  createPolicyGateParts,
  routeAfterEscalation,
  routeAfterPolicyGate,
  routeAfterTools,
  type EscalationGuardOptions,
  type PolicyGateOptions,
  type GateUpdate,
} from "../guards/index.js";
import {
  bindIdentityStep,
  createContextRetrieval,
  createGovernedToolNode,
  createModelStep,
  createToolRecovery,
  EffectLedgerOption,
  GovernedAnnotation,
  redactingAuditLog,
  redactRunInput,
  requireThreadId,
  type ContextRetrievalOptions,
  type GovernedState,
} from "../nodes/index.js";
import { guardCheckpointer } from "../src/stores/postgres/connection.js";
import { assertNoPendingApproval } from "../langgraph/run.js";
import { ChatModelOption, ToolsOption } from "../langgraph/tools.js";
import {
  AuditLogOption,
  BudgetGuardOption,
  IdentityRegistry,
  lazySealer,
  ledgerFor,
  MemoryAuditLog,
  parseOptions,
  PolicyEngineOption,
  principalFromConfig,
  RetryOptionsSchema,
  standardRedaction,
  threadLockFor,
  ToolExecutionOptionsSchema,
  type AgentIdentity,
  type Redaction,
  type ThreadLock,
} from "../src/index.js";
import { guardResumes } from "./resume-guard.js";

const GovernedAgentOptionsSchema = z
  .object({
    model: ChatModelOption,
    tools: ToolsOption.min(1),
    /** An {@link IdentityRegistry}, or its definition object. */
    identities: z.unknown(),
    policy: PolicyEngineOption,
    checkpointer: z.custom<BaseCheckpointSaver>((v) => v instanceof BaseCheckpointSaver, "must be a LangGraph checkpointer (pauses need one)"),
    /** Defaults to a {@link MemoryAuditLog}. */
    auditLog: AuditLogOption.optional(),
    systemPrompt: z.string().optional(),
    name: z.string().min(1).default("governed-agent"),
    /** The clock approvals expire by; injectable for tests. */
    clock: z.custom<() => Date>((v) => typeof v === "function", "must be a function returning a Date").optional(),
    /** An approval answered after its expiry: tell the model (`"answer"`, default) or ask again. */
    onExpired: z.enum(["answer", "rerequest"]).optional(),
    /** A candidate policy set run in shadow mode: never enforced, its differences audited. */
    shadowPolicy: PolicyEngineOption.optional(),
    /**
     * Public keys that verify signed approval tokens (`signApprovalToken`), by key id, each with the
     * approver it speaks for; see `createPolicyGate`.
     */
    approvalKeys: z.custom<PolicyGateOptions["approvalKeys"]>((v) => typeof v === "object" && v !== null, "must map key ids to { approver, publicKey }").optional(),
    /** Budgets (`defineBudgets`): checked by the gate, charged by the tool node. */
    budgets: BudgetGuardOption.optional(),
    /**
     * The effect ledger (`SqliteEffectLedger`, `PostgresEffectLedger`) that makes each tool call
     * run at most once across resumes, crashes and processes, and whose store keeps the key that
     * seals eart's records in state. Defaults to the checkpointer's store (`ledgerFor`).
     */
    ledger: EffectLedgerOption.optional(),
    /** Per tool name (or `"*"`): idempotency, timeout, retry, circuit breaker, fallback. */
    execution: z.record(z.string(), ToolExecutionOptionsSchema).optional(),
    /** Roles that may retry, mark done or abandon a call the tools could not finish. */
    recoveryRoles: z.array(z.string().min(1)).min(1).optional(),
    /**
     * The per-thread lock every run and resume holds. Defaults to the one that fits the
     * checkpointer (`threadLockFor`): a PostgreSQL advisory lock, a SQLite lock table, or an
     * in-process lock. `false` turns it off.
     */
    threadLock: z
      .union([z.literal(false), z.custom<ThreadLock>((v) => typeof (v as ThreadLock)?.acquire === "function", "must be a ThreadLock")])
      .optional(),
    /** Retries of the chat model on errors (each failure audited as `model.failed`). */
    modelRetry: RetryOptionsSchema.optional(),
    /** Chat models tried in order when the model fails after its retries. */
    fallbackModels: z.array(ChatModelOption).optional(),
    /**
     * Context the agent may see (`createContextRetrieval` options without `auditLog`): retrieved
     * at the start of every run, filtered by scope, redacted; `redaction` also applies to tool results.
     */
    context: z.custom<Omit<ContextRetrievalOptions, "auditLog">>((v) => typeof v === "object" && v !== null && Array.isArray((v as { providers?: unknown }).providers), "must be context retrieval options ({ providers, … })").optional(),
    /**
     * Hand cases to a human reviewer (`createEscalationGuard` options without `registry` and
     * `auditLog`): low confidence, disagreeing checks, missing context, policy `escalate`.
     */
    escalation: z.custom<Omit<EscalationGuardOptions, "registry" | "auditLog">>((v) => typeof v === "object" && v !== null && Array.isArray((v as { reviewerRoles?: unknown }).reviewerRoles), "must be escalation options ({ reviewerRoles, … })").optional(),
    /**
     * What is redacted before the thread, the model, the audit log and the exporters hold it:
     * what users send (every message form), what the model answers, tool results, artifacts and
     * errors, and every audit event. Defaults to `context.redaction`, else the standard
     * redactions (`STANDARD_REDACTIONS`); `false` turns redaction off.
     */
    redaction: z
      .union([z.literal(false), z.custom<Redaction>((v) => typeof (v as Redaction)?.apply === "function", "must be a Redaction (defineRedaction) or false")])
      .optional(),
  })
  .strict();
export type GovernedAgentOptions = z.input<typeof GovernedAgentOptionsSchema>;

/**
 * Redacts what callers send (a card number in a chat message, in any message form LangChain
 * accepts) before it enters the thread: the checkpoint, the audit log and the model only ever hold
 * the redacted text. Values are shown to the user's own roles as `visibleTo` says.
 */
function redactIncoming(graph: IncomingGraph, redaction: Redaction, registry: IdentityRegistry): void {
  const viewer = (config: RunnableConfig | undefined) => {
    const userId = principalFromConfig(config?.configurable)?.id;
    return { onBehalfOf: { id: userId ?? "", roles: userId !== undefined ? (registry.getUser(userId)?.roles ?? []) : [] } };
  };
  const redacted = (values: unknown, config: RunnableConfig | undefined) =>
    values !== null && typeof values === "object" && !isCommand(values) && "messages" in values ? redactRunInput(values, redaction, viewer(config)) : values;
  const stream = graph.stream.bind(graph);
  graph.stream = (input, options) => stream(redacted(input, options), options);
  // The state API writes messages too (an operator's edit, LangGraph Studio): the same redaction.
  // LangGraph's updateState is a one-step bulkUpdateState, so this covers both.
  const bulkUpdateState = graph.bulkUpdateState.bind(graph);
  graph.bulkUpdateState = (config, supersteps) =>
    bulkUpdateState(
      config,
      supersteps.map((step) => ({ ...step, updates: step.updates.map((u) => ({ ...u, values: redacted(u.values, config) })) })),
    );
}

/** The methods through which callers put messages into a thread. */
interface IncomingGraph {
  stream(input: unknown, options?: RunnableConfig): Promise<unknown>;
  bulkUpdateState(config: RunnableConfig, supersteps: readonly { updates: readonly { values?: unknown; asNode?: string }[] }[]): Promise<unknown>;
}

/** The builder calls used to wire the agent, with node names as plain strings. */
interface LooseGraph {
  addNode(name: string, node: unknown): LooseGraph;
  addEdge(from: string, to: string): LooseGraph;
  addConditionalEdges(from: string, route: unknown, map: Record<string, string>): LooseGraph;
}

/**
 * The prebuilt governed agent. Its `agent` node binds the identity (first run) or checks it
 * against the run configuration, calls the model, and puts every proposed call through the policy
 * gate's decision, all in one step: one checkpoint and one audit append per model turn, so the
 * auto-allowed path takes as many steps as a bare agent. Calls that need approval go to the
 * `policyGate` node, which pauses with one interrupt; allowed and approved calls go to `tools`,
 * which runs each at most once through the effect ledger; calls it cannot finish go to `recovery`,
 * which pauses for a human. Every run holds the thread's lock; resumes on unknown or finished
 * threads are refused.
 * @example
 * ```ts
 * const agent = createGovernedAgent({ model, tools, identities, policy, checkpointer: new MemorySaver(), auditLog });
 * const config = { configurable: { thread_id: "t1", agent_id: "support-agent", user_id: "cara" } };
 * const paused = await agent.invoke({ messages: [new HumanMessage("Refund order 1042")] }, config);
 * // pendingApproval(paused) is the ApprovalRequest
 * await agent.invoke(new Command({ resume: { decisions: [{ toolCallId, type: "approve", digest }] } }), { configurable: { thread_id: "t1", user_id: "sam" } });
 * ```
 */
export function createGovernedAgent(options: GovernedAgentOptions) {
  const opts = parseOptions(GovernedAgentOptionsSchema, options);
  const { model, tools, policy, checkpointer, systemPrompt, name, clock, onExpired, shadowPolicy, budgets, execution, recoveryRoles, modelRetry, fallbackModels, context, escalation } = opts;
  const redaction = opts.redaction === false ? undefined : (opts.redaction ?? context?.redaction ?? standardRedaction());
  const auditLog = redaction ? redactingAuditLog(opts.auditLog ?? new MemoryAuditLog(), redaction) : (opts.auditLog ?? new MemoryAuditLog());
  const registry = opts.identities instanceof IdentityRegistry ? opts.identities : IdentityRegistry.fromObject(opts.identities);
  const modelStep = createModelStep({
    model,
    tools,
    auditLog,
    ...(systemPrompt ? { systemPrompt } : {}),
    ...(modelRetry ? { retry: modelRetry } : {}),
    ...(fallbackModels ? { fallbacks: fallbackModels } : {}),
    ...(redaction ? { redaction } : {}),
  });
  // The ledger's store keeps both the executions and the key that seals eart's records in state.
  const ledger = opts.ledger ?? ledgerFor(checkpointer);
  // A PostgresSaver gets eart's store faults whatever ledger and lock are chosen: a connection the
  // server drops fails a statement (once more on a new connection), not the process; nothing waits unbounded.
  guardCheckpointer(checkpointer);
  const sealer = lazySealer(ledger);
  const gate = createPolicyGateParts({ policy, tools, registry, auditLog, ledger, ...(opts.approvalKeys ? { approvalKeys: opts.approvalKeys } : {}), ...(clock ? { clock } : {}), ...(onExpired ? { onExpired } : {}), ...(shadowPolicy ? { shadowPolicy } : {}), ...(budgets ? { budgets } : {}) });

  async function agent(state: GovernedState, config: LangGraphRunnableConfig): Promise<GateUpdate & { identity?: AgentIdentity }> {
    const threadId = requireThreadId(config);
    assertNoPendingApproval(state, threadId);
    const last = state.messages[state.messages.length - 1];
    // With context, the retrieval step (the run's first) records the request.
    const binding = await bindIdentityStep(registry, state, config, threadId, {
      recordRequest: !context && last !== undefined && HumanMessage.isInstance(last),
      sealer: await sealer(),
      auditLog,
    });
    const turn = await modelStep(state.messages, config, threadId, state.context, binding.identity);
    const update: GateUpdate & { identity?: AgentIdentity } = binding.newlyBound ? { identity: binding.identity } : {};
    const messages: BaseMessage[] = [turn.message];
    const events = [...binding.events, ...turn.events];
    if (turn.toolCalls.length > 0 && AIMessage.isInstance(turn.message)) {
      const decided = await gate.decideNew(state, turn.message, turn.toolCalls, binding.identity, threadId);
      messages.push(...(decided.update.messages ?? []));
      events.push(...decided.events);
      if (decided.update.decisions) update.decisions = decided.update.decisions;
      if (decided.update.escalation) update.escalation = decided.update.escalation;
    }
    await auditLog.append(events);
    return { ...update, messages };
  }

  const end = escalation ? "review" : END;
  const typed = new StateGraph(GovernedAnnotation);
  // Which nodes exist depends on the options; LangGraph's builder types want them known up front.
  const graph = typed as unknown as LooseGraph;
  graph
    .addNode("agent", agent)
    .addNode("policyGate", gate.policyGate)
    .addNode(
      "tools",
      createGovernedToolNode({
        tools,
        auditLog,
        policy,
        registry,
        ...(budgets ? { budgets } : {}),
        ledger,
        ...(execution ? { execution } : {}),
        ...(clock ? { clock } : {}),
        ...(redaction ? { redaction } : {}),
      }),
    )
    .addNode("recovery", createToolRecovery({ registry, auditLog, ledger, ...(recoveryRoles ? { roles: recoveryRoles } : {}), ...(clock ? { clock } : {}) }))
    .addConditionalEdges("agent", routeAfterPolicyGate, { approval: "policyGate", tools: "tools", agent: "agent", end })
    .addConditionalEdges("policyGate", routeAfterPolicyGate, { approval: "policyGate", tools: "tools", agent: "agent", end })
    .addConditionalEdges("tools", routeAfterTools, { recovery: "recovery", agent: "agent" })
    .addEdge("recovery", "tools");
  if (context) {
    // Context is retrieved for the identity, so the identity is bound first (it is also checked
    // again by the agent step, which then finds it bound).
    const retrieve = createContextRetrieval({ ...context, auditLog, ...(redaction && !context.redaction ? { redaction } : {}), ...(clock && !context.clock ? { clock } : {}) });
    graph
      .addNode("retrieveContext", async (state: GovernedState, config: LangGraphRunnableConfig) => {
        const threadId = requireThreadId(config);
        assertNoPendingApproval(state, threadId);
        const last = state.messages[state.messages.length - 1];
        const binding = await bindIdentityStep(registry, state, config, threadId, {
          recordRequest: last !== undefined && HumanMessage.isInstance(last),
          sealer: await sealer(),
          auditLog,
        });
        if (binding.events.length > 0) await auditLog.append(binding.events);
        const update = await retrieve({ ...state, identity: binding.identity }, config);
        return binding.newlyBound ? { ...update, identity: binding.identity } : update;
      })
      .addEdge(START, "retrieveContext")
      // Missing context never lets the agent guess: to the reviewer, or (with no reviewer) to the end.
      .addConditionalEdges("retrieveContext", (state: GovernedState) => (state.escalation ? "review" : "agent"), { review: end, agent: "agent" });
  } else {
    graph.addEdge(START, "agent");
  }
  if (escalation) {
    graph
      .addNode("review", createEscalationGuard({ ...escalation, registry, auditLog, ...(clock && !escalation.clock ? { clock } : {}) }))
      .addConditionalEdges("review", routeAfterEscalation, { review: "review", agent: "agent", end: END });
  }

  const lock = opts.threadLock === false ? undefined : (opts.threadLock ?? threadLockFor(checkpointer));
  const app = guardResumes(typed.compile({ checkpointer, name }), { auditLog, ...(lock ? { lock } : {}) });
  if (redaction) redactIncoming(app as unknown as IncomingGraph, redaction, registry);
  return app;
}
