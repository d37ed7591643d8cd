import { Command } from "@langchain/langgraph";
import type { RunnableConfig } from "@langchain/core/runnables";
import { pendingApproval, type ApprovalRequest } from "../src/human-tasks/approval.js";
import { pendingRecovery, type RecoveryRequest } from "../src/human-tasks/recovery.js";
import { threadLockFor } from "../src/stores/for-checkpointer.js";
import { withThreadFence, type ThreadLock } from "../src/threads/lock.js";
import { assertResumable, THREAD_LOCK } from "./resume-guard.js";

/** The part of a compiled graph the helpers need. */
interface RunnableGraph {
  invoke(input: unknown, config?: RunnableConfig): Promise<unknown>;
  getState(config: RunnableConfig): Promise<{ createdAt?: string; values: unknown; tasks: readonly { interrupts?: readonly unknown[] }[] }>;
  checkpointer?: unknown;
}

/** What a run or resume left: the state values, and what now waits for a human, if anything. */
export interface ThreadRun<S = Record<string, unknown>> {
  values: S;
  approval: ApprovalRequest | undefined;
  recovery: RecoveryRequest | undefined;
}

/** Options of {@link runThread} and {@link resumeThread}. */
export interface ThreadRunOptions {
  /** The lock to hold; defaults to `threadLockFor(graph.checkpointer)`. Unused when the graph takes its own (the prebuilt agent does). */
  lock?: ThreadLock;
}

/** Whether the graph takes the thread lock itself, and checks resumes under it (`guardResumes` with a lock). */
const locksItself = (graph: RunnableGraph): boolean => (graph as { [THREAD_LOCK]?: ThreadLock })[THREAD_LOCK] !== undefined;

/**
 * Runs `run` with the config it is to use, holding the thread's lock. Losing the lock while held
 * (its connection dropped, its row taken over) aborts the run through its signal, as under the
 * guard: it stops at its next step instead of acting beside the run that holds the thread now;
 * until it hears of it, what it writes in the lock's database is fenced (`ThreadFence`).
 */
async function locked<T>(graph: RunnableGraph, config: RunnableConfig, options: ThreadRunOptions, run: (config: RunnableConfig) => Promise<T>): Promise<T> {
  if (locksItself(graph)) return run(config);
  const lock = options.lock ?? threadLockFor(graph.checkpointer);
  const release = await lock.acquire(String(config.configurable?.thread_id));
  try {
    const signal = release.lost ? (config.signal ? AbortSignal.any([config.signal, release.lost]) : release.lost) : config.signal;
    return await withThreadFence(release.fence, () => run(signal ? { ...config, signal } : config));
  } finally {
    await release();
  }
}

async function outcome<S>(graph: RunnableGraph, config: RunnableConfig): Promise<ThreadRun<S>> {
  const snapshot = await graph.getState(config);
  return { values: snapshot.values as S, approval: pendingApproval(snapshot), recovery: pendingRecovery(snapshot) };
}

/**
 * Runs a graph on a thread while holding the thread's lock: a second concurrent run or resume of
 * the same thread, in this process or another, gets a `ThreadBusyError` and runs nothing.
 * @example
 * ```ts
 * const run = await runThread(agent, { messages: [new HumanMessage("Refund order 1042")] }, config);
 * if (run.approval) notify(run.approval.requests);
 * ```
 */
export async function runThread<S = Record<string, unknown>>(graph: RunnableGraph, input: unknown, config: RunnableConfig, options: ThreadRunOptions = {}): Promise<ThreadRun<S>> {
  return locked(graph, config, options, async (held) => {
    await graph.invoke(input, held);
    return outcome<S>(graph, config);
  });
}

/**
 * Resumes a paused thread with the answer to what it waits for (an approval or a recovery
 * decision) while holding the thread's lock. Refuses unknown and finished threads with a typed
 * error; a second concurrent resume gets a `ThreadBusyError` and never runs a tool.
 * @example
 * ```ts
 * await resumeThread(agent, { decisions: [{ toolCallId, type: "approve", digest }] }, { configurable: { thread_id: "t1", user_id: "sam" } });
 * ```
 */
export async function resumeThread<S = Record<string, unknown>>(graph: RunnableGraph, resume: unknown, config: RunnableConfig, options: ThreadRunOptions = {}): Promise<ThreadRun<S>> {
  return locked(graph, config, options, async (held) => {
    // Checked under the lock: by the graph itself when it takes it, else here.
    if (!locksItself(graph)) await assertResumable(graph, config);
    await graph.invoke(new Command({ resume }), held);
    return outcome<S>(graph, config);
  });
}
