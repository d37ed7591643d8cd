import { isCommand, type BaseCheckpointSaver } from "@langchain/langgraph";
import type { RunnableConfig } from "@langchain/core/runnables";
import { IterableReadableStream } from "@langchain/core/utils/stream";
import { ApprovalError, EartConfigError, type ThreadLock, isApprovalRequest, isEscalationRequest, isRecoveryRequest, pendingApproval, ThreadStateError, type DecisionRecord } from "../src/index.js";

/** The part of a state snapshot the guard reads. */
interface Snapshot {
  createdAt?: string;
  values: unknown;
  tasks: readonly { interrupts?: readonly unknown[] }[];
}

/** The part of a compiled graph the resume guard needs. */
interface ResumableGraph {
  getState(config: RunnableConfig): Promise<Snapshot>;
  stream(input: unknown, options?: unknown): Promise<unknown>;
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
  const snapshot = await graph.getState(config!);
  if (!snapshot.createdAt) {
    throw new ThreadStateError("thread_unknown", String(threadId), `Thread "${threadId}" does not exist; there is nothing to resume`);
  }
  if (!snapshot.tasks.some((t) => (t.interrupts?.length ?? 0) > 0)) {
    throw new ThreadStateError("thread_not_paused", String(threadId), `Thread "${threadId}" is not paused; there is nothing to resume`);
  }
  return snapshot;
}

/** Marks a graph whose runs take a thread lock (see {@link guardResumes}). */
export const THREAD_LOCK = Symbol.for("eart.threadLock");

/**
 * Makes a compiled graph refuse, with a typed error and before anything is written, resumes
 * (`new Command({ resume })`) on unknown or finished threads, and new input on a thread that waits
 * for a human; through `invoke` and `stream`. With a `lock`, every run of a thread holds the
 * thread's lock from before these checks until its stream ends, so a second concurrent run or
 * resume of the same thread gets a `ThreadBusyError` and runs nothing. Returns the same graph.
 * @example
 * ```ts
 * const app = guardResumes(new StateGraph(State)....compile({ checkpointer }), { lock: threadLockFor(checkpointer) });
 * ```
 */
export function guardResumes<G extends ResumableGraph & { checkpointer?: BaseCheckpointSaver | boolean }>(graph: G, options: { lock?: ThreadLock } = {}): G {
  const stream = graph.stream.bind(graph);
  const { lock } = options;
  async function guarded(input: unknown, options: RunnableConfig): Promise<unknown> {
    if (isCommand(input) && input.resume !== undefined) {
      const before = await assertResumable(graph, options);
      const expiring = pendingApproval(before)?.requests.filter((r) => r.expiresAt !== undefined) ?? [];
      const inner = await stream(input, options);
      if (expiring.length === 0) return inner;
      // The gate answers lapsed calls itself (the thread moves on); the caller learns it here.
      return IterableReadableStream.fromAsyncGenerator(
        (async function* () {
          for await (const chunk of inner as AsyncIterable<unknown>) yield chunk;
          await assertAnsweredInTime(graph, options!, before, expiring.map((r) => r.toolCallId));
        })(),
      );
    }
    if (input !== null && input !== undefined && !isCommand(input)) await assertNotAwaitingApproval(graph, options);
    return stream(input, options);
  }
  graph.stream = (async (input: unknown, given?: RunnableConfig & { durability?: string }) => {
    // Each step's checkpoint is written before the next step starts: with LangGraph's default
    // ("async") a tool could act while the checkpoint of its approval is still being written, and
    // a crash then would lose the approval although its effect happened.
    const options = { durability: "sync", ...given } as RunnableConfig;
    const threadId = options.configurable?.thread_id;
    if (!lock || (typeof threadId !== "string" && typeof threadId !== "number")) return guarded(input, options);
    const release = await lock.acquire(String(threadId));
    let inner: unknown;
    try {
      // Losing the lock mid-run (a dropped database connection) aborts the run.
      const signal = release.lost ? (options.signal ? AbortSignal.any([options.signal, release.lost]) : release.lost) : options.signal;
      inner = await guarded(input, signal ? { ...options, signal } : options);
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
  if (lock) Object.defineProperty(graph, THREAD_LOCK, { value: lock });
  return graph;
}

/** Throws `approval_expired` when the run just made expired calls of the request it answered. */
async function assertAnsweredInTime(graph: Pick<ResumableGraph, "getState">, config: RunnableConfig, before: Snapshot, toolCallIds: string[]): Promise<void> {
  const expiredAt = (snapshot: Snapshot) =>
    new Map(((snapshot.values as { decisions?: DecisionRecord[] }).decisions ?? []).map((d) => [d.toolCallId, d.expiredAt]));
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
 * Refuses new input on a thread that waits for an approval: LangGraph would start a new run and
 * drop the pending request, leaving the proposed calls unanswered. Throws
 * {@link ThreadStateError} (`thread_awaiting_approval`) before anything is written.
 * @example
 * ```ts
 * await assertNotAwaitingApproval(app, { configurable: { thread_id: "t1" } });
 * ```
 */
export async function assertNotAwaitingApproval(graph: Pick<ResumableGraph, "getState">, config: RunnableConfig | undefined): Promise<void> {
  const threadId = config?.configurable?.thread_id;
  if (typeof threadId !== "string" && typeof threadId !== "number") return;
  const snapshot = await graph.getState(config!);
  if (!snapshot.createdAt) return;
  if (snapshot.tasks.some((t) => (t.interrupts ?? []).some((i) => {
      const value = (i as { value?: unknown }).value;
      return isApprovalRequest(value) || isRecoveryRequest(value) || isEscalationRequest(value);
    }))) {
    throw new ThreadStateError(
      "thread_awaiting_approval",
      String(threadId),
      `Thread "${threadId}" waits for a human (an approval, a recovery decision or a review); answer it before sending new input`,
    );
  }
}
