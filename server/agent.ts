import type { RunnableConfig } from "@langchain/core/runnables";
import { coerceMessageLikeToMessage, type BaseMessage, type BaseMessageLike } from "@langchain/core/messages";
import { IterableReadableStream } from "@langchain/core/utils/stream";
import { createGovernedAgent, incomingRedactionOf, redactedAnswer, redactionViewer, type GovernedAgent, type GovernedAgentOptions } from "../graphs/governed-agent.js";
import type { Redaction } from "../src/context/redaction.js";
import { BaseCheckpointSaver, Command, isCommand, type CheckpointTuple } from "@langchain/langgraph";
import { v5 as uuid5 } from "@langchain/core/utils/uuid";
import { ApprovalError, EartConfigError, EartError, IdentityResolutionError, StateTamperError, StoreError, ThreadBusyError, ThreadStateError } from "../src/errors.js";
import { answerSealerOf, assertCallerInput, assertContinuable, assertKeepsHeldMessages, assertNoGovernedChannels, auditRefusedAnswer, awaitingHuman, commandWrites, resumeMapKeys, sealedBy, THREAD_LOCK, withThreadHeld } from "../graphs/resume-guard.js";
import type { ThreadLock } from "../src/threads/lock.js";
import { GOVERNED_CHANNEL_NAMES } from "../langgraph/channels.js";
import { compiledGraphOf, madeWith } from "../langgraph/run.js";
import { REFUSED_ANSWER_KEY, refusedAnswer } from "../langgraph/interrupts.js";
import { pendingHumanTask } from "../src/human-tasks/protocol.js";
import { IdentityRegistry } from "../src/identity/registry.js";
import type { AuditEvent, AuditLog } from "../src/audit/log.js";
import { agentOfThread } from "../graphs/app.js";
import { verifyServerUser } from "./proof.js";

/** Options of {@link createServerAgent}: the prebuilt agent's, without a checkpointer (the server brings its own). */
export type ServerAgentOptions = Omit<GovernedAgentOptions, "checkpointer" | "ledger" | "threadLock" | "auditLog"> &
  Required<Pick<GovernedAgentOptions, "ledger" | "threadLock" | "auditLog">> & {
    /** The agent this graph acts as (`agents[].id` of the identities): a client never names it. */
    agentId: string;
    /**
     * The graph's id in `langgraph.json`: reviewers find the interrupted threads of the graphs
     * whose human tasks they answer with `threads.search({ status: "interrupted" })`. Without it,
     * nobody finds this graph's threads by search (each is still opened and answered by id).
     */
    graphId?: string;
    /**
     * Other agents a client may pick with `configurable.agent_id` (the assistant allows them). Any
     * other `agent_id` a run carries is refused (`identity_agent_refused`). Default: none.
     */
    clientAgents?: readonly string[];
    /**
     * Whose word names the user: `"eart-auth"` (default) accepts only a `langgraph_auth_user` that
     * eart's server auth (`createEartAuth`) authenticated in this deployment for the run (it carries
     * a proof of the user and the run id keyed by `EART_SERVER_SECRET`); `"server-auth"` accepts any
     * `langgraph_auth_user`, for a server whose own custom auth sets it (a client can write it where
     * no auth is configured).
     */
    trust?: "eart-auth" | "server-auth";
  };

/** A graph served by LangGraph server, with what eart's server auth asks of it. */
interface Served {
  agentId: string;
  graph: ServedGraph;
  registry: IdentityRegistry;
  /** Roles that answer this graph's human tasks: policy approvers, recovery and review roles. */
  answerRoles: ReadonlySet<string>;
  auditLog: AuditLog;
  graphId: string | undefined;
  /** The agents its threads may be bound to: its own, and those a client may pick. */
  agents: readonly string[];
  /** What it redacts callers' input and answers with (none when its redaction is off). */
  incoming: { redaction: Redaction; registry: IdentityRegistry } | undefined;
}

/** What eart's server wiring needs of a compiled graph: eart's prebuilt agent, or a guarded `createAgent` agent's graph. */
type ServedGraph = Pick<GovernedAgent, "stream" | "getState" | "withConfig">;

const SERVED_KEY = Symbol.for("eart.server.graphs");
/** The graphs this process serves, for the authorization handler ({@link answerableBy}). */
function served(): Served[] {
  const holder = globalThis as unknown as Record<symbol, Served[] | undefined>;
  return (holder[SERVED_KEY] ??= []);
}

/** The checkpointer LangGraph server last gave each served graph (it sets it per run; a stateless run sets none). */
const threadStore = new WeakMap<object, BaseCheckpointSaver>();

/** Keeps the server's checkpointer of a graph when the server assigns it. */
function rememberCheckpointer(graph: ServedGraph): void {
  let current = (graph as { checkpointer?: unknown }).checkpointer;
  Object.defineProperty(graph, "checkpointer", {
    configurable: true,
    enumerable: true,
    get: () => current,
    set: (value: unknown) => {
      current = value;
      if (value instanceof BaseCheckpointSaver) threadStore.set(graph, value);
    },
  });
}

/** A thread's state as the graph reads it, from the given checkpointer (a view of the graph: the graph itself is not changed). */
function readState(graph: ServedGraph, checkpointer: BaseCheckpointSaver, threadId: string): Promise<unknown> {
  return on(graph, checkpointer).getState({ configurable: { thread_id: threadId } });
}

/** The graph reading through the given checkpointer (a view: the graph itself is not changed). */
function on<G extends object>(graph: G, checkpointer: BaseCheckpointSaver): G {
  return Object.create(graph, { checkpointer: { value: checkpointer } }) as G;
}

/** The audit events that record a human's answer, and the field naming who gave it. */
const ANSWERED_BY = { "approval.decided": "approverId", "tool.recovery_decided": "resolverId", "escalation.decided": "reviewerId" } as const;

/**
 * Whether `userId` may open a served thread they do not own: it waits for a human (an approval, a
 * recovery decision, a review) they may give (they hold one of the open task's roles in the
 * identities of the graph that runs it), or eart recorded an answer of theirs on it (so an approver
 * sees the run they resumed end). Reads the thread's state through that graph, with the
 * checkpointer LangGraph server gave it, and the answers from eart's audit log. With
 * `orAnswered: false`, only a thread that waits for one of their roles now (a reviewer's search).
 * @example
 * ```ts
 * if (await answerableBy(threadId, "sam")) allow();
 * ```
 */
export async function answerableBy(threadId: string, userId: string, options: { orAnswered?: boolean } = {}): Promise<boolean> {
  // Graphs often share one audit store: the thread's events are read once per store.
  const reads = new Map<AuditLog, Promise<AuditEvent[]>>();
  for (const { graph, registry, auditLog, agents } of served()) {
    // The graph that runs the thread: the one whose agent the thread was bound to.
    if (!reads.has(auditLog)) reads.set(auditLog, auditLog.read(threadId));
    const events = await reads.get(auditLog)!;
    const agent = agentOfThread(events);
    if (agent === undefined || !agents.includes(agent)) continue;
    // Two graphs may serve one agent (a test's variant beside the project's, two graph ids of one
    // agent); one the server has not run yet has no checkpointer: the thread is read through one
    // that has. The order they registered in is the order their modules finished loading.
    const checkpointer = threadStore.get(graph);
    if (!checkpointer) continue;
    // The thread's state, read from the server's checkpointer (not the graph's, which a stateless run clears).
    const task = pendingHumanTask(await readState(graph, checkpointer, threadId));
    // Answers count only as eart sealed them (the graph's key): an answer event appended to the
    // store by anyone else opens nobody's way into the thread.
    const sealed = options.orAnswered === false ? () => false : await sealedBy(answerSealerOf(graph), threadId);
    if (task) return registry.userHasAnyRole(userId, task.roles) || answered(events, userId, options, sealed);
    // A graph of another kind (eart's prebuilt agent, a createAgent agent) does not see the open
    // task of a thread the other kind ran: the next graph of the agent reads it.
    if (answered(events, userId, options, sealed)) return true;
  }
  return false;
}

/** Whether eart recorded (and sealed) an answer of `userId` on the thread (unless only waiting threads count). */
function answered(events: readonly AuditEvent[], userId: string, options: { orAnswered?: boolean }, sealed: (event: AuditEvent) => boolean): boolean {
  return options.orAnswered !== false && events.some((e) => e.type in ANSWERED_BY && e.data[ANSWERED_BY[e.type as keyof typeof ANSWERED_BY]] === userId && sealed(e));
}

/**
 * The user as the served graphs know them, or undefined when none does: their roles (in every
 * graph's identities), and the graphs (by `graphId`) whose human tasks one of them answers.
 */
export function servedUser(userId: string): { name: string; roles: string[]; answersIn: string[] } | undefined {
  let found: { name: string; roles: string[]; answersIn: string[] } | undefined;
  for (const { registry, answerRoles, graphId } of served()) {
    const user = registry.getUser(userId);
    if (!user) continue;
    const answers = graphId !== undefined && user.roles.some((r) => answerRoles.has(r));
    found = {
      name: found?.name ?? user.name ?? userId,
      roles: [...new Set([...(found?.roles ?? []), ...user.roles])],
      answersIn: [...new Set([...(found?.answersIn ?? []), ...(answers ? [graphId] : [])])],
    };
  }
  return found;
}

/** The roles that answer a graph's human tasks: the policy's approver roles (when it describes itself), recovery and review roles. */
function answerRolesOf(options: Pick<GovernedAgentOptions, "policy" | "recoveryRoles" | "escalation">): Set<string> {
  const roles = new Set<string>([...(options.recoveryRoles ?? []), ...(options.escalation?.reviewerRoles ?? [])]);
  const described = (options.policy as { describe?: () => { rules?: { approverRoles?: string[] }[] } }).describe?.();
  for (const rule of described?.rules ?? []) for (const role of rule.approverRoles ?? []) roles.add(role);
  return roles;
}

/**
 * What eart reads from a LangGraph server run's configuration, made trustworthy: the user is the
 * authenticated `langgraph_auth_user` only (the server copies a client's `user_id`, and keeps it
 * in the thread's config for every later run: it is dropped), the agent is this graph's (a client's
 * `agent_id` is refused unless allowed), and refused answers pause again instead of failing the run.
 */
function serverConfig(given: RunnableConfig | undefined, options: { agentId: string; clientAgents: readonly string[]; trust: "eart-auth" | "server-auth" }): RunnableConfig {
  const configurable: Record<string, unknown> = { ...(given?.configurable ?? {}) };
  const user = configurable.langgraph_auth_user;
  if (user === undefined || user === null) {
    throw new IdentityResolutionError("identity_missing", "This graph serves LangGraph server runs: the run carries no authenticated user (configure eart's server auth, createEartAuth)");
  }
  if (options.trust === "eart-auth" && !verifyServerUser(user, given?.runId)) {
    throw new IdentityResolutionError("identity_unauthenticated", "The run's langgraph_auth_user was not authenticated by eart's server auth in this deployment for this run (a client may have sent it, or copied it from an earlier run)");
  }
  delete configurable.user_id;
  const asked = configurable.agent_id;
  const refused = agentRefusal(options.agentId, [options.agentId, ...options.clientAgents], asked);
  if (refused) throw refused;
  configurable.agent_id = asked ?? options.agentId;
  configurable.eart_refusals = "interrupt";
  return { ...given, configurable };
}

/** The refusal of a run that names an agent (`configurable.agent_id`) the graph does not act as, if it does. */
function agentRefusal(agentId: string, agents: readonly string[], asked: unknown): IdentityResolutionError | undefined {
  if (asked === undefined || (typeof asked === "string" && agents.includes(asked))) return undefined;
  return new IdentityResolutionError("identity_agent_refused", `This assistant acts as agent "${agentId}": a client may not pick agent ${JSON.stringify(asked).slice(0, 100)}`, { agentId });
}

/**
 * A client's answer as eart reads it: a key only eart writes ({@link REFUSED_ANSWER_KEY}) is renamed,
 * so the answer is checked (and refused) like any other instead of standing for a refusal.
 */
function clientAnswer(input: unknown): unknown {
  // A Command that writes or jumps is refused whole by the resume guard.
  if (!isCommand(input) || commandWrites(input).length > 0) return input;
  const { resume } = input as Command;
  // The answer itself, or each answer of a map by interrupt id: the guard unwraps that form before eart reads it.
  const keys = resumeMapKeys(resume);
  if (!keys) {
    const renamed = withoutRefusalKey(resume);
    return renamed === resume ? input : new Command({ resume: renamed });
  }
  const answers = resume as Record<string, unknown>;
  const renamed = Object.fromEntries(keys.map((k) => [k, withoutRefusalKey(answers[k])]));
  return keys.every((k) => renamed[k] === answers[k]) ? input : new Command({ resume: renamed });
}

/** An answer with the key only eart writes renamed (the same object when it has none). */
function withoutRefusalKey(answer: unknown): unknown {
  if (typeof answer !== "object" || answer === null || Array.isArray(answer) || !Object.hasOwn(answer, REFUSED_ANSWER_KEY)) return answer;
  const { [REFUSED_ANSWER_KEY]: claimed, ...rest } = answer as Record<string, unknown>;
  return { ...rest, [`client_${REFUSED_ANSWER_KEY}`]: claimed };
}

/**
 * The error a LangGraph server client receives for an eart error: the server sends only
 * `{ error: name, message }`, so the code leads the message (`approval_unauthorized: …`).
 */
function forClient(error: unknown): unknown {
  if (!(error instanceof EartError) || error.message.startsWith(`${error.code}: `)) return error;
  error.message = `${error.code}: ${error.message}`;
  return error;
}

/**
 * A refusal of what a caller sent (a state write, a resume) as the HTTP answer it is: LangGraph
 * server's router answers an error with its `getResponse()` (Hono's rule), else with a bare 500.
 * 403 for a refused write, 409 for a thread that is busy or not in the state asked for, 422 for
 * other bad input; the body is `{ error: code, message }`. eart's own faults (configuration, a
 * store) stay server errors.
 */
function asHttpRefusal(error: unknown): unknown {
  if (!(error instanceof EartError) || error instanceof EartConfigError || error instanceof StoreError) return error;
  const status = error instanceof StateTamperError ? 403 : error instanceof ThreadStateError || error instanceof ThreadBusyError ? 409 : 422;
  const refusal = forClient(error) as EartError;
  if (!("getResponse" in refusal)) {
    Object.defineProperty(refusal, "getResponse", {
      value: () => new Response(JSON.stringify({ error: refusal.code, message: refusal.message }), { status, headers: { "content-type": "application/json" } }),
    });
  }
  return refusal;
}

/**
 * Refuses a run of a thread that a graph of another kind made (LangGraph server runs any of its
 * graphs on any thread): its latest checkpoint holds channels this graph does not have (eart's
 * prebuilt agent keeps its records in `identity`, `decisions`…; a createAgent agent in `_eart`).
 * Read through this graph, such a thread shows neither its records nor the request it waits on:
 * new input would be taken past a waiting request, an answer would fail without eart's code.
 */
async function assertMadeHere(graph: ServedGraph, agents: readonly string[], config: RunnableConfig): Promise<void> {
  const checkpointer = (graph as { checkpointer?: unknown }).checkpointer;
  const threadId = config.configurable?.thread_id;
  if (!(checkpointer instanceof BaseCheckpointSaver) || (typeof threadId !== "string" && typeof threadId !== "number")) return;
  const refusal = otherGraphs(graph, agents, String(threadId), await checkpointer.getTuple({ configurable: { thread_id: threadId, checkpoint_ns: "" } }));
  if (refusal) throw refusal;
}

/**
 * The refusal of a run of a thread whose latest checkpoint holds channels `graph` does not have, or
 * is bound to an agent the graph does not act as (another scenario's graph of the same kind: its
 * nodes would answer the thread's request with their own policy and roles), if it does.
 */
function otherGraphs(graph: ServedGraph, agents: readonly string[], threadId: string, tuple: CheckpointTuple | undefined): ThreadStateError | undefined {
  const channels = (graph as { channels?: Record<string, unknown> }).channels;
  if (!channels) return undefined;
  const foreign = Object.keys(tuple?.checkpoint.channel_versions ?? {}).filter((name) => !Object.hasOwn(channels, name));
  if (foreign.length > 0) {
    return new ThreadStateError("thread_of_another_graph", threadId, `Thread "${threadId}" was made by another graph (it holds ${foreign.slice(0, 5).join(", ")}, which this graph does not): run it on the graph that made it`);
  }
  // The bound identity of either kind (eart's nodes write it, sealed; a client cannot).
  const values = (tuple?.checkpoint.channel_values ?? {}) as { identity?: { id?: unknown }; _eart?: { identity?: { id?: unknown } } };
  const bound = values.identity?.id ?? values._eart?.identity?.id;
  if (typeof bound !== "string" || agents.includes(bound)) return undefined;
  return new ThreadStateError("thread_of_another_graph", threadId, `Thread "${threadId}" acts as agent "${bound}", which this graph does not: run it on the graph that made it`);
}

/** LangGraph server's id of a graph's own assistant (the only kind eart's auth lets exist). */
const graphAssistantId = (graphId: string) => uuid5(graphId, "6ba7b821-9dad-11d1-80b4-00c04fd430c8");

/** Whether a run's `assistant_id` names this served graph (by its graph id, or its own assistant's id). */
const namedBy = (s: Served, assistantId: unknown): boolean => s.graphId !== undefined && (assistantId === s.graphId || assistantId === graphAssistantId(s.graphId));

/**
 * Redacts, in place, what a client's run asks the server to keep (its input, its answer, its
 * metadata) as the graph it runs redacts them: the server stores a run's request whole and shows
 * it to whoever may read the thread's runs (an approver listing the runs of a thread that waits for
 * them would otherwise read the customer's card number, which the thread itself holds redacted).
 * The input is redacted for the caller's own roles (`visibleTo`), as the thread holds it; an
 * answer, metadata and the run's settings (configuration, context, tags, kept headers) for no
 * one's. A run whose graph eart cannot tell is redacted by every served graph's redaction.
 * @example
 * ```ts
 * redactRunRequest(run, user.identity); // in the auth's threads:create_run handler
 * ```
 */
export function redactRunRequest(run: { assistant_id?: unknown; metadata?: Record<string, unknown> | null; kwargs?: { input?: unknown; command?: { resume?: unknown } | null } }, userId: string): void {
  const kwargs = (run.kwargs ?? {}) as Record<string, unknown> & { command?: { resume?: unknown } | null };
  for (const { redaction, registry } of incomingOf(run.assistant_id)) {
    // The input as the thread holds it (for the caller's roles); the rest of the request (its
    // configuration, context, tags, run name, kept headers, breakpoints) is the run's settings,
    // which the server also keeps and shows: for no one's roles, as an answer is.
    for (const [key, value] of Object.entries(kwargs)) {
      if (value === undefined || value === null) continue;
      if (key === "command") {
        if (kwargs.command?.resume !== undefined) kwargs.command.resume = redactedAnswer(kwargs.command.resume, redaction);
        continue;
      }
      const screened = redaction.apply(value, key === "input" ? redactionViewer(userId, registry) : undefined);
      if (screened.redacted.length > 0) kwargs[key] = screened.value;
    }
    if (run.metadata && typeof run.metadata === "object") run.metadata = redactedMetadata(run.metadata, redaction);
  }
}

/** Metadata a client sends for a thread or a run, redacted as nobody may see it, in place (the server keeps the object it gave the handler). */
export function redactThreadMetadata(value: { metadata?: Record<string, unknown> | null }): void {
  if (!value.metadata || typeof value.metadata !== "object") return;
  for (const { redaction } of incomingOf(undefined)) value.metadata = redactedMetadata(value.metadata, redaction);
}

function redactedMetadata(metadata: Record<string, unknown>, redaction: Redaction): Record<string, unknown> {
  const screened = redaction.apply(metadata, undefined);
  if (screened.redacted.length === 0) return metadata;
  // The same object, its values replaced: a thread copy reads it.
  for (const key of Object.keys(metadata)) delete metadata[key];
  return Object.assign(metadata, screened.value);
}

/** The redactions of the graph a run names (by graph id or its assistant), or of every served graph. */
function incomingOf(assistantId: unknown): { redaction: Redaction; registry: IdentityRegistry }[] {
  const graphs = served();
  const target = graphs.filter((s) => namedBy(s, assistantId));
  const from = (target.length > 0 ? target : graphs).flatMap((s) => (s.incoming ? [s.incoming] : []));
  return [...new Map(from.map((i) => [i.redaction, i])).values()];
}

/**
 * Why a run that would fail in the graph is refused before LangGraph server creates it, for eart's
 * server auth: an `agent_id` the graph does not act as, a run of a thread on a graph of the other
 * kind or acting as another agent ({@link assertMadeHere}), and new input or a continue on a thread
 * that waits for a human. Refused in the
 * graph, the run would make the server mark the thread `error`, keep the `agent_id` for every later
 * run, and (on another graph) rewrite its `graph_id`: a reviewer's search would no longer list the
 * request. Undefined when it is not refused here (the graph still checks every
 * run), or when the run's assistant is not the own assistant of a served graph with a `graphId`.
 */
export async function refusalBeforeRun(
  threadId: string | undefined,
  assistantId: unknown,
  run: { caller: string; answerer: boolean; newInput: boolean; continues: boolean; agentId?: unknown },
): Promise<EartError | undefined> {
  const graphs = served();
  const target = graphs.find((s) => namedBy(s, assistantId));
  if (!target) return undefined;
  // An agent the graph does not act as: the server would keep it in the thread's config, and the
  // graph refuse every later run of the thread (its approvers' answers too). Said to anyone: it is
  // about the run, not the thread.
  const refused = agentRefusal(target.agentId, target.agents, run.agentId);
  if (refused || threadId === undefined) return refused;
  // What the thread holds is said only to whoever may run it: its answerer, or the user it was
  // bound for (the server answers anyone else not found).
  const events = await threadEvents(threadId);
  if (!run.answerer && events.find((e) => e.type === "identity.bound")?.data.userId !== run.caller) return undefined;
  // The server gives every graph its one checkpointer: any graph it ran reads the thread.
  const checkpointer = threadStore.get(target.graph) ?? graphs.map((s) => threadStore.get(s.graph)).find((c) => c !== undefined);
  if (!checkpointer) return undefined;
  const tuple = await checkpointer.getTuple({ configurable: { thread_id: threadId, checkpoint_ns: "" } });
  if (!tuple) return undefined;
  // A graph of the other kind, or of the same kind acting as another agent (another scenario's),
  // would refuse the run, or answer the request with its own policy, and the server rewrite the
  // thread's graph_id.
  const other = otherGraphs(target.graph, target.agents, threadId, tuple);
  if (other) return other;
  if (run.newInput) return pendingHumanTask(await readState(target.graph, checkpointer, threadId)) ? awaitingHuman(threadId) : undefined;
  if (run.continues) {
    // A continue of a thread that waits for a human, unless eart recorded its answer as accepted
    // (a step that stopped after accepting it): the graph's own check, on the server's checkpointer.
    try {
      await assertContinuable(on(target.graph as Parameters<typeof assertContinuable>[0], checkpointer), { configurable: { thread_id: threadId } }, target.auditLog);
    } catch (error) {
      if (error instanceof ThreadStateError) return error;
      throw error;
    }
  }
  return undefined;
}

/** A thread's audit events, from the first audit store of the served graphs that holds any. */
async function threadEvents(threadId: string): Promise<AuditEvent[]> {
  for (const log of new Set(served().map((s) => s.auditLog))) {
    const events = await log.read(threadId);
    if (events.length > 0) return events;
  }
  return [];
}

/**
 * A client's state write (`threads.updateState`, a thread created with `supersteps`), beyond what
 * the graph's guard refuses to anyone (eart's records, answers to governed calls): it may add the
 * user's own messages only (an AI, tool or system message it wrote, or one of hers with the id of
 * a message the thread holds, would read as the agent's, a tool's or a reviewer's words, to the
 * model and to the reviewer deciding a request on the thread; a removal would take them back), not the agent's own output
 * (`structuredResponse`, `jumpTo`), and nothing while the thread waits for a human (the write would
 * drop the request's interrupt: a reviewer's search would no longer list it). Throws
 * {@link StateTamperError} (`state_write_refused`) or {@link ThreadStateError}.
 */
async function assertClientStateWrite(graph: ServedGraph, channels: readonly string[], config: RunnableConfig | undefined, writes: readonly unknown[]): Promise<void> {
  const ids: string[] = [];
  for (const values of writes) {
    // What is not one object of channel values, the graph's guard refuses as it is.
    if (Array.isArray(values) || isCommand(values)) return;
    assertNoGovernedChannels(values, "updateState", channels);
    const output = AGENT_OUTPUT_CHANNELS.filter((name) => typeof values === "object" && values !== null && Object.hasOwn(values, name));
    if (output.length > 0) throw new StateTamperError("state_write_refused", `updateState may not write the agent's own output (${output.join(", ")})`, { channels: output });
    ids.push(...clientMessageIds(values, "state write"));
  }
  const threadId = config?.configurable?.thread_id;
  if (typeof threadId !== "string" && typeof threadId !== "number") return;
  const snapshot = await graph.getState({ configurable: { thread_id: threadId } });
  if (pendingHumanTask(snapshot)) throw awaitingHuman(String(threadId));
  if (ids.length > 0) for (const values of writes) assertKeepsHeldMessages(snapshot.values, values, "state write");
}

/**
 * The ids of the messages a client writes (run input or a state write), each of which must be the
 * user's own (role "user"): an AI, tool or system message would read as the agent's own words, to
 * the model and to the reviewer deciding a request on the thread, and a removal would take them
 * back. Throws {@link StateTamperError} (`state_write_refused`).
 * @example
 * ```ts
 * clientMessageIds({ messages: [{ role: "user", content: "Refund order 1042" }] }, "input"); // []
 * ```
 */
export function clientMessageIds(values: unknown, via: "input" | "state write"): string[] {
  const messages = (values as { messages?: unknown } | null | undefined)?.messages;
  if (messages === undefined || messages === null) return [];
  const ids: string[] = [];
  for (const like of Array.isArray(messages) ? messages : [messages]) {
    let message: BaseMessage | undefined;
    try {
      message = coerceMessageLikeToMessage(like as BaseMessageLike);
    } catch {
      message = undefined;
    }
    const type = message?.getType() ?? "unreadable";
    if (type !== "human") {
      throw new StateTamperError("state_write_refused", `A client's ${via} may add only the user's own messages (role "user"), not ${type === "unreadable" ? "an unreadable message" : `a ${type} message`}: the agent's steps write the others`, { fields: ["messages"] });
    }
    if (typeof message?.id === "string") ids.push(message.id);
  }
  return ids;
}

/** createAgent's channels that hold what the agent itself produced or decided: no client writes them. */
const AGENT_OUTPUT_CHANNELS = ["structuredResponse", "jumpTo"] as const;

/**
 * The refusal as the thread's reviewers are shown it beside the request: an answer LangGraph could
 * not store is described without where in it (its keys are the client's words: the audit log
 * keeps the path).
 */
function shownRefusal(error: EartError): { code: string; message: string } {
  const why = error.details.why;
  if (error.code !== "approval_resume_invalid" || typeof why !== "string") return error;
  return { code: error.code, message: `Refused resume value: it ${why} (the audit log records where)` };
}

/**
 * Whether a run's refusal is one of what the caller sent to a thread that may wait for a human: an
 * answer LangGraph could not store, new input or a continue while it waits, a write of eart's
 * records or a jump. The thread is kept on its request, if it waits on one.
 */
function refusedOnRequest(error: unknown, input: unknown): error is EartError {
  if (error instanceof ApprovalError) return error.code === "approval_resume_invalid" && isCommand(input) && (input as Command).resume !== undefined;
  if (error instanceof ThreadStateError) return error.code === "thread_awaiting_approval";
  return error instanceof StateTamperError && error.code === "state_write_refused";
}

/**
 * Puts a graph's runs under the server's rules ({@link serverConfig}, refusals kept on the thread,
 * eart's codes for the client); a copy made with withConfig gets the same.
 */
function serve(graph: ServedGraph, rules: ServeRules): void {
  const stream = graph.stream.bind(graph) as (input: unknown, options?: RunnableConfig) => Promise<AsyncIterable<unknown>>;
  const agents = [rules.agentId, ...rules.clientAgents];
  (graph as unknown as { stream: typeof stream }).stream = async (given, options) => {
    const input = clientAnswer(given);
    let config: RunnableConfig;
    let inner: AsyncIterable<unknown>;
    try {
      config = serverConfig(options, rules);
      await assertMadeHere(graph, agents, config);
    } catch (error) {
      throw forClient(error);
    }
    try {
      // The server runs the graph itself (a createAgent graph, past its agent's guard): input
      // eart's channels are in is the client's.
      if (!isCommand(input)) {
        assertCallerInput(input, rules.channels);
        // The user's own messages only, none in the place of one the thread holds (eart's auth
        // refuses the others before the server keeps the run; a graph served without it, here).
        const ids = clientMessageIds(input, "input");
        if (ids.length > 0) assertKeepsHeldMessages((await graph.getState(config)).values, input, "input");
      }
      inner = await stream(input, config);
    } catch (error) {
      // A run refused on a thread that waits for a human keeps the thread on its request, with
      // the refusal, like any refused answer: thrown, it would make the server mark the thread
      // `error`, and its reviewers' search would no longer list the request. (eart's auth refuses
      // most such runs before the server makes them; not a run delayed or queued behind the one
      // that paused, nor one on a graph registered without a graphId.)
      if (!refusedOnRequest(error, input)) throw forClient(error);
      try {
        // The resume guard recorded a refused Command; new input or a continue is recorded here
        // (on a thread that waits for a human only).
        if (!isCommand(input)) await auditRefusedAnswer(graph, rules.auditLog, config, input, error);
        inner = await stream(new Command({ resume: refusedAnswer(shownRefusal(error)) }), config);
      } catch {
        throw forClient(error);
      }
    }
    return IterableReadableStream.fromAsyncGenerator(
      (async function* () {
        try {
          for await (const chunk of inner) yield chunk;
        } catch (error) {
          throw forClient(error);
        }
      })(),
    );
  };
  // State writes are answered in the request itself: a refusal is a 4xx with eart's code.
  for (const method of ["updateState", "bulkUpdateState"] as const) {
    const original = (graph as unknown as Record<string, unknown>)[method];
    if (typeof original !== "function") continue;
    (graph as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
      let release: (() => Promise<void>) | undefined;
      try {
        // LangGraph's updateState is a one-step bulkUpdateState (this graph's, below): every
        // client write is checked there, once.
        if (method === "bulkUpdateState") {
          const [config, supersteps] = args as [RunnableConfig | undefined, { updates?: { values?: unknown }[] }[] | undefined];
          // Checked and written under the thread's lock: not while a run is under way (the
          // server's own busy check does not cover every way in: a thread created with
          // supersteps), and not between the check that nothing waits and the write.
          const lock = (graph as unknown as Record<symbol, ThreadLock | undefined>)[THREAD_LOCK];
          const threadId = config?.configurable?.thread_id;
          if (lock && (typeof threadId === "string" || typeof threadId === "number")) release = await lock.acquire(String(threadId));
          await assertClientStateWrite(graph, rules.channels, config, (supersteps ?? []).flatMap((step) => (step?.updates ?? []).map((u) => u?.values)));
          // The guard's own write under the lock taken here.
          if (release) return await withThreadHeld(String(threadId), () => (original as (...a: unknown[]) => Promise<unknown>).apply(graph, args));
        }
        return await (original as (...a: unknown[]) => Promise<unknown>).apply(graph, args);
      } catch (error) {
        throw asHttpRefusal(error);
      } finally {
        await release?.();
      }
    };
  }
  const withConfig = (graph as unknown as { withConfig: (config: unknown) => unknown }).withConfig;
  (graph as unknown as { withConfig: (config: unknown) => unknown }).withConfig = (config: unknown) => {
    const copy = withConfig.call(graph, config) as ServedGraph;
    serve(copy, rules);
    return copy;
  };
}

/**
 * The governed agent for LangGraph server (`langgraph.json`): the prebuilt agent without a
 * checkpointer (the server gives it its own), on eart's stores for the rest (`ledger`,
 * `threadLock`, `auditLog`: SQLite under `langgraph dev`, PostgreSQL for a deployment; see
 * `serverStores`). Every run acts as `agentId` for the user eart's server auth authenticated;
 * a refused answer keeps the thread interrupted on the same request with `refusal: { code, message }`;
 * errors that end a run reach the client with eart's code leading the message.
 * @example
 * ```ts
 * // agent.ts, named in langgraph.json as "./agent.ts:graph"
 * const stores = await serverStores();
 * export const graph = createServerAgent({ agentId: "support-agent", model, tools, identities, policy, ...stores.forAgent });
 * ```
 */
export function createServerAgent(options: ServerAgentOptions): GovernedAgent {
  const { agentId, clientAgents = [], trust = "eart-auth", graphId, ...agentOptions } = options;
  const registry = agentOptions.identities instanceof IdentityRegistry ? agentOptions.identities : IdentityRegistry.fromObject(agentOptions.identities);
  assertAgents(registry, agentId, clientAgents, trust);
  const graph = createGovernedAgent({ ...agentOptions, identities: registry } as GovernedAgentOptions);
  register(graph, { agentId, clientAgents, trust, graphId, registry, answerRoles: answerRolesOf(agentOptions), auditLog: agentOptions.auditLog, channels: GOVERNED_CHANNEL_NAMES });
  return graph;
}

/** The rules a served graph's runs are under. */
interface ServeRules {
  agentId: string;
  clientAgents: readonly string[];
  trust: "eart-auth" | "server-auth";
  auditLog: AuditLog;
  /** The channels only eart writes in the graph's state (the prebuilt agent's, or a createAgent agent's `_eart`). */
  channels: readonly string[];
}

/** The rules a served graph runs under, and what eart's server auth reads of it. */
interface Registration extends ServeRules {
  graphId: string | undefined;
  registry: IdentityRegistry;
  answerRoles: ReadonlySet<string>;
}

/** Puts a graph under the server's rules and registers it with eart's server auth. */
function register(graph: ServedGraph, r: Registration): void {
  serve(graph, r);
  rememberCheckpointer(graph);
  served().push({ agentId: r.agentId, graph, registry: r.registry, answerRoles: r.answerRoles, auditLog: r.auditLog, agents: [r.agentId, ...r.clientAgents], graphId: r.graphId, incoming: incomingRedactionOf(graph) });
}

/** Checks the agent ids a served graph acts as against its identities. */
function assertAgents(registry: IdentityRegistry, agentId: unknown, clientAgents: readonly string[], trust: unknown): void {
  if (typeof agentId !== "string" || agentId === "") throw new EartConfigError("agentId", "names the agent this graph acts as (an agents[].id of the identities)");
  if (trust !== "eart-auth" && trust !== "server-auth") throw new EartConfigError("trust", `must be "eart-auth" or "server-auth"`);
  for (const id of [agentId, ...clientAgents]) {
    if (!registry.getAgent(id)) throw new EartConfigError("agentId", `names agent "${id}", which the identities do not define (${registry.agentIds().join(", ")})`);
  }
}

/** Options of {@link serveAgent}: what {@link createServerAgent} takes beside the agent's own options. */
export type ServeAgentOptions = Pick<ServerAgentOptions, "agentId" | "graphId" | "clientAgents" | "trust">;

/** What a governanceMiddleware keeps for LangGraph server (middleware/governance.ts). */
interface GovernanceForServer {
  auditLog: AuditLog;
  registry: IdentityRegistry;
  policy: GovernedAgentOptions["policy"];
  recoveryRoles: readonly string[];
  stores: { auditLog: boolean; ledger: () => boolean };
  channels: readonly string[];
}

/**
 * A LangChain v1 `createAgent` agent with eart's `governanceMiddleware` on LangGraph server
 * (`langgraph.json` names the agent; the server runs its graph): its runs act as `agentId` for the
 * user eart's server auth authenticated (as {@link createServerAgent}'s do), a refused answer
 * keeps the thread interrupted on the same request with `refusal: { code, message }`, and eart's
 * server auth lets the approvers of its policy (and its recovery roles) find, open and answer its
 * threads while they wait for them. The agent must be guarded (`guardAgent`, with the server
 * stores' thread lock) and the middleware given the server stores' audit log and ledger: the
 * server brings its own checkpointer, so eart's would otherwise live in this process only (its
 * seals would not hold after a restart, nor its records on another worker). Returns the same agent.
 * @example
 * ```ts
 * // agent.ts, named in langgraph.json as "./agent.ts:agent"
 * const stores = await serverStores();
 * const governance = governanceMiddleware({ identities, policy, auditLog: stores.forAgent.auditLog, ledger: stores.forAgent.ledger });
 * export const agent = serveAgent(guardAgent(createAgent({ model, tools, middleware: [governance] }), governance, { lock: stores.forAgent.threadLock }), governance, { agentId: "support-agent", graphId: "refund" });
 * ```
 */
export function serveAgent<A extends { graph: unknown }>(agent: A, governance: object, options: ServeAgentOptions): A {
  const own = (governance as Record<symbol, GovernanceForServer | undefined>)[Symbol.for("eart.governanceMiddleware")];
  if (!own) throw new EartConfigError("governance", "must be the governanceMiddleware the agent was created with");
  if (!(agent as unknown as Record<symbol, unknown>)[Symbol.for("eart.guardAgent")]) {
    throw new EartConfigError("agent", "is not guarded: guardAgent(agent, governance, { lock: stores.forAgent.threadLock }) before serving it (without the guard, callers could write eart's records and answer unknown threads)");
  }
  if (!madeWith(agent, governance)) throw new EartConfigError("governance", "the agent was not created with this governanceMiddleware");
  if (!own.stores.auditLog || !own.stores.ledger()) {
    throw new EartConfigError("governance", "give governanceMiddleware the server stores' auditLog and ledger (serverStores().forAgent): on LangGraph server eart's records must outlive this process");
  }
  const { agentId, clientAgents = [], trust = "eart-auth", graphId } = options;
  assertAgents(own.registry, agentId, clientAgents, trust);
  // The graph the server runs: createAgent's compiled graph (the server unwraps the agent to it).
  const graph = compiledGraphOf<ServedGraph>(agent);
  const answerRoles = answerRolesOf({ policy: own.policy, recoveryRoles: [...own.recoveryRoles] });
  register(graph, { agentId, clientAgents, trust, graphId, registry: own.registry, answerRoles, auditLog: own.auditLog, channels: own.channels });
  return agent;
}
