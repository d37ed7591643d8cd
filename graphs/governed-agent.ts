import { HumanMessage, isBaseMessage } from "@langchain/core/messages";
import { BaseCheckpointSaver, Command, END, isCommand, START, StateGraph, type CompiledStateGraph, type LangGraphRunnableConfig } from "@langchain/langgraph";
import type { RunnableConfig } from "@langchain/core/runnables";
import { IterableReadableStream } from "@langchain/core/utils/stream";
import { z } from "zod";
import { createEscalationGuard, type EscalationGuardOptions } from "../guards/escalation-guard.js";
import { createPolicyGateParts, type PolicyGateOptions, type GateUpdate } from "../guards/policy-gate.js";
import { hostSteps } from "../langgraph/steps.js";
import { TokenHoldBack } from "./token-stream.js";
import { routeAfterEscalation, routeAfterPolicyGate, routeAfterTools, untraced } from "../guards/routes.js";
import { GovernedAnnotation, GovernedInputAnnotation, type GovernedState, type GovernedUpdate } from "../langgraph/channels.js";
import { EffectLedgerOption } from "../langgraph/records.js";
import { requireThreadId } from "../langgraph/run.js";
import { createContextRetrieval, type ContextRetrievalOptions } from "../nodes/context-retrieval.js";
import { createGovernedToolNode } from "../nodes/governed-tool-node.js";
import { identityStep } from "../nodes/identity-binding.js";
import { createModelStep, modelTurnStep } from "../nodes/model-node.js";
import { redactingAuditLog, redactMessage, redactRunInput, type RedactionViewer } from "../nodes/redaction.js";
import { boundTracingRedacted, redactedTracing } from "../nodes/tracing.js";
import { createToolRecovery, DEFAULT_RECOVERY_ROLES } from "../nodes/tool-recovery.js";
import { guardCheckpointer } from "../src/stores/postgres/connection.js";
import { assertNoPendingApproval } from "../langgraph/run.js";
import { ChatModelOption, ToolsOption } from "../langgraph/tools.js";
import { AuditLogOption, MemoryAuditLog } from "../src/audit/log.js";
import { type Redaction } from "../src/context/redaction.js";
import { lazySealer } from "../src/decisions/seal.js";
import { standardRedaction } from "../src/export/segments.js";
import { IdentityRegistry, principalFromConfig, type AgentIdentity } from "../src/identity/registry.js";
import { parseOptions } from "../src/internal/options.js";
import { BudgetGuardOption } from "../src/policy/budget.js";
import { PolicyEngineOption } from "../src/policy/engine.js";
import { ledgerFor, threadLockFor } from "../src/stores/for-checkpointer.js";
import { type ThreadLock } from "../src/threads/lock.js";
import { RetryOptionsSchema, ToolExecutionOptionsSchema } from "../src/tools/resilience.js";
import { assertNoOverwrite, assertPlainResume, guardResumes, REVIEWED_RECORDS } from "./resume-guard.js";
import { EartConfigError } from "../src/errors.js";
import { assertAgentConfig, closestName } from "../src/policy/validate.js";

const GovernedAgentOptionsSchema = z
  .object({
    model: ChatModelOption,
    tools: ToolsOption.min(1),
    /** An {@link IdentityRegistry}, or its definition object. */
    identities: z.unknown(),
    policy: PolicyEngineOption,
    /**
     * LangGraph's checkpointer (pauses need one). Left out only where the host gives the graph its
     * own, as LangGraph server does: then `ledger` and `threadLock` name eart's stores.
     */
    checkpointer: z.custom<BaseCheckpointSaver>((v) => v instanceof BaseCheckpointSaver, "must be a LangGraph checkpointer (pauses need one)").optional(),
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
    escalation: z.custom<Omit<EscalationGuardOptions, "registry" | "auditLog" | "ledger">>((v) => typeof v === "object" && v !== null && Array.isArray((v as { reviewerRoles?: unknown }).reviewerRoles), "must be escalation options ({ reviewerRoles, … })").optional(),
    /**
     * What is redacted before the thread, the model, the audit log and the exporters hold it:
     * what users send (every message form), what the model answers, tool results, artifacts and
     * errors, and every audit event. Defaults to `context.redaction`, else the standard
     * redactions (`STANDARD_REDACTIONS`); `false` turns redaction off.
     */
    redaction: z
      .union([z.literal(false), z.custom<Redaction>((v) => typeof (v as Redaction)?.apply === "function", "must be a Redaction (defineRedaction) or false")])
      .optional(),
    /**
     * Construction checks to skip, by code. `"policy_tool_unknown"`: the policy is shared with
     * other agents, so its rules may name tools this agent does not have.
     */
    skipChecks: z.array(z.enum(["policy_tool_unknown"])).optional(),
  })
  .strict();
export type GovernedAgentOptions = z.input<typeof GovernedAgentOptionsSchema>;

/** Options passed under another name, and the option meant. */
const MEANT_OPTION: ReadonlyMap<string, string> = new Map([
  ["registry", "identities"],
  ["identityRegistry", "identities"],
  ["llm", "model"],
  ["chatModel", "model"],
  ["rules", "policy"],
  ["policies", "policy"],
  ["policyEngine", "policy"],
  ["audit", "auditLog"],
  ["saver", "checkpointer"],
]);

/** What an option takes, for the hint that names it. */
const TAKES: Readonly<Record<string, string>> = {
  identities: "the IdentityRegistry (IdentityRegistry.fromFile(path) or .fromObject(definition)) or its definition { roles, agents, users }",
  model: `a chat model instance (e.g. new ChatOpenAI({ model: "gpt-4o" }))`,
  policy: "a policy engine: definePolicy({ name, rules }) or a Cedar engine",
};

/**
 * Common mistakes in the options, named with what to do before the schema reports them
 * generically: an option under another name (`registry` for `identities`, `llm` for `model`),
 * rules or a policy definition where a policy engine goes, a model name where a model goes.
 */
function checkOptionNames(options: unknown): void {
  if (typeof options !== "object" || options === null) return;
  const given = options as Record<string, unknown>;
  const known = Object.keys(GovernedAgentOptionsSchema.shape);
  for (const key of Object.keys(given)) {
    if (known.includes(key)) continue;
    const meant = MEANT_OPTION.get(key) ?? closestName(key, known);
    if (meant) {
      throw new EartConfigError(key, `createGovernedAgent has no option "${key}": did you mean "${meant}"?${TAKES[meant] ? ` It takes ${TAKES[meant]}` : ""}`, { expected: meant });
    }
  }
  for (const field of ["policy", "shadowPolicy"]) {
    const value = given[field];
    if (Array.isArray(value)) {
      throw new EartConfigError(field, `got an array (policy rules?), where a policy engine goes: pass definePolicy({ name, rules }) instead of the rules`);
    }
    if (typeof value === "object" && value !== null && "rules" in value && typeof (value as { decide?: unknown }).decide !== "function") {
      throw new EartConfigError(field, `got a policy definition ({ rules }), where a policy engine goes: pass definePolicy(definition) instead`);
    }
  }
  if (given.identities === undefined) throw new EartConfigError("identities", `is required: ${TAKES.identities}`);
  if (typeof given.identities === "string") throw new EartConfigError("identities", `got a string: for a JSON file pass IdentityRegistry.fromFile(${JSON.stringify(given.identities)})`);
  if (typeof given.model === "string") throw new EartConfigError("model", `got the string ${JSON.stringify(given.model)}, where ${TAKES.model} goes`);
}

/**
 * Redacts what callers send (a card number in a chat message, in any message form LangChain
 * accepts) before it enters the thread: the checkpoint, the audit log and the model only ever hold
 * the redacted text. Values are shown to the user's own roles as `visibleTo` says.
 */
export function redactIncoming(graph: IncomingGraph, redaction: Redaction, registry: IdentityRegistry): void {
  Object.defineProperty(graph, INCOMING_REDACTION, { value: { redaction, registry }, configurable: true });
  const viewer = (config: RunnableConfig | undefined) => redactionViewer(principalFromConfig(config?.configurable)?.id, registry);
  const redacted = (values: unknown, config: RunnableConfig | undefined) => {
    if (isCommand(values)) return redactedResume(values, redaction);
    // What is not messages to add is refused as the guard refuses it, before it is read as messages.
    assertNoOverwrite(values, "input");
    return values !== null && typeof values === "object" && "messages" in values ? redactRunInput(values, redaction, viewer(config)) : values;
  };
  const stream = graph.stream.bind(graph);
  // What LangChain's tracer sends to LangSmith (a tool's raw result, the model's raw answer) is
  // redacted too: the run's tracers, and those the graph was bound with (withConfig).
  const bound = graph as { config?: RunnableConfig };
  bound.config = boundTracingRedacted(bound.config, redaction);
  graph.stream = (input, options) => stream(redacted(input, options), redactedTracing(options, redaction));
  // What LangChain's events carry to whoever streams them (every LangGraph server run goes through
  // streamEvents, and stream_mode "events" hands them to the client): a tool's raw result, a
  // retriever's documents, the model's raw answer, before eart's redaction. Each event is redacted
  // for the caller's roles, but the graph's own chunks of state (redacted already).
  const streamEvents = graph.streamEvents;
  if (typeof streamEvents === "function") {
    graph.streamEvents = (input: unknown, options?: RunnableConfig & { encoding?: unknown; version?: unknown }, ...rest: unknown[]) => {
      if (options?.encoding !== undefined) throw new EartConfigError("encoding", "streamEvents of an eart agent yields events, not encoded bytes: its events are redacted before the caller gets them");
      const events = streamEvents.call(graph, input, options, ...rest);
      const who = viewer(options);
      const wrap = (stream: unknown) => redactedEvents(stream as AsyncIterable<unknown>, redaction, who);
      return events instanceof Promise ? events.then(wrap) : wrap(events);
    };
  }
  // The state API writes messages too (an operator's edit, LangGraph Studio): the same redaction.
  // LangGraph's updateState is a one-step bulkUpdateState, so this covers both.
  const bulkUpdateState = graph.bulkUpdateState.bind(graph);
  graph.bulkUpdateState = (config, supersteps) =>
    bulkUpdateState(
      redactedTracing(config, redaction)!,
      supersteps.map((step) => ({ ...step, updates: step.updates.map((u) => ({ ...u, values: redacted(u.values, config) })) })),
    );
}

/**
 * A resume with what a human wrote in it (a reject or respond message, an edit's arguments)
 * redacted as nobody may see it: the thread, the model and the audit log hold it after this.
 * A `Command` carrying anything but a resume is returned as it is (the guard refuses it).
 */
function redactedResume(command: Command, redaction: Redaction): Command {
  const { resume, update, goto } = command as { resume?: unknown; update?: unknown; goto?: unknown };
  const empty = (v: unknown) => v === undefined || (Array.isArray(v) && v.length === 0);
  if (!empty(update) || !empty(goto)) return command;
  // An answer the guard refuses (too big, too deep, not JSON) is not worth redacting first: it is
  // refused as it came, its refusal recorded bounded (and redacted) by the guard.
  try {
    assertPlainResume(resume);
  } catch {
    return command;
  }
  const value = redactedAnswer(resume, redaction);
  return value === resume ? command : new Command({ resume: value });
}

/**
 * A human's answer (a resume value) redacted as nobody may see it; the same value when nothing
 * was found. Signed approval tokens are kept as they are (a token is checked byte for byte); text
 * in a token's field that has no token's shape is redacted like the rest.
 * @example
 * ```ts
 * redactedAnswer({ decisions: [{ type: "reject", message: "card 4111 1111 1111 1111" }] }, redaction);
 * // { decisions: [{ type: "reject", message: "card [REDACTED:card_number]" }] }
 * ```
 */
export function redactedAnswer(resume: unknown, redaction: Redaction): unknown {
  if (resume === undefined || resume === null) return resume;
  const decisions = typeof resume === "object" ? (resume as { decisions?: unknown }).decisions : undefined;
  // Only what has a token's shape (two base64url parts) is kept as sent: anything else in the field is text.
  const tokenOf = (d: unknown) => {
    const token = (d as { token?: unknown } | null)?.token;
    return typeof token === "string" && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token) ? token : undefined;
  };
  const tokens = Array.isArray(decisions) ? decisions.map(tokenOf) : [];
  const screened = redaction.apply(resume, undefined);
  if (screened.redacted.length === 0) return resume;
  const value = screened.value as { decisions?: Record<string, unknown>[] };
  tokens.forEach((token, i) => {
    if (token !== undefined && value.decisions?.[i]) value.decisions[i] = { ...value.decisions[i], token };
  });
  return value;
}

/** Whom what a user sends is redacted for: their own roles in the identities (none for nobody), as `visibleTo` says. */
export function redactionViewer(userId: string | undefined, registry: IdentityRegistry): NonNullable<RedactionViewer> {
  return { onBehalfOf: { id: userId ?? "", roles: userId !== undefined ? (registry.getUser(userId)?.roles ?? []) : [] } };
}

/** What a graph redacts callers' input and answers with ({@link redactIncoming}), for the server's record of a run. */
export function incomingRedactionOf(graph: object): { redaction: Redaction; registry: IdentityRegistry } | undefined {
  return (graph as Record<symbol, { redaction: Redaction; registry: IdentityRegistry } | undefined>)[INCOMING_REDACTION];
}

const INCOMING_REDACTION = Symbol.for("eart.incomingRedaction");

/** The methods through which callers put messages into a thread, and read a run's events. */
export interface IncomingGraph {
  stream(input: unknown, options?: RunnableConfig): Promise<unknown>;
  bulkUpdateState(config: RunnableConfig, supersteps: readonly { updates: readonly { values?: unknown; asNode?: string }[] }[]): Promise<unknown>;
  streamEvents?: (input: unknown, options?: RunnableConfig & { encoding?: unknown; version?: unknown }, ...rest: unknown[]) => unknown;
}

/**
 * A value of an event redacted for the viewer, the same value when nothing in it was: messages
 * stay messages of their own class (LangGraph server concatenates streamed chunks), arrays and
 * plain objects are copied only where something changed, anything else is redacted as data.
 */
function redactedValue(value: unknown, redaction: Redaction, viewer: RedactionViewer, depth: number): unknown {
  if (isBaseMessage(value)) return redactMessage(value, redaction, viewer).message;
  if (Array.isArray(value) && depth < EVENT_DEPTH) {
    const out = value.map((v) => redactedValue(v, redaction, viewer, depth + 1));
    return out.some((v, i) => v !== value[i]) ? out : value;
  }
  const plainObject = value !== null && typeof value === "object" && !Array.isArray(value) && [Object.prototype, null].includes(Object.getPrototypeOf(value));
  if (!plainObject || depth >= EVENT_DEPTH) {
    const { value: out, redacted } = redaction.apply(value, viewer);
    return redacted.length === 0 ? value : out;
  }
  let changed = false;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value as object)) {
    const r = redactedValue(v, redaction, viewer, depth + 1);
    if (r !== v) changed = true;
    Object.defineProperty(out, key, { value: r, enumerable: true, writable: true, configurable: true });
  }
  return changed ? out : value;
}

/** How deep an event is walked for messages before the rest is redacted as data. */
const EVENT_DEPTH = 8;

/** Events of the graph's own state stream (v2 `on_chain_stream`, v3 state methods): what the thread holds, redacted already. */
const STATE_EVENTS = new Set(["on_chain_stream", "values", "updates", "checkpoints", "lifecycle"]);

/**
 * A run's events as the caller may see them: each redacted for the viewer (the graph's own state
 * chunks pass as they are). A v2 stream stays a LangChain `IterableReadableStream`; another stream
 * keeps its own methods, iterated redacted.
 */
function redactedEvents(events: AsyncIterable<unknown>, redaction: Redaction, viewer: RedactionViewer): unknown {
  const redactOne = (event: unknown): unknown => {
    const kind = (event as { event?: unknown; method?: unknown } | null)?.event ?? (event as { method?: unknown } | null)?.method;
    if (typeof kind === "string" && STATE_EVENTS.has(kind)) return event;
    if (redaction.mayChange && !redaction.mayChange(event)) return event;
    return redactedValue(event, redaction, viewer, 0);
  };
  async function* redacted() {
    // The model's tokens are held back per message, so that a card split across them goes out redacted.
    const tokens = new TokenHoldBack(redaction, viewer);
    for await (const event of events) for (const out of tokens.take(event)) yield redactOne(out);
    for (const out of tokens.flush()) yield redactOne(out);
  }
  if (events instanceof IterableReadableStream) return IterableReadableStream.fromAsyncGenerator(redacted());
  return new Proxy(events as object, {
    get(target, property, receiver) {
      if (property === Symbol.asyncIterator) return () => redacted()[Symbol.asyncIterator]();
      const value = Reflect.get(target, property, receiver) as unknown;
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
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
/**
 * The compiled governed agent: a LangGraph graph over eart's state (`GovernedAnnotation`), named
 * with the few type parameters every LangGraph 1.x release accepts.
 */
export type GovernedAgent = CompiledStateGraph<GovernedState, GovernedUpdate, string, typeof GovernedInputAnnotation.spec, typeof GovernedAnnotation.spec>;

export function createGovernedAgent(options: GovernedAgentOptions): GovernedAgent {
  checkOptionNames(options);
  const opts = parseOptions(GovernedAgentOptionsSchema, options);
  if (opts.checkpointer === undefined && (opts.ledger === undefined || opts.threadLock === undefined)) {
    throw new EartConfigError(
      "checkpointer",
      "is required unless the host provides one (LangGraph server): then pass the ledger and threadLock from eart's stores (sqliteStores, postgresStores), which the checkpointer would otherwise choose",
    );
  }
  const { model, tools, policy, checkpointer, systemPrompt, name, clock, onExpired, shadowPolicy, budgets, execution, recoveryRoles, modelRetry, fallbackModels, context, escalation } = opts;
  const redaction = opts.redaction === false ? undefined : (opts.redaction ?? context?.redaction ?? standardRedaction());
  const auditLog = redaction ? redactingAuditLog(opts.auditLog ?? new MemoryAuditLog(), redaction) : (opts.auditLog ?? new MemoryAuditLog());
  const registry = opts.identities instanceof IdentityRegistry ? opts.identities : IdentityRegistry.fromObject(opts.identities);
  // Before anything is wired, stored or written: a refused configuration leaves no trace.
  assertAgentConfig({ tools, policy, shadowPolicy, budgets, registry, recoveryRoles, reviewerRoles: escalation?.reviewerRoles, skip: opts.skipChecks });
  const modelStep = createModelStep({
    model,
    tools,
    auditLog,
    systemPrompt,
    retry: modelRetry,
    fallbacks: fallbackModels,
    redaction,
  });
  // The ledger's store keeps both the executions and the key that seals eart's records in state.
  const ledger = opts.ledger ?? ledgerFor(checkpointer!);
  // A PostgresSaver gets eart's store faults whatever ledger and lock are chosen: a connection the
  // server drops fails a statement (once more on a new connection), not the process; nothing waits unbounded.
  if (checkpointer) guardCheckpointer(checkpointer);
  const sealer = lazySealer(ledger);
  // What every step of the tool path shares, given once (an option left out stays undefined: each step's default).
  const shared = { registry, auditLog, ledger, clock };
  const gate = createPolicyGateParts({ ...shared, policy, tools, approvalKeys: opts.approvalKeys, onExpired, shadowPolicy, budgets, ...(escalation ? { reviewerRoles: escalation.reviewerRoles } : {}) });

  const isNewRun = (state: GovernedState) => {
    const last = state.messages[state.messages.length - 1];
    return last !== undefined && HumanMessage.isInstance(last);
  };
  // The model turn: the same steps the public nodes host, in one node (one checkpoint and one
  // audit append per turn). With context, the retrieval node (the run's first) records the request.
  const agent = hostSteps<GovernedState, GateUpdate & { identity?: AgentIdentity }>(
    auditLog,
    [identityStep(registry, sealer, auditLog, { recordRequest: (state) => !context && isNewRun(state) }), modelTurnStep(modelStep, { asIdentity: true, sealer }), gate.decideStep],
    { before: (state, { threadId }) => assertNoPendingApproval(state, threadId) },
  );

  const end = escalation ? "review" : END;
  // Callers send messages; eart's channels are written by its nodes only (the input schema says so).
  const typed = new StateGraph({ state: GovernedAnnotation, input: GovernedInputAnnotation });
  // Which nodes exist depends on the options; LangGraph's builder types want them known up front.
  const graph = typed as unknown as LooseGraph;
  graph
    .addNode("agent", agent)
    .addNode("policyGate", gate.policyGate)
    .addNode(
      "tools",
      createGovernedToolNode({ ...shared, tools, policy, budgets, execution, redaction, recoveryRoles: [...(recoveryRoles ?? DEFAULT_RECOVERY_ROLES)] }),
    )
    .addNode("recovery", createToolRecovery({ ...shared, roles: recoveryRoles }))
    .addConditionalEdges("agent", untraced(routeAfterPolicyGate), { approval: "policyGate", tools: "tools", agent: "agent", end })
    .addConditionalEdges("policyGate", untraced(routeAfterPolicyGate), { approval: "policyGate", tools: "tools", agent: "agent", end })
    .addConditionalEdges("tools", untraced(routeAfterTools), { recovery: "recovery", agent: "agent", end })
    .addEdge("recovery", "tools");
  if (context) {
    // Context is retrieved for the identity, so the identity is bound first (it is also checked
    // again by the agent step, which then finds it bound).
    const bind = identityStep(registry, sealer, auditLog, { recordRequest: isNewRun });
    const retrieve = createContextRetrieval({
      ...context,
      auditLog,
      ledger,
      ...(redaction && !context.redaction ? { redaction } : {}),
      ...(clock && !context.clock ? { clock } : {}),
      ...(escalation && !context.reviewerRoles ? { reviewerRoles: escalation.reviewerRoles } : {}),
    });
    graph
      .addNode("retrieveContext", async (state: GovernedState, config: LangGraphRunnableConfig) => {
        const threadId = requireThreadId(config);
        assertNoPendingApproval(state, threadId);
        const binding = await bind(state, { config, threadId });
        if (binding.events.length > 0) await auditLog.append(binding.events);
        const identity = binding.update.identity ?? state.identity;
        const update = await retrieve({ ...state, identity }, config);
        return binding.update.identity ? { ...update, identity } : update;
      })
      .addEdge(START, "retrieveContext")
      // Missing context never lets the agent guess: to the reviewer, or (with no reviewer) to the end.
      .addConditionalEdges("retrieveContext", untraced((state: GovernedState) => (state.escalation ? "review" : "agent")), { review: end, agent: "agent" });
  } else {
    graph.addEdge(START, "agent");
  }
  if (escalation) {
    graph
      .addNode("review", createEscalationGuard({ ...escalation, registry, auditLog, ledger, ...(clock && !escalation.clock ? { clock } : {}) }))
      .addConditionalEdges("review", untraced(routeAfterEscalation), { review: "review", agent: "agent", end: END });
  }

  const lock = opts.threadLock === false ? undefined : (opts.threadLock ?? threadLockFor(checkpointer!));
  // With a reviewer, a case open for review keeps the thread waiting, even if a state write drops
  // the review step's interrupt.
  const app = guardResumes(typed.compile({ checkpointer, name }), { auditLog, lock: lock ?? false, ledger, ...(escalation ? { records: REVIEWED_RECORDS } : {}) });
  if (redaction) {
    redactIncoming(app as unknown as IncomingGraph, redaction, registry);
    // A copy made with withConfig (guarded by guardResumes) redacts what callers send too.
    const guardedWithConfig = (app as unknown as { withConfig: (config: unknown) => unknown }).withConfig;
    (app as unknown as { withConfig: (config: unknown) => unknown }).withConfig = (config: unknown) => {
      const copy = guardedWithConfig.call(app, config);
      redactIncoming(copy as IncomingGraph, redaction, registry);
      return copy;
    };
  }
  return app as unknown as GovernedAgent;
}
