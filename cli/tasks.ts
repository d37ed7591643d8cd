/**
 * What waits for a human on a thread, read from its interrupt values with eart's own readers
 * (`pendingApproval`, `pendingRecovery`, `pendingEscalation`), the answers the command line
 * builds for them, and how it prints both: the same for a local app and a LangGraph server.
 */
import {
  ApprovalError,
  pendingApproval,
  pendingEscalation,
  pendingRecovery,
  type ApprovalDecision,
  type ApprovalRequest,
  type EscalationRequest,
  type EscalationResponse,
  type RecoveryDecision,
  type RecoveryRequest,
  ThreadStateError,
} from "eart";
import { createHash } from "node:crypto";
import { CliError, dim, green, printable, short, table, UsageError, yellow, type Cell, type Output } from "./output.js";

/** Why the previous answer to a task was refused, when its interrupt value says so. */
export interface Refusal {
  code: string;
  message: string;
}

/** One human task waiting on a thread. */
export type WaitingTask =
  | { kind: "approval"; request: ApprovalRequest; refusal: Refusal | null }
  | { kind: "recovery"; request: RecoveryRequest; refusal: Refusal | null }
  | { kind: "review"; request: EscalationRequest; refusal: Refusal | null };

export type TaskKind = WaitingTask["kind"];

/** The refusal an interrupt value carries (`refusal: { code, message }`), if any. */
export function refusalOf(value: unknown): Refusal | null {
  const r = (value as { refusal?: unknown } | null | undefined)?.refusal as { code?: unknown; message?: unknown } | null | undefined;
  return r && typeof r.code === "string" && typeof r.message === "string" ? { code: r.code, message: r.message } : null;
}

/** The eart human tasks among interrupt values; values of other interrupts are not eart's and are left out. */
export function tasksIn(values: readonly unknown[]): WaitingTask[] {
  const tasks: WaitingTask[] = [];
  for (const value of values) {
    // eart's readers take what `invoke` returns: one value, as `__interrupt__`.
    const source = { __interrupt__: [{ value }] };
    const refusal = refusalOf(value);
    const approval = pendingApproval(source);
    if (approval) {
      tasks.push({ kind: "approval", request: approval, refusal });
      continue;
    }
    const recovery = pendingRecovery(source);
    if (recovery) {
      tasks.push({ kind: "recovery", request: recovery, refusal });
      continue;
    }
    const review = pendingEscalation(source);
    if (review) tasks.push({ kind: "review", request: review, refusal });
  }
  return tasks;
}

/** The interrupt values of a local graph's state (`tasks[].interrupts[].value`). */
export function interruptValuesOfState(state: { tasks: readonly { interrupts?: readonly unknown[] }[] }): unknown[] {
  return state.tasks.flatMap((t) => (t.interrupts ?? []).map((i) => (i as { value?: unknown } | null)?.value));
}

/** JSON with every object's keys in order: the same text for the same value, however it was built or sent. */
function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => stableJson(v === undefined ? null : v)).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/**
 * The reference of a waiting task: a short hash of the whole request a human is shown (its calls,
 * their arguments and digests, the approvals so far, what it asks, until when). An answer names it
 * (`--ref`), and is refused when what waits is no longer exactly that: a colleague's edit or
 * approval, a call failed again, another request on the thread.
 */
export function taskRef(task: WaitingTask): string {
  const { refusal: _refusal, ...request } = task.request as WaitingTask["request"] & { refusal?: unknown };
  return createHash("sha256").update(stableJson([task.kind, request])).digest("hex").slice(0, 12);
}

/** What `--ref` takes: the 12 hexadecimal characters `pending` lists. */
export const REF_FORMAT = /^[0-9a-f]{12}$/;

/**
 * Refuses an answer whose `--ref` is not the reference of what waits now (`task_changed`): the
 * human decided on something else. Nothing is sent.
 */
export function assertTaskRef(threadId: string, task: WaitingTask, ref: string): void {
  const now = taskRef(task);
  if (now === ref) return;
  throw new CliError(
    "task_changed",
    `What waits on thread "${threadId}" is not what ref ${ref} was listed for: it changed since (an edit or an approval by someone else, a call that failed again, another request). Nothing was sent: list it again (eart pending) and answer what it shows now`,
    { threadId, ref },
  );
}

/** One item waiting for a human, as the inbox shows it. */
export interface InboxItem {
  /** `unfinished`: a run stopped before it finished; `eart continue <thread>` carries it on. */
  kind: "approval" | "recovery" | "review" | "unfinished";
  threadId: string;
  /** The reference an answer to the thread's waiting task names (`--ref`); null for `unfinished`. */
  ref: string | null;
  toolCallId: string | null;
  /** The call as the request shows it: name and arguments, whole up to {@link WHAT_MAX} characters. */
  what: string;
  /** The call's arguments, what the tool reads of them where that differs, and its digest (approvals and recoveries). */
  args?: Record<string, unknown>;
  parsedArgs?: Record<string, unknown>;
  digest?: string;
  /** The effect-ledger attempt a recovery is about. */
  attempt?: number;
  roles: string[];
  requestedBy: string;
  since: string | null;
  expiresAt: string | null;
  /** The previous answer, refused: its code and message. */
  refusal: Refusal | null;
}

const requester = (r: { agentId: string; userId: string }) => `${r.agentId} for ${r.userId}`;

/**
 * How much of a call the WHAT column shows: arguments are not cut at a column's width (a long first
 * field would hide the amount); beyond this, the row says where the rest is.
 */
export const WHAT_MAX = 2_000;
const whole = (value: unknown) => {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > WHAT_MAX ? `${text.slice(0, WHAT_MAX)}… [${text.length} characters: the whole call is in --json]` : text;
};

/** The inbox rows of a thread's waiting tasks: one per pending call, one per review. */
export function inboxItems(threadId: string, tasks: readonly WaitingTask[], requestedAt?: string | null): InboxItem[] {
  const items: InboxItem[] = [];
  for (const task of tasks) {
    const ref = taskRef(task);
    if (task.kind === "approval") {
      for (const r of task.request.requests) {
        items.push({
          kind: "approval",
          threadId,
          ref,
          toolCallId: r.toolCallId,
          // What the tool reads, when its schema reads the arguments otherwise (a default, a coercion).
          what: `${r.name} ${whole(r.args)}${r.parsedArgs ? ` (runs as ${whole(r.parsedArgs)})` : ""}${r.quorum ? ` (${r.approvedBy?.length ?? 0}/${r.quorum} approvals)` : ""}`,
          args: r.args,
          ...(r.parsedArgs ? { parsedArgs: r.parsedArgs } : {}),
          digest: r.digest,
          roles: r.approverRoles,
          requestedBy: requester(r.requestedBy),
          since: requestedAt ?? task.request.since,
          expiresAt: r.expiresAt ?? null,
          refusal: task.refusal,
        });
      }
    } else if (task.kind === "recovery") {
      for (const r of task.request.requests) {
        items.push({
          kind: "recovery",
          threadId,
          ref,
          toolCallId: r.toolCallId,
          what: `${r.name} ${whole(r.args)}: ${r.reason} (attempt ${r.attempt})`,
          args: r.args,
          digest: r.digest,
          attempt: r.attempt,
          roles: r.resolverRoles,
          requestedBy: requester(r.requestedBy),
          since: r.since,
          expiresAt: null,
          refusal: task.refusal,
        });
      }
    } else {
      const review = task.request;
      items.push({ kind: "review", threadId, ref, toolCallId: null, what: short(review.reason, 60), roles: review.reviewerRoles, requestedBy: requester(review.requestedBy), since: review.since, expiresAt: null, refusal: task.refusal });
    }
  }
  return items;
}

/**
 * The task of a kind waiting among `tasks`. A thread waiting for nothing is refused with eart's
 * `thread_not_paused`; one waiting for another kind of task with `task_not_pending`, naming it.
 */
export function taskOfKind<K extends TaskKind>(threadId: string, tasks: readonly WaitingTask[], kind: K): Extract<WaitingTask, { kind: K }> {
  const task = tasks.find((t): t is Extract<WaitingTask, { kind: K }> => t.kind === kind);
  if (task) return task;
  const noun = (k: TaskKind) => (k === "approval" ? "an approval" : `a ${k}`);
  const other = tasks[0]?.kind;
  if (!other) throw new ThreadStateError("thread_not_paused", threadId, `Thread "${threadId}" waits for no human task of eart's; there is nothing to answer`);
  const command = { approval: "eart approve|reject|edit|decide", recovery: "eart recover", review: "eart review" }[other];
  throw new CliError("task_not_pending", `Thread "${threadId}" waits for ${noun(other)}, not for ${noun(kind)}: answer it with ${command}`, { threadId, waitsFor: other, asked: kind });
}

/**
 * The decisions one approval answer carries, per pending call: the calls named for each decision
 * type, `all` standing for every pending call not named elsewhere. One answer decides every call
 * of the request at once (several calls of one model turn wait together).
 */
export interface ApprovalPlan {
  /** The decision for every call not named (`--all`, or the word `all` in a `decide` list). */
  rest?: "approve" | "reject" | "respond";
  /** The word `all` in a `decide` list stands for `rest`: refused on a thread with a call named "all". */
  restByWord?: boolean;
  approve: readonly string[];
  reject: readonly string[];
  respond: readonly string[];
  /** The arguments to run instead, by tool call id. */
  edit: ReadonlyMap<string, Record<string, unknown>>;
  /** A note for every decision (for `reject`, what the model is told; for `respond`, its answer). */
  message?: string;
  /** A note for one call, by tool call id, in place of `message`. */
  messageFor?: ReadonlyMap<string, string>;
}

/** Splits repeated, comma-separated id options (`--approve a,b --approve c`). */
export function idList(values: readonly string[] | undefined): string[] {
  return (values ?? []).flatMap((v) => v.split(",")).map((v) => v.trim()).filter((v) => v !== "");
}

/**
 * The keyed answer for an approval request: one decision per pending call, each with its digest
 * (the call the approver saw listed; a call changed since is refused). Names no human: who answers
 * is the resuming run's principal. Throws `approval_decisions_mismatch` when the plan names a call
 * that does not wait or leaves one undecided: nothing is sent.
 */
export function approvalAnswer(threadId: string, request: ApprovalRequest, plan: ApprovalPlan): { decisions: ApprovalDecision[] } {
  const pending = request.requests.map((r) => r.toolCallId);
  const named = new Map<string, ApprovalDecision["type"]>();
  let rest: ApprovalDecision["type"] | undefined = plan.rest;
  const lists: [ApprovalDecision["type"], readonly string[]][] = [
    ["approve", plan.approve],
    ["reject", plan.reject],
    ["respond", plan.respond],
    ["edit", [...plan.edit.keys()]],
  ];
  // A model chooses call ids: with one named "all", the word would turn "this call" into "every call".
  if (plan.restByWord && pending.includes("all")) throw new UsageError(`a call of thread "${threadId}" is named "all": name each call by its id`);
  for (const [type, ids] of lists) {
    for (const id of ids) {
      const already = named.get(id);
      if (already && already !== type) throw new UsageError(`call "${id}" is decided twice (--${already} and --${type})`);
      named.set(id, type);
    }
  }
  for (const id of named.keys()) {
    if (!pending.includes(id)) {
      throw new ApprovalError("approval_decisions_mismatch", `No pending approval for tool call "${id}" on thread "${threadId}"; pending: ${pending.join(", ")}`, { toolCallId: id, pending });
    }
  }
  const missing = pending.filter((id) => !named.has(id));
  if (missing.length > 0 && !rest) {
    const calls = request.requests.filter((r) => missing.includes(r.toolCallId)).map((r) => `${r.toolCallId} (${r.name} ${short(r.args, 40)})`);
    throw new ApprovalError(
      "approval_decisions_mismatch",
      `One answer decides every pending call of thread "${threadId}"; undecided: ${calls.join(", ")}. Decide them together: eart decide ${threadId} --approve <ids> --reject <ids> (or all), or eart approve ${threadId} --all --ref <ref>`,
      { toolCallId: missing[0], missing },
    );
  }
  for (const id of plan.messageFor?.keys() ?? []) {
    if (!pending.includes(id)) throw new ApprovalError("approval_decisions_mismatch", `--message-for names tool call "${id}", which does not wait on thread "${threadId}"; pending: ${pending.join(", ")}`, { toolCallId: id, pending });
  }
  const decisions = request.requests.map((r): ApprovalDecision => {
    const type = named.get(r.toolCallId) ?? rest!;
    const args = type === "edit" ? plan.edit.get(r.toolCallId) : undefined;
    const message = plan.messageFor?.get(r.toolCallId) ?? plan.message;
    if (type === "respond" && message === undefined) throw new UsageError(`--respond ${r.toolCallId} needs --message (or --message-for ${r.toolCallId}=<text>): the answer the model gets in place of the tool's result`);
    return { toolCallId: r.toolCallId, type, digest: r.digest, ...(args ? { args } : {}), ...(message !== undefined ? { message } : {}) };
  });
  return { decisions };
}

/** What each recovery action does (the names are `RecoveryDecision["type"]`, all of them). */
export const RECOVERY_ACTIONS: Readonly<Record<RecoveryDecision["type"], string>> = {
  retry: "run the tool again (you checked it had no effect)",
  mark_done: "it did happen: record --result <json> as its result",
  abandon: "give up; the model is told",
};

/** What each review action does (the names are `EscalationResponse["action"]`, all of them). */
export const REVIEW_ACTIONS: Readonly<Record<EscalationResponse["action"], string>> = {
  take_over: "answer the user in the agent's place with --message",
  send_back: "return the case to the agent with --message as guidance",
  close: "end the case with --message",
};

/** The action named on the command line, checked against `actions`. */
export function actionOf<A extends string>(value: string | undefined, actions: Readonly<Record<A, string>>, command: string): A {
  const names = Object.keys(actions) as A[];
  if (value === undefined) throw new UsageError(`${command} needs --action ${names.join("|")}`);
  if (!names.includes(value as A)) throw new UsageError(`${command} --action must be one of ${names.join(", ")}, not "${value}"`);
  return value as A;
}

/**
 * The keyed answer for a recovery request: the same action for the calls named (`"all"`, from
 * `--all`: every pending call), each with its digest and attempt. Throws `approval_decisions_mismatch` when a named call does
 * not wait or a pending one is left undecided.
 */
export function recoveryAnswer(
  threadId: string,
  request: RecoveryRequest,
  ids: readonly string[] | "all",
  action: RecoveryDecision["type"],
  extra: { result?: unknown; message?: string },
): { decisions: RecoveryDecision[] } {
  const pending = request.requests.map((r) => r.toolCallId);
  const chosen = ids === "all" ? pending : [...new Set(ids)];
  for (const id of chosen) {
    if (!pending.includes(id)) throw new ApprovalError("approval_decisions_mismatch", `No pending recovery for tool call "${id}" on thread "${threadId}"; pending: ${pending.join(", ")}`, { toolCallId: id, pending });
  }
  const missing = pending.filter((id) => !chosen.includes(id));
  if (missing.length > 0) {
    throw new ApprovalError("approval_decisions_mismatch", `One answer decides every call waiting for recovery on thread "${threadId}"; undecided: ${missing.join(", ")} (name them too, or all)`, { toolCallId: missing[0], missing });
  }
  if (action === "mark_done" && extra.result === undefined) throw new UsageError("--action mark_done needs --result <json>: the result to record");
  if (action !== "mark_done" && extra.result !== undefined) throw new UsageError(`--result goes with --action mark_done, not ${action}`);
  return {
    decisions: request.requests.map((r) => ({
      toolCallId: r.toolCallId,
      type: action,
      digest: r.digest,
      // The request the CLI read: a call that failed again since waits under another attempt.
      attempt: r.attempt,
      ...(extra.result !== undefined ? { result: extra.result } : {}),
      ...(extra.message !== undefined ? { message: extra.message } : {}),
    })),
  };
}

/** Parses a JSON option, or a usage error naming it. */
export function jsonOption(name: string, text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new UsageError(`${name} must be JSON`);
  }
}

/** Parses `--message-for <toolCallId>=<text>` options (a note for one call). */
export function messageOptions(values: readonly string[] | undefined): Map<string, string> {
  const messages = new Map<string, string>();
  for (const v of values ?? []) {
    const at = v.indexOf("=");
    if (at <= 0) throw new UsageError(`--message-for takes <toolCallId>=<text>, not "${v}"`);
    const id = v.slice(0, at);
    if (messages.has(id)) throw new UsageError(`--message-for names call "${id}" twice`);
    messages.set(id, v.slice(at + 1));
  }
  return messages;
}

/** Parses `--edit <toolCallId>=<json>` options (the arguments to run instead). */
export function editOptions(values: readonly string[] | undefined): Map<string, Record<string, unknown>> {
  const edits = new Map<string, Record<string, unknown>>();
  for (const v of values ?? []) {
    const at = v.indexOf("=");
    if (at <= 0) throw new UsageError(`--edit takes <toolCallId>=<json arguments>, not "${v}"`);
    const id = v.slice(0, at);
    const args = jsonOption(`--edit ${id}`, v.slice(at + 1));
    if (typeof args !== "object" || args === null || Array.isArray(args)) throw new UsageError(`--edit ${id}: the arguments must be a JSON object`);
    if (edits.has(id)) throw new UsageError(`--edit names call "${id}" twice`);
    edits.set(id, args as Record<string, unknown>);
  }
  return edits;
}

/** Prints the inbox: one row per pending call or review. */
export function printInbox(items: readonly InboxItem[], out: Output): void {
  const refused = items.some((i) => i.refusal);
  out.print(
    () =>
      items.length === 0
        ? dim("nothing waits")
        : table(
            ["KIND", "THREAD", "REF", "TOOL CALL", "WHAT", "ROLES", "REQUESTED BY", "SINCE", "EXPIRES", ...(refused ? ["LAST ANSWER REFUSED"] : [])],
            items.map((i): Cell[] => [
              i.kind,
              i.threadId,
              i.ref ?? "-",
              i.toolCallId ?? "-",
              i.what,
              i.roles.join(","),
              i.requestedBy,
              i.since ?? "-",
              i.expiresAt ? { text: i.expiresAt, paint: yellow } : "-",
              ...(refused ? [i.refusal ? { text: `${i.refusal.code}: ${short(i.refusal.message, 80)}`, paint: yellow } : "-"] : []),
            ]),
          ),
    items,
  );
}

/** The answer to a waiting task, built from it, and how the command line reports it. */
export interface AnswerPlan<K extends TaskKind> {
  kind: K;
  /** The reference of the task the human answers, as listed ({@link taskRef}): checked before anything is sent. */
  ref: string;
  build(task: Extract<WaitingTask, { kind: K }>): unknown;
  /** The report: what was done (`approved`) and to what (`call_1 on t1`), and its JSON fields. */
  report(answer: unknown): AnswerReport;
}

/** What an accepted answer did, in words and as JSON fields. */
export interface AnswerReport {
  verb: string;
  what: string;
  machine: Record<string, unknown>;
}

/** What the thread waits for after a run, and the agent's last message. */
export function afterRun(values: unknown, tasks: readonly WaitingTask[]): { waiting: TaskKind | null; last: unknown } {
  const messages = (values as { messages?: { content?: unknown }[] } | null | undefined)?.messages ?? [];
  return { waiting: tasks[0]?.kind ?? null, last: messages[messages.length - 1]?.content ?? null };
}

/** Prints the outcome of an accepted answer: what was done, and what the thread does now. */
export function printAnswered(out: Output, report: AnswerReport, by: string | null, after: { waiting: TaskKind | null; last: unknown }): void {
  const now = after.waiting ? yellow(`now waits for ${after.waiting === "approval" ? "an approval" : `a ${after.waiting}`}`) : `agent: ${printable(short(after.last ?? "", 200))}`;
  out.print(() => `${green(report.verb)} ${printable(`${report.what}${by ? ` as ${by}` : ""}`)}\n${now}`, {
    ...report.machine,
    ...(by ? { by } : {}),
    waiting: after.waiting,
    last: after.last,
  });
}

