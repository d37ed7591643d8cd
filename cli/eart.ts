#!/usr/bin/env node
/**
 * `eart`: the approver's and the auditor's command line. It works in one of three modes:
 *
 * - an app (`--app <module>` or `EART_APP`): the module registers its audit log and graphs with
 *   `defineApp`; `eart` reads the same store as the graphs and resumes them in this process
 *   through exactly the same validation as any resume. The human answering is `--as <user>` (or
 *   the signer of `--key`).
 * - a LangGraph server (`--url <url>` and `--token <bearer>`, or `EART_URL` / `EART_TOKEN`):
 *   through `@langchain/langgraph-sdk`, loaded in this mode only; no app module, tool credentials,
 *   model key or database. The human answering is the token's user (`--as` is refused).
 * - an audit store alone (`--audit sqlite:<file> | postgres://… | jsonl:<file>`): `show` and the
 *   `audit` commands, for an auditor; no graphs, model or tools are loaded.
 *
 *   eart pending [--role R]                  what waits for a human, across threads
 *   eart show <thread>                       a readable timeline of a thread
 *   eart approve|reject <thread> (<toolCallId> | --all) --ref <ref> [--message m]      one call, or all of them
 *                                            (every answer names the REF `pending` lists for what it
 *                                            answers; what waits must still be exactly that)
 *   eart edit <thread> <toolCallId> --ref <ref> --args json [--message m]
 *   eart decide <thread> --ref <ref> [--approve ids|all] [--reject ids|all] [--edit id=json]… [--respond ids|all]
 *               [--message m] [--message-for id=text]…   every pending call of the request, in one answer
 *                                            (`all`: every call not named; --message: a note on each
 *                                            decision, --message-for: on one call instead)
 *   eart recover <thread> (<toolCallId>[,…] | --all) --ref <ref> --action retry|mark_done|abandon [--result json] [--message m]
 *   eart review <thread> --ref <ref> --action take_over|send_back|close --message m
 *   eart continue <thread>                   carry on a run that stopped before it finished (app only)
 *   eart audit verify [--thread T]           check the hash chains
 *   eart audit verify --all [--witness file] [--public-key pem]   the whole store: every chain,
 *                                            the global log, lost threads, rollback past a witness
 *   eart audit head [--out file]             the global head now (signed): keep it as a witness
 *   eart audit export --format jsonl [--thread T] [--out file]
 *   eart audit export --format otlp [--thread T] [--endpoint url]   spans over OTLP/HTTP
 *
 * `--json` prints machine-readable output on stdout, errors included: `{ "error": { "code",
 * "message", "details"? } }` (usage errors have code `usage`). `--version` prints the version.
 * Exit codes: 0 ok, 1 refused or failed (a typed error, a broken chain, an HTTP error), 2 usage.
 *
 * What threads hold is written by customers, models and API clients: everything printed from
 * them (table cells, messages, ids, error messages) shows control, bidi and zero-width
 * characters and line breaks visibly (`\x1b`, `\n`, `\u202e`), and JSON output writes them as
 * `\uXXXX` escapes, so no thread can move the cursor or draw a line of its own.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { EartApp } from "eart/graphs";
import { auditCommand, openAuditStore, showThread } from "./audit.js";
import { answerLocally, continueLocally, inbox, loadApp, tokenSigner } from "./local.js";
import { output, reportError, UsageError, type Output } from "./output.js";
import {
  actionOf,
  approvalAnswer,
  editOptions,
  idList,
  jsonOption,
  messageOptions,
  printInbox,
  RECOVERY_ACTIONS,
  recoveryAnswer,
  REF_FORMAT,
  REVIEW_ACTIONS,
  type AnswerPlan,
  type ApprovalPlan,
  type TaskKind,
} from "./tasks.js";

const USAGE = `usage: eart [--app <module> | --url <server> [--token <bearer>] | --audit <store>] [--json] <command>
  pending [--role R]
  show <thread>
  approve <thread> (<toolCallId> | --all) --ref <ref> [--as <user> [--key pem --kid id]] [--message m]
  reject <thread> (<toolCallId> | --all) --ref <ref> [--as <user> [--key pem --kid id]] [--message m]
  edit <thread> <toolCallId> --args <json> --ref <ref> [--as <user>] [--message m]
  decide <thread> --ref <ref> [--approve <ids>|all] [--reject <ids>|all] [--edit <id>=<json>]... [--respond <ids>|all]
         [--message m] [--message-for <id>=<text>]... [--as <user>]
  recover <thread> (<toolCallId>[,...] | --all) --ref <ref> --action retry|mark_done|abandon [--result <json>] [--as <user>] [--message m]
  review <thread> --ref <ref> --action take_over|send_back|close --message m [--as <user>]
  (--ref: the REF pending lists for what you answer; the answer is refused if what waits changed since)
  continue <thread>
  audit verify [--thread T]
  audit verify --all [--witness file] [--public-key pem]
  audit head [--out file]
  audit export --format jsonl [--thread T] [--out file]
  audit export --format otlp [--thread T] [--endpoint http://127.0.0.1:4318/v1/traces]
modes:
  --app <module> (or EART_APP)      an app module (defineApp); answers as --as <user> (or a --key token)
  --url <url> --token <bearer>      a LangGraph server (or EART_URL, EART_TOKEN); answers as the token's user
  --audit sqlite:<file> | postgres://... | jsonl:<file>   the audit store alone: show and audit only
  --json: machine-readable output on stdout, errors as {"error":{"code","message","details"}}
  --version: the version. Exit codes: 0 ok, 1 refused or failed, 2 usage`;

const COMMANDS = ["pending", "show", "approve", "reject", "edit", "decide", "recover", "review", "continue", "audit"] as const;
type Command = (typeof COMMANDS)[number];
const ANSWERS: readonly Command[] = ["approve", "reject", "edit", "decide", "recover", "review"];
const REMOTE_COMMANDS: readonly Command[] = ["pending", "show", ...ANSWERS];
const AUDIT_COMMANDS: readonly Command[] = ["show", "audit"];

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      app: { type: "string" },
      url: { type: "string" },
      token: { type: "string" },
      audit: { type: "string" },
      json: { type: "boolean", default: false },
      version: { type: "boolean", default: false },
      role: { type: "string" },
      as: { type: "string" },
      args: { type: "string" },
      message: { type: "string" },
      "message-for": { type: "string", multiple: true },
      approve: { type: "string", multiple: true },
      reject: { type: "string", multiple: true },
      edit: { type: "string", multiple: true },
      respond: { type: "string", multiple: true },
      action: { type: "string" },
      result: { type: "string" },
      thread: { type: "string" },
      format: { type: "string" },
      out: { type: "string" },
      endpoint: { type: "string" },
      key: { type: "string" },
      kid: { type: "string" },
      all: { type: "boolean", default: false },
      ref: { type: "string" },
      witness: { type: "string" },
      "public-key": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
}
type Values = ReturnType<typeof parse>["values"];

/** The package's version, from the package.json beside the build (`dist/cli/eart.js` → `package.json`). */
function version(): string {
  return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
}

/** Where the command line works: an app, a server or an audit store (see the header). */
type Mode = { kind: "app"; module: string | undefined } | { kind: "remote"; url: string; token: string | undefined } | { kind: "audit"; store: string };

function modeOf(values: Values): Mode {
  const given = (["app", "url", "audit"] as const).filter((o) => values[o] !== undefined);
  if (given.length > 1) throw new UsageError(`--${given.join(" and --")} are different modes: give one`);
  if (values.token !== undefined && values.url === undefined && !process.env.EART_URL) throw new UsageError("--token goes with --url <server> (or EART_URL)");
  if (values.audit !== undefined) return { kind: "audit", store: values.audit };
  if (values.url !== undefined) return { kind: "remote", url: values.url, token: values.token ?? (process.env.EART_TOKEN || undefined) };
  if (values.app !== undefined) return { kind: "app", module: values.app };
  if (process.env.EART_URL && process.env.EART_APP) throw new UsageError("both EART_URL and EART_APP are set: pass --url or --app to say which");
  if (process.env.EART_URL) return { kind: "remote", url: process.env.EART_URL, token: values.token ?? (process.env.EART_TOKEN || undefined) };
  return { kind: "app", module: undefined };
}

/** The thread id positional of a command, or a usage error. */
function threadOf(command: string, rest: string[]): string {
  const threadId = rest[0];
  if (!threadId) throw new UsageError(`${command} needs a thread id`);
  return threadId;
}

/** The approval plan of `approve`, `reject`, `edit` and `decide`, from the command line. */
function approvalPlanOf(command: "approve" | "reject" | "edit" | "decide", rest: string[], values: Values): { plan: ApprovalPlan; single: string | undefined } {
  const message = values.message;
  const none = { approve: [], reject: [], respond: [], edit: new Map<string, Record<string, unknown>>(), ...(message !== undefined ? { message } : {}) };
  if (command === "decide") {
    if (rest.length > 1) throw new UsageError("decide takes the thread id only: name the calls with --approve, --reject, --edit and --respond");
    const lists = { approve: idList(values.approve), reject: idList(values.reject), respond: idList(values.respond) };
    const edit = editOptions(values.edit);
    if (lists.approve.length + lists.reject.length + lists.respond.length + edit.size === 0) throw new UsageError("decide needs at least one of --approve, --reject, --edit, --respond (ids, comma-separated, or all)");
    if (edit.has("all")) throw new UsageError("--edit names one call: <toolCallId>=<json>");
    // The word "all" in a list: the calls not named elsewhere.
    const byWord = (Object.keys(lists) as (keyof typeof lists)[]).filter((type) => lists[type].includes("all"));
    if (byWord.length > 1) throw new UsageError(`"all" can stand for one decision only (--${byWord.join(" all and --")} all)`);
    const others = byWord[0];
    const named = Object.fromEntries(Object.entries(lists).map(([type, ids]) => [type, ids.filter((id) => id !== "all")])) as typeof lists;
    return { plan: { ...none, ...named, edit, messageFor: messageOptions(values["message-for"]), ...(others ? { rest: others, restByWord: true } : {}) }, single: undefined };
  }
  for (const o of ["approve", "reject", "edit", "respond", "message-for"] as const) if (values[o] !== undefined) throw new UsageError(`--${o} goes with decide; ${command} takes <thread> <toolCallId>`);
  const toolCallId = rest[1];
  if (values.all && toolCallId !== undefined) throw new UsageError(`${command} takes a toolCallId or --all, not both`);
  if (rest.length > 2) throw new UsageError(`${command} takes <thread> and one <toolCallId>: decide several with --all or eart decide`);
  if (command === "edit") {
    if (values.all) throw new UsageError("edit changes one call's arguments: edit <thread> <toolCallId> --args <json>");
    if (!toolCallId) throw new UsageError("edit needs <thread> <toolCallId>");
    if (!values.args) throw new UsageError("edit needs --args <json>: the arguments to run instead");
    const args = editOptions([`${toolCallId}=${values.args}`]);
    return { plan: { ...none, edit: args }, single: toolCallId };
  }
  if (!toolCallId && !values.all) throw new UsageError(`${command} needs <thread> <toolCallId>, or <thread> --all for every pending call`);
  // Every call only by --all: a call id is whatever the model chose, "all" included.
  return { plan: toolCallId === undefined ? { ...none, rest: command } : { ...none, [command]: [toolCallId] }, single: toolCallId };
}

const PAST: Record<string, string> = { approve: "approved", reject: "rejected", edit: "edited", respond: "answered" };

/**
 * The `--ref` of an answer: the reference `pending` lists for the task the human decided on. An
 * answer without it would decide whatever waits when it is sent (a colleague's edit since, a new
 * request on the thread), not what was read.
 */
function refOf(command: Command, values: Values): string {
  const ref = values.ref;
  if (ref === undefined) throw new UsageError(`${command} needs --ref <ref>: the REF eart pending lists for what you answer (nothing else is answered)`);
  if (!REF_FORMAT.test(ref)) throw new UsageError(`--ref takes the 12 hexadecimal characters eart pending lists, not "${ref}"`);
  return ref;
}

/** What an answer command sends, built from the thread's waiting task, and how it is reported. */
function answerPlanOf(command: Command, threadId: string, rest: string[], values: Values): AnswerPlan<TaskKind> {
  const ref = refOf(command, values);
  if (command === "approve" || command === "reject" || command === "edit" || command === "decide") {
    const { plan, single } = approvalPlanOf(command, rest, values);
    return {
      kind: "approval",
      ref,
      build: (task) => approvalAnswer(threadId, task.request, plan),
      report: (answer) => {
        const decisions = (answer as ReturnType<typeof approvalAnswer>).decisions.map((d) => ({ toolCallId: d.toolCallId, type: d.type }));
        const types = [...new Set(decisions.map((d) => d.type))];
        const byType = types.map((type) => `${PAST[type] ?? type} ${decisions.filter((d) => d.type === type).map((d) => d.toolCallId).join(", ")}`);
        return single !== undefined && decisions.length === 1
          ? { verb: PAST[command]!, what: `${single} on ${threadId}`, machine: { threadId, toolCallId: single, decision: command, decisions } }
          : { verb: "decided", what: `on ${threadId}: ${byType.join("; ")}`, machine: { threadId, decisions } };
      },
    } satisfies AnswerPlan<"approval">;
  }
  if (command === "recover") {
    const action = actionOf(values.action, RECOVERY_ACTIONS, "recover");
    const ids = values.all ? ("all" as const) : idList(rest.slice(1));
    if (values.all && rest.length > 1) throw new UsageError("recover takes toolCallIds or --all, not both");
    if (ids.length === 0) throw new UsageError("recover needs <thread> <toolCallId>[,...] or <thread> --all");
    const result = jsonOption("--result", values.result);
    return {
      kind: "recovery",
      ref,
      build: (task) => recoveryAnswer(threadId, task.request, ids, action, { ...(result !== undefined ? { result } : {}), ...(values.message !== undefined ? { message: values.message } : {}) }),
      report: (answer) => {
        const toolCallIds = (answer as ReturnType<typeof recoveryAnswer>).decisions.map((d) => d.toolCallId);
        return { verb: "recovered", what: `${toolCallIds.join(", ")} on ${threadId} with ${action}`, machine: { threadId, action, toolCallIds } };
      },
    } satisfies AnswerPlan<"recovery">;
  }
  // review
  if (rest.length > 1) throw new UsageError("review takes the thread id only");
  const action = actionOf(values.action, REVIEW_ACTIONS, "review");
  const message = values.message;
  if (!message) throw new UsageError(`review needs --message: ${REVIEW_ACTIONS[action]}`);
  return {
    kind: "review",
    ref,
    build: (task) => ({ action, message, digest: task.request.digest }),
    report: () => ({ verb: "reviewed", what: `${threadId}: ${action}`, machine: { threadId, action, message } }),
  } satisfies AnswerPlan<"review">;
}

async function main(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv);
  if (values.version) {
    out.print(() => version(), { version: version() });
    return 0;
  }
  const [name, ...rest] = positionals;
  if (values.help || !name) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  if (!(COMMANDS as readonly string[]).includes(name)) throw new UsageError(`unknown command "${name}"`);
  const command = name as Command;
  const mode = modeOf(values);

  if (mode.kind === "audit") {
    if (!AUDIT_COMMANDS.includes(command)) throw new UsageError(`--audit opens the audit store alone: ${AUDIT_COMMANDS.join(" and ")} only (${command} needs --app or --url)`);
    const opened = await openAuditStore(mode.store);
    try {
      return command === "show" ? await showThread(opened.auditLog, threadOf(command, rest), out) : await auditCommand(opened.auditLog, rest[0], values, out);
    } finally {
      await opened.close();
    }
  }

  if (mode.kind === "remote") {
    if (!REMOTE_COMMANDS.includes(command)) throw new UsageError(`${command} works with --app (or --audit for audit), not against a server`);
    if (values.as !== undefined) throw new UsageError("--as is not used with --url: the server answers as the user of the bearer token (--token or EART_TOKEN)");
    if (values.key !== undefined) throw new UsageError("--key signs tokens for an app (--app); against a server, the bearer token's user answers");
    const { runRemote } = await import("./remote.js");
    const target = { url: mode.url, token: mode.token };
    if (command === "pending") return runRemote(target, { command, role: values.role }, out);
    const threadId = threadOf(command, rest);
    if (command === "show") return runRemote(target, { command, threadId }, out);
    return runRemote(target, { command: "answer", threadId, plan: answerPlanOf(command, threadId, rest, values) }, out);
  }

  // An answer's command line is checked before the app is opened.
  const plan = ANSWERS.includes(command) ? answerPlanOf(command, threadOf(command, rest), rest, values) : undefined;
  if (plan && !values.as) throw new UsageError(`${command} needs --as <user>: who decides`);
  if (values.key !== undefined && command !== "approve" && command !== "reject" && command !== "decide") throw new UsageError("--key signs approve, reject and decide answers only");
  const app: EartApp = await loadApp(mode.module);
  try {
    if (command === "pending") {
      printInbox((await inbox(app, { role: values.role || undefined })).filter((i) => !values.role || i.roles.includes(values.role)), out);
      return 0;
    }
    if (command === "continue") return await continueLocally(app, threadOf(command, rest), out);
    if (command === "show") return await showThread(app.auditLog, threadOf(command, rest), out);
    if (command === "audit") return await auditCommand(app.auditLog, rest[0], values, out);
    const threadId = threadOf(command, rest);
    const sign = values.key !== undefined ? tokenSigner(threadId, values.as!, values.key, values.kid) : undefined;
    return await answerLocally(app, threadId, plan!, values.as!, out, sign);
  } finally {
    await app.close?.();
  }
}

const argv = process.argv.slice(2);
// Read before parsing, so that a command line parseArgs refuses still gets its error as JSON.
const json = argv.includes("--json");
try {
  process.exitCode = await main(argv, output(json));
} catch (error) {
  process.exitCode = reportError(error, json, USAGE);
}
