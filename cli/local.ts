/**
 * `eart` against an app module (`--app`, `defineApp` in `eart/graphs`): it reads the app's audit
 * log and graphs, and resumes them in this process through `resumeThread`, with exactly the same
 * validation (and the same thread lock) as any resume. The answering human is `--as` (a trusted
 * in-process app sets `user_id`), or the signer of an approval token (`--key`).
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { EartConfigError, isEartError, signApprovalToken, ThreadStateError, type ApprovalDecision } from "eart";
import type { AppGraph, EartApp } from "eart/graphs";
import { printable, UsageError, type Output } from "./output.js";
import { afterRun, assertTaskRef, inboxItems, interruptValuesOfState, printAnswered, taskOfKind, tasksIn, type AnswerPlan, type InboxItem, type TaskKind } from "./tasks.js";

/** Opens the app a module registers (`--app <module>` or `EART_APP`). */
export async function loadApp(modulePath: string | undefined): Promise<EartApp> {
  const path = modulePath ?? process.env.EART_APP;
  if (!path) throw new UsageError("say which app to open: --app <module> or EART_APP (a module that default-exports defineApp(...)); or --url <server> for a LangGraph server, or --audit <store> for the audit log alone");
  const mod = (await import(pathToFileURL(resolve(path)).href)) as { default?: unknown };
  const exported = mod.default;
  const app = (typeof exported === "function" ? await (exported as () => unknown)() : exported) as EartApp | undefined;
  if (!app || typeof app.graphFor !== "function") throw new UsageError(`${path} must default-export defineApp(...) or a function returning it`);
  return app;
}

/**
 * What waits for a human across the app's threads, in thread order. A thread of an agent the app
 * does not register fails the listing (`config_invalid`, naming the agents and threads): an inbox
 * that skipped it would hide a request nobody else lists.
 *
 * With an audit log that keeps an inbox index (`pending`: the memory, SQLite and PostgreSQL
 * stores), only the threads the index lists are read: their graph state says exactly what waits,
 * as it does without the index; the index only says where to look. With `role`, threads whose
 * every request is recorded for other roles are not read either, nor are unfinished threads looked
 * for (they wait for no role). Otherwise (a JSONL log) every thread of the log is read.
 * Unfinished threads (`unfinishedThreads`) are still found by reading every thread's state.
 */
export async function inbox(app: EartApp, options: { role?: string } = {}): Promise<InboxItem[]> {
  const { unfinishedThreads } = await import("eart/graphs");
  const { role } = options;
  const indexed = typeof app.auditLog.pending === "function" ? await app.auditLog.pending() : undefined;
  const items: InboxItem[] = [];
  const unreadable: { threadId: string; reason: string }[] = [];
  const unfinished = new Map(indexed && role !== undefined ? [] : (await unfinishedThreads(app)).map((u) => [u.threadId, u]));
  /** When each indexed thread's newest open approval was requested (what the inbox shows as its `since`). */
  const requested = new Map<string, string>();
  let threadIds: string[];
  if (indexed) {
    const listed = new Set<string>(unfinished.keys());
    for (const task of indexed) {
      if (role !== undefined && task.roles !== null && !task.roles.includes(role)) continue;
      listed.add(task.threadId);
      if (task.kind === "approval" && task.at > (requested.get(task.threadId) ?? "")) requested.set(task.threadId, task.at);
    }
    threadIds = [...listed].sort();
  } else {
    threadIds = await app.auditLog.listThreads();
  }
  for (const threadId of threadIds) {
    const stopped = unfinished.get(threadId);
    if (stopped) {
      // An answer already recorded is continued, never asked for again.
      const what = stopped.kind === "answered" ? `answered by ${stopped.answeredBy ?? "?"}, not yet acted on: eart continue` : `stopped before ${stopped.next.join(", ")}: eart continue`;
      items.push({ kind: "unfinished", threadId, ref: null, toolCallId: null, what, roles: [], requestedBy: `${stopped.agentId ?? "?"} for ${stopped.userId ?? "?"}`, since: stopped.since ?? null, expiresAt: null, refusal: null });
      continue;
    }
    let graph: AppGraph;
    try {
      graph = await app.graphFor(threadId);
    } catch (error) {
      if (!isEartError(error, "config_invalid")) throw error;
      unreadable.push({ threadId, reason: error.message.replace(/^Invalid option "graphs": /, "") });
      continue;
    }
    const state = await graph.getState({ configurable: { thread_id: threadId } });
    const tasks = tasksIn(interruptValuesOfState(state));
    let requestedAt = requested.get(threadId) ?? null;
    if (requestedAt === null && tasks.some((t) => t.kind === "approval")) {
      // Not in the index (no index, or it does not agree with the state): the events say.
      requestedAt = [...(await app.auditLog.read(threadId))].reverse().find((e) => e.type === "approval.requested")?.at ?? null;
    }
    items.push(...inboxItems(threadId, tasks, requestedAt));
  }
  if (unreadable.length > 0) {
    throw new EartConfigError(
      "graphs",
      `pending cannot read ${unreadable.length} thread(s) of the audit log: ${unreadable.map((u) => u.reason).join("; ")}. Register their agents' graphs in the app (defineApp({ graphs })), or open the app that runs them`,
      { threads: unreadable },
    );
  }
  return items;
}

/**
 * Answers a thread's waiting task as `as` (the resume's `user_id`), or with the approval tokens
 * `sign` puts on each decision (then the tokens authenticate the approver). Reads what waits
 * first: it must be what the human listed (`plan.ref`), or nothing is sent (`task_changed`); the
 * answer carries the digests of those calls, so one changed in between is refused by the graph.
 */
export async function answerLocally<K extends TaskKind>(
  app: EartApp,
  threadId: string,
  plan: AnswerPlan<K>,
  as: string,
  out: Output,
  sign?: (decision: ApprovalDecision) => string,
): Promise<number> {
  const { resumeThread } = await import("eart/graphs");
  const graph = await app.graphFor(threadId);
  const config = { configurable: { thread_id: threadId } };
  const state = await graph.getState(config);
  if (!state.createdAt) throw new ThreadStateError("thread_unknown", threadId, `Thread "${threadId}" does not exist; there is nothing to answer`);
  const task = taskOfKind(threadId, tasksIn(interruptValuesOfState(state)), plan.kind);
  assertTaskRef(threadId, task, plan.ref);
  const answer = plan.build(task);
  if (sign) for (const d of (answer as { decisions: ApprovalDecision[] }).decisions) d.token = sign(d);
  // Without a key the command line is a trusted in-process app: the human it runs as is the resume's principal.
  const run = await resumeThread(graph, answer, { configurable: { thread_id: threadId, ...(sign ? {} : { user_id: as }) } });
  const after = afterRun(run.values, tasksIn(interruptValuesOfState(await graph.getState(config))));
  printAnswered(out, plan.report(answer), as, after);
  return 0;
}

/** Signs approve and reject decisions with the approver's own key (`--key <pem> --kid <id>`); the graph verifies them against the approver's public key. */
export function tokenSigner(threadId: string, approver: string, keyFile: string, kid: string | undefined): (decision: ApprovalDecision) => string {
  if (!kid) throw new UsageError("--key needs --kid <key id>: which of the graph's approval keys verifies it");
  const key = readFileSync(keyFile, "utf8");
  return (d) => {
    if (d.type !== "approve" && d.type !== "reject") throw new UsageError(`--key signs approve and reject only; an ${d.type} is made as a principal (--as)`);
    // The decision's message (--message) is signed with it: the graph refuses one a token does not sign.
    return signApprovalToken({ kid, threadId, toolCallId: d.toolCallId, digest: d.digest, approver, decision: d.type, ...(d.message !== undefined ? { message: d.message } : {}), expiresInMs: 5 * 60_000 }, key);
  };
}

/** `continue <thread>`: carries on a run that stopped before it finished. */
export async function continueLocally(app: EartApp, threadId: string, out: Output): Promise<number> {
  const { continueThread } = await import("eart/graphs");
  const run = await continueThread(app, threadId);
  const waiting = run.approval ? "approval" : run.recovery ? "recovery" : null;
  out.print(() => `${printable(threadId)}: ${waiting ? `continued, now waits for ${waiting}` : "continued to its end"}`, { threadId, waiting });
  return 0;
}
