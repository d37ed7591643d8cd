import { AsyncLocalStorage } from "node:async_hooks";
import { BaseCheckpointSaver, Command, INTERRUPT, InvalidUpdateError, isCommand, Overwrite } from "@langchain/langgraph";
import { ledgerFor, threadLockFor } from "../src/stores/for-checkpointer.js";
import { lazySealer, type Sealer } from "../src/decisions/seal.js";
import type { EffectLedger } from "../src/ledger/ledger.js";
import { answerIsSealed, requestRound } from "../langgraph/interrupts.js";
import type { RunnableConfig } from "@langchain/core/runnables";
import { AsyncLocalStorageProviderSingleton } from "@langchain/core/singletons";
import { IterableReadableStream } from "@langchain/core/utils/stream";
import { REFUSAL_EVENT_TYPES, type AuditEventData } from "../src/audit/events.js";
import { type AuditEvent, type AuditEventInput, type AuditLog } from "../src/audit/log.js";
import { type DecisionRecord } from "../src/decisions/records.js";
import { RUNNABLE_STATUSES } from "../src/decisions/lifecycle.js";
import { answeredAfter } from "../langgraph/run.js";
import { ApprovalError, EartConfigError, StateTamperError, ThreadStateError, EartError } from "../src/errors.js";
import { ApprovalRequestSchema, keyedApprovalAnswer, pendingApproval, type ApprovalRequest } from "../src/human-tasks/approval.js";
import { pendingRecovery } from "../src/human-tasks/recovery.js";
import { pendingEscalation } from "../src/human-tasks/escalation.js";
import { interruptValues, pendingHumanTask } from "../src/human-tasks/protocol.js";
import { principalFromConfig, type AgentIdentity } from "../src/identity/registry.js";
import { canonicalJson, jsonProblem } from "../src/internal/canonical.js";
import { coerceMessageLikeToMessage, type BaseMessage, type BaseMessageLike } from "@langchain/core/messages";
import { checkThreadFence, withThreadFence, type ThreadFence, type ThreadLock } from "../src/threads/lock.js";
import { digestOf, refusalData } from "../src/human-tasks/refusal.js";
import { assertActsForBound } from "../nodes/identity-binding.js";
import { GOVERNED_CHANNEL_NAMES } from "../langgraph/channels.js";
import { EART_MESSAGE_ID_PREFIX } from "../langgraph/records.js";

/** The part of a state snapshot the guard reads. */
interface Snapshot {
  createdAt?: string;
  values: unknown;
  tasks: readonly { interrupts?: readonly unknown[] }[];
  next?: readonly string[];
}

/** The part of a compiled graph the resume guard needs. */
interface ResumableGraph {
  getState(config: RunnableConfig): Promise<Snapshot>;
  stream(input: unknown, options?: unknown): Promise<unknown>;
  updateState?(config: RunnableConfig, values: unknown, asNode?: string): Promise<RunnableConfig>;
  bulkUpdateState?(config: RunnableConfig, supersteps: readonly { updates: readonly { values?: unknown; asNode?: string }[] }[]): Promise<RunnableConfig>;
}

/** Keys that rebuild a prototype when LangGraph's checkpoint serialiser reads a value back. */
const PROTOTYPE_KEYS: ReadonlySet<string> = new Set(["__proto__", "constructor", "prototype"]);
const MAX_DEPTH = 64;
/** The largest answer a resume may carry, in bytes of JSON. */
const MAX_ANSWER_BYTES = 64 * 1024;

/**
 * Refuses a resume value that LangGraph could not store and read back as it was given: a
 * `__proto__`, `constructor` or `prototype` key at any depth (LangGraph's checkpoint reader turns
 * a JSON `"__proto__"` member into a real prototype), an object that is not plain (a class
 * instance, a Map, a Date), a getter or setter, a number that is not finite, a function, a symbol,
 * a bigint, a cycle, or nesting deeper than 64. Throws `approval_resume_invalid` naming the path;
 * nothing is stored.
 * @example
 * ```ts
 * assertPlainResume(JSON.parse('{"__proto__":{"approved":true}}')); // throws ApprovalError
 * ```
 */
export function assertPlainResume(value: unknown): void {
  if (value === null) throw new ApprovalError("approval_resume_invalid", "Refused resume value at (root): it is null; a resume carries the answer", { path: [] });
  let problem: ReturnType<typeof jsonProblem>;
  try {
    problem = jsonProblem(value, { forbiddenKeys: PROTOTYPE_KEYS, refuseAccessors: true, maxDepth: MAX_DEPTH });
  } catch (error) {
    // A value that cannot even be read (a Proxy whose traps throw, a revoked Proxy).
    throw new ApprovalError("approval_resume_invalid", `Refused resume value at (root): it cannot be read (${String((error as Error)?.message ?? error).slice(0, 200)})`, { path: [] });
  }
  if (!problem) {
    // A human's answer is a few decisions and notes: one of megabytes is refused before LangGraph
    // stores it (and keeps it in the run store, the thread's state and the model's input).
    const size = Buffer.byteLength(JSON.stringify(value) ?? "", "utf8");
    if (size > MAX_ANSWER_BYTES) {
      throw new ApprovalError("approval_resume_invalid", `Refused resume value at (root): it is ${size} bytes; an answer is at most ${MAX_ANSWER_BYTES}`, { path: [], size, limit: MAX_ANSWER_BYTES });
    }
    return;
  }
  const path = problem.path.map(String);
  // `why` says what without where (the path is the client's keys): a refused key is named, being one of eart's list.
  const last = path.at(-1);
  const why = last !== undefined && PROTOTYPE_KEYS.has(last) ? `${problem.why} (${last})` : problem.why;
  throw new ApprovalError("approval_resume_invalid", `Refused resume value at ${path.join(".") || "(root)"}: it ${problem.why}`, { path, why });
}

/**
 * Refuses what a caller of the thread API may not write: a `Command` with anything but `resume`
 * (its `update` and `goto` would write any channel and skip any node), a resume value that is not
 * plain JSON ({@link assertPlainResume}), and input that writes eart's own channels. Throws before
 * anything is stored.
 */
export function assertCallerInput(input: unknown, channels: readonly string[] = GOVERNED_CHANNEL_NAMES): void {
  if (isCommand(input)) {
    const fields = commandWrites(input);
    if (fields.length > 0) throw new StateTamperError("state_write_refused", COMMAND_WRITE_REFUSED, { fields });
    const { resume } = input as { resume?: unknown };
    if (resume !== undefined) assertPlainResume(resume);
    return;
  }
  assertNoGovernedChannels(input, "input", channels);
  assertNoOverwrite(input, "input");
}

/**
 * Refuses channel values a caller sends as LangGraph's `Overwrite` (the class, or its wire forms
 * `{ __overwrite__: … }`, `{ type: "__overwrite__", value }`, `{ lg_name: "Overwrite" }`): a caller
 * adds to the thread; replacing what a channel holds would drop the answers eart's steps wrote
 * (and its checks read what is added, not what would replace it).
 */
export function assertNoOverwrite(values: unknown, via: string): void {
  if (typeof values !== "object" || values === null || Array.isArray(values) || isCommand(values)) return;
  const replaced = Object.keys(values).filter((key) => isOverwrite((values as Record<string, unknown>)[key]));
  if (replaced.length > 0) {
    throw new StateTamperError("state_write_refused", `${via} may not overwrite a channel (${replaced.join(", ")}): a caller adds to the thread, never replaces what it holds`, { fields: replaced });
  }
}

/** LangGraph's own test (the class, `{ __overwrite__ }`, `{ lg_name }`), and the discriminator form its channels also read. */
function isOverwrite(value: unknown): boolean {
  if (Overwrite.isInstance(value)) return true;
  const v = value as { type?: unknown } | null;
  return typeof v === "object" && v !== null && v.type === "__overwrite__" && "value" in v;
}

/** Why a caller's Command that writes or jumps is refused. */
export const COMMAND_WRITE_REFUSED = "A Command from a caller may only carry resume: update and goto are for eart's nodes";

/**
 * The fields of a Command (or its JSON form) that write state or jump (`update`, a non-empty
 * `goto`, `graph`): a caller's Command may carry none of them.
 */
export function commandWrites(command: { update?: unknown; goto?: unknown; graph?: unknown }): string[] {
  const gotos = command.goto === undefined ? [] : Array.isArray(command.goto) ? command.goto : [command.goto];
  return ["update", "goto", "graph"].filter((f) => (f === "goto" ? gotos.length > 0 : (command as Record<string, unknown>)[f] !== undefined));
}

/** The keys of a resume LangGraph reads as a map by interrupt id (every key looks like one), or undefined. */
export function resumeMapKeys(resume: unknown): string[] | undefined {
  if (typeof resume !== "object" || resume === null || Array.isArray(resume)) return undefined;
  const keys = Object.keys(resume);
  return keys.length > 0 && keys.every((k) => /^[0-9a-f]{32}$/.test(k)) ? keys : undefined;
}

/** Refuses a write of eart's channels from outside its nodes (input, `updateState`). */
export function assertNoGovernedChannels(values: unknown, via: string, channels: readonly string[]): void {
  if (typeof values !== "object" || values === null) return;
  const written = channels.filter((name) => Object.hasOwn(values, name));
  if (written.length > 0) {
    throw new StateTamperError("state_write_refused", `${via} may not write eart's channels (${written.join(", ")}): only eart's nodes write them`, {
      channels: written,
    });
  }
}

/**
 * Refuses messages a caller writes (run input, a state write) with the id of a message the thread
 * holds, unless it is the user's own message sent again unchanged: LangGraph's messages reducer
 * puts a message with a held id in the held one's place, so a caller's text would rewrite the
 * agent's words, a tool's answer or a reviewer's guidance (and stand in for it where eart's steps
 * know a message by id: the escalation guard's send-back turn). A caller adds to the thread; it
 * never rewrites what it holds. Throws {@link StateTamperError} (`state_write_refused`).
 * @example
 * ```ts
 * assertKeepsHeldMessages((await graph.getState(config)).values, input, "input");
 * ```
 */
export function assertKeepsHeldMessages(values: unknown, written: unknown, via: string): void {
  const sent = (written as { messages?: unknown } | null | undefined)?.messages;
  if (sent === undefined || sent === null || typeof written !== "object") return;
  const held = new Map<string, BaseMessage>();
  for (const m of ((values as { messages?: unknown } | null | undefined)?.messages as BaseMessage[] | undefined) ?? []) {
    if (typeof m?.id === "string") held.set(m.id, m);
  }
  const replaced: string[] = [];
  for (const like of Array.isArray(sent) ? sent : [sent]) {
    let message: BaseMessage;
    try {
      message = coerceMessageLikeToMessage(like as BaseMessageLike);
    } catch {
      continue; // not a message: LangGraph refuses it as it is
    }
    // A removal is no rewrite: what it takes away, the records still hold (a waiting call still waits).
    if (message.getType() === "remove") continue;
    const id = message.id;
    if (typeof id !== "string") continue;
    // eart's own messages' ids (a reviewer's guidance, eart's answer to a call): never a caller's,
    // held or not yet (planted before eart writes it, or written again after a removal).
    if (id.startsWith(EART_MESSAGE_ID_PREFIX)) replaced.push(id);
    else if (held.has(id) && !sameUserMessage(held.get(id)!, message)) replaced.push(id);
  }
  if (replaced.length > 0) {
    throw new StateTamperError("state_write_refused", `A caller's ${via} may not replace messages the thread holds, nor use eart's ids (${replaced.join(", ")}): it adds messages, with ids of their own`, {
      fields: ["messages"],
      messageIds: replaced,
    });
  }
}

/** Whether `again` is the user's own message `held` sent again as it was (same type, content, name and extra fields). */
function sameUserMessage(held: BaseMessage, again: BaseMessage): boolean {
  if (held.getType() !== "human" || again.getType() !== "human") return false;
  const fields = (m: BaseMessage) => canonicalJson({ content: m.content, name: m.name ?? null, additional_kwargs: m.additional_kwargs ?? {}, response_metadata: m.response_metadata ?? {} });
  return fields(held) === fields(again);
}

/** The event that records a refused answer, by the kind of human task it answered. */
const REFUSED_EVENT = { "eart.approval": "approval.refused", "eart.recovery": "tool.recovery_refused", "eart.escalation": "escalation.refused" } as const;

/**
 * Records what the guard refused before LangGraph stored it (a resume that is not plain JSON or is
 * nested too deep, a Command carrying update or goto; for LangGraph server, new input or a continue)
 * on the thread it was sent to, when that thread waits for a human: the refusal, a bounded copy of
 * the payload and the digest of all of it, as the nodes record the answers they refuse. Sent to a
 * thread that waits for nobody, it writes nothing.
 */
export async function auditRefusedAnswer(graph: Pick<ResumableGraph, "getState">, auditLog: AuditLog, config: RunnableConfig, answer: unknown, error: EartError): Promise<void> {
  const threadId = config.configurable?.thread_id;
  if (typeof threadId !== "string" && typeof threadId !== "number") return;
  const task = pendingHumanTask(await graph.getState({ configurable: { thread_id: threadId } }));
  if (!task) return;
  // Who sent it: the authenticated principal (LangGraph server's user wins over a user_id beside it).
  let by: string | undefined;
  try {
    by = principalFromConfig(config.configurable)?.id;
  } catch {
    by = undefined;
  }
  let data: AuditEventData<"approval.refused">;
  try {
    data = refusalData(error, answer);
  } catch (unreadable) {
    // Not even a bounded copy can be read (a getter that throws, a Date's prototype on a plain object).
    data = { code: error.code, message: error.message.slice(0, 2_000), answerUnreadable: String((unreadable as Error)?.message ?? unreadable).slice(0, 500) };
  }
  const refusal: AuditEventData<"approval.refused"> = { ...data, ...(by !== undefined ? { claimedBy: by.slice(0, 256) } : {}) };
  await auditLog.append({ threadId: String(threadId), type: REFUSED_EVENT[task.type], data: refusal } as AuditEventInput);
}

/**
 * Refuses a resume that LangGraph would silently ignore: on a thread that does not exist, or one
 * that is not paused on an interrupt. Throws {@link ThreadStateError}.
 * @example
 * ```ts
 * await assertResumable(app, { configurable: { thread_id: "t1" } });
 * ```
 */
export async function assertResumable(graph: Pick<ResumableGraph, "getState">, config: RunnableConfig | undefined): Promise<Snapshot> {
  const threadId = config?.configurable?.thread_id;
  if (typeof threadId !== "string" && typeof threadId !== "number") {
    throw new EartConfigError("configurable.thread_id", "a resume needs the thread_id of the paused thread");
  }
  return assertPaused(threadId, await graph.getState(config!));
}

/** Refuses a resume of a thread that has no checkpoint, or whose checkpoint waits on no interrupt. */
function assertPaused(threadId: string | number, snapshot: Snapshot): Snapshot {
  if (!snapshot.createdAt) {
    throw new ThreadStateError("thread_unknown", String(threadId), `Thread "${threadId}" does not exist; there is nothing to resume`);
  }
  if (!snapshot.tasks.some((t) => (t.interrupts?.length ?? 0) > 0)) {
    throw new ThreadStateError("thread_not_paused", String(threadId), `Thread "${threadId}" is not paused; there is nothing to resume`);
  }
  return snapshot;
}

/** Where LangGraph looks for a saver lent to a run before the graph's own (its `CONFIG_KEY_CHECKPOINTER`, not exported). */
const CONFIG_KEY_CHECKPOINTER = "__pregel_checkpointer";

/** A thread's latest checkpoint as the saver returns it. */
type SavedTuple = NonNullable<Awaited<ReturnType<BaseCheckpointSaver["getTuple"]>>>;

/** The saver a run of `graph` with `config` uses: one lent through the config, else the graph's own. */
function saverOf(graph: { checkpointer?: unknown }, config: RunnableConfig): BaseCheckpointSaver | undefined {
  const saver = config.configurable?.[CONFIG_KEY_CHECKPOINTER] ?? graph.checkpointer;
  return saver instanceof BaseCheckpointSaver ? saver : undefined;
}

/** A thread's latest checkpoint as its saver returns it, with the saver and this process's count of state writes when it was read. */
type LatestRead = { saver: BaseCheckpointSaver; saved: SavedTuple; generation: number };

/**
 * Reads the thread's latest checkpoint from the saver the run will use. Undefined when there is no
 * saver of LangGraph's or no thread id (the caller falls back to `getState`); `saved` undefined
 * when the thread has no checkpoint.
 */
async function readLatest(graph: { checkpointer?: unknown }, config: RunnableConfig): Promise<(Omit<LatestRead, "saved"> & { saved: SavedTuple | undefined; threadId: string | number }) | undefined> {
  const threadId = config.configurable?.thread_id;
  const saver = saverOf(graph, config);
  if (!saver || (typeof threadId !== "string" && typeof threadId !== "number")) return undefined;
  const generation = writesOf(saver, String(threadId));
  const saved = await saver.getTuple({ configurable: { thread_id: threadId, checkpoint_ns: "" } });
  return { saver, saved, generation, threadId };
}

/**
 * {@link assertResumable} from the thread's latest checkpoint as the saver returns it (no state
 * snapshot: the guard reads only whether the thread exists and what its interrupts ask), and that
 * checkpoint, to lend to the run. Without a saver of LangGraph's, from `getState`.
 */
async function readResumable(graph: Pick<ResumableGraph, "getState"> & { checkpointer?: unknown }, config: RunnableConfig): Promise<{ snapshot: Snapshot; tuple?: LatestRead }> {
  const read = await readLatest(graph, config);
  if (!read) return { snapshot: await assertResumable(graph, config) };
  const { saver, saved, generation, threadId } = read;
  // What getState lists as each task's interrupts: the interrupt writes pending on the checkpoint.
  const byTask = new Map<string, unknown[]>();
  for (const [taskId, channel, value] of saved?.pendingWrites ?? []) {
    if (channel !== INTERRUPT) continue;
    byTask.set(taskId, [...(byTask.get(taskId) ?? []), ...(Array.isArray(value) ? value : [value])]);
  }
  const snapshot = assertPaused(threadId, { createdAt: saved?.checkpoint.ts, values: undefined, tasks: [...byTask.values()].map((interrupts) => ({ interrupts })) });
  return { snapshot, tuple: { saver, saved: saved!, generation } };
}

/**
 * The thread's latest checkpoint as its state, when it reads as one without LangGraph's help: no
 * writes pending on it (no interrupt, no step cut short, whose writes `getState` would apply) and
 * every reduced channel stored whole (none to rebuild from earlier writes, as a delta channel
 * is). A thread with no checkpoint has no state. Undefined when the checkpoint does not read so:
 * the caller reads the state snapshot.
 */
async function readClean(graph: { checkpointer?: unknown; channels?: unknown }, config: RunnableConfig): Promise<{ snapshot: Snapshot | undefined; tuple?: LatestRead } | undefined> {
  const specs = (graph.channels ?? {}) as Record<string, { lc_graph_name?: unknown } | undefined>;
  if (Object.values(specs).some((c) => c?.lc_graph_name === "DeltaChannel")) return undefined;
  const read = await readLatest(graph, config);
  if (!read) return undefined;
  const { saver, saved, generation } = read;
  if (!saved) return { snapshot: undefined };
  if ((saved.pendingWrites?.length ?? 0) > 0) return undefined;
  const { channel_values: values, channel_versions: versions } = saved.checkpoint;
  const rebuilt = Object.entries(specs).some(([key, c]) => c?.lc_graph_name === "BinaryOperatorAggregate" && versions[key] !== undefined && !Object.hasOwn(values, key));
  if (rebuilt) return undefined;
  return { snapshot: { createdAt: saved.checkpoint.ts, values, tasks: [] }, tuple: { saver, saved, generation } };
}

/**
 * The run's configuration with a saver that hands the run, once, the checkpoint the guard read
 * (the run's first read of the thread's latest checkpoint), and is the graph's saver for the
 * rest. A state write through this process's guard since the guard read it: read afresh.
 */
function lendCheckpoint(config: RunnableConfig, tuple: LatestRead): RunnableConfig {
  const { saver, saved, generation } = tuple;
  const threadId = String(config.configurable?.thread_id);
  let lent = false;
  const getTuple = (wanted: RunnableConfig) => {
    const c = wanted.configurable ?? {};
    const first = !lent && String(c.thread_id) === threadId && (c.checkpoint_ns ?? "") === "" && c.checkpoint_id === undefined;
    lent ||= first;
    return first && writesOf(saver, threadId) === generation ? Promise.resolve(saved) : saver.getTuple(wanted);
  };
  const lending = new Proxy(saver, {
    get(target, property) {
      if (property === "getTuple") return getTuple;
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { ...config, configurable: { ...config.configurable, [CONFIG_KEY_CHECKPOINTER]: lending } };
}

/** Per saver and thread, the state writes made through a guard in this process. */
const stateWrites = new WeakMap<object, Map<string, number>>();
const writesOf = (saver: object, threadId: string): number => stateWrites.get(saver)?.get(threadId) ?? 0;

/** Counts a state write of the thread `config` names. */
function countStateWrite(graph: { checkpointer?: unknown }, config: RunnableConfig): void {
  const saver = saverOf(graph, config);
  const threadId = config.configurable?.thread_id;
  if (!saver || threadId === undefined) return;
  let counts = stateWrites.get(saver);
  if (!counts) stateWrites.set(saver, (counts = new Map()));
  counts.set(String(threadId), writesOf(saver, String(threadId)) + 1);
}

/** Where a graph keeps the bound identity and the decision records in its state values. */
export interface StateRecords {
  identity(values: Record<string, unknown>): unknown;
  decisions(values: Record<string, unknown>): unknown;
  /**
   * The case open for a reviewer, in a graph whose review step asks one (the escalation guard
   * writes it, and clears it when the reviewer decides): while it is open, new input is refused,
   * as for a call waiting for an approval. Not given: escalations are recorded, not waited for.
   */
  escalation?(values: Record<string, unknown>): unknown;
}

/** eart's own graphs: the `identity` and `decisions` channels. */
const DEFAULT_RECORDS: StateRecords = { identity: (values) => values.identity, decisions: (values) => values.decisions };

/** eart's own graphs with a review step: the `identity`, `decisions` and `escalation` channels. */
export const REVIEWED_RECORDS: StateRecords = { ...DEFAULT_RECORDS, escalation: (values) => values.escalation };

/** The decision records in state values (none when they are missing or not a list). */
function decisionsIn(values: unknown, records: StateRecords): DecisionRecord[] {
  if (typeof values !== "object" || values === null) return [];
  const found = records.decisions(values as Record<string, unknown>);
  return Array.isArray(found) ? (found as DecisionRecord[]) : [];
}

/** Whether a checkpoint holds an answer LangGraph will hand the paused step (a resume value stored before this run). */
function holdsAnswer(saved: SavedTuple): boolean {
  return heldAnswers(saved.pendingWrites ?? []).length > 0;
}

/** The answers a checkpoint's pending writes hold for the paused step (its `__resume__` writes): the newest of each. */
function heldAnswers(writes: readonly [string, string, unknown][]): unknown[] {
  return writes.filter(([, channel]) => channel === "__resume__").map(([, , value]) => (Array.isArray(value) ? value.at(-1) : value));
}

/**
 * Whether an interrupt of the paused run asks about a call with an expiry (`requests[].expiresAt`):
 * a look at the raw values, before the approval request is parsed (most requests have none).
 */
function asksWithExpiry(snapshot: Snapshot): boolean {
  return interruptValues(snapshot).some((value) => {
    const requests = (value as { requests?: unknown } | null | undefined)?.requests;
    return Array.isArray(requests) && requests.some((r) => typeof r === "object" && r !== null && (r as { expiresAt?: unknown }).expiresAt !== undefined);
  });
}

/** Marks a graph whose runs take a thread lock (see {@link guardResumes}). */
export const THREAD_LOCK = Symbol.for("eart.threadLock");

/** Threads whose lock the current state write already holds (a host that checks and writes under it). */
const heldForWrite = new AsyncLocalStorage<ReadonlySet<string>>();

/**
 * Runs `write` as holding thread `threadId`'s lock, which the caller took (LangGraph server's
 * state-write check, which must hold it from its check to the write): the guard's state write
 * inside does not take it again.
 */
export function withThreadHeld<T>(threadId: string, write: () => Promise<T>): Promise<T> {
  return heldForWrite.run(new Set([...(heldForWrite.getStore() ?? []), threadId]), write);
}

/**
 * Makes a compiled graph refuse, with a typed error and before anything is written, resumes
 * (`new Command({ resume })`) on unknown or finished threads, new input on a thread that waits for
 * a human, and a continue (`null` input) of such a thread unless its stored answer is one eart
 * recorded as accepted (that needs `auditLog`); through `invoke` and `stream`. Every run of a
 * thread holds the thread's lock (by default the one that fits the compiled checkpointer,
 * `threadLockFor`; `lock: false` leaves serialising to you) from before these checks until its
 * stream ends, so a second concurrent run or answer of the same thread gets a `ThreadBusyError`
 * and runs nothing. Given `auditLog`, refused answers are recorded on the waiting thread.
 * Returns the same graph.
 * @example
 * ```ts
 * const app = guardResumes(new StateGraph(State)....compile({ checkpointer }), { auditLog });
 * ```
 */
export function guardResumes<G extends ResumableGraph & { checkpointer?: BaseCheckpointSaver | boolean }>(
  graph: G,
  options: {
    lock?: ThreadLock | false;
    auditLog?: AuditLog;
    /** eart's channels in this graph: the prebuilt agent's names (default), or the createAgent middleware's private ones. */
    channels?: readonly string[];
    /** Where the bound identity and the decision records are in this graph's state values (the `identity` and `decisions` channels by default). */
    records?: StateRecords;
    /**
     * The effect ledger of the graph's nodes: its store keeps the key that seals the answers the
     * audit log records, and only an answer eart sealed is continued as its human's. Defaults to the
     * ledger that fits the graph's checkpointer (`ledgerFor`), as the nodes' default.
     */
    ledger?: EffectLedger;
  } = {},
): G {
  // Guarded once: a second guard would wait for the lock the first one holds, forever.
  if ((graph as unknown as Record<symbol, unknown>)[GUARDED]) return graph;
  const stream = graph.stream.bind(graph);
  const { auditLog } = options;
  const channels = options.channels ?? GOVERNED_CHANNEL_NAMES;
  const records = options.records ?? DEFAULT_RECORDS;
  const ledger = options.ledger ?? (graph.checkpointer instanceof BaseCheckpointSaver ? ledgerFor(graph.checkpointer) : undefined);
  const sealer = lazySealer(ledger);
  Object.defineProperty(graph, ANSWER_SEALER, { value: sealer, configurable: true });
  // One run of a thread at a time, by default: without it two people answering one request at
  // once would both be accepted. The lock that fits the graph's checkpointer, unless one is given
  // (or `false`: the caller serialises runs itself).
  const lock = options.lock === false ? undefined : (options.lock ?? (graph.checkpointer instanceof BaseCheckpointSaver ? threadLockFor(graph.checkpointer) : undefined));
  if (lock && graph.checkpointer instanceof BaseCheckpointSaver) fenceCheckpoints(graph.checkpointer);
  async function guarded(input: unknown, options: RunnableConfig): Promise<unknown> {
    try {
      assertCallerInput(input, channels);
    } catch (error) {
      if (auditLog && isCommand(input) && error instanceof EartError) await auditRefusedAnswer(graph, auditLog, options, (input as { resume?: unknown }).resume, error);
      throw error;
    }
    assertThreadRoot(options, "A run");
    if (isCommand(input) && input.resume !== undefined) {
      // Under the lock the thread's checkpoint, read once here, is the one the run starts from:
      // it is lent to the run (not read and deserialised a second time) unless a state write of
      // this process came in between.
      const read = lock ? await readResumable(graph, options) : { snapshot: await assertResumable(graph, options) };
      let before = read.snapshot;
      // A request answered already, in a step that stopped before it was saved: the answer eart
      // accepted stands (continue the thread to act on it); a new one would replace it unread.
      // (Only a checkpoint that holds an answer can hold an accepted one: without one, no log read.
      // A step paused since on a question of a tool's own, after acting on the answer, takes the
      // new one for that question: the accepted answer stays where it is.)
      if (auditLog && (!read.tuple || holdsAnswer(read.tuple.saved)) && pendingHumanTask(before) !== undefined) await assertNotAnswered(graph, options, auditLog, input.resume, sealer);
      const expiring = asksWithExpiry(before) ? (pendingApproval(before)?.requests.filter((r) => r.expiresAt !== undefined) ?? []) : [];
      // Whether the answer came in time is read from the records before and after the run.
      if (expiring.length > 0 && read.tuple) before = await graph.getState(options);
      const inner = await stream(asPlainResume(input, before), read.tuple ? lendCheckpoint(options, read.tuple) : options);
      if (expiring.length === 0) return inner;
      // The gate answers lapsed calls itself (the thread moves on); the caller learns it here.
      return IterableReadableStream.fromAsyncGenerator(
        (async function* () {
          for await (const chunk of inner as AsyncIterable<unknown>) yield chunk;
          await assertAnsweredInTime(graph, options!, before, expiring.map((r) => r.toolCallId), records);
        })(),
      );
    }
    if (input === null || input === undefined) {
      // Continuing a thread that waits for a human re-runs the paused step with the newest answer
      // LangGraph stored, refused ones included, checked as the continuing caller's: a customer's
      // refused edit would run as the supervisor's approval. Only an answer eart recorded as
      // accepted (a run that stopped after it) may be continued; anything else is answered with a Command.
      const snapshot = await graph.getState(options);
      const accepted = await continuableFrom(graph, options, snapshot, auditLog, sealer);
      // Otherwise, only for whom the thread acts.
      if (!accepted) await assertContinuer(options, snapshot, records, auditLog);
    } else if (!isCommand(input)) {
      // Under the lock a thread whose latest checkpoint reads as its state (nothing pending on it,
      // every channel stored whole) is checked from that checkpoint, which is lent to the run.
      const clean = lock ? await readClean(graph, options) : undefined;
      const snapshot = clean ? clean.snapshot : await assertNotAwaitingApproval(graph, options);
      // A request whose interrupt was dropped (a state write on the paused thread) still waits:
      // the proposing message's calls are recorded as waiting for a human.
      if (snapshot && waitsInRecords(snapshot.values as Record<string, unknown>, records)) throw awaitingHuman(String(options.configurable?.thread_id));
      const unfinished = await unfinishedCalls(graph, options, snapshot, records, ledger);
      if (unfinished.length > 0) throw unfinishedThread(String(options.configurable?.thread_id), unfinished);
      // New input on a bound thread comes from the human it acts for; checked before it is stored.
      // An identity nobody sealed binds nothing (the binding node reports it and binds afresh).
      const bound = snapshot?.values ? (records.identity(snapshot.values as Record<string, unknown>) as AgentIdentity | undefined) : undefined;
      if (bound?.seal !== undefined) assertActsForBound(bound, options.configurable);
      assertKeepsHeldMessages(snapshot?.values, input, "input");
      if (clean?.tuple) return stream(input, lendCheckpoint(options, clean.tuple));
    }
    return stream(input, options);
  }
  graph.stream = (async (input: unknown, given?: RunnableConfig & { durability?: string; checkpointDuring?: boolean }) => {
    // Each step's checkpoint is written before the next step starts, whatever the caller asks:
    // with LangGraph's default ("async") a tool could act while the checkpoint of its approval is
    // still being written, and with "exit" (or checkpointDuring: false) nothing of the run is
    // saved until it ends. A run that failed after the approved refund ran would then leave the
    // thread paused with no stored answer, and another approver's reject would be taken for a
    // refund that was paid. A caller of the thread API may not lower it.
    const { checkpointDuring: _during, ...rest } = given ?? {};
    const options = { ...rest, durability: "sync" } as RunnableConfig;
    const threadId = options.configurable?.thread_id;
    if (typeof threadId !== "string" && typeof threadId !== "number") {
      throw new EartConfigError("configurable.thread_id", "every run of a governed thread names it (configurable.thread_id)");
    }
    // Run from a step of another thread's graph (an agent's tool that delegates to this one):
    // LangGraph would take the caller's checkpoint namespace into this run and save this thread's
    // state under it, where none of the guard's reads of the thread (its root) finds it. Run
    // detached from the caller, its own thread's root, still traced under the caller and stopped
    // with it.
    const ambient = AsyncLocalStorageProviderSingleton.getRunnableConfig() as RunnableConfig | undefined;
    const ambientThread = ambient?.configurable?.thread_id;
    if (ambientThread !== undefined && ambientThread !== null && String(ambientThread) !== String(threadId)) {
      const detached = {
        ...given,
        ...(given?.callbacks === undefined && ambient!.callbacks !== undefined ? { callbacks: ambient!.callbacks } : {}),
        ...(given?.signal === undefined && ambient!.signal !== undefined ? { signal: ambient!.signal } : {}),
      };
      return AsyncLocalStorageProviderSingleton.getInstance().run(undefined, () => graph.stream(input, detached));
    }
    if (!lock) return guarded(input, options);
    const held = await lock.acquire(String(threadId));
    // Released once: when the stream ends, or when the run is cancelled before anyone read it
    // (its generator would never start, so its `finally` would never run).
    let released: Promise<void> | undefined;
    const release = () => (released ??= Promise.resolve(held()));
    options.signal?.addEventListener("abort", () => void release().catch(() => undefined), { once: true });
    let inner: unknown;
    try {
      // Losing the lock mid-run (a dropped database connection) aborts the run; a run the holder
      // has not yet heard it lost is fenced: what it writes in the lock's database is checked
      // against the hold's token there, and refused once another process has taken the thread.
      const signal = held.lost ? (options.signal ? AbortSignal.any([options.signal, held.lost]) : held.lost) : options.signal;
      inner = await withThreadFence(held.fence, () => guarded(input, signal ? { ...options, signal } : options));
    } catch (error) {
      await release();
      throw error;
    }
    return IterableReadableStream.fromAsyncGenerator(
      (async function* () {
        try {
          for await (const chunk of inner as AsyncIterable<unknown>) yield chunk;
        } finally {
          await release();
        }
      })(),
    );
  }) as G["stream"];
  /**
   * A state write holds the thread's lock, as a run does: one made while a run holds the thread
   * gets `ThreadBusyError` (the run's next checkpoint would supersede it, silently). It is fenced
   * as a run is: a hold another process took over while the write was on its way (a stalled event
   * loop, a dropped PostgreSQL session) saves no checkpoint over the new holder's thread.
   */
  const underLock = async <T>(config: RunnableConfig, write: () => Promise<T>): Promise<T> => {
    const threadId = config.configurable?.thread_id;
    if (!lock || (typeof threadId !== "string" && typeof threadId !== "number") || heldForWrite.getStore()?.has(String(threadId))) return write();
    const held = await lock.acquire(String(threadId));
    try {
      return await withThreadFence(held.fence, write);
    } finally {
      await held();
    }
  };
  // The state API is open to every caller of the thread: it may write the caller's own channels
  // and messages, never eart's.
  if (graph.updateState) {
    const updateState = graph.updateState.bind(graph);
    graph.updateState = (async (config: RunnableConfig, values: unknown, asNode?: string) => {
      assertThreadRoot(config, "updateState");
      assertPlainUpdate(values, "updateState");
      assertNoGovernedChannels(values, "updateState", channels);
      assertNoOverwrite(values, "updateState");
      await assertNoGovernedAnswers(graph, config, [values], records);
      countStateWrite(graph, config);
      const write = () => langGraphRefusal(() => updateState(config, values, asNode));
      // LangGraph's updateState is a one-step bulkUpdateState: the lock is taken, and the thread
      // checked under it, there.
      return graph.bulkUpdateState ? write() : underLock(config, async () => (await assertNotWaiting(graph, config, records, ledger), write()));
    }) as G["updateState"];
  }
  if (graph.bulkUpdateState) {
    const bulkUpdateState = graph.bulkUpdateState.bind(graph);
    graph.bulkUpdateState = (async (config: RunnableConfig, supersteps: readonly { updates: readonly { values?: unknown }[] }[]) => {
      assertThreadRoot(config, "updateState");
      for (const step of supersteps) {
        for (const update of step.updates) {
          assertPlainUpdate(update.values, "updateState");
          assertNoGovernedChannels(update.values, "updateState", channels);
          assertNoOverwrite(update.values, "updateState");
        }
      }
      await assertNoGovernedAnswers(graph, config, supersteps.flatMap((step) => step.updates.map((u) => u.values)), records);
      return underLock(config, async () => {
        await assertNotWaiting(graph, config, records, ledger);
        countStateWrite(graph, config);
        return langGraphRefusal(() => bulkUpdateState(config, supersteps));
      });
    }) as G["bulkUpdateState"];
  }
  if (lock) Object.defineProperty(graph, THREAD_LOCK, { value: lock });
  Object.defineProperty(graph, GUARDED, { value: true });
  // A graph piped after another runnable (`prep.pipe(graph)`) is streamed through its transform,
  // which LangChain runs past invoke and stream, and so past this guard (and the redaction of what
  // callers send): refused, typed, before anything runs.
  (graph as unknown as { transform: () => never }).transform = () => {
    throw new EartConfigError("transform", "a guarded graph runs through invoke, stream or streamEvents: piped after another runnable (its transform), it would run past eart's guard; call it from a step of your own with the output of the one before");
  };
  // LangGraph's withConfig copies the graph without the guard's methods: every copy is guarded
  // too, under the same lock (two locks would let a run of the copy and one of the original overlap).
  const withConfig = (graph as unknown as { withConfig?: (config: unknown) => unknown }).withConfig;
  if (typeof withConfig === "function") {
    (graph as unknown as { withConfig: (config: unknown) => unknown }).withConfig = (config: unknown) =>
      guardResumes(withConfig.call(graph, config) as G, { ...options, lock: lock ?? false, channels, records });
  }
  return graph;
}

/**
 * A state write, with LangGraph's own refusal of it (a node the graph does not have, an ambiguous
 * update: nothing was written) as eart's typed one.
 */
async function langGraphRefusal<T>(write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (!(error instanceof InvalidUpdateError)) throw error;
    throw new StateTamperError("state_write_refused", `LangGraph refused the state write: ${error.message.slice(0, 300)}`, { refusedBy: "langgraph" });
  }
}

/**
 * Checks the fence of the run saving a checkpoint or a task's writes (`checkThreadFence`) before
 * the saver writes them: a run that lost its thread's lock, heard of it or not yet (a SQLite lock
 * reads its row), saves nothing more. With the guard's `durability: "sync"` every step is saved
 * before the next one starts, so such a run stops at the next step's boundary. A step's checkpoint
 * is also confirmed where the saver writes it, when the lock can (`ThreadFence.confirm`: the
 * PostgreSQL lock's token, read on a PostgresSaver's pool): a run that has not heard does not save
 * over the thread its new holder finished. Savers are patched once; a run without a fence (another
 * graph on the same saver) is not affected.
 */
function fenceCheckpoints(saver: BaseCheckpointSaver): void {
  if (fencedSavers.has(saver)) return;
  fencedSavers.add(saver);
  const methods = saver as unknown as Record<"put" | "putWrites", (config: RunnableConfig, ...rest: unknown[]) => Promise<unknown>>;
  for (const name of ["put", "putWrites"] as const) {
    const original = methods[name];
    methods[name] = function (this: unknown, config: RunnableConfig, ...rest: unknown[]) {
      const threadId = config?.configurable?.thread_id;
      let fence: ThreadFence | undefined;
      try {
        if (typeof threadId === "string" || typeof threadId === "number") fence = checkThreadFence(String(threadId));
      } catch (error) {
        return Promise.reject(error);
      }
      // A step's checkpoint is confirmed where it is saved (a PostgreSQL lock's token, on the
      // saver's pool): a run that has not heard its lock was taken does not save over the thread.
      if (name === "put" && fence?.confirm) return fence.confirm(saver).then(() => original.call(saver, config, ...rest));
      return original.call(saver, config, ...rest);
    };
  }
}

const fencedSavers = new WeakSet<object>();

/** Marks a graph the resume guard already wraps. */
const GUARDED = Symbol.for("eart.guardResumes");

/**
 * Refuses a run or a state write that is not on the thread as it stands: from an older checkpoint
 * (`checkpoint_id`: it forks the thread from there, with its older budget counters and sensitivity
 * labels, a request already answered, or no binding yet) or in a namespace other than the thread's
 * root (`checkpoint_ns`, `checkpoint_map`: the thread's state is hidden from these checks, nothing
 * bound and nothing waiting, while LangGraph still writes into the thread).
 */
function assertThreadRoot(config: RunnableConfig | undefined, via: string): void {
  const c = config?.configurable ?? {};
  const fields = [
    ...(c.checkpoint_id !== undefined ? ["configurable.checkpoint_id"] : []),
    ...(c.checkpoint_ns !== undefined && c.checkpoint_ns !== "" ? ["configurable.checkpoint_ns"] : []),
    ...(c.checkpoint_map !== undefined && c.checkpoint_map !== null && Object.keys(c.checkpoint_map as object).length > 0 ? ["configurable.checkpoint_map"] : []),
  ];
  if (fields.length === 0) return;
  throw new StateTamperError("state_write_refused", `${via} may not start from an older checkpoint or another namespace (${fields.join(", ")}): it would roll the thread back`, { fields });
}

/**
 * Refuses state-API values that are not one update of channels: a `Command` (its update and goto
 * would write any channel and skip any node) or a list of updates (LangGraph reads it as several).
 */
function assertPlainUpdate(values: unknown, via: string): void {
  if (isCommand(values)) throw new StateTamperError("state_write_refused", `${via} takes channel values, not a Command`, { fields: ["values"] });
  if (Array.isArray(values)) throw new StateTamperError("state_write_refused", `${via} takes one object of channel values, not a list`, { fields: ["values"] });
}

/**
 * A resume keyed by the id of the thread's one pending interrupt, as a plain resume. LangGraph
 * keeps one plain resume value per thread (a newer one replaces it) but keyed ones per task, and
 * replays the task's keyed values before the plain one: a refused plain answer would then come
 * after, and pass for, a newer keyed one. As plain values, the newest answer is always the last.
 */
function asPlainResume(input: unknown, snapshot: Snapshot): unknown {
  const resume = (input as { resume?: unknown }).resume;
  const pending = snapshot.tasks.flatMap((t) => (t.interrupts ?? []) as { id?: unknown }[]);
  if (pending.length !== 1 || typeof pending[0]!.id !== "string") return input;
  const keys = resumeMapKeys(resume);
  if (!keys) return input;
  if (keys.length !== 1 || keys[0] !== pending[0]!.id) {
    throw new ApprovalError("approval_resume_invalid", `The resume answers interrupt ${keys.join(", ")}, but the thread waits on ${pending[0]!.id}`, {
      path: [],
      pending: pending[0]!.id,
    });
  }
  return new Command({ resume: (resume as Record<string, unknown>)[keys[0]!] });
}

/** Throws `approval_expired` when the run just made expired calls of the request it answered. */
async function assertAnsweredInTime(graph: Pick<ResumableGraph, "getState">, config: RunnableConfig, before: Snapshot, toolCallIds: string[], records: StateRecords): Promise<void> {
  const expiredAt = (snapshot: Snapshot) => new Map(decisionsIn(snapshot.values, records).map((d) => [d.toolCallId, d.expiredAt]));
  const was = expiredAt(before);
  const now = expiredAt(await graph.getState(config));
  const lapsed = toolCallIds.filter((id) => now.get(id) !== undefined && now.get(id) !== was.get(id));
  if (lapsed.length > 0) {
    throw new ApprovalError("approval_expired", `The approval request for ${lapsed.join(", ")} expired before this answer; nothing was run for it`, {
      toolCallId: lapsed[0],
      expired: lapsed,
    });
  }
}

/**
 * Refuses a continue (`null` input) of a thread that waits for a human unless the answer LangGraph
 * stored for it is the one eart recorded as accepted (its run stopped after the answer was
 * recorded): `thread_awaiting_approval`. Without an audit log nothing is known to be accepted.
 */
export async function assertContinuable(graph: Pick<ResumableGraph, "getState"> & { checkpointer?: unknown }, config: RunnableConfig, auditLog: AuditLog | undefined): Promise<boolean> {
  return continuableFrom(graph, config, await graph.getState(config), auditLog, answerSealerOf(graph));
}

/** {@link assertContinuable} on the thread's state as read (`snapshot`): true when it continues an answer eart accepted. */
async function continuableFrom(graph: { checkpointer?: unknown }, config: RunnableConfig, snapshot: Snapshot, auditLog: AuditLog | undefined, sealer: (() => Promise<Sealer>) | undefined): Promise<boolean> {
  const threadId = config.configurable?.thread_id;
  if (typeof threadId !== "string" && typeof threadId !== "number") return false;
  if (!snapshot.createdAt || !pendingHumanTask(snapshot)) return false;
  if (auditLog) {
    const answers = recordedAnswers(await auditLog.read(String(threadId)), await sealedBy(sealer, String(threadId), snapshot));
    if (answers.length > 0 && (await recordedStoredAnswer(graph, String(threadId), answers))) return true;
  }
  throw awaitingHuman(String(threadId));
}

/** Who gave a recorded answer (an approver, a resolver, a reviewer). */
const answererOf = (event: AuditEvent): string => String(event.data.approverId ?? event.data.resolverId ?? event.data.reviewerId ?? "?");

/**
 * Refuses a continue (`null` input) of a thread that waits for nobody by anyone but the human it
 * acts for: it would run the agent on another's conversation and hand them its state (a continue
 * of an answer eart recorded as accepted acts on that answer, as its approver's, whoever continues).
 * A configuration that names nobody continues as the thread's own. A thread whose state is bound to
 * nobody yet (its first run stopped before the binding was saved) is continued by the human the
 * audit log recorded it bound for, if it recorded one (`thread_unbound` for anyone else); if it
 * recorded none, by whoever continues it (eart cannot tell who sent its input: the caller's own
 * access control must).
 */
async function assertContinuer(config: RunnableConfig, snapshot: Snapshot, records: StateRecords, auditLog: AuditLog | undefined): Promise<void> {
  const threadId = config.configurable?.thread_id;
  if ((typeof threadId !== "string" && typeof threadId !== "number") || !snapshot.createdAt) return;
  const values = (snapshot.values ?? {}) as Record<string, unknown>;
  const bound = records.identity(values) as AgentIdentity | undefined;
  if (bound?.seal !== undefined) return assertActsForBound(bound, config.configurable);
  if (((values.messages as unknown[] | undefined) ?? []).length === 0) return;
  const principal = principalFromConfig(config.configurable);
  if (principal === undefined) return;
  const recorded = auditLog ? (await auditLog.read(String(threadId))).find((e) => e.type === "identity.bound")?.data.userId : undefined;
  if (recorded === undefined || recorded === principal.id) return;
  throw new ThreadStateError("thread_unbound", String(threadId), `Thread "${threadId}" was bound for ${String(recorded)} in a run that stopped before its binding was saved: only they continue it`);
}

/**
 * Refuses an answer to a request eart recorded as answered already, whose answer LangGraph still
 * holds for the step that acts on it (the step stopped before it was saved): LangGraph would put
 * the new answer in its place, and the step would act on that one instead of the accepted one.
 * The caller continues the thread (`null` input) to act on the accepted answer. Audited.
 */
async function assertNotAnswered(graph: Pick<ResumableGraph, "getState"> & { checkpointer?: unknown }, config: RunnableConfig, auditLog: AuditLog, answer: unknown, sealer: () => Promise<Sealer>): Promise<void> {
  const threadId = String(config.configurable?.thread_id);
  const answers = recordedAnswers(await auditLog.read(threadId), await sealedBy(sealer, threadId));
  const stored = answers.length > 0 ? await recordedStoredAnswer(graph, threadId, answers) : undefined;
  // The same answer again (continueThread gives the recorded one as its human's) changes nothing.
  if (!stored || digestOf(answer) === digestOf(stored.answer)) return;
  const by = [...new Set(answers.map(answererOf))].join(", ");
  const error = new ApprovalError("approval_already_answered", `Thread "${threadId}" was answered already (by ${by}) in a step that did not finish; that answer stands: continue the thread (input null) to act on it`);
  await auditRefusedAnswer(graph, auditLog, config, answer, error);
  throw error;
}

/**
 * Refuses a state write that replaces a message the thread holds ({@link assertKeepsHeldMessages}),
 * or that answers a tool call eart governs (one it has a decision record for): such a call is
 * answered by eart's tool step, or by eart's gate for one it did not let run. A forged
 * `ToolMessage` would stand in for it: the model would read "refunded" for a refund that never
 * ran, with nothing in the audit log saying why.
 */
async function assertNoGovernedAnswers(graph: Pick<ResumableGraph, "getState">, config: RunnableConfig, writes: readonly unknown[], records: StateRecords): Promise<void> {
  const answered = new Set<string>();
  let writesMessages = false;
  for (const values of writes) {
    const messages = (values as { messages?: unknown } | null)?.messages;
    if (messages !== undefined) writesMessages = true;
    for (const m of Array.isArray(messages) ? messages : messages !== undefined ? [messages] : []) {
      const like = m as { tool_call_id?: unknown; role?: unknown; type?: unknown; getType?: () => string } | null;
      const isTool = typeof like?.getType === "function" ? like.getType() === "tool" : like?.role === "tool" || like?.type === "tool";
      if (isTool && typeof like?.tool_call_id === "string") answered.add(like.tool_call_id);
    }
  }
  if (!writesMessages) return;
  const { values: held } = await graph.getState(config);
  for (const values of writes) assertKeepsHeldMessages(held, values, "state write");
  const governed = decisionsIn(held, records).filter((r) => answered.has(r?.toolCallId)).map((r) => r.toolCallId);
  if (governed.length > 0) {
    throw new StateTamperError("state_write_refused", `updateState may not answer a tool call eart governs (${governed.join(", ")}): eart's tool step answers it`, { toolCallIds: governed });
  }
}

/**
 * The calls eart let run (allowed or approved) that nothing answered, when the run that was to run
 * them stopped before it finished: their tool step began (the effect ledger met them: a crash, a
 * cancelled run), or it is the thread's next step (a breakpoint before the tools, a run cancelled
 * or cut by its recursion limit before them). New input would start a new turn past them: a call
 * that may have acted (a payment whose outcome is unknown) would be lost to every human, and the
 * model would be sent a call with no answer, which providers refuse. The thread is continued first
 * (`null` input, `continueThread`): it runs them, replays what finished, and hands what may have
 * acted to a human. A run that ended with them unanswered and nothing next (a middleware that
 * jumped to the end) ran nothing and has nothing to continue: not these.
 */
async function unfinishedCalls(graph: Pick<ResumableGraph, "getState">, config: RunnableConfig, snapshot: Snapshot | undefined, records: StateRecords, ledger: EffectLedger | undefined): Promise<string[]> {
  const values = snapshot?.values as Record<string, unknown> | undefined;
  if (!values) return [];
  const threadId = String(config.configurable?.thread_id);
  const messages = ((values.messages as BaseMessage[] | undefined) ?? []).filter((m) => typeof m?.getType === "function");
  const open = decisionsIn(values, records).filter((r) => RUNNABLE_STATUSES.has(r?.status) && !answeredAfter(messages, r.messageId, r.toolCallId));
  if (open.length === 0) return [];
  const met: string[] = [];
  if (ledger) for (const r of open) if (await ledger.get({ threadId, toolCallId: r.toolCallId, digest: r.digest })) met.push(r.toolCallId);
  if (met.length > 0) return met;
  // The tool step next: eart's agents (and createAgent) name it "tools". (A snapshot read from the
  // latest checkpoint alone does not say what is next: the state is read then.)
  const next = snapshot!.next ?? (await graph.getState({ configurable: { thread_id: threadId } })).next ?? [];
  return next.includes("tools") ? open.map((r) => r.toolCallId) : [];
}

/** The refusal of new input or a state write on a thread with {@link unfinishedCalls}. */
const unfinishedThread = (threadId: string, calls: readonly string[]) =>
  new ThreadStateError("thread_unfinished", threadId, `Thread "${threadId}" stopped before it finished running ${calls.join(", ")}: continue it (input null) first; nothing was written`);

/**
 * Whether the thread's records say it waits for a human (whatever its interrupts say: a state
 * write drops them): a case open for a reviewer, where the graph has one, or a call recorded as
 * waiting for an approval or a recovery decision.
 */
function waitsInRecords(values: Record<string, unknown> | undefined, records: StateRecords): boolean {
  const open = values ? records.escalation?.(values) : undefined;
  if (typeof open === "object" && open !== null) return true;
  // Any call still waiting, whatever message follows it: a state write can append a message after
  // the proposing one, or remove or replace it, and the call still waits (a recovery may be a
  // payment that went through).
  return decisionsIn(values, records).some((r) => r?.status === "pending_approval" || r?.status === "recovery_pending");
}

/**
 * Refuses a state write on a thread that waits for a human (its interrupt, or eart's records): the
 * write would drop the request's interrupt, and with it the request from every listing that reads
 * the thread (a reviewer's search, `eart pending`), as LangGraph server's guard refuses it.
 */
async function assertNotWaiting(graph: Pick<ResumableGraph, "getState">, config: RunnableConfig, records: StateRecords, ledger: EffectLedger | undefined): Promise<void> {
  const threadId = config.configurable?.thread_id;
  if (typeof threadId !== "string" && typeof threadId !== "number") return;
  const snapshot = await graph.getState({ configurable: { thread_id: threadId } });
  if (!snapshot.createdAt) return;
  if (pendingHumanTask(snapshot) || waitsInRecords(snapshot.values as Record<string, unknown>, records)) throw awaitingHuman(String(threadId));
  // A write that appends a message would hide calls a stopped run was running from the next input's check.
  const unfinished = await unfinishedCalls(graph, config, snapshot, records, ledger);
  if (unfinished.length > 0) throw unfinishedThread(String(threadId), unfinished);
}

/** The refusal of input or a continue on a thread that waits for a human. */
export const awaitingHuman = (threadId: string) =>
  new ThreadStateError("thread_awaiting_approval", threadId, `Thread "${threadId}" waits for a human (an approval, a recovery decision or a review); answer it before sending new input`);

/**
 * Refuses new input, or a continue (`null` input), on a thread that waits for a human: new input
 * would start a new run and drop the pending request; a continue would re-run the paused step
 * with the newest stored answer, a refused one included, as the continuing caller's. Throws
 * {@link ThreadStateError} (`thread_awaiting_approval`) before anything is written.
 * @example
 * ```ts
 * await assertNotAwaitingApproval(app, { configurable: { thread_id: "t1" } });
 * ```
 */
export async function assertNotAwaitingApproval(graph: Pick<ResumableGraph, "getState">, config: RunnableConfig | undefined): Promise<Snapshot | undefined> {
  const threadId = config?.configurable?.thread_id;
  if (typeof threadId !== "string" && typeof threadId !== "number") return undefined;
  const snapshot = await graph.getState(config!);
  if (!snapshot.createdAt) return undefined;
  if (pendingHumanTask(snapshot)) throw awaitingHuman(String(threadId));
  return snapshot;
}

/** The key a guarded graph keeps the seals of its recorded answers under ({@link sealedBy}): read by the `eart` app and LangGraph server's auth. */
export const ANSWER_SEALER = Symbol.for("eart.answerSealer");

/**
 * Whether an answer event of the thread carries eart's seal, by the graph's key (nothing does
 * without one), and, given the thread's state (`waiting`), whether it answers the asking its
 * pending request is at ({@link requestRound}): a sealed answer copied from an earlier asking
 * (a quorum asked again, an expired request asked again, an earlier attempt) answers none later.
 */
export async function sealedBy(sealer: (() => Promise<Sealer>) | undefined, threadId: string, waiting?: unknown): Promise<(event: AuditEvent) => boolean> {
  if (!sealer) return () => false;
  const seal = await sealer();
  const asked = waiting === undefined ? undefined : askingWaitedOn(waiting);
  return (event) => {
    if (!answerIsSealed(seal, threadId, event)) return false;
    if (asked === undefined) return true;
    return event.type === "escalation.decided" ? event.data.digest === asked.caseDigest : asked.rounds.get(String(event.data.toolCallId)) === event.data.round;
  };
}

/** The asking the thread's pending request is at: each call's of an approval or recovery request, by call id, and the pending escalation's case (its digest). */
function askingWaitedOn(source: unknown): { rounds: Map<string, string>; caseDigest: string | undefined } {
  const rounds = new Map<string, string>();
  for (const q of pendingApproval(source)?.requests ?? []) rounds.set(q.toolCallId, requestRound(q));
  for (const q of pendingRecovery(source)?.requests ?? []) rounds.set(q.toolCallId, requestRound({ attempt: q.attempt }));
  return { rounds, caseDigest: pendingEscalation(source)?.digest };
}

/** The seals of a guarded graph's recorded answers, when it has them. */
export const answerSealerOf = (graph: unknown): (() => Promise<Sealer>) | undefined =>
  typeof graph === "object" && graph !== null ? (graph as { [ANSWER_SEALER]?: () => Promise<Sealer> })[ANSWER_SEALER] : undefined;

/** Events that answer a human task, by the request they answer. */
const ANSWERS: Record<string, string> = {
  "approval.requested": "approval.decided",
  "tool.recovery_requested": "tool.recovery_decided",
  "escalation.requested": "escalation.decided",
};

/**
 * The answers a human recorded since the last request (an empty list when the last word is a
 * request or a refusal): only those eart sealed (`sealed`, {@link sealedBy}); an answer event
 * without a seal that holds (appended by someone who can write the audit store) is not one.
 */
export function recordedAnswers(events: readonly AuditEvent[], sealed: (event: AuditEvent) => boolean): AuditEvent[] {
  const answers: AuditEvent[] = [];
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i]!;
    if (Object.values(ANSWERS).includes(e.type)) {
      if (sealed(e)) answers.unshift(e);
    }
    // A refusal ends the answers, except one of a later answer to what was answered already.
    else if (e.type in ANSWERS || (REFUSAL_EVENT_TYPES.has(e.type) && e.data.code !== "approval_already_answered")) break;
  }
  return answers;
}

/**
 * The approval request the thread's stored interrupt asks, when it asks exactly one: what a
 * positional (HITL) answer is read against. Undefined otherwise (no approval pending, or two that
 * differ), and a positional answer then matches nothing.
 */
function approvalAskedIn(writes: readonly [string, string, unknown][]): ApprovalRequest | undefined {
  const asked = writes
    .filter(([, channel]) => channel === "__interrupt__")
    .flatMap(([, , value]) => (Array.isArray(value) ? value : [value]))
    .flatMap((i) => {
      const parsed = ApprovalRequestSchema.safeParse((i as { value?: unknown } | null)?.value);
      return parsed.success ? [parsed.data] : [];
    });
  const distinct = new Set(asked.map((r) => r.requests.map((q) => `${q.toolCallId}|${q.digest}`).join(",")));
  return distinct.size === 1 ? asked[0] : undefined;
}

/**
 * The answer LangGraph stored for the thread (the resume value its re-run would read), when it is
 * the one eart recorded: every decision of it, and no other, by call, type and digest (or the
 * reviewer's action, message and case). A positional (LangChain HITL) answer is read by position
 * against the approval request the thread waits on, as the gate reads it. Anything else (a later
 * answer whose refusal was never recorded, a store edited behind eart's back) must not run as the
 * recorded human's.
 */
export async function recordedStoredAnswer(graph: { checkpointer?: unknown }, threadId: string, answers: readonly AuditEvent[]): Promise<{ answer: unknown } | undefined> {
  const saver = graph.checkpointer as { getTuple?: (config: RunnableConfig) => Promise<{ pendingWrites?: [string, string, unknown][] } | undefined> } | undefined;
  const writes = (await saver?.getTuple?.({ configurable: { thread_id: threadId } }))?.pendingWrites ?? [];
  // The newest answer LangGraph may hand the step: the thread's plain resume value, and the last of
  // each task's list of resume values. Every one of them must be the recorded answer.
  const newest = heldAnswers(writes);
  const asked = approvalAskedIn(writes);
  /** The stored answer in the keyed form, as the gate reads it; undefined when it cannot be read so. */
  const keyed = (stored: unknown): unknown => {
    if (!asked) return stored;
    try {
      return keyedApprovalAnswer(stored, asked);
    } catch (error) {
      if (error instanceof ApprovalError) return undefined;
      throw error;
    }
  };
  type Stored = { decisions?: { toolCallId?: unknown; type?: unknown; digest?: unknown }[]; action?: unknown; message?: unknown; digest?: unknown };
  const isRecorded = (stored: Stored | undefined): boolean => {
    if (!stored || typeof stored !== "object") return false;
    if (answers.every((e) => e.type === "escalation.decided")) {
      const [review] = answers;
      return answers.length === 1 && stored.action === review!.data.action && stored.message === review!.data.message && stored.digest === review!.data.digest;
    }
    const recorded = answers.map((e) => `${String(e.data.toolCallId)}|${String(e.data.decision)}|${String(e.data.originalDigest ?? e.data.digest)}`).sort();
    const given = (Array.isArray(stored.decisions) ? stored.decisions : []).map((d) => `${String(d.toolCallId)}|${String(d.type)}|${String(d.digest)}`).sort();
    return recorded.length > 0 && recorded.join("\n") === given.join("\n");
  };
  return newest.length > 0 && newest.every((stored) => isRecorded(keyed(stored) as Stored | undefined)) ? { answer: newest.at(-1) } : undefined;
}

