import { Command } from "@langchain/langgraph";
import type { RunnableConfig } from "@langchain/core/runnables";
import { z } from "zod";
import { AuditLogOption, type AuditEvent, type AuditLog } from "../src/audit/log.js";
import { EartConfigError, StateTamperError, ThreadBusyError, ThreadStateError } from "../src/errors.js";
import { parseOptions } from "../src/internal/options.js";
import { type ReleaseThreadLock, type ThreadLock } from "../src/threads/lock.js";
import { answerSealerOf, recordedAnswers, recordedStoredAnswer, sealedBy, THREAD_LOCK } from "./resume-guard.js";
import { runThread, type ThreadRun } from "./run-thread.js";

/** The part of a compiled graph an app exposes: what `resumeThread` and `getState` need. */
export interface AppGraph {
  invoke(input: unknown, config?: RunnableConfig): Promise<unknown>;
  getState(config: RunnableConfig): Promise<{ createdAt?: string; values: unknown; tasks: readonly { interrupts?: readonly unknown[] }[] }>;
  checkpointer?: unknown;
}

const AppSchema = z
  .object({
    auditLog: AuditLogOption,
    /** The graphs by agent id (the `agent_id` the threads were started with). */
    graphs: z.record(
      z.string().min(1),
      z.custom<AppGraph>((v) => typeof (v as AppGraph)?.invoke === "function" && typeof (v as AppGraph)?.getState === "function", "must be a compiled graph"),
    ),
    /** Closes what the app opened (databases, pools). */
    close: z.custom<() => unknown>((v) => typeof v === "function", "must be a function").optional(),
  })
  .strict()
  .refine((a) => Object.keys(a.graphs).length > 0, { path: ["graphs"], message: "register at least one graph" });

/** What the `eart` command line (and other tools) open: the audit log and the graphs that write it. */
export interface EartApp {
  auditLog: AuditLog;
  graphs: Record<string, AppGraph>;
  close?: () => unknown;
  /** The graph that runs a thread: the one of the agent that started it (from the audit log). */
  graphFor(threadId: string): Promise<AppGraph>;
}

/** The agent a thread runs, from its first `identity.bound` or `run.started` event. */
export function agentOfThread(events: readonly AuditEvent[]): string | undefined {
  for (const e of events) {
    if ((e.type === "identity.bound" || e.type === "run.started") && typeof e.data.agentId === "string") return e.data.agentId;
  }
  return undefined;
}

/**
 * Registers an app's graphs and the audit log they write, so that the `eart` command line can list
 * what waits for a human, show threads and resume them through the same validation as any resume.
 * A module passed to `eart --app <module>` (or `EART_APP`) default-exports the app, or a function
 * returning it.
 * @example
 * ```ts
 * export default async () => {
 *   const { agent, auditLog, close } = await openRefundAgent(".eart/refund-demo.sqlite");
 *   return defineApp({ auditLog, graphs: { "support-agent": agent }, close });
 * };
 * ```
 */
export function defineApp(app: { auditLog: AuditLog; graphs: Record<string, AppGraph>; close?: () => unknown }): EartApp {
  const parsed = parseOptions(AppSchema, app);
  const names = Object.keys(parsed.graphs);
  return {
    ...parsed,
    async graphFor(threadId: string): Promise<AppGraph> {
      const agentId = agentOfThread(await parsed.auditLog.read(threadId));
      const graph = agentId !== undefined ? parsed.graphs[agentId] : names.length === 1 ? parsed.graphs[names[0]!] : undefined;
      if (!graph) {
        throw new EartConfigError("graphs", agentId ? `no graph is registered for agent "${agentId}" (thread "${threadId}")` : `thread "${threadId}" has no recorded agent, and the app has several graphs`);
      }
      return graph;
    },
  };
}

/**
 * A thread whose last run stopped before it finished (a crash, a lost connection, a store that
 * failed mid-step), and how to continue it:
 * - `interrupted`: a step was under way and nothing waits for a human;
 * - `answered`: a human's answer was recorded (`approval.decided`, `tool.recovery_decided`,
 *   `escalation.decided`) but the run stopped before its step was saved, so the thread still shows
 *   the request. The stored answer is acted on by continuing, not by asking again.
 */
export interface UnfinishedThread {
  threadId: string;
  kind: "interrupted" | "answered";
  /** The steps LangGraph would run next. */
  next: string[];
  /** Who the run acts for, and, for `answered`, who answered: from the audit log. */
  agentId: string | undefined;
  userId: string | undefined;
  answeredBy: string | undefined;
  /** When the last event of the thread was recorded. */
  since: string | undefined;
}

/** What a thread's state says about its next steps and interrupts. */
async function stepsOf(graph: AppGraph, threadId: string): Promise<{ next: string[]; waiting: boolean; bound: boolean; state: unknown } | undefined> {
  const state = (await graph.getState({ configurable: { thread_id: threadId } })) as Awaited<ReturnType<AppGraph["getState"]>> & { next?: readonly string[] };
  if (!state.createdAt) return undefined;
  // A step that failed in this process is a task with its error, and `next` is then empty.
  const next = state.next && state.next.length > 0 ? [...state.next] : state.tasks.map((t) => (t as { name?: string }).name ?? "?");
  return {
    next,
    waiting: state.tasks.some((t) => (t.interrupts?.length ?? 0) > 0),
    bound: (state.values as { identity?: unknown } | undefined)?.identity !== undefined && (state.values as { identity?: unknown }).identity !== null,
    state,
  };
}

/** Whether a run holds the thread now, by the graph's own thread lock (a graph without one cannot tell: false). */
async function running(graph: AppGraph, threadId: string): Promise<boolean> {
  const lock = (graph as { [THREAD_LOCK]?: ThreadLock })[THREAD_LOCK];
  if (!lock) return false;
  let release: ReleaseThreadLock;
  try {
    release = await lock.acquire(threadId);
  } catch (error) {
    if (error instanceof ThreadBusyError) return true;
    throw error;
  }
  await release();
  return false;
}

/** Who gave recorded answers: the one human all of them name. */
function answererOf(answers: readonly AuditEvent[]): string | undefined {
  const by = new Set(answers.map((e) => e.data.approverId ?? e.data.resolverId ?? e.data.reviewerId));
  const [only] = by;
  return by.size === 1 && typeof only === "string" ? only : undefined;
}

/** The agent and the user a thread was started for, from its audit log. */
function startedFor(events: readonly AuditEvent[]): { agentId: string | undefined; userId: string | undefined } {
  const first = events.find((e) => (e.type === "identity.bound" || e.type === "run.started") && typeof e.data.agentId === "string");
  return { agentId: first?.data.agentId as string | undefined, userId: typeof first?.data.userId === "string" ? first.data.userId : undefined };
}

/** One thread looked at once: whether (and how) it is unfinished, whether its identity is bound, and its events. */
async function inspect(app: EartApp, threadId: string): Promise<{ graph: AppGraph; unfinished?: UnfinishedThread; bound: boolean; answers: AuditEvent[]; running?: true } | undefined> {
  let graph: AppGraph;
  try {
    graph = await app.graphFor(threadId);
  } catch {
    return undefined; // a thread of an agent this app does not run
  }
  const steps = await stepsOf(graph, threadId);
  if (!steps || steps.next.length === 0) return { graph, bound: steps?.bound ?? false, answers: [] };
  // A step under way right now (its run holds the thread) has not stopped: it is not unfinished.
  if (await running(graph, threadId)) return { graph, bound: steps.bound, answers: [], running: true };
  const events = await app.auditLog.read(threadId);
  // Only answers eart sealed, by the graph's key, for the asking the thread waits on: an answer
  // event appended to the store by anyone else, or copied from an earlier asking, names no one the
  // thread is continued as.
  const answers = steps.waiting ? recordedAnswers(events, await sealedBy(answerSealerOf(graph), threadId, steps.state)) : [];
  const answeredBy = answererOf(answers);
  // A thread waiting for a human, with no answer on record, waits as it should.
  if (steps.waiting && answeredBy === undefined) return { graph, bound: steps.bound, answers };
  return {
    graph,
    bound: steps.bound,
    answers,
    unfinished: { threadId, kind: steps.waiting ? "answered" : "interrupted", next: steps.next, ...startedFor(events), answeredBy, since: events.at(-1)?.at },
  };
}

/**
 * The threads of an app whose last run stopped before it finished (see {@link UnfinishedThread}).
 * Reads every thread's audit log and state: an operator's tool, not a hot path.
 * @example
 * ```ts
 * for (const t of await unfinishedThreads(app)) await continueThread(app, t.threadId);
 * ```
 */
export async function unfinishedThreads(app: EartApp): Promise<UnfinishedThread[]> {
  const out: UnfinishedThread[] = [];
  for (const threadId of await app.auditLog.listThreads()) {
    const seen = await inspect(app, threadId);
    if (seen?.unfinished) out.push(seen.unfinished);
  }
  return out;
}

/**
 * Continues a thread {@link unfinishedThreads} lists, from its last saved step, with what eart
 * recorded: the thread's bound identity (or, when it stopped before binding was saved, the agent
 * and user its audit log started it for), and for a recorded answer, the human who gave it, so
 * the stored answer is checked again as theirs and acted on instead of asked again. Refuses a
 * thread that is not unfinished (`ThreadStateError`), and a stored answer that is not the one eart
 * recorded (`StateTamperError` `state_tamper_detected`).
 * @example
 * ```ts
 * const run = await continueThread(app, "refund-1042");
 * ```
 */
export async function continueThread(app: EartApp, threadId: string): Promise<ThreadRun> {
  const seen = await inspect(app, threadId);
  const unfinished = seen?.unfinished;
  if (seen?.running) throw new ThreadBusyError(threadId, "a run of the thread under way now");
  if (!seen || !unfinished) throw new ThreadStateError("thread_not_paused", threadId, `Thread "${threadId}" has no unfinished step to continue`);
  const configurable: Record<string, unknown> = { thread_id: threadId };
  if (unfinished.kind === "answered") {
    const recorded = await recordedStoredAnswer(seen.graph, threadId, seen.answers);
    if (!recorded) {
      throw new StateTamperError("state_tamper_detected", `The answer stored for thread "${threadId}" is not the one eart recorded from ${unfinished.answeredBy}: it is not continued as theirs`, { threadId });
    }
    // Given again as the recorded human's answer (a thread waiting for a human is never continued
    // with null input: that would read whatever answer is newest, a refused one included).
    return runThread(seen.graph, new Command({ resume: recorded.answer }), { configurable: { ...configurable, user_id: unfinished.answeredBy } });
  } else if (!seen.bound) {
    if (unfinished.agentId) configurable.agent_id = unfinished.agentId;
    if (unfinished.userId) configurable.user_id = unfinished.userId;
  }
  return runThread(seen.graph, null, { configurable });
}
