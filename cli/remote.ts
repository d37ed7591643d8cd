/**
 * `eart` against a LangGraph server deployment (`--url`, `--token`; or `EART_URL`, `EART_TOKEN`),
 * through `@langchain/langgraph-sdk`, loaded here only: the approver's machine needs no app
 * module, tool credentials, model key or database. The answering human is the token's user, as
 * the server's auth names it (`langgraph_auth_user`): no answer names a human.
 */
import { EART_ERROR_CODES, EartError, parseServerError, ThreadStateError, type EartErrorCode } from "eart";
import type { Client, Thread } from "@langchain/langgraph-sdk";
import { bold, CliError, dim, printable, short, table, UsageError, yellow, type Cell, type Output } from "./output.js";
import { afterRun, assertTaskRef, inboxItems, printAnswered, printInbox, taskOfKind, tasksIn, type AnswerPlan, type TaskKind } from "./tasks.js";

/** Where the server is, and the bearer token that names the approver. */
export interface RemoteTarget {
  url: string;
  token: string | undefined;
}

/** A server client, and the calls the command line makes through it with its HTTP errors said plainly. */
interface Remote {
  url: string;
  client: Client;
  call<T>(what: string, run: () => Promise<T>, threadId?: string): Promise<T>;
}

const CODES: ReadonlySet<string> = new Set(EART_ERROR_CODES);
const PAGE = 50;

/** Opens a client for the server (the SDK is loaded on this first use). */
async function connect(target: RemoteTarget): Promise<Remote> {
  let sdk: typeof import("@langchain/langgraph-sdk/client");
  try {
    sdk = await import("@langchain/langgraph-sdk/client");
  } catch {
    throw new UsageError("--url needs the @langchain/langgraph-sdk package: npm install @langchain/langgraph-sdk");
  }
  const client = new sdk.Client({
    apiUrl: target.url,
    // The bearer token only: no LangSmith key from the environment goes to the server.
    apiKey: null,
    defaultHeaders: target.token ? { Authorization: `Bearer ${target.token}` } : {},
    // An answer is posted once: a retried POST could resume the thread twice.
    callerOptions: { maxRetries: 0 },
  });
  const call = async <T>(what: string, run: () => Promise<T>, threadId?: string): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      throw httpError(error, what, target.url, threadId);
    }
  };
  return { url: target.url, client, call };
}

/** An SDK failure as the command line reports it: the HTTP status said plainly, or the server unreachable. */
function httpError(error: unknown, what: string, url: string, threadId: string | undefined): Error {
  const status = (error as { status?: unknown })?.status;
  const text = (error as Error)?.message ?? String(error);
  if (typeof status === "number") {
    const body = text.replace(/^HTTP \d+: /, "");
    const details = { status, ...(threadId !== undefined ? { threadId } : {}), body: short(body, 500) };
    if (status === 401) return new CliError("http_401", `${url} refused the credentials while trying to ${what} (401 Unauthorized): pass a valid bearer token with --token or EART_TOKEN`, details);
    if (status === 403) return new CliError("http_403", `${url} forbids this token to ${what} (403 Forbidden): its user may not see or answer this`, details);
    if (status === 404) return new CliError("http_404", threadId !== undefined ? `No thread "${threadId}" on ${url}, or not one this token may see (404 Not Found)` : `${url} has nothing to ${what} (404 Not Found): is it a LangGraph server?`, details);
    if (status === 409) return new CliError("thread_busy", `Thread "${threadId ?? "?"}" is busy on ${url}: a run is under way (409 Conflict); try again when it ends`, details);
    return new CliError(`http_${status}`, `${url} answered ${status} while trying to ${what}: ${short(body, 300)}`, details);
  }
  if ((error as Error)?.name === "ConnectionError" || /ECONNREFUSED|fetch failed|ENOTFOUND|Unable to connect/.test(text)) {
    return new CliError("server_unreachable", `Cannot reach the LangGraph server at ${url}: ${text}`, { url });
  }
  return error instanceof Error ? error : new Error(text);
}

/** The interrupt values of a server thread (`interrupts`: task id → `[{ id, value }]`). */
function interruptValues(thread: Pick<Thread, "interrupts">): unknown[] {
  const byTask = (thread.interrupts ?? {}) as Record<string, unknown> | unknown[];
  const lists = Array.isArray(byTask) ? [byTask] : Object.values(byTask);
  return lists.flatMap((l) => (Array.isArray(l) ? l : [])).map((i) => (i as { value?: unknown } | null)?.value);
}

/**
 * The error of a failed server run, from the `{ error, message }` the server sends: eart's errors
 * lead their message with their code (`approval_expired: …`), so they come back typed.
 */
function runError(value: unknown): Error | undefined {
  const failed = parseServerError(value);
  if (!failed) return undefined;
  if (failed.code) return new EartError(failed.code, failed.message, { error: failed.name });
  return new CliError("run_failed", `The run failed on the server: ${failed.name}${failed.message ? `: ${failed.message}` : ""}`, { error: failed.name });
}

/** `pending`: the eart human tasks of every interrupted thread the token may see. */
async function pending(remote: Remote, role: string | undefined, out: Output): Promise<number> {
  const seen = new Set<string>();
  const items = [];
  for (let offset = 0; ; offset += PAGE) {
    const page = await remote.call("list interrupted threads", () => remote.client.threads.search({ status: "interrupted", limit: PAGE, offset, sortBy: "created_at", sortOrder: "asc" }));
    for (const thread of page) {
      if (seen.has(thread.thread_id)) continue;
      seen.add(thread.thread_id);
      items.push(...inboxItems(thread.thread_id, tasksIn(interruptValues(thread))));
    }
    if (page.length < PAGE) break;
  }
  printInbox(
    items.filter((i) => !role || i.roles.includes(role)),
    out,
  );
  return 0;
}

/** A message of the thread's state as the server sends it (`{ type, content, tool_calls? }`), in one line. */
function messageLine(m: unknown): { role: string; text: string } {
  const msg = (m ?? {}) as { type?: unknown; role?: unknown; content?: unknown; name?: unknown; tool_calls?: { name?: unknown; args?: unknown }[] };
  const content = Array.isArray(msg.content) ? msg.content.map((p) => (typeof p === "string" ? p : ((p as { text?: unknown })?.text ?? ""))).join("") : msg.content;
  const calls = (msg.tool_calls ?? []).map((c) => `${String(c?.name)}(${short(c?.args, 40)})`).join(", ");
  const text = [typeof content === "string" ? content : short(content, 120), calls ? `→ ${calls}` : ""].filter((t) => t !== "").join(" ");
  const role = String(msg.type ?? msg.role ?? "?") + (msg.type === "tool" && msg.name ? ` ${String(msg.name)}` : "");
  return { role, text };
}

/**
 * `show <thread>` as far as the server shows it: status, what waits, eart's decision records and
 * the messages of the thread's state. The audit trail is not on the server's API: read it from
 * the deployment's audit store (`eart --audit <store> show <thread>`).
 */
async function show(remote: Remote, threadId: string, out: Output): Promise<number> {
  const thread = await remote.call(`read thread "${threadId}"`, () => remote.client.threads.get(threadId), threadId);
  const values = (thread.values ?? {}) as { messages?: unknown[]; decisions?: unknown[] };
  const waiting = inboxItems(threadId, tasksIn(interruptValues(thread)));
  const decisions = (Array.isArray(values.decisions) ? values.decisions : []).map((d) => {
    const r = (d ?? {}) as { toolCallId?: unknown; name?: unknown; args?: unknown; status?: unknown; verdict?: { effect?: unknown }; approvals?: { approverId?: unknown; type?: unknown }[] };
    return {
      toolCallId: String(r.toolCallId ?? "?"),
      name: String(r.name ?? "?"),
      args: r.args,
      effect: String(r.verdict?.effect ?? "?"),
      status: String(r.status ?? "?"),
      approvals: (r.approvals ?? []).map((a) => `${String(a?.type)} by ${String(a?.approverId)}`),
    };
  });
  const messages = (Array.isArray(values.messages) ? values.messages : []).map(messageLine);
  const metadata = (thread.metadata ?? {}) as Record<string, unknown>;
  const agent = metadata.graph_id ?? metadata.assistant_id;
  out.print(
    () =>
      [
        bold(`thread ${printable(threadId)}`) + printable(` (${thread.status}${agent ? `, graph ${String(agent)}` : ""}, updated ${thread.updated_at})`),
        waiting.length > 0
          ? table(["WAITS FOR", "REF", "TOOL CALL", "WHAT", "ROLES", "SINCE", "LAST ANSWER REFUSED"], waiting.map((i): Cell[] => [i.kind, i.ref ?? "-", i.toolCallId ?? "-", i.what, i.roles.join(","), i.since ?? "-", i.refusal ? { text: `${i.refusal.code}: ${short(i.refusal.message, 80)}`, paint: yellow } : "-"]))
          : dim("nothing waits for a human"),
        ...(decisions.length > 0 ? [table(["TOOL CALL", "TOOL", "ARGS", "POLICY", "STATUS", "ANSWERS"], decisions.map((d) => [d.toolCallId, d.name, short(d.args, 50), d.effect, d.status, d.approvals.join(", ") || "-"]))] : []),
        ...(messages.length > 0 ? [table(["#", "ROLE", "MESSAGE"], messages.map((m, i) => [String(i), m.role, short(m.text, 120)]))] : []),
        dim("from the server's thread state; the audit trail is in the deployment's audit store: eart --audit <store> show <thread>"),
      ].join("\n"),
    { threadId, status: thread.status, graphId: metadata.graph_id ?? null, assistantId: metadata.assistant_id ?? null, createdAt: thread.created_at, updatedAt: thread.updated_at, waiting, decisions, messages },
  );
  return 0;
}

/**
 * Answers a thread's waiting task with one resume (`runs.wait` with `command: { resume }`) on the
 * thread's own assistant, then reads the thread again: a run that failed, or a thread still
 * waiting with a refusal of the answer, is reported with its code (exit code 1).
 */
async function answer<K extends TaskKind>(remote: Remote, threadId: string, plan: AnswerPlan<K>, out: Output): Promise<number> {
  const thread = await remote.call(`read thread "${threadId}"`, () => remote.client.threads.get(threadId), threadId);
  const tasks = tasksIn(interruptValues(thread));
  if (tasks.length === 0 && thread.status !== "interrupted") {
    throw new ThreadStateError("thread_not_paused", threadId, `Thread "${threadId}" is ${thread.status}, not waiting for a human; there is nothing to answer`);
  }
  const task = taskOfKind(threadId, tasks, plan.kind);
  assertTaskRef(threadId, task, plan.ref);
  const resume = plan.build(task);
  const metadata = (thread.metadata ?? {}) as Record<string, unknown>;
  const assistantId = [metadata.assistant_id, metadata.graph_id].find((v): v is string => typeof v === "string" && v !== "");
  if (!assistantId) throw new CliError("thread_unroutable", `Thread "${threadId}" names no assistant (metadata.assistant_id or graph_id): the server cannot tell which graph resumes it`, { threadId });
  const result = await remote.call(`answer thread "${threadId}"`, () => remote.client.runs.wait(threadId, assistantId, { command: { resume }, raiseError: false }), threadId);
  const failed = runError((result as { __error__?: unknown } | null)?.__error__);
  if (failed) throw failed;
  const after = await remote.call(`read thread "${threadId}"`, () => remote.client.threads.get(threadId), threadId);
  const now = tasksIn(interruptValues(after));
  const refused = after.status === "interrupted" ? now.find((t) => t.refusal)?.refusal : undefined;
  if (refused) {
    throw CODES.has(refused.code) ? new EartError(refused.code as EartErrorCode, refused.message, { threadId }) : new CliError(refused.code, refused.message, { threadId });
  }
  if (after.status === "error") throw new CliError("run_failed", `The run on thread "${threadId}" ended in error${after.error ? `: ${short(after.error, 300)}` : ""}`, { threadId });
  printAnswered(out, plan.report(resume), null, afterRun(after.values ?? result, now));
  return 0;
}

/** The commands `eart` runs against a server. */
export type RemoteCommand =
  | { command: "pending"; role: string | undefined }
  | { command: "show"; threadId: string }
  | { command: "answer"; threadId: string; plan: AnswerPlan<TaskKind> };

/** Runs a command against the server at `target`. Returns the exit code. */
export async function runRemote(target: RemoteTarget, command: RemoteCommand, out: Output): Promise<number> {
  const remote = await connect(target);
  if (command.command === "pending") return pending(remote, command.role, out);
  if (command.command === "show") return show(remote, command.threadId, out);
  return answer(remote, command.threadId, command.plan, out);
}
